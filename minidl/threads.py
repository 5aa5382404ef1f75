"""BLAS threads chosen by measurement: ``minidl train --threads auto`` (the default).

How many BLAS threads a step should use depends on the model, the batch, the dtype and on
how busy the machine is at the moment, so rather than guess, ``choose_threads`` times it, as
cuDNN's benchmark mode picks a convolution algorithm: a few forward + backward passes of a
scratch copy of the model on random inputs of this process's share of the batch, at 1, 2, ...
up to ``max_threads`` BLAS threads, interleaved, about a quarter of a second in all. It keeps
the fewest threads within ``MARGIN`` (10 %) of the fastest, so that a difference within the
noise picks the same count every time and leaves cores free.

What is timed is the matrix products, the layers between them and an SGD-momentum update of
the copy's parameters (single-threaded NumPy, but a second BLAS thread that spins on a busy
machine takes time from it); the loss is left out. The model, its gradients and
every random generator of the run are untouched (the copy has its own buffers; the inputs
come from a generator of this module), so the measurement changes nothing but the thread
count, which is then set for the whole process.

Why it matters on a small machine: OpenBLAS runs a small product (m n k <= 262,144, e.g.
32 x 64 x 128) on one thread anyway, and a second thread pays off only when its core is
free. With 2 threads and another process busy on one of the 2 cores, the worker thread that
spins between products takes the main thread's core, and each threaded product waits for a
descheduled thread: a step can take several times longer than with 1 (docs/threads.md).

A number (``--threads N``, ``set_blas_threads(N)``) forces the count; ``fit()`` never changes
the process's BLAS threads (a library user's other code shares that pool).
"""
import math
import time

import numpy as np

from .mpi import default_threads, set_blas_threads

MARGIN = 0.10            # more threads must make a pass this much faster to be chosen
BUDGET = 0.25            # seconds the measurement aims at (warm-up included, roughly)
ROUNDS = 3               # interleaved rounds over the candidate counts
MAX_LOOPS = 20           # timed passes per candidate and round, at most


def thread_count(value):
    """The ``threads`` option: "auto" or a positive int (from a flag, TOML int or string)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool):
        raise TypeError("threads is a count, not a flag")
    count = int(value)                    # "2" from the command line, 2 from TOML
    if count != value and str(count) != str(value).strip():
        raise ValueError(f"not a whole number: {value!r}")
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {count}")
    return count


def _controller():
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def choose_threads(model, batch_size, max_threads, *, margin=MARGIN, budget=BUDGET, rounds=ROUNDS):
    """(threads, seconds): the BLAS thread count, from 1 to ``max_threads``, under which a
    forward + backward pass of ``model`` on ``batch_size`` rows, with an SGD-momentum update,
    runs fastest, and the median
    seconds of a pass per count tried ({} when there is nothing to choose from).

    The fewest threads within ``margin`` of the fastest win: count t replaces the current
    choice only if its pass takes at most (1 - margin) of the choice's time. Does not set the
    thread count (the limit in force before is restored); see ``auto_threads``.
    """
    max_threads = int(max_threads)
    if max_threads <= 1 or batch_size < 1:
        return 1, {}
    scratch = model.copy()                               # own params, grads and workspaces
    rng = np.random.default_rng(0)                       # not the run's generators
    x = rng.random((batch_size, model.in_features)).astype(model.dtype)               # (N, D)
    dlogits = (rng.standard_normal((batch_size, model.out_features)) / batch_size).astype(model.dtype)
    velocity = np.zeros_like(scratch.params)

    def passes(count, deadline=math.inf):
        """Seconds of up to ``count`` passes, at least one, none begun after ``deadline``."""
        times = []
        while len(times) < count and (not times or time.perf_counter() < deadline):
            start = time.perf_counter()
            scratch.forward_unchecked(x)
            scratch.backward_unchecked(dlogits)
            np.multiply(velocity, 0.9, out=velocity)     # an SGD-momentum update's passes: a
            np.add(velocity, scratch.grads, out=velocity)    # 2nd BLAS thread spinning meanwhile
            np.subtract(scratch.params, 1e-9 * velocity, out=scratch.params)  # can slow them
            times.append(time.perf_counter() - start)
        return times

    candidates = list(range(1, max_threads + 1))
    controller = _controller()
    with controller.limit(limits=1, user_api="blas"):
        estimate = min(passes(2))                        # the first pass allocates workspaces
    share = budget / (rounds * len(candidates))          # seconds per candidate and round
    loops = max(1, min(MAX_LOOPS, math.floor(share / estimate)))
    per_round = {threads: [] for threads in candidates}
    for r in range(rounds):
        for threads in (candidates if r % 2 == 0 else candidates[::-1]):
            with controller.limit(limits=threads, user_api="blas"):
                passes(1)                                # wakes the pool's threads
                per_round[threads].append(float(np.median(passes(loops, time.perf_counter() + share))))
        fastest = min(per_round[threads][-1] for threads in candidates)
        candidates = [threads for threads in candidates   # twice as slow: out of the running
                      if per_round[threads][-1] <= 2 * fastest]
    seconds = {threads: float(np.median(times)) for threads, times in per_round.items()}
    chosen = candidates[0]
    for threads in candidates[1:]:
        if seconds[threads] <= (1 - margin) * seconds[chosen]:
            chosen = threads
    return chosen, seconds


def auto_threads(model, batch_size, comm=None, max_threads=None):
    """Choose (``choose_threads``) and set the BLAS threads of this process for training
    ``model`` at global batch ``batch_size``; returns (threads, seconds per pass tried).

    Every rank computes its share of the global batch (ceil(batch / ranks) rows) on at most
    ``max_threads`` threads, by default the cores of this node divided among its ranks
    (``minidl.mpi.default_threads``): 2 ranks on 2 cores get 1 thread each without any
    measurement. Each process measures and decides for itself, with no collective.
    """
    size = 1 if comm is None else comm.size
    local = 1 if comm is None else comm.local_size
    limit = default_threads(local) if max_threads is None else max_threads
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:            # the BLAS library's own default (MPIComm has warned)
        return None, {}
    threads, seconds = choose_threads(model, math.ceil(batch_size / size), limit)
    return set_blas_threads(threads, comm), seconds


def describe(threads, seconds):
    """One line for --verbose: what auto chose, and from which times."""
    if threads is None:
        return "BLAS threads: the BLAS library's default (threadpoolctl is not installed)"
    if not seconds:
        return f"BLAS threads: auto: {threads} (1 core per process: nothing to measure)"
    times = ", ".join(f"{count} thread{'s' * (count > 1)} {1e3 * value:.3f} ms"
                      for count, value in seconds.items())
    return (f"BLAS threads: auto: {threads} (forward + backward + update: {times}; more threads "
            f"must be {100 * MARGIN:.0f} % faster)")
