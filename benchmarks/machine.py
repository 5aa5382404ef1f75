"""The line every benchmark prints first: versions, cores and how busy the machine is.

Timings on a shared machine are only as good as its quiet: a load average well above the
benchmark's own processes means the run should be repeated.
"""
import os
import platform

import numpy as np


def describe():
    """'numpy X, Python Y, CPUs N, load average L' at this moment."""
    return (f"numpy {np.__version__}, Python {platform.python_version()}, CPUs {os.cpu_count()}, "
            f"load average {os.getloadavg()[0]:.2f}")
