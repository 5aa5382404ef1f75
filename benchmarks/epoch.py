"""Epoch benchmark: a real minidl.fit epoch against the bare GEMMs of the same epoch.

MLP 784-256-256-10 (ReLU, softmax cross-entropy, SGD with momentum 0.9, or --momentum M) trained by
``minidl.fit`` on synthetic 60,000 x 784 pixel-like data with 10 classes, shuffled every
epoch, with a 10,000-sample validation set evaluated at the end of every epoch. A callback
times each epoch and, between epochs, runs the epoch's bare GEMMs (every training step's 8
GEMMs, as benchmarks/step.py defines them, plus the validation forward's 3 per chunk of
4,096 rows), so the two alternate and share the machine's conditions. ratio = median over
epochs of epoch time / bare-GEMM epoch time (paired).

A second, shorter fit under tracemalloc measures what one steady-state step allocates: the
peak of traced memory between two ``on_step_end`` calls minus the memory at the first. It
is measured twice: with NumPy's default ufunc buffer (8,192 elements: every broadcasting or
casting ufunc call, e.g. the bias add, allocates one) and with ``np.setbufsize(16)``, which
leaves the arrays themselves. A third pass attributes the peak to the phases of a step.

    python benchmarks/epoch.py                   # float32 and float64, 1 thread
    python benchmarks/epoch.py --threads 1 2 --json
    python benchmarks/epoch.py --quick           # a smoke run of a few seconds

Each configuration (thread count, dtype) runs in its own process, so its peak RSS is its own.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine                                                   # noqa: E402  (benchmarks/machine.py)
from step import SIZES, Gemms, blas_info, threadpool_limits      # noqa: E402  (benchmarks/step.py)

import minidl                                                     # noqa: E402  (this checkout)
from minidl.loop import Trainer                                   # noqa: E402

VALIDATION_CHUNK = 4096          # the batch size of fit's validation pass (train._evaluate)


def synthetic(samples, dtype, seed):
    """Pixel-like inputs in [0, 1) and uniform labels over 10 classes."""
    rng = np.random.default_rng(seed)
    return rng.random((samples, SIZES[0]), dtype=dtype), rng.integers(0, SIZES[-1], samples)


def peak_rss_mb():
    """The RSS high-water mark (VmHWM), or the process's maximum RSS where /proc is missing."""
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class BareEpoch:
    """The GEMMs of one epoch of fit: each training batch's 8, the validation forward's 3."""

    def __init__(self, model, X, samples, batch, val_samples):
        rng = np.random.default_rng(1)
        sizes = [batch] * (samples // batch) + ([samples % batch] if samples % batch else [])
        self.steps = [(Gemms(model, size, rng), X[:size], size) for size in sorted(set(sizes))]
        self.counts = {size: sizes.count(size) for size in set(sizes)}
        chunks = [min(VALIDATION_CHUNK, val_samples - start)
                  for start in range(0, val_samples, VALIDATION_CHUNK)]
        self.weights = [layer.W for layer in model.dense_layers]
        self.val = [(X[:size], [np.empty((size, W.shape[0]), model.dtype) for W in self.weights])
                    for size in chunks]

    def __call__(self):
        clock = time.perf_counter
        start = clock()
        for gemms, x, size in self.steps:
            for _ in range(self.counts[size]):
                gemms(x, None, clock)
        for x, outs in self.val:
            for W, out in zip(self.weights, outs):
                x = np.matmul(x, W.T, out=out)                     # (n, out)
        return clock() - start


class EpochClock:
    """Callback: times every epoch of fit and runs the bare-GEMM epoch in between."""

    def __init__(self, bare):
        self.bare, self.epochs, self.gemms = bare, [], []
        self.mark = None

    def on_train_begin(self, run):
        self.mark = time.perf_counter()

    def on_epoch_end(self, run):
        self.epochs.append(time.perf_counter() - self.mark)          # incl. validation, shuffle
        self.gemms.append(self.bare())
        self.mark = time.perf_counter()


def time_epochs(dtype, args):
    X, y = synthetic(args.samples, dtype, 0)
    X_val, y_val = synthetic(args.val, dtype, 1)
    model = minidl.MLP(list(SIZES), activation="relu", dtype=dtype, seed=0)
    optimizer = minidl.SGD(model, lr=0.01, momentum=args.momentum)
    clock = EpochClock(BareEpoch(model, X, args.samples, args.batch, args.val))
    minidl.fit(model, "cross_entropy", optimizer, X, y, epochs=args.epochs, batch_size=args.batch,
               validation_data=(X_val, y_val), callbacks=[clock], comm=None, seed=0)
    epochs, gemms = clock.epochs[1:], clock.gemms[1:]          # the first epoch warms up
    return {"epoch_s": statistics.median(epochs), "gemm_epoch_s": statistics.median(gemms),
            "ratio": statistics.median(e / g for e, g in zip(epochs, gemms)),
            "ratio_min": min(e / g for e, g in zip(epochs, gemms)),
            "ratio_max": max(e / g for e, g in zip(epochs, gemms)),
            "epochs_timed": len(epochs), "data_mb": (X.nbytes + X_val.nbytes) / 2**20}


class StepPeaks:
    """Callback: the tracemalloc peak above the starting level between two on_step_end calls."""

    def __init__(self):
        self.peaks = []                                    # (epoch, batch index, bytes)
        self.level = None

    def on_step_end(self, run):
        current, peak = tracemalloc.get_traced_memory()
        if self.level is not None:
            self.peaks.append((run.epoch, run.batch - 1, peak - self.level))
        tracemalloc.reset_peak()
        self.level = tracemalloc.get_traced_memory()[0]


def steady(peaks, batches_per_epoch):
    """Peaks of full-size steps after the first epoch, away from epoch ends (validation,
    the shuffle and the short last batch reallocate workspaces there)."""
    return [p for epoch, batch, p in peaks if epoch >= 1 and 2 <= batch < batches_per_epoch - 2]


def step_allocations(dtype, args):
    """Largest allocation of a steady-state fit step, with default and minimal ufunc buffers."""
    X, y = synthetic(args.alloc_samples, dtype, 0)
    X_val, y_val = synthetic(args.alloc_samples // 8, dtype, 1)
    batches = -(-args.alloc_samples // args.batch)
    result = {"where": {}}
    for suffix, bufsize in (("", None), ("_small_ufunc_buffer", 16)):
        model = minidl.MLP(list(SIZES), dtype=dtype, seed=0)
        optimizer = minidl.SGD(model, lr=0.01, momentum=args.momentum)
        peaks = StepPeaks()
        previous = np.getbufsize()
        if bufsize:
            np.setbufsize(bufsize)                  # diagnostic only: the timed runs keep NumPy's default
        try:
            tracemalloc.start()
            minidl.fit(model, "cross_entropy", optimizer, X, y, epochs=2, batch_size=args.batch,
                       validation_data=(X_val, y_val), callbacks=[peaks], comm=None)
            tracemalloc.stop()
            result["step_alloc_bytes" + suffix] = max(steady(peaks.peaks, batches))
            for name, size in phase_allocations(dtype, X, y, X_val, y_val, args).items():
                result["where"].setdefault(name, {})["bytes" + suffix] = size
        finally:
            tracemalloc.stop()
            np.setbufsize(previous)
    return result


def phase_allocations(dtype, X, y, X_val, y_val, args):
    """{phase: largest allocation} over steady-state steps: the library's phases and fit's own."""
    model = minidl.MLP(list(SIZES), dtype=dtype, seed=0)
    optimizer = minidl.SGD(model, lr=0.01, momentum=args.momentum)
    found = {}

    def traced(name, function):
        def wrapper(*a, **k):
            level = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            result = function(*a, **k)
            if counting[0]:
                found[name] = max(found.get(name, 0), tracemalloc.get_traced_memory()[1] - level)
            return result
        return wrapper

    class Phases:
        def on_step_end(self, run):          # count only steady-state steps (see steady())
            counting[0] = run.epoch >= 1 and 1 <= run.batch < batches - 3

    counting = [False]
    batches = -(-len(X) // args.batch)
    # the trainer that minidl.fit builds, built here so that its phases can be wrapped
    trainer = Trainer(model, "cross_entropy", optimizer, X, y, epochs=2, batch_size=args.batch,
                      validation_data=(X_val, y_val), callbacks=[Phases()], comm=None)
    model.forward_unchecked = traced("forward (model.forward_unchecked)", model.forward_unchecked)
    model.backward_unchecked = traced("backward (model.backward_unchecked)", model.backward_unchecked)
    optimizer.step = traced("update (optimizer.step)", optimizer.step)
    trainer.gather = traced("fit's batch gather (Trainer.gather)", trainer.gather)
    trainer.count_correct = traced("fit's accuracy count (Trainer.count_correct)", trainer.count_correct)
    trainer.loss_fn = traced("loss (Trainer.loss_fn)", trainer.loss_fn)
    try:
        tracemalloc.start()
        trainer.fit()
    finally:
        tracemalloc.stop()
    return found


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--batch", type=int, default=128)
    machine.add_momentum_argument(parser)
    parser.add_argument("--samples", type=int, default=60000, help="training samples (60000)")
    parser.add_argument("--val", type=int, default=10000, help="validation samples (10000)")
    parser.add_argument("--epochs", type=int, default=6,
                        help="epochs per fit; the first is not timed (default 6)")
    parser.add_argument("--no-alloc", dest="alloc", action="store_false",
                        help="skip the tracemalloc allocation check")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4,096 samples, 3 epochs")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    machine.add_guard_arguments(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.val, args.epochs = 4096, 1024, 3
    args.alloc_samples = min(args.samples, 40 * args.batch)
    if min(args.threads + [args.batch, args.samples, args.val]) < 1 or args.epochs < 2:
        parser.error("--threads, --batch, --samples, --val must be positive and --epochs >= 2")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not args.child:                   # one process per configuration: a clean peak RSS each
        return conduct(args, sys.argv[1:] if argv is None else list(argv))
    run_configuration(args)


def conduct(args, argv):
    if not args.json:
        print(f"minidl.fit epoch, MLP {'-'.join(map(str, SIZES))}, SGD momentum {args.momentum}, batch "
              f"{args.batch}, {args.samples} x {SIZES[0]} synthetic samples shuffled every epoch, "
              f"{args.val} validation samples")
        print(f"{machine.describe()}; {args.epochs - 1} timed epochs per configuration, each "
              f"followed by its bare GEMMs; medians")
    for threads in args.threads:
        for dtype in args.dtype:
            command = [sys.executable, str(Path(__file__).resolve()), *argv, "--child",
                       "--threads", str(threads), "--dtype", dtype]
            done = subprocess.run(command, text=True, stdout=None if not args.json else subprocess.PIPE)
            if done.returncode != 0:
                sys.exit(f"epoch benchmark failed for {dtype}, {threads} thread(s)")
            if args.json:
                print(done.stdout, end="", flush=True)


def run_configuration(args):
    for threads in args.threads:
        with threadpool_limits(limits=threads, user_api="blas"):
            blas = blas_info()
            if not blas or any(lib["num_threads"] != threads for lib in blas):
                sys.exit(f"could not set the BLAS thread count to {threads}: {blas}")
            for dtype in args.dtype:
                machine.wait_until_quiet(args.wait_quiet)
                with machine.ForeignCores() as guard:
                    epochs = time_epochs(dtype, args)
                row = {"impl": "minidl", "dtype": dtype, "threads": threads, "batch": args.batch,
                       "samples": args.samples, "val_samples": args.val, "momentum": args.momentum, **epochs,
                       "foreign_cores": guard.value, "peak_rss_mb": peak_rss_mb()}
                if args.alloc:
                    row.update(step_allocations(dtype, args))
                row.update(loadavg=os.getloadavg()[0], numpy=np.__version__, blas=blas)
                if args.json:
                    print(json.dumps(row), flush=True)
                    continue
                print(f"\n{dtype}, {threads} BLAS thread(s): epoch {row['epoch_s']:.3f} s, bare GEMMs "
                      f"{row['gemm_epoch_s']:.3f} s, ratio {row['ratio']:.2f} [{row['ratio_min']:.2f}, "
                      f"{row['ratio_max']:.2f}] (peak RSS "
                      f"{row['peak_rss_mb']:.0f} MB, data {row['data_mb']:.0f} MB); foreign_cores "
                      f"{row['foreign_cores']}")
                if machine.busy_note(row["foreign_cores"]):
                    print(machine.busy_note(row["foreign_cores"], "these epochs"))
                if args.alloc:
                    print(f"  largest allocation in a steady-state step: {row['step_alloc_bytes']:,} B; "
                          f"with np.setbufsize(16): {row['step_alloc_bytes_small_ufunc_buffer']:,} B")
                    print(f"    {'where (largest per phase)':40} {'default':>10}   {'setbufsize(16)':>14}")
                    for name, sizes in sorted(row["where"].items(), key=lambda item: -item[1]["bytes"]):
                        print(f"    {name:40} {sizes['bytes']:>10,} B {sizes['bytes_small_ufunc_buffer']:>14,} B")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
