"""The watchdog: a job whose collective is stuck ends with a message instead of hanging.

MPI's collectives have no timeout: a rank that is frozen (SIGSTOP, a stuck NFS read, a
swapping node), lost, or that exited before MPI started leaves every other rank waiting
forever. So MPIComm times each collective it waits in:

    Watchdog        a thread that watches the collective this rank waits in; past the
                    timeout it prints one line (label, call number, seconds waited) and
                    calls MPI_Abort, which makes the launcher end every rank
    starting_mpi    MPI_Init holds Python's lock, so no thread can time it: a forked child
                    waits instead and, if MPI has not started in time, says so and kills
                    this process, which the launcher sees as a failed rank

The timeout (seconds) comes from, in order: fit(collective_timeout=...), `minidl train
--collective-timeout` (or the TOML key), the environment variable MINIDL_COLLECTIVE_TIMEOUT,
and DEFAULT_TIMEOUT. It must exceed the longest time one rank may legitimately wait for
another: a step, a validation pass, rank 0 writing a checkpoint.
"""
import contextlib
import os
import signal
import sys
import threading
import time

DEFAULT_TIMEOUT = 600.0
ENVIRONMENT_VARIABLE = "MINIDL_COLLECTIVE_TIMEOUT"
EXIT_TIMEOUT = 124                 # the exit code of timeout(1), for a job that timed out


def check_timeout(name, value):
    """``value`` as a positive finite number of seconds, or a ValueError naming ``name``."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if not 0 < seconds < float("inf") or isinstance(value, bool):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def default_timeout(environ=None):
    """MINIDL_COLLECTIVE_TIMEOUT if set (checked), else DEFAULT_TIMEOUT."""
    environ = os.environ if environ is None else environ
    if environ.get(ENVIRONMENT_VARIABLE, "").strip() == "":
        return DEFAULT_TIMEOUT
    return check_timeout(ENVIRONMENT_VARIABLE, environ[ENVIRONMENT_VARIABLE])


class Watchdog:
    """Watches the collective this rank waits in; past ``timeout`` seconds, ``abort()``.

    ``waiting(label, call)`` marks the start of a wait and ``done()`` its end; the thread
    wakes a few times per timeout, so a wait is caught between 1 and 1.25 timeouts.
    """

    def __init__(self, rank, size, timeout, abort):
        self.rank, self.size, self.timeout, self.abort = rank, size, timeout, abort
        self._wait = None                                  # (label, call, monotonic start)
        threading.Thread(target=self._watch, name="minidl-watchdog", daemon=True).start()

    def waiting(self, label, call):
        self._wait = (label, call, time.monotonic())

    def done(self):
        self._wait = None

    def _watch(self):
        while True:
            time.sleep(min(self.timeout / 4, 5.0))
            wait = self._wait
            if wait is not None and time.monotonic() - wait[2] > self.timeout:
                label, call, started = wait
                sys.stderr.write(
                    f"minidl: rank {self.rank} of {self.size} waited {time.monotonic() - started:.0f} s "
                    f"in collective {label!r} (its call {call}; for 'gradients' that is step {call}) "
                    f"for ranks that never came: one is frozen, lost or far slower. Collective "
                    f"timeout {self.timeout:g} s (--collective-timeout, {ENVIRONMENT_VARIABLE}); "
                    f"aborting all ranks\n")
                sys.stderr.flush()
                time.sleep(1.0)           # let the launcher forward the line before the abort ends it
                self.abort(EXIT_TIMEOUT)
                return


@contextlib.contextmanager
def starting_mpi(timeout, rank):
    """Kill this process, with one line on stderr, if the block (MPI_Init) outlasts ``timeout``.
    Nothing to guard once MPI has started."""
    MPI = sys.modules.get("mpi4py.MPI")
    if not hasattr(os, "fork") or (MPI is not None and MPI.Is_initialized()):
        yield
        return
    parent = os.getpid()
    child = os.fork()
    if child == 0:                                         # the child only sleeps and, maybe, kills
        try:
            time.sleep(timeout)
            os.write(2, f"minidl: rank {rank}: MPI did not start within {timeout:g} s: another rank "
                        f"probably exited before MPI_Init (a bad flag on one rank?) or cannot reach "
                        f"this one; ending this rank ({ENVIRONMENT_VARIABLE})\n".encode())
            os.kill(parent, signal.SIGKILL)
        finally:
            os._exit(0)
    try:
        yield
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
