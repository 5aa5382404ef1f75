"""What every benchmark shares: the line it prints first (versions, cores and how busy the
machine is) and its --momentum option.

Timings on a shared machine are only as good as its quiet: a load average well above the
benchmark's own processes means the run should be repeated. The foreign_cores guard says so
per measurement: ForeignCores measures the cores other work kept busy meanwhile (from
/proc/stat, minus this process's own CPU time), every benchmark's results carry it, and
--wait-quiet waits for a quiet machine before each measurement.
"""
import argparse
import math
import os
import platform
import resource
import sys
import time

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


# ---------------------------------------------------------------------- the foreign_cores guard
BUSY = 0.25          # foreign_cores above this: other work shared the machine, repeat the run


def busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy (hypervisor steal included), /proc/stat."""
    with open("/proc/stat") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:]]
    idle = ticks[3] + ticks[4]                                    # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")    # user .. steal


def own_cpu_seconds():
    """CPU seconds of this process (all its threads) and of its children that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class ForeignCores:
    """``with ForeignCores() as guard: ...``; then ``guard.value``: the cores that OTHER work
    (other processes, hypervisor steal) kept busy meanwhile, on average (0 on a quiet machine;
    1 = one of the 2 cores taken). Counts this process and its finished children as its own,
    so wrap children in it only once they have been waited for. None where /proc/stat is
    missing."""

    value = None

    def __enter__(self):
        try:
            self._start = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is not None:
            wall, busy, own = self._start
            foreign = busy_cpu_seconds() - busy - (own_cpu_seconds() - own)
            self.value = round(max(foreign / max(time.perf_counter() - wall, 1e-9), 0.0), 3)
        return False


def wait_until_quiet(max_wait, window=1.0, threshold=BUSY, file=sys.stderr):
    """Wait (at most ``max_wait`` seconds) for a ``window`` in which foreign_cores stays at or
    below ``threshold``; returns the last window's foreign_cores. 0 seconds: one look only."""
    deadline = time.monotonic() + max_wait
    while True:
        with ForeignCores() as guard:
            time.sleep(window)
        if guard.value is None or guard.value <= threshold or time.monotonic() >= deadline:
            return guard.value
        print(f"note: foreign_cores {guard.value:.2f} > {threshold}: waiting for a quiet machine "
              f"({deadline - time.monotonic():.0f} s left)", file=file, flush=True)


def add_guard_arguments(parser):
    """--wait-quiet SECONDS: before each measurement, wait up to that long for a quiet machine."""
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="before each measurement wait up to SECONDS for 1 s in which other work "
                             f"keeps at most {BUSY} cores busy (default 0: measure at once); every "
                             "result carries foreign_cores either way")


def busy_note(foreign, what="this measurement"):
    """A one-line warning for a foreign_cores above BUSY, else ''."""
    if foreign is not None and foreign > BUSY:
        return (f"warning: other work kept {foreign:.2f} cores busy during {what} (foreign_cores > {BUSY}): "
                f"its times are not clean, repeat it on a quiet machine")
    return ""
