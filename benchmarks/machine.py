"""What every benchmark shares: the line it prints first (versions, cores and how busy the
machine is) and its --momentum option.

Timings on a shared machine are only as good as its quiet: a load average well above the
benchmark's own processes means the run should be repeated.
"""
import argparse
import math
import os
import platform

import numpy as np


def describe():
    """'numpy X, Python Y, CPUs N, load average L' at this moment."""
    return (f"numpy {np.__version__}, Python {platform.python_version()}, CPUs {os.cpu_count()}, "
            f"load average {os.getloadavg()[0]:.2f}")


def momentum(text):
    """argparse type of --momentum: a finite number >= 0, else a one-line usage error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"momentum must be a finite number >= 0 (0: plain SGD), got {text!r}")
    return value


def add_momentum_argument(parser, help="SGD momentum (default 0.9; 0: plain SGD)"):
    """The --momentum option every benchmark takes (default 0.9)."""
    parser.add_argument("--momentum", type=momentum, default=0.9, help=help)
