"""Where a step's time goes at 1 and 2 BLAS threads, and what `--threads auto` picks.

For an MLP (default 784-256-256-10; `minidl train`'s own model is 64-128-10 on digits) this
times, at each BLAS thread count from 1 to --threads (default: the cores), in interleaved rounds
(the thread counts alternate, the order reversed every round):

    per GEMM   each of the step's GEMMs alone (benchmarks/step.py's shapes and layouts):
               fwd0.. (x @ W.T), dW2.. (dy.T @ x), dx2.. (dy @ W), in backprop order
    per phase  one step of the library's real path, split as step.py splits it: forward,
               loss, backward, update (SGD momentum 0.9)
    auto       minidl.threads.choose_threads on the same model and batch: its pass times and
               the count it picks

Each time is the median over rounds of the per-round medians; `speedup` = time at 1 thread /
time at t threads, the median over rounds of the per-round ratio, with its range [min, max].
Every row carries foreign_cores: the cores other work kept busy meanwhile (the guard; above
0.25 the row is not clean). --neighbour starts one busy process (a Python spin loop) for the
measurement, to show what a second thread costs when one of the cores is taken.

    python benchmarks/threads.py --batch 32 --dtype float64
    python benchmarks/threads.py --sizes 64,128,10 --batch 32 --dtype float64     # minidl train's default
    python benchmarks/threads.py --neighbour --json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

try:
    from threadpoolctl import ThreadpoolController
except ImportError:
    sys.exit('benchmarks/threads.py needs threadpoolctl: pip install -e ".[bench]"')

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # measure this checkout
import machine                                                     # noqa: E402
from step import PHASES, SIZES, Gemms, Step                        # noqa: E402
from minidl.threads import choose_threads                          # noqa: E402


def gemm_kernels(model, batch, rng):
    """{label: function} of every GEMM of a step, each alone, on the shapes step.py uses."""
    g = Gemms(model, batch, rng)
    x0 = rng.random((batch, model.in_features)).astype(model.dtype)
    inputs, x = [], x0
    for W, out in zip(g.weights, g.outs):                 # the forward's activations, once
        inputs.append(x)
        x = np.matmul(x, W.T, out=out).copy()
    kernels = {}
    for i, (W, out) in enumerate(zip(g.weights, g.outs)):
        kernels[f"fwd{i} {inputs[i].shape[0]}x{W.shape[1]}@{W.shape[1]}x{W.shape[0]}"] = \
            (lambda a=inputs[i], w=W, o=out: np.matmul(a, w.T, out=o))
    dy = g.dlogits
    for i in range(len(g.weights) - 1, -1, -1):
        kernels[f"dW{i} {dy.shape[1]}x{dy.shape[0]}@{inputs[i].shape[0]}x{inputs[i].shape[1]}"] = \
            (lambda d=dy, a=inputs[i], o=g.dW[i]: np.matmul(d.T, a, out=o))
        if i > 0:
            kernels[f"dx{i} {dy.shape[0]}x{dy.shape[1]}@{g.weights[i].shape[0]}x{g.weights[i].shape[1]}"] = \
                (lambda d=dy, w=g.weights[i], o=g.dx[i]: np.matmul(d, w, out=o))
            dy = (rng.standard_normal((batch, g.weights[i].shape[1])) / batch).astype(model.dtype)
    return kernels


def median_time(function, loops):
    times = []
    for _ in range(loops):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(args, dtype, batch, controller):
    """Rows: per GEMM and per phase at each thread count, then auto's choice."""
    counts = list(range(1, args.threads + 1))
    rng = np.random.default_rng(0)
    step = Step(dtype, 0.9, args.sizes)
    X = rng.random((batch, args.sizes[0])).astype(dtype)
    Y = rng.integers(0, args.sizes[-1], batch)
    kernels = gemm_kernels(step.model, batch, rng)
    clock = time.perf_counter

    def phases():
        readings = [step(X, Y, clock) for _ in range(args.loops)]
        return [statistics.median(r[k + 1] - r[k] for r in readings) for k in range(len(PHASES))]

    per_round = {}                                       # (what, threads) -> [seconds per round]
    with machine.ForeignCores() as guard:
        for r in range(args.rounds):
            for threads in (counts if r % 2 == 0 else counts[::-1]):
                with controller.limit(limits=threads, user_api="blas"):
                    step(X, Y, clock)                    # wakes the pool, fills workspaces
                    for label, kernel in kernels.items():
                        kernel()
                        per_round.setdefault((label, threads), []).append(median_time(kernel, args.loops))
                    for phase, seconds in zip(PHASES, phases()):
                        per_round.setdefault((phase, threads), []).append(seconds)
        chosen, auto_seconds = choose_threads(step.model, batch, args.threads)
    rows = []
    for label in list(kernels) + list(PHASES):
        base = per_round[(label, 1)]
        for threads in counts:
            times = per_round[(label, threads)]
            ratios = [b / t for b, t in zip(base, times)]
            rows.append({"what": label, "kind": "phase" if label in PHASES else "gemm", "dtype": dtype,
                         "batch": batch, "threads": threads, "us": 1e6 * statistics.median(times),
                         "speedup": statistics.median(ratios), "speedup_min": min(ratios),
                         "speedup_max": max(ratios), "foreign_cores": guard.value,
                         "neighbour": args.neighbour, "sizes": list(args.sizes)})
    rows.append({"what": "auto", "kind": "auto", "dtype": dtype, "batch": batch, "threads": chosen,
                 "pass_us": {str(t): 1e6 * s for t, s in auto_seconds.items()},
                 "foreign_cores": guard.value, "neighbour": args.neighbour, "sizes": list(args.sizes)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="layer widths (784,256,256,10)")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="up to this many (the cores)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loops", type=int, default=11)
    parser.add_argument("--neighbour", action="store_true",
                        help="run one busy process (a spin loop) beside the measurement")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    machine.add_guard_arguments(parser)
    args = parser.parse_args(argv)
    args.sizes = tuple(int(width) for width in args.sizes.split(","))
    if min(args.batch + [args.threads, args.rounds, args.loops]) < 1:
        parser.error("--batch, --threads, --rounds and --loops must be positive")
    controller = ThreadpoolController()
    if not args.json:
        print(f"MLP {'-'.join(map(str, args.sizes))}; {machine.describe()}; {args.rounds} interleaved "
              f"rounds x {args.loops} loops; times: medians in us; speedup = 1 thread / t threads, "
              f"median [min, max] over rounds" + ("; with a busy neighbour process" if args.neighbour else ""))
    neighbour = None
    if args.neighbour:
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for dtype in args.dtype:
            for batch in args.batch:
                machine.wait_until_quiet(0 if args.neighbour else args.wait_quiet)
                rows = measure(args, dtype, batch, controller)
                if args.json:
                    for row in rows:
                        print(json.dumps(row), flush=True)
                    continue
                print(f"\n{dtype}, batch {batch}, foreign_cores {rows[0]['foreign_cores']}")
                for row in rows[:-1]:
                    if row["threads"] == 1:
                        line = f"  {row['what']:24} {row['us']:9.1f}"
                    else:
                        line += (f" | {row['threads']} thr {row['us']:9.1f}  x{row['speedup']:.2f} "
                                 f"[{row['speedup_min']:.2f}, {row['speedup_max']:.2f}]")
                    if row["threads"] == args.threads:
                        print(line)
                auto = rows[-1]
                print(f"  auto picks {auto['threads']}: pass " + ", ".join(
                    f"{t} thr {us:.1f} us" for t, us in auto["pass_us"].items()), flush=True)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


if __name__ == "__main__":
    main()
