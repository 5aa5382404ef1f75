"""python -m minidl: the same as the `minidl` command."""
from .cli import entry_point

entry_point()
