"""Run ``minidl`` with a pause after every check, so a test can SIGKILL it part-way.

    python slow_cli.py SECONDS ARGS...      (ARGS as for ``minidl``)

The pause is a sleep in the progress callback's on_check: it changes no number, so the run is
the same as ``minidl ARGS...`` except for its speed.
"""
import sys
import time

from minidl import cli, progress


def main(argv):
    seconds = float(argv[0])
    original = progress.ProgressBar.on_check

    def slow_on_check(self, run):
        original(self, run)
        time.sleep(seconds)

    progress.ProgressBar.on_check = slow_on_check
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
