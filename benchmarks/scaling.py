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
    update_ms          the optimizer update inside fit()'s step (every rank updates all the
                       parameters; an SGD subclass times its step())
    compute_efficiency 2 ranks: the efficiency of what is left of the step without the update
                       and the allreduce (gather, forward, loss, backward, waiting for the
                       slower rank), the part that the ranks split: (step_ms - update_ms) of
                       1 x 1 / (ranks x (step_ms - update_ms - allreduce_ms))
    zero1_bound        2 ranks: the efficiency if each rank updated only its 1/N of the
                       parameters (ZeRO-1) and the allreduce took no time, i.e. step_ms of 1 x 1
                       / (ranks x (step_ms - update_ms - allreduce_ms + update_ms of 1 x 1 /
                       ranks)): more than any sharded update could reach on this machine, which
                       still moves the gradient (a reduce-scatter) and the parameters (an
                       allgather)
    vs_threads         2 ranks: step_ms(1 rank x 2 threads) / step_ms (> 1: MPI beats threads)
    foreign_cores      cores busy with OTHER work (other processes, hypervisor steal) while
                       this configuration ran, averaged over the run (Linux /proc/stat): well
                       above 0 means the times are not clean and should be measured again

PyTorch DDP is the peer (--impl; skipped with a note when torch is not installed): the same
MLP (torch.nn.Sequential of Linear and ReLU), CrossEntropyLoss, torch.optim.SGD with the same
lr and momentum, the same global batch split into contiguous per-rank shares of a shuffled
permutation, torch.set_num_threads(1) per process; 1 rank x 1 thread is a plain torch loop,
2 ranks x 1 thread is DistributedDataParallel over gloo on CPU (two processes started by
mpiexec as minidl's are, rendezvous over localhost TCP). Its efficiency has the same
definition, against its own 1 x 1. Every JSON line says which it is: "impl": "minidl" or
"torch_ddp".

Configurations run in interleaved rounds (minidl 1x1, 1x2, 2x1, torch_ddp 1x1, 2x1, the order
reversed every other round), so machine noise hits all alike; each time is the median over
rounds of the per-round medians. efficiency is computed from those medians; beside it the
spread of the per-round efficiencies (efficiency_min, efficiency_max), and on minidl's 2-rank
lines vs_torch_ddp: the median over rounds of minidl's efficiency / torch_ddp's in the same
round, with its range. Each line carries foreign_cores (the guard: above 0.25, other work
shared the machine and the line should be measured again; --wait-quiet SECONDS waits for a
quiet machine before every launch).

With every rank on one node, the gradient allreduce goes through minidl's shared-memory path
(minidl.shared_memory); MINIDL_SHARED_MEMORY=0 python benchmarks/scaling.py measures the
MPI_Allreduce path instead.

    python benchmarks/scaling.py                 # a table
    python benchmarks/scaling.py --json          # one JSON object per line
    python benchmarks/scaling.py --quick         # a smoke run of a few seconds
    python benchmarks/scaling.py --impl minidl   # without the PyTorch DDP peer
    python benchmarks/scaling.py --cost-model    # fit a latency-bandwidth model of the allreduce
    python benchmarks/scaling.py --cost-model --mpiexec-args="-ppn 1 -hosts n1,n2"   # 2 nodes
    python benchmarks/scaling.py --predict       # predicted step and efficiency for 1..256 ranks
    python benchmarks/scaling.py --predict --network 10gbe --sizes 784,4096,4096,10 --json

--cost-model fits T = 2 alpha + beta * bytes to the bare 2-rank allreduces of 512 KB to 8 MB
by non-negative least squares (alpha, beta >= 0) on the relative errors, prints the fit's
residual (relative RMS, RMS, R^2) and refuses the fit, exit code 1, when its relative RMS error
exceeds 25 %.

--predict models a data-parallel step on N ranks, one per node, each running like this machine
with 1 BLAS thread (strong scaling: the global batch is fixed):

    step(N) = compute / N + T_ring(N, bytes) + update        T_ring = 2 (N-1) alpha + 2 (N-1)/N bytes / bandwidth

with compute the 1-rank fit() step minus its optimizer update (forward, loss, backward, the
batch gather, the loop: split N ways), update the optimizer update of all P parameters that
every rank repeats, bytes the gradient's (P times the dtype's size), and T_ring the ring
allreduce of Thakur, Rabenseifner and Gropp (2005). compute and update are timed here (a 1-rank
fit() of the model, in a process of its own) unless --compute-ms and --update-ms give them;
alpha and bandwidth come from --network (presets in NETWORKS) or --latency-us and
--bandwidth-gbps. The zero1 columns shard the update (ZeRO-1): a reduce-scatter, the update of
1/N of the parameters, an allgather of them, the same ring bytes and steps as the allreduce.
"""
import argparse
import importlib.util
import json
import math
import os
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
IMPLS = ("minidl", "torch_ddp")
PEER_CONFIGS = ((1, 1), (2, 1))                                   # torch_ddp's (ranks, threads)
DDP_PORT = 29517 + os.getpid() % 1000                             # gloo's rendezvous (localhost)
COST_MODEL_ELEMENTS = (1, 16, 256, 4096, 16384, 65536, 134661, 269322, 1048576)   # float64 elements
FIT_FROM_BYTES = 2 ** 19          # the cost model is fitted to the messages of 512 KB and more
MAX_RELATIVE_RMS = 0.25           # a fit that misses the measured times by > 25 % RMS is refused
# --network presets: (latency in us, effective point-to-point bandwidth in Gbit/s). Typical
# figures, not measured here; re-fit with --cost-model on the cluster itself.
NETWORKS = {
    # 100 Gb/s InfiniBand (EDR, HDR100): MPI small-message latency 1-1.5 us; the 64b/66b line
    # code leaves 97 Gbit/s (12.1 GB/s), what MPI bandwidth tests reach on large messages
    "ib100": (1.5, 96.0),
    # 10 Gb/s Ethernet, MPI over the kernel's TCP: 15-50 us latency; TCP's payload at MTU 1500
    # is at most 9.4 Gbit/s (1.18 GB/s), MPI gets about 1.1 GB/s
    "10gbe": (30.0, 9.0),
    # this machine's shared memory (MPICH, 2 ranks): the --cost-model fit of 2026-12-06
    "shm": (20.0, 62.7),
}
RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ZERO1_PAYS = 0.10                 # sharding the update "pays" once it saves 10 % of the step
PREDICT_COLUMNS = ("ranks", "compute_ms", "allreduce_ms", "update_ms", "step_ms", "speedup", "efficiency",
                   "zero1_step_ms", "zero1_efficiency", "zero1_gain")


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


class TimedSGD(SGD):
    """SGD that records how long each of its steps takes: the update as it runs inside fit()."""

    def __init__(self, model, **options):
        super().__init__(model, **options)
        self.seconds = []

    def step(self):
        start = time.perf_counter()
        super().step()
        self.seconds.append(time.perf_counter() - start)


def train_steps(comm, dtype, batch, warmup, steps, momentum, sizes=SIZES, optimizer_class=SGD):
    """Step times (s) of fit() over warmup + steps global batches of random data, the model
    and its optimizer."""
    rng = np.random.default_rng(0)
    n = (warmup + steps + 1) * batch
    X = rng.normal(size=(n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    model = MLP(list(sizes), dtype=dtype, seed=0)
    optimizer, clock = optimizer_class(model, lr=0.01, momentum=momentum), StepClock()
    fit(model, "cross_entropy", optimizer, X, y, epochs=1, batch_size=batch, comm=comm, callbacks=[clock])
    return np.diff(clock.stamps)[warmup:], model, optimizer


def bare_gemms(comm, model, batch, warmup, steps):
    """Seconds of the GEMMs of each of ``steps`` steps on this rank's share of ``batch`` rows,
    every rank starting together after a barrier; the slowest rank's time per step."""
    rows = len(shard(range(batch), comm.rank, comm.size))
    rng = np.random.default_rng(comm.rank)
    x = rng.random((rows, model.in_features)).astype(model.dtype)
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
            seconds, model, optimizer = train_steps(comm, dtype, batch, args.warmup, args.steps,
                                                    args.momentum, args.sizes, TimedSGD)
            update = optimizer.seconds[-len(seconds):]             # the update inside each timed step
            result = {"impl": "minidl", "dtype": dtype, "batch": batch, "ranks": comm.size, "threads": args.threads,
                      "momentum": args.momentum,
                      "step_ms": 1e3 * float(np.median(seconds)),
                      "update_ms": 1e3 * float(np.median(update)),
                      "gemm_ms": 1e3 * float(np.median(bare_gemms(comm, model, batch, args.warmup,
                                                                  args.steps)))}
            if comm.size > 1:
                timed = AllreduceClock()
                train_steps(timed, dtype, batch, args.warmup, args.steps, args.momentum, args.sizes)
                bare = bare_allreduce(timed.MPI, model.grads, args.steps)
                cold = bare_allreduce(timed.MPI, model.grads, args.steps, evict=np.ones(2 ** 22))
                result["wait_ms"] = 1e3 * float(np.median(timed.waits[args.warmup:]))
                result["allreduce_ms"] = 1e3 * float(np.median(timed.seconds[args.warmup:]))
                result["bare_ms"] = 1e3 * float(np.median(bare))
                result["bare_cold_ms"] = 1e3 * float(np.median(cold))
            if comm.rank == 0:
                print(json.dumps(result), flush=True)


def ddp_worker(args):
    """torch_ddp: one configuration (1 process: a plain torch loop; several, started by mpiexec:
    DistributedDataParallel over gloo), every dtype and batch; rank 0 prints one JSON line per case."""
    import torch
    import torch.distributed as dist
    rank, size = int(os.environ.get("PMI_RANK", 0)), int(os.environ.get("PMI_SIZE", 1))
    torch.set_num_threads(args.threads)
    if size > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        dist.init_process_group("gloo", rank=rank, world_size=size)
    for dtype in args.dtype:
        for batch in args.batch:
            torch.manual_seed(0)
            layers = [torch.nn.Linear(args.sizes[0], args.sizes[1])]
            for fan_in, fan_out in zip(args.sizes[1:-1], args.sizes[2:]):
                layers += [torch.nn.ReLU(), torch.nn.Linear(fan_in, fan_out)]
            net = torch.nn.Sequential(*layers).to(getattr(torch, dtype))
            if size > 1:
                net = torch.nn.parallel.DistributedDataParallel(net)       # broadcasts rank 0's weights
            optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=args.momentum)
            loss_fn = torch.nn.CrossEntropyLoss()                        # mean over this rank's rows
            rng = np.random.default_rng(0)                               # train_steps' data, every rank
            n = (args.warmup + args.steps + 1) * batch
            X = torch.from_numpy(rng.normal(size=(n, args.sizes[0])).astype(dtype))
            y = torch.from_numpy(rng.integers(0, args.sizes[-1], n))
            order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
            stamps = []
            for step in range(args.warmup + args.steps):
                rows = shard(order[step * batch:(step + 1) * batch], rank, size)   # equal shares:
                optimizer.zero_grad()                                    # DDP's mean = the global mean
                loss_fn(net(X[rows]), y[rows]).backward()                # gradient allreduce inside
                optimizer.step()
                stamps.append(time.perf_counter())
            if rank == 0:
                print(json.dumps({"impl": "torch_ddp", "dtype": dtype, "batch": batch, "ranks": size,
                                  "threads": args.threads, "momentum": args.momentum,
                                  "step_ms": 1e3 * float(np.median(np.diff(stamps)[args.warmup - 1:])),
                                  "torch": torch.__version__}), flush=True)
            del net, optimizer                   # DDP's reducer goes before its process group
    if size > 1:
        # both ranks done before the group goes: a rank that tears gloo down while the other
        # still talks to it can die in C++ ("terminate called without an active exception")
        dist.barrier()
        dist.destroy_process_group()


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


def predict_worker(args):
    """1 rank: the fit() step of the --sizes MLP, split into the optimizer update and the rest."""
    comm = default_comm()
    set_blas_threads(1, comm)
    seconds, _, optimizer = train_steps(comm, args.dtype[0], args.batch[0], args.warmup, args.steps,
                                        args.momentum, args.sizes, TimedSGD)
    update = np.array(optimizer.seconds[-len(seconds):])          # the update inside each timed step
    print(json.dumps({"step_ms": 1e3 * float(np.median(seconds)),
                      "compute_ms": 1e3 * float(np.median(seconds - update)),
                      "update_ms": 1e3 * float(np.median(update))}), flush=True)


def launch(ranks, threads, args, mode="--worker"):
    """Run this script as a worker (under mpiexec for ranks > 1); return its JSON lines, each
    with foreign_cores: the cores other work kept busy meanwhile."""
    command = [sys.executable, __file__, mode, "--threads", str(threads), "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--momentum", str(args.momentum), "--dtype", *args.dtype,
               "--batch", *map(str, args.batch), "--sizes", ",".join(map(str, args.sizes))]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                                f"{os.environ.get('PATH', '')}")
        if mpiexec is None:
            sys.exit('benchmarks/scaling.py needs mpiexec: pip install -e ".[mpi]"')
        command = [mpiexec, "-n", str(ranks), *args.mpiexec_args.split()] + command
    environment = dict(os.environ, MASTER_PORT=str(DDP_PORT)) if mode == "--ddp-worker" else None
    machine.wait_until_quiet(args.wait_quiet)
    with machine.ForeignCores() as guard:
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        sys.exit(f"benchmarks/scaling.py: {' '.join(command)} failed (exit code {done.returncode}):\n"
                 f"{done.stderr}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        row["foreign_cores"] = guard.value if guard.value is not None else 0.0
    return rows


def _efficiency(base, times):
    return base["step_ms"] / times["step_ms"] / (times["ranks"] * times["threads"])


def _spread(values):
    return (round(min(values), 3), round(max(values), 3)) if values else (None, None)


def summarize(rounds):
    """Median over rounds per (impl, dtype, batch, ranks, threads), with the derived ratios and
    the spread of the per-round efficiencies (each round against its own 1 x 1)."""
    cases, per_round = {}, []
    for results in rounds:
        keyed = {(row.get("impl", "minidl"), row["dtype"], row["batch"], row["ranks"], row["threads"]): row
                 for row in results}
        per_round.append({key: _efficiency(keyed[key[:3] + (1, 1)], row) for key, row in keyed.items()
                          if key[:3] + (1, 1) in keyed})
        for key, row in keyed.items():
            cases.setdefault(key, []).append(row)
    median = {key: {field: statistics.median(row[field] for row in rows) for field in rows[0]
                    if field.endswith("_ms") and rows[0][field] is not None or field == "foreign_cores"}
              for key, rows in cases.items()}
    lines = []
    for (impl, dtype, batch, ranks, threads), times in median.items():
        base = median[(impl, dtype, batch, 1, 1)]
        speedup, cores = base["step_ms"] / times["step_ms"], ranks * threads
        efficiencies = [effs[(impl, dtype, batch, ranks, threads)] for effs in per_round
                        if (impl, dtype, batch, ranks, threads) in effs]
        low, high = _spread(efficiencies)
        line = {"impl": impl, "dtype": dtype, "batch": batch, "ranks": ranks, "threads": threads,
                "step_ms": round(times["step_ms"], 4), "speedup": round(speedup, 3),
                "efficiency": round(speedup / cores, 3), "efficiency_min": low, "efficiency_max": high,
                "rounds": len(cases[(impl, dtype, batch, ranks, threads)]),
                "gemm_ms": None, "gemm_efficiency": None, "efficiency_of_ceiling": None,
                "allreduce_share": None, "allreduce_vs_bare": None, "allreduce_vs_cold_bare": None,
                "vs_threads": None, "allreduce_ms": None, "bare_ms": None, "bare_cold_ms": None,
                "wait_ms": None, "update_ms": None, "compute_efficiency": None, "zero1_bound": None,
                "vs_torch_ddp": None, "vs_torch_ddp_min": None, "vs_torch_ddp_max": None,
                "foreign_cores": round(times["foreign_cores"], 2)}
        if "gemm_ms" in times:
            gemm_efficiency = base["gemm_ms"] / (cores * times["gemm_ms"])
            line.update({"gemm_ms": round(times["gemm_ms"], 4), "gemm_efficiency": round(gemm_efficiency, 3),
                         "efficiency_of_ceiling": round(speedup / cores / gemm_efficiency, 3)})
        if "update_ms" in times:
            line["update_ms"] = round(times["update_ms"], 4)
        threaded = median.get((impl, dtype, batch, 1, 2))
        if ranks > 1 and threaded is not None:
            line["vs_threads"] = round(threaded["step_ms"] / times["step_ms"], 3)
        if ranks > 1 and "allreduce_ms" in times:
            line.update({"allreduce_share": round(times["allreduce_ms"] / times["step_ms"], 3),
                         "allreduce_vs_bare": round(times["allreduce_ms"] / times["bare_ms"], 3),
                         "allreduce_vs_cold_bare": round(times["allreduce_ms"] / times["bare_cold_ms"], 3),
                         "allreduce_ms": round(times["allreduce_ms"], 4),
                         "wait_ms": round(times["wait_ms"], 4),
                         "bare_ms": round(times["bare_ms"], 4),
                         "bare_cold_ms": round(times["bare_cold_ms"], 4)})
            # what is left of the step without the update and the allreduce: the part that splits
            rest, rest_1 = (times["step_ms"] - times["update_ms"] - times["allreduce_ms"],
                            base["step_ms"] - base["update_ms"])
            # rest comes from the medians of two runs, so a run of a few steps may leave none
            if rest > 0:
                line.update({"compute_efficiency": round(rest_1 / (cores * rest), 3),
                             "zero1_bound": round(base["step_ms"] / (cores * (rest + base["update_ms"] / cores)), 3)})
        peer = ("torch_ddp", dtype, batch, ranks, threads)
        ratios = [effs[(impl, dtype, batch, ranks, threads)] / effs[peer] for effs in per_round
                  if impl == "minidl" and ranks > 1 and peer in effs and (impl,) + peer[1:] in effs]
        if ratios:
            low, high = _spread(ratios)
            line.update({"vs_torch_ddp": round(statistics.median(ratios), 3),
                         "vs_torch_ddp_min": low, "vs_torch_ddp_max": high})
        lines.append(line)
    return sorted(lines, key=lambda line: (line["impl"] != "minidl", line["impl"], line["dtype"],
                                           line["batch"], line["ranks"], line["threads"]))


def nonnegative_least_squares(design, values):
    """The x >= 0 that minimizes |design @ x - values|, exactly, for the few columns of a cost
    model: the unconstrained least-squares fit on every subset of the columns (the others held
    at 0) that comes out non-negative, and of those the one of least residual. The optimum of
    this convex problem is among them (on the columns where it is positive it is the
    unconstrained fit), so that one is it."""
    design, values = np.asarray(design, float), np.asarray(values, float)
    columns = design.shape[1]
    best, best_sse = np.zeros(columns), float(values @ values)          # every coefficient 0
    for subset in range(1, 2 ** columns):
        chosen = [j for j in range(columns) if subset >> j & 1]
        coefficients = np.zeros(columns)
        coefficients[chosen] = np.linalg.lstsq(design[:, chosen], values, rcond=None)[0]
        sse = float(np.sum((design @ coefficients - values) ** 2))
        if coefficients.min() >= 0 and sse < best_sse:
            best, best_sse = coefficients, sse
    return best


def fit_cost_model(measured):
    """The ring allreduce model T(N, P) = 2(N-1) alpha + 2(N-1)/N P beta, fitted at N = 2
    (T = 2 alpha + P beta) with alpha, beta >= 0 to the messages of 512 KB and more, the regime
    of gradient buffers (the MLP's: 1.08 MB in float32, 2.15 MB in float64). Smaller messages
    use other protocols: they are reported with the model's value but not fitted, and the
    latency of the smallest is reported as small_message_us.

    The fit minimizes the relative errors (model - measured) / measured, so that the largest
    message does not decide it alone; relative_rms is their RMS, rms_us that of the errors in
    us, r_squared the share of the measured times' variance the line explains. Beside it the
    unconstrained fit, and which of alpha and beta the bound clamped to 0. refused is None, or
    why the fit does not describe the data: fewer than 3 points (no residual to judge a line
    by), no time per byte (beta = 0), or a relative RMS error above MAX_RELATIVE_RMS."""
    rows = measured["points"]
    large = [row for row in rows if row["bytes"] >= FIT_FROM_BYTES]
    times = np.array([row["us"] for row in large])
    design = np.array([[2.0, row["bytes"]] for row in large]).reshape(-1, 2)    # T = 2 alpha + P beta
    weighted = design / times[:, None]                                         # rows: relative errors
    ones = np.ones(len(large))
    alpha, beta = nonnegative_least_squares(weighted, ones)
    free = np.linalg.lstsq(weighted, ones, rcond=None)[0] if len(large) >= 2 else [math.nan] * 2
    errors = design @ [alpha, beta] - times
    relative = float(np.sqrt(np.mean((errors / times) ** 2))) if len(large) else math.nan
    spread = float(np.sum((times - times.mean()) ** 2)) if len(large) else 0.0
    if len(large) < 3:
        refused = (f"only {len(large)} messages of {FIT_FROM_BYTES} bytes or more: fewer than 3 points "
                   f"leave no residual to judge a line by")
    elif beta <= 0:
        refused = "the time does not grow with the message size (beta = 0): no bandwidth to fit"
    elif relative > MAX_RELATIVE_RMS:
        refused = (f"the line misses the measured times by {relative:.0%} RMS "
                   f"(> {MAX_RELATIVE_RMS:.0%}): they do not follow T = 2 alpha + beta * bytes")
    else:
        refused = None
    for row in rows:
        row["model_us"] = round(2 * alpha + beta * row["bytes"], 2)
    return {"ranks": 2, "points": rows, "fitted_from_bytes": FIT_FROM_BYTES,
            "alpha_us": float(alpha), "beta_ns_per_byte": 1e3 * float(beta),
            "bandwidth_GB_s": 1e-3 / beta if beta > 0 else None,
            "bandwidth_gbps": 8e-3 / beta if beta > 0 else None,
            "relative_rms": relative, "rms_us": float(np.sqrt(np.mean(errors ** 2))) if len(large) else math.nan,
            "r_squared": 1 - float(errors @ errors) / spread if spread > 0 else None,
            "unconstrained_alpha_us": float(free[0]), "unconstrained_beta_ns_per_byte": 1e3 * float(free[1]),
            "clamped": [name for name, value in (("alpha", free[0]), ("beta", free[1])) if value < 0],
            "max_relative_rms": MAX_RELATIVE_RMS, "refused": refused,
            "small_message_us": rows[0]["us"], "foreign_cores": round(measured["foreign_cores"], 2)}


def parameter_count(sizes):
    """P of an MLP with these layer widths: a weight matrix and a bias per layer."""
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def ring_allreduce_ms(ranks, nbytes, latency_us, bandwidth_gbps):
    """Thakur, Rabenseifner and Gropp's ring allreduce (a reduce-scatter, then an allgather, of
    N-1 steps each, every rank sending nbytes/N per step): 2(N-1) alpha + 2(N-1)/N nbytes beta,
    with beta = 1 / bandwidth (the time of the additions left out)."""
    seconds_per_byte = 8 / (1e9 * bandwidth_gbps)
    return 1e3 * (2 * (ranks - 1) * 1e-6 * latency_us + 2 * (ranks - 1) / ranks * nbytes * seconds_per_byte)


def predict(compute_ms, update_ms, nbytes, latency_us, bandwidth_gbps, ranks=RANKS):
    """Predicted step times on each number of ranks: compute_ms shrinks as 1/N, the ring
    allreduce of nbytes grows, update_ms stays (replicated); the zero1 figures shard the update
    (a reduce-scatter and an allgather: the allreduce's own two halves, so the same time)."""
    one_rank = compute_ms + update_ms
    rows = []
    for n in ranks:
        allreduce = ring_allreduce_ms(n, nbytes, latency_us, bandwidth_gbps)
        step, zero1 = compute_ms / n + allreduce + update_ms, compute_ms / n + allreduce + update_ms / n
        rows.append({"ranks": n, "compute_ms": compute_ms / n, "allreduce_ms": allreduce, "update_ms": update_ms,
                     "step_ms": step, "speedup": one_rank / step, "efficiency": one_rank / (n * step),
                     "zero1_step_ms": zero1, "zero1_efficiency": one_rank / (n * zero1),
                     "zero1_gain": step / zero1 - 1})
    pays = [row["ranks"] for row in rows if row["zero1_gain"] >= ZERO1_PAYS]
    for row in rows:
        row["zero1_pays"], row["zero1_pays_from"] = row["ranks"] in pays, pays[0] if pays else None
    return rows


def run_predict(args):
    """--predict: the table (or JSON lines) for args' model and network."""
    sizes, dtype, batch = list(args.sizes), args.dtype[0], args.batch[0]
    nbytes = parameter_count(sizes) * np.dtype(dtype).itemsize
    preset = NETWORKS[args.network]
    latency = preset[0] if args.latency_us is None else args.latency_us
    bandwidth = preset[1] if args.bandwidth_gbps is None else args.bandwidth_gbps
    network = args.network if (latency, bandwidth) == preset else "custom"
    compute, update, figures = args.compute_ms, args.update_ms, {"figures": "given"}
    if compute is None or update is None:
        measured = launch(1, 1, args, "--predict-worker")[0]
        compute, update = compute or measured["compute_ms"], update or measured["update_ms"]
        figures = {"figures": "measured", "foreign_cores": round(measured["foreign_cores"], 2)}
    common = {"network": network, "latency_us": latency, "bandwidth_gbps": bandwidth, "sizes": sizes,
              "parameters": parameter_count(sizes), "gradient_bytes": nbytes, "dtype": dtype,
              "batch": batch, "momentum": args.momentum, **figures}
    rows = [dict(row, **common) for row in predict(compute, update, nbytes, latency, bandwidth)]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"predicted data-parallel step: MLP {'-'.join(map(str, sizes))}, {common['parameters']:,} parameters "
          f"({nbytes / 1e6:.2f} MB gradient in {dtype}), global batch {batch}, SGD momentum {args.momentum}")
    print(f"network {network}: latency {latency:g} us, bandwidth {bandwidth:g} Gbit/s "
          f"({bandwidth / 8:.3g} GB/s); ring allreduce 2(N-1) latency + 2(N-1)/N bytes / bandwidth")
    print(f"1 rank: compute {compute:.3f} ms (split N ways) + update {update:.3f} ms "
          f"(every rank, all parameters), {figures['figures']}"
          + (f" (1 BLAS thread, foreign_cores {figures['foreign_cores']})" if "foreign_cores" in figures else ""))
    print_table([{name: round(row[name], 4) for name in PREDICT_COLUMNS} for row in rows], PREDICT_COLUMNS)
    pays = [str(row["ranks"]) for row in rows if row["zero1_pays"]]
    fastest = min(rows, key=lambda row: row["step_ms"])["ranks"]
    print(f"fastest step at N = {fastest}; ZeRO-1 (each rank updates 1/N of the parameters, same "
          f"allreduce bytes) saves >= {100 * ZERO1_PAYS:.0f} % of the step "
          + (f"at N = {', '.join(pays)}" if pays else f"at no N up to {RANKS[-1]}"))


SUMMARY_COLUMNS = ("impl", "dtype", "batch", "ranks", "threads", "step_ms", "efficiency", "efficiency_min",
                   "efficiency_max", "vs_torch_ddp", "vs_torch_ddp_min", "vs_torch_ddp_max", "gemm_efficiency",
                   "efficiency_of_ceiling", "compute_efficiency", "zero1_bound", "allreduce_share", "allreduce_vs_bare",
                   "allreduce_vs_cold_bare", "wait_ms", "vs_threads", "foreign_cores")


def print_table(lines, header=SUMMARY_COLUMNS):
    print("  ".join(f"{name:>{max(len(name), 7)}}" for name in header))
    for line in lines:
        print("  ".join(f"{'-' if line[name] is None else line[name]:>{max(len(name), 7)}}" for name in header))


def positive(text):
    """argparse type of the --predict figures: a finite number > 0, else a one-line usage error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def layer_sizes(text):
    """argparse type of --sizes: layer widths such as 784,256,256,10."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected 2 or more positive layer widths such as "
                                         f"784,256,256,10, got {text!r}")
    return sizes


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", nargs="+", choices=["float32", "float64"],
                        help="default float32 float64; --predict: one, default float32")
    parser.add_argument("--batch", type=int, nargs="+",
                        help="global batch sizes, default 128 512; --predict: one, default 512")
    parser.add_argument("--sizes", type=layer_sizes, default=SIZES,
                        help="the MLP's layer widths (default 784,256,256,10)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per case (default 30)")
    parser.add_argument("--warmup", type=int, default=5)
    machine.add_momentum_argument(parser)
    parser.add_argument("--quick", action="store_true", help="1 round of 8 steps: a smoke run")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--cost-model", action="store_true",
                        help="time a bare 2-rank allreduce of several sizes, fit the latency-bandwidth "
                             "model T = 2 alpha + beta * bytes (alpha, beta >= 0) and refuse a fit "
                             f"whose relative RMS residual exceeds {100 * MAX_RELATIVE_RMS:.0f} %%")
    parser.add_argument("--mpiexec-args", default="",
                        help='extra mpiexec options, e.g. "-ppn 1 -hosts node1,node2" to put the '
                             "ranks on two nodes of a cluster")
    predicting = parser.add_argument_group("--predict", "step time and efficiency on 1 to 256 ranks")
    predicting.add_argument("--predict", action="store_true",
                            help="print the predicted step for N = 1, 2, 4, ..., 256 ranks (--json: one "
                                 "JSON object per N)")
    predicting.add_argument("--network", choices=sorted(NETWORKS), default="ib100",
                            help="latency and bandwidth presets: " + "; ".join(
                                f"{name} {latency:g} us, {gbps:g} Gbit/s" for name, (latency, gbps)
                                in NETWORKS.items()) + " (default ib100)")
    predicting.add_argument("--latency-us", type=positive, help="per-message latency alpha (us)")
    predicting.add_argument("--bandwidth-gbps", type=positive,
                            help="effective point-to-point bandwidth (Gbit/s; 8 x the GB/s of --cost-model)")
    predicting.add_argument("--compute-ms", type=positive,
                            help="the 1-rank step without its optimizer update (default: timed here)")
    predicting.add_argument("--update-ms", type=positive,
                            help="the optimizer update of all parameters (default: timed here)")
    parser.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS),
                        help="minidl and its peer torch_ddp (PyTorch DDP over gloo; default: both)")
    machine.add_guard_arguments(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cost-model-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--predict-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.predict or args.predict_worker:
        args.dtype, args.batch = args.dtype or ["float32"], args.batch or [512]
        if len(args.dtype) > 1 or len(args.batch) > 1:
            parser.error("--predict takes one --dtype and one --batch")
    args.dtype, args.batch = args.dtype or ["float32", "float64"], args.batch or [128, 512]
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 8, 2
    return args


def main(argv=None):
    args = parse(argv)
    if args.worker:
        return worker(args)
    if args.ddp_worker:
        return ddp_worker(args)
    if args.cost_model_worker:
        return cost_model_worker(args)
    if args.predict_worker:
        return predict_worker(args)
    if args.predict:
        return run_predict(args)
    if args.cost_model:
        result = fit_cost_model(launch(2, 1, args, "--cost-model-worker")[0])
        print(json.dumps(result))
        if result["refused"]:
            sys.exit(f"benchmarks/scaling.py --cost-model: fit refused: {result['refused']}")
        return None
    impls = list(dict.fromkeys(args.impl))
    if "torch_ddp" in impls and importlib.util.find_spec("torch") is None:
        print("note: torch is not installed: the torch_ddp peer is skipped", file=sys.stderr, flush=True)
        impls.remove("torch_ddp")
    if not impls:
        return None
    plan = [(impl, ranks, threads) for impl in impls
            for ranks, threads in (CONFIGS if impl == "minidl" else PEER_CONFIGS)]
    rounds = []
    for r in range(args.rounds):                     # the order reversed every other round
        rounds.append([row for impl, ranks, threads in (plan if r % 2 == 0 else plan[::-1])
                       for row in launch(ranks, threads, args,
                                         "--worker" if impl == "minidl" else "--ddp-worker")])
    lines = [dict(line, momentum=args.momentum, sizes=list(args.sizes)) for line in summarize(rounds)]
    if args.json:
        for line in lines:
            print(json.dumps(line))
    else:
        print_table(lines)
    busy = max(line["foreign_cores"] for line in lines)
    if machine.busy_note(busy):
        print(machine.busy_note(busy, "some configuration (see foreign_cores)"), file=sys.stderr)
    return None


if __name__ == "__main__":
    main()
