"""Training-step benchmark: one minidl SGD step against the bare GEMMs it contains.

For an MLP 784-256-256-10 (ReLU, softmax cross-entropy, SGD lr 0.01 with momentum 0.9, or
--momentum M; 0 is the plain SGD of shared/reference/performance.md) this times

    step  the real library path: model.forward_unchecked, loss_kernel, model.backward_unchecked, optimizer.step
    gemm  exactly the matrix multiplies of that step (same shapes, dtypes and transposed
          views, preallocated outputs): 3 forward, dW of every layer, dx of all but the first

and reports their ratio: what a step costs above its GEMM-only lower bound. The two are
measured in interleaved rounds (step block, GEMM block, then the other order), so machine
noise hits both alike. Times are medians over rounds of the per-round medians; the ratio is
the median over rounds of the per-round ratio step / gemm (paired, so a load change between
rounds cancels), hence close to but not exactly step_ms / gemm_ms.

    python benchmarks/step.py                     # table, 1 and 2 BLAS threads
    python benchmarks/step.py --threads 1 --json  # one JSON object per line
    python benchmarks/step.py --quick             # a smoke run of a few seconds
"""
import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    sys.exit('benchmarks/step.py needs threadpoolctl to set the BLAS thread count: '
             'pip install -e ".[bench]"')

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # measure this checkout
from minidl import MLP, SGD                                        # noqa: E402
from minidl.losses import loss_kernel                              # noqa: E402

import machine                                                     # noqa: E402  (benchmarks/machine.py)

SIZES = (784, 256, 256, 10)
PHASES = ("forward", "loss", "backward", "update")


def blas_info():
    """threadpoolctl's description of every BLAS library loaded (numpy's OpenBLAS here)."""
    return [{key: lib.get(key) for key in ("internal_api", "version", "architecture",
                                            "threading_layer", "num_threads")}
            for lib in threadpool_info() if lib["user_api"] == "blas"]


def empty_aligned_like(array):
    """An empty array like ``array`` at the same address modulo 64 (cache-line alignment)."""
    raw = np.empty(array.nbytes + 64, np.uint8)
    shift = (array.ctypes.data - raw.ctypes.data) % 64
    return raw[shift:shift + array.nbytes].view(array.dtype).reshape(array.shape)


class Step:
    """One training step through the library's real (unchecked) code path."""

    def __init__(self, dtype, momentum, sizes=SIZES):
        self.model = MLP(list(sizes), activation="relu", dtype=dtype, seed=0)
        self.optimizer = SGD(self.model, lr=0.01, momentum=momentum)
        self.loss = loss_kernel("cross_entropy")
        self.value = None

    def __call__(self, x, y, clock):
        """Run one step on (x, y); return the clock readings around its 4 phases."""
        t0 = clock()
        logits = self.model.forward_unchecked(x)                            # (N, C), caches activations
        t1 = clock()
        self.value, dlogits = self.loss(logits, y, x.shape[0])     # (N, C)
        t2 = clock()
        self.model.backward_unchecked(dlogits)                              # overwrites model.grads
        t3 = clock()
        self.optimizer.step()                                      # in-place on model.params
        return t0, t1, t2, t3, clock()


class Gemms:
    """The GEMMs of Step with nothing else: same shapes, dtypes and memory layouts.

    Reads the model's live weights W (out, in); writes only into its own preallocated arrays.
    Like MLP.backward_unchecked it skips the first layer's dx, which nobody needs.
    """

    def __init__(self, model, batch, rng):
        dense, dtype = model.dense_layers, model.dtype
        self.weights = [layer.W for layer in dense]                          # (out, in) views
        self.outs = [np.empty((batch, layer.out_features), dtype) for layer in dense]
        grads = empty_aligned_like(model.grads)      # dW: views at the offsets of model.grads
        self.dW = [grads[start:stop].reshape(shape)                          # (out, in)
                   for name, start, stop, shape in model.layout() if name.endswith(".weight")]
        self.dx = [None] + [np.empty((batch, layer.in_features), dtype) for layer in dense[1:]]
        self.dlogits = (rng.standard_normal((batch, model.out_features)) / batch).astype(dtype)

    def __call__(self, x, y, clock):
        t0 = clock()
        inputs = []
        for W, out in zip(self.weights, self.outs):
            inputs.append(x)
            x = np.matmul(x, W.T, out=out)                         # (N, out)
        t1 = clock()
        dy = self.dlogits
        for i in range(len(self.weights) - 1, -1, -1):
            np.matmul(dy.T, inputs[i], out=self.dW[i])             # dW (out, in)
            if i > 0:
                dy = np.matmul(dy, self.weights[i], out=self.dx[i])  # dx (N, in)
        return t0, t1, clock()


def measure(dtype, batch, rounds, loops, warmup, slices, momentum, sizes=SIZES):
    """Medians (ms) of step, GEMM-only and per-phase times, the paired step/GEMM ratio and its
    spread over rounds (ratio_q1, ratio_q3), and foreign_cores meanwhile."""
    rng = np.random.default_rng(0)
    X = rng.random((slices * batch, sizes[0]), dtype=dtype)       # pixel-like inputs in [0, 1)
    Y = rng.integers(0, sizes[-1], slices * batch)
    batches = [(X[i * batch:(i + 1) * batch], Y[i * batch:(i + 1) * batch]) for i in range(slices)]
    step = Step(dtype, momentum, sizes)
    gemms = Gemms(step.model, batch, rng)
    clock = time.perf_counter

    def block(kernel, count):
        readings = []
        for i in range(count):
            x, y = batches[i % slices]
            readings.append(kernel(x, y, clock))
        return readings

    block(step, warmup)                                            # workspaces, caches, BLAS
    block(gemms, warmup)
    per_round = {key: [] for key in ("step", "gemm", "gemm_forward", "gemm_backward") + PHASES}
    ratios = []
    gc.collect()
    gc.disable()
    guard = machine.ForeignCores().__enter__()
    try:
        for r in range(rounds):
            order = (step, gemms) if r % 2 == 0 else (gemms, step)
            results = {kernel: block(kernel, loops) for kernel in order}
            s = results[step]
            per_round["step"].append(statistics.median(t[-1] - t[0] for t in s))
            for k, phase in enumerate(PHASES):
                per_round[phase].append(statistics.median(t[k + 1] - t[k] for t in s))
            g = results[gemms]
            per_round["gemm"].append(statistics.median(t[2] - t[0] for t in g))
            per_round["gemm_forward"].append(statistics.median(t[1] - t[0] for t in g))
            per_round["gemm_backward"].append(statistics.median(t[2] - t[1] for t in g))
            ratios.append(per_round["step"][-1] / per_round["gemm"][-1])
    finally:
        guard.__exit__()
        gc.enable()
    if not np.isfinite(step.value):
        print(f"warning: the loss became {step.value} ({dtype}, batch {batch}): timings of "
              f"non-finite arithmetic are not representative", file=sys.stderr)
    medians = {key: 1e3 * statistics.median(values) for key, values in per_round.items()}
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return dict(medians, ratio=statistics.median(ratios), ratio_q1=quartiles[0], ratio_q3=quartiles[2],
                foreign_cores=guard.value)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="BLAS thread counts to run (default: 1 2)")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: 32 128 512)")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--loops", type=int, default=11,
                        help="timed steps (and GEMM sets) per round (default 11)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="the MLP's layer widths (default 784,256,256,10; minidl train's default "
                             "model on digits is 64,128,10)")
    machine.add_guard_arguments(parser)
    machine.add_momentum_argument(parser, "SGD momentum (default 0.9; 0: plain SGD, whose update "
                                          "is 2 passes, not 4)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run of a few seconds: batch 32 only (unless --batch), "
                             "2 rounds of 2 loops; the timings are rough")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    args.slices = 16                       # distinct mini-batches cycled through
    if args.quick:                         # small even when BLAS threads fight other processes
        args.rounds, args.loops, args.warmup, args.slices = 2, 2, 1, 2
    args.batch = args.batch or ([32] if args.quick else [32, 128, 512])
    try:
        args.sizes = tuple(int(width) for width in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes takes comma-separated layer widths, got {args.sizes!r}")
    if min(args.threads + args.batch) < 1 or min(args.rounds, args.loops) < 1:
        parser.error("--threads, --batch, --rounds and --loops must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    common = {"numpy": np.__version__, "python": platform.python_version(), "momentum": args.momentum,
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    if not args.json:
        print(f"minidl training step, MLP {'-'.join(map(str, args.sizes))}, ReLU, softmax "
              f"cross-entropy, SGD lr 0.01 momentum {args.momentum}")
        print(f"{machine.describe()}, OPENBLAS_CORETYPE={common['openblas_coretype'] or '(unset)'}")
        print(f"{args.rounds} interleaved rounds x {args.loops} loops; times are medians in ms; "
              f"ratio = median per-round step / gemm; overheads = phase time minus its "
              f"GEMMs, in us")
    for threads in args.threads:
        with threadpool_limits(limits=threads, user_api="blas"):
            blas = blas_info()
            if not blas or any(lib["num_threads"] != threads for lib in blas):
                sys.exit(f"could not set the BLAS thread count to {threads}: {blas}")
            if not args.json:
                libs = ", ".join(f"{b['internal_api']} {b['version']} ({b['threading_layer']}, "
                                 f"arch {b['architecture']})" for b in blas)
                print(f"\nBLAS: {libs}; threads = {threads}")
                print(f"{'dtype':8} {'thr':>3} {'batch':>5} {'step_ms':>8} {'gemm_ms':>8} "
                      f"{'ratio':>6} {'[q1, q3]':>13} | {'fwd+':>6} {'loss':>6} {'bwd+':>6} {'update':>6} "
                      f"| {'foreign':>7}")
            for dtype in args.dtype:
                for batch in args.batch:
                    machine.wait_until_quiet(args.wait_quiet)
                    t = measure(dtype, batch, args.rounds, args.loops, args.warmup, args.slices,
                                args.momentum, args.sizes)
                    row = {"dtype": dtype, "threads": threads, "batch": batch,
                           "step_ms": t["step"], "gemm_ms": t["gemm"],
                           "ratio": t["ratio"], "ratio_q1": t["ratio_q1"], "ratio_q3": t["ratio_q3"],
                           "foreign_cores": t["foreign_cores"], "sizes": list(args.sizes),
                           "forward_ms": t["forward"], "loss_ms": t["loss"],
                           "backward_ms": t["backward"], "update_ms": t["update"],
                           "gemm_forward_ms": t["gemm_forward"],
                           "gemm_backward_ms": t["gemm_backward"],
                           "rounds": args.rounds, "loops": args.loops, "blas": blas,
                           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                           "loadavg": os.getloadavg()[0],   # busy neighbours make timings noisy
                           **common}
                    if args.json:
                        print(json.dumps(row), flush=True)
                    else:
                        over = [1e3 * (t["forward"] - t["gemm_forward"]), 1e3 * t["loss"],
                                1e3 * (t["backward"] - t["gemm_backward"]), 1e3 * t["update"]]
                        print(f"{dtype:8} {threads:>3} {batch:>5} {t['step']:8.3f} "
                              f"{t['gemm']:8.3f} {row['ratio']:6.2f} [{t['ratio_q1']:.2f}, {t['ratio_q3']:.2f}] | "
                              + " ".join(f"{v:6.0f}" for v in over)
                              + f" | {t['foreign_cores'] if t['foreign_cores'] is not None else '-':>7}",
                              flush=True)
                    note = machine.busy_note(t["foreign_cores"], f"{dtype} batch {batch}")
                    if note:
                        print(note, file=sys.stderr, flush=True)
    if not args.json:
        print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
