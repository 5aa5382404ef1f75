"""Data-parallel scaling benchmark: minidl's real fit() loop on 1 rank x 1 thread, 1 rank x 2
threads and 2 ranks x 1 thread (mpiexec, launched by this script).

For the MLP 784-256-256-10 (ReLU, softmax cross-entropy, SGD momentum 0.9 or --momentum M) in float32 and
float64 at global batch 128 and 512 it reports

    step_ms            median time of one optimizer step of fit() (callbacks timestamp steps)
    speedup            step_ms(1 rank x 1 thread) / step_ms
    efficiency         speedup / cores used (ranks x threads), i.e. speedup / 2 here
    allreduce_share    2 ranks: the in-step gradient allreduce / step_ms
    allreduce_vs_bare  2 ranks: the in-step allreduce / a bare mpi4py Allreduce of a buffer of
                       the same size and dtype; both timed after a barrier, in the same run
    allreduce_vs_cold_bare   the same, against a bare Allreduce that first waits while 32 MB
                       of other data pass through the caches, as the step's compute does: the
                       bare call repeated back to back finds MPI's buffers in cache, the step
                       does not
    wait_ms            2 ranks: time the faster rank waits for the slower one before the
                       allreduce (the barrier that the allreduce timing starts after)
    gemm_ms            the bare GEMMs of one step of this configuration (each rank: its share
                       of the global batch, all ranks starting together after a barrier, the
                       slowest rank's time), with step.py's GEMMs
    gemm_efficiency    gemm_ms(1 rank x 1 thread) / (cores used x gemm_ms): how well the
                       machine itself runs the step's matrix products on 2 cores at this moment,
                       the ceiling for efficiency; efficiency_of_ceiling = efficiency / it
    vs_threads         2 ranks: step_ms(1 rank x 2 threads) / step_ms (> 1: MPI beats threads)
    foreign_cores      cores busy with OTHER work (other processes, hypervisor steal) while
                       this configuration ran, averaged over the run (Linux /proc/stat): well
                       above 0 means the times are not clean and should be measured again

Configurations run in interleaved rounds (1x1, 1x2, 2x1, then again), so machine noise hits
all alike; each number is the median over rounds of the per-round medians.

With every rank on one node, the gradient allreduce goes through minidl's shared-memory path
(minidl.shared_memory); MINIDL_SHARED_MEMORY=0 python benchmarks/scaling.py measures the
MPI_Allreduce path instead.

    python benchmarks/scaling.py                 # a table
    python benchmarks/scaling.py --json          # one JSON object per line
    python benchmarks/scaling.py --quick         # a smoke run of a few seconds
    python benchmarks/scaling.py --cost-model    # fit a latency-bandwidth model of the allreduce
    python benchmarks/scaling.py --cost-model --mpiexec-args="-ppn 1 -hosts n1,n2"   # 2 nodes
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                                     # measure this checkout
sys.path.insert(0, str(REPO / "benchmarks"))
from step import Gemms                                            # noqa: E402  (benchmarks/step.py)
import machine                                                    # noqa: E402  (benchmarks/machine.py)
from minidl import MLP, SGD, fit                                  # noqa: E402
from minidl.comm import MPIComm, default_comm                     # noqa: E402
from minidl.mpi import set_blas_threads                           # noqa: E402
from minidl.parallel import shard                                 # noqa: E402

SIZES = (784, 256, 256, 10)
CONFIGS = ((1, 1), (1, 2), (2, 1))                                # (ranks, threads)
COST_MODEL_ELEMENTS = (1, 16, 256, 4096, 16384, 65536, 134661, 269322)   # float64 elements


class StepClock:
    """Callback: the time of every on_step_end, so consecutive differences are step times."""

    def __init__(self):
        self.stamps = []

    def on_step_end(self, run):
        self.stamps.append(time.perf_counter())


class AllreduceClock(MPIComm):
    """MPIComm that times the gradient allreduce of each step, after a barrier (so waiting
    for a slower rank is not counted as communication)."""

    def __init__(self):
        super().__init__()
        self.seconds, self.waits = [], []

    def _allreduce_sum(self, array, label):
        if label != "gradients":
            super()._allreduce_sum(array, label)
            return
        arrived = time.perf_counter()
        self.mpi_comm.Barrier()
        start = time.perf_counter()
        super()._allreduce_sum(array, label)
        self.seconds.append(time.perf_counter() - start)
        self.waits.append(start - arrived)


def bare_allreduce(mpi, array, repeats, evict=None):
    """Seconds of each of ``repeats`` plain in-place Allreduce calls, each after a barrier
    (and, with ``evict``, after summing that array to push the caches' contents out)."""
    seconds = []
    for _ in range(repeats):
        if evict is not None:
            evict.sum()
        mpi.COMM_WORLD.Barrier()
        start = time.perf_counter()
        mpi.COMM_WORLD.Allreduce(mpi.IN_PLACE, array, op=mpi.SUM)
        seconds.append(time.perf_counter() - start)
    return seconds


def train_steps(comm, dtype, batch, warmup, steps, momentum):
    """Step times (s) of fit() over warmup + steps global batches of random data."""
    rng = np.random.default_rng(0)
    n = (warmup + steps + 1) * batch
    X = rng.normal(size=(n, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], n)
    model = MLP(list(SIZES), dtype=dtype, seed=0)
    clock = StepClock()
    fit(model, "cross_entropy", SGD(model, lr=0.01, momentum=momentum), X, y, epochs=1, batch_size=batch,
        comm=comm, callbacks=[clock])
    return np.diff(clock.stamps)[warmup:], model


def bare_gemms(comm, model, batch, warmup, steps):
    """Seconds of the GEMMs of each of ``steps`` steps on this rank's share of ``batch`` rows,
    every rank starting together after a barrier; the slowest rank's time per step."""
    rows = len(shard(range(batch), comm.rank, comm.size))
    rng = np.random.default_rng(comm.rank)
    x = rng.random((rows, SIZES[0])).astype(model.dtype)
    gemms, seconds = Gemms(model, rows, rng), []
    for _ in range(warmup + steps):
        comm.barrier("benchmark")
        start = time.perf_counter()
        gemms(x, None, time.perf_counter)
        seconds.append(time.perf_counter() - start)
    return comm.allgather(np.array(seconds[warmup:]), "benchmark").max(axis=0)


def worker(args):
    """One configuration, every dtype and batch; rank 0 prints one JSON line per case."""
    comm = default_comm()
    set_blas_threads(args.threads, comm)
    for dtype in args.dtype:
        for batch in args.batch:
            seconds, model = train_steps(comm, dtype, batch, args.warmup, args.steps, args.momentum)
            result = {"dtype": dtype, "batch": batch, "ranks": comm.size, "threads": args.threads,
                      "momentum": args.momentum,
                      "step_ms": 1e3 * float(np.median(seconds)),
                      "gemm_ms": 1e3 * float(np.median(bare_gemms(comm, model, batch, args.warmup,
                                                                  args.steps)))}
            if comm.size > 1:
                timed = AllreduceClock()
                train_steps(timed, dtype, batch, args.warmup, args.steps, args.momentum)
                bare = bare_allreduce(timed.MPI, model.grads, args.steps)
                cold = bare_allreduce(timed.MPI, model.grads, args.steps, evict=np.ones(2 ** 22))
                result["wait_ms"] = 1e3 * float(np.median(timed.waits[args.warmup:]))
                result["allreduce_ms"] = 1e3 * float(np.median(timed.seconds[args.warmup:]))
                result["bare_ms"] = 1e3 * float(np.median(bare))
                result["bare_cold_ms"] = 1e3 * float(np.median(cold))
            if comm.rank == 0:
                print(json.dumps(result), flush=True)


def cost_model_worker(args):
    """2 ranks: the bare allreduce time for several message sizes; rank 0 prints them."""
    comm = default_comm()
    set_blas_threads(1, comm)
    rows = []
    for elements in COST_MODEL_ELEMENTS:
        seconds = bare_allreduce(comm.MPI, np.zeros(elements), args.steps)
        rows.append({"bytes": 8 * elements, "us": 1e6 * float(np.median(seconds))})
    if comm.rank == 0:
        print(json.dumps({"points": rows}), flush=True)


def busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy (steal included), from /proc/stat."""
    with open("/proc/stat") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:]]
    idle = ticks[3] + ticks[4]                                    # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")    # user .. steal


def own_cpu_seconds():
    """CPU seconds of this process and its finished children (the workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def launch(ranks, threads, args, mode="--worker"):
    """Run this script as a worker (under mpiexec for ranks > 1); return its JSON lines, each
    with foreign_cores: the cores other work kept busy meanwhile."""
    command = [sys.executable, __file__, mode, "--threads", str(threads), "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--momentum", str(args.momentum), "--dtype", *args.dtype, "--batch", *map(str, args.batch)]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                                f"{os.environ.get('PATH', '')}")
        if mpiexec is None:
            sys.exit('benchmarks/scaling.py needs mpiexec: pip install -e ".[mpi]"')
        command = [mpiexec, "-n", str(ranks), *args.mpiexec_args.split()] + command
    started, busy, own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    foreign = (busy_cpu_seconds() - busy - (own_cpu_seconds() - own)) / (time.perf_counter() - started)
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    for row in rows:
        row["foreign_cores"] = max(foreign, 0.0)
    return rows


def summarize(rounds):
    """Median over rounds per (dtype, batch, ranks, threads), with the derived ratios."""
    cases = {}
    for results in rounds:
        for row in results:
            cases.setdefault((row["dtype"], row["batch"], row["ranks"], row["threads"]), []).append(row)
    median = {key: {field: statistics.median(row[field] for row in rows) for field in rows[0]
                    if field.endswith("_ms") or field == "foreign_cores"} for key, rows in cases.items()}
    lines = []
    for (dtype, batch, ranks, threads), times in median.items():
        base = median[(dtype, batch, 1, 1)]
        speedup, cores = base["step_ms"] / times["step_ms"], ranks * threads
        gemm_efficiency = base["gemm_ms"] / (cores * times["gemm_ms"])
        line = {"dtype": dtype, "batch": batch, "ranks": ranks, "threads": threads,
                "step_ms": round(times["step_ms"], 4), "speedup": round(speedup, 3),
                "efficiency": round(speedup / cores, 3), "gemm_ms": round(times["gemm_ms"], 4),
                "gemm_efficiency": round(gemm_efficiency, 3),
                "efficiency_of_ceiling": round(speedup / cores / gemm_efficiency, 3),
                "allreduce_share": None, "allreduce_vs_bare": None, "allreduce_vs_cold_bare": None,
                "vs_threads": None, "allreduce_ms": None, "bare_ms": None, "bare_cold_ms": None,
                "wait_ms": None, "foreign_cores": round(times["foreign_cores"], 2)}
        if ranks > 1:
            line.update({"allreduce_share": round(times["allreduce_ms"] / times["step_ms"], 3),
                         "allreduce_vs_bare": round(times["allreduce_ms"] / times["bare_ms"], 3),
                         "allreduce_vs_cold_bare": round(times["allreduce_ms"] / times["bare_cold_ms"], 3),
                         "vs_threads": round(median[(dtype, batch, 1, 2)]["step_ms"] / times["step_ms"], 3),
                         "allreduce_ms": round(times["allreduce_ms"], 4),
                         "wait_ms": round(times["wait_ms"], 4),
                         "bare_ms": round(times["bare_ms"], 4),
                         "bare_cold_ms": round(times["bare_cold_ms"], 4)})
        lines.append(line)
    return sorted(lines, key=lambda line: (line["dtype"], line["batch"], line["ranks"], line["threads"]))


def fit_cost_model(measured):
    """The ring allreduce model T(N, P) = 2(N-1) alpha + 2(N-1)/N P beta, fitted at N = 2
    (T = 2 alpha + P beta) by least squares on the messages of 512 KB and more, the regime of
    the MLP's gradient buffers (1.08 MB in float32, 2.15 MB in float64). Smaller messages use
    other protocols: they are reported with the model's value but not fitted, and the
    latency of the smallest (the stop vote's regime) is reported as small_message_us."""
    rows = measured["points"]
    large = [row for row in rows if row["bytes"] >= 2 ** 19]
    beta, intercept = np.polyfit([row["bytes"] for row in large], [row["us"] for row in large], 1)
    alpha = intercept / 2
    for row in rows:
        row["model_us"] = round(2 * alpha + beta * row["bytes"], 2)
    return {"ranks": 2, "points": rows, "alpha_us": alpha, "beta_ns_per_byte": 1e3 * beta,
            "bandwidth_GB_s": 1e-3 / beta, "small_message_us": rows[0]["us"],
            "foreign_cores": round(measured["foreign_cores"], 2)}


def print_table(lines):
    header = ("dtype", "batch", "ranks", "threads", "step_ms", "efficiency", "gemm_efficiency",
              "efficiency_of_ceiling", "allreduce_share", "allreduce_vs_bare",
              "allreduce_vs_cold_bare", "wait_ms", "vs_threads", "foreign_cores")
    print("  ".join(f"{name:>{max(len(name), 7)}}" for name in header))
    for line in lines:
        print("  ".join(f"{'-' if line[name] is None else line[name]:>{max(len(name), 7)}}" for name in header))


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per case (default 30)")
    parser.add_argument("--warmup", type=int, default=5)
    machine.add_momentum_argument(parser)
    parser.add_argument("--quick", action="store_true", help="1 round of 8 steps: a smoke run")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--cost-model", action="store_true",
                        help="time a bare 2-rank allreduce of several sizes and fit the "
                             "latency-bandwidth model T = 2 alpha + beta * bytes")
    parser.add_argument("--mpiexec-args", default="",
                        help='extra mpiexec options, e.g. "-ppn 1 -hosts node1,node2" to put the '
                             "ranks on two nodes of a cluster")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cost-model-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 8, 2
    return args


def main(argv=None):
    args = parse(argv)
    if args.worker:
        return worker(args)
    if args.cost_model_worker:
        return cost_model_worker(args)
    if args.cost_model:
        print(json.dumps(fit_cost_model(launch(2, 1, args, "--cost-model-worker")[0])))
        return None
    rounds = [[row for ranks, threads in CONFIGS for row in launch(ranks, threads, args)]
              for _ in range(args.rounds)]
    lines = [dict(line, momentum=args.momentum) for line in summarize(rounds)]
    if args.json:
        for line in lines:
            print(json.dumps(line))
    else:
        print_table(lines)
    return None


if __name__ == "__main__":
    main()
