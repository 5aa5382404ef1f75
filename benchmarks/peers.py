"""Peers benchmark: minidl, PyTorch CPU and scikit-learn train the same MLP, in one run.

MLP 784-256-256-10 (ReLU, softmax cross-entropy, SGD lr 0.01 with momentum 0.9 (--momentum),
no weight decay) on synthetic 60,000 x 784 pixel-like data with 10 classes, with equal BLAS/OpenMP
threads and equal dtypes:

    minidl   the library's step (model.forward_unchecked, loss kernel, model.backward_unchecked, SGD.step) and
             minidl.fit epochs; plus the bare GEMMs of the same step (benchmarks/step.py)
    torch    torch.nn.Sequential(Linear, ReLU, Linear, ReLU, Linear), CrossEntropyLoss,
             torch.optim.SGD; torch.set_num_threads(threads); epochs: randperm + X[idx]
    sklearn  MLPClassifier(solver="sgd", same batch size, momentum, lr, alpha=0); threads via
             threadpoolctl; its float32 input stays float32 (checked). No per-step API:
             step_ms = epoch_s / steps per epoch; epoch_s = (fit(max_iter=3) - fit(max_iter=1)) / 2

step_ms: median per-step time over contiguous mini-batches (batch 32, 128, 512); epoch_s:
one shuffled epoch at --epoch-batch (128), no validation, median over epochs after the
first. Each contender runs in its own process (their thread pools would fight), one after
the other in interleaved rounds whose order rotates; figures are medians over rounds and
ratios are medians of per-round ratios (paired). A peer that is not installed is skipped.

Then digits end to end (scikit-learn's 8x8 digits, float64, 1 thread), to the early stop:
MLPClassifier(hidden_layer_sizes=(128,), early_stopping=True), otherwise its defaults (Adam
lr 1e-3, batch 200, stop after 10 epochs without a validation-accuracy gain of 1e-4, best
weights kept), against minidl.fit 64-128-10 with EarlyStopping in two set-ups: "matched"
(the same rule: Adam lr 1e-3, batch 200, EarlyStopping on val_accuracy, patience 10,
min_delta 1e-4, best weights restored) and "train-defaults" (`minidl train`'s: SGD lr 0.05
momentum 0.9 weight decay 1e-3, batch 32, EarlyStopping on val_loss, patience 10). Same
training, validation and test rows; wall time of the fit and test accuracy, over 3 seeds.

    python benchmarks/peers.py                 # table, 1 and 2 threads, float32 and float64
    python benchmarks/peers.py --json          # one JSON object per line
    python benchmarks/peers.py --quick         # smoke run (< 30 s)
"""
import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))                 # measure this checkout
import machine                                       # noqa: E402  (benchmarks/machine.py)

SIZES = (784, 256, 256, 10)
IMPLS = ("minidl", "torch", "sklearn")
LR = 0.01


def installed(impl):
    try:
        return impl == "minidl" or importlib.util.find_spec(impl) is not None
    except (ImportError, ValueError):                       # e.g. a module set to None
        return False


def synthetic(samples, dtype, seed=0):
    """Pixel-like inputs in [0, 1) and uniform labels over 10 classes (benchmarks/epoch.py's)."""
    rng = np.random.default_rng(seed)
    return rng.random((samples, SIZES[0]), dtype=dtype), rng.integers(0, SIZES[-1], samples)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function, count):
    """Median seconds of ``count`` calls of function(i)."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        function(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------- one contender per process
def limit_threads(impl, threads):
    """Set and check the thread count; returns a context that holds it."""
    from threadpoolctl import threadpool_info, threadpool_limits
    limits = threadpool_limits(limits=threads, user_api="blas")
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if impl != "torch" and (not blas or any(lib["num_threads"] != threads for lib in blas)):
        sys.exit(f"could not set the BLAS thread count to {threads}: {blas}")
    if impl == "torch":
        import torch
        torch.set_num_threads(threads)
        if torch.get_num_threads() != threads:
            sys.exit(f"torch.set_num_threads({threads}) did not hold")
    return limits


def minidl_worker(args, dtype, X, y):
    import minidl
    from minidl.losses import loss_kernel
    from step import Gemms
    out = {"version": minidl.__version__, "step_ms": {}, "gemm_ms": {}, "ratio_to_gemm": {}}
    for batch in args.batches:
        model = minidl.MLP(list(SIZES), dtype=dtype, seed=0)
        optimizer = minidl.SGD(model, lr=LR, momentum=args.momentum, nesterov=args.nesterov)
        kernel = loss_kernel("cross_entropy")
        gemms = Gemms(model, batch, np.random.default_rng(1))
        slices = [(X[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
                  for i in range(min(16, len(X) // batch))]

        def step(i):
            x, labels = slices[i % len(slices)]
            _, dlogits = kernel(model.forward_unchecked(x), labels, batch)
            model.backward_unchecked(dlogits)
            optimizer.step()

        def bare(i):
            gemms(slices[i % len(slices)][0], None, time.perf_counter)

        timed(step, args.warmup), timed(bare, args.warmup)
        steps, bares = [], []
        for r in range(args.subrounds):            # alternate, so noise hits both alike
            for kind in ((step, bare) if r % 2 == 0 else (bare, step)):
                (steps if kind is step else bares).append(timed(kind, args.loops))
        out["step_ms"][batch] = 1e3 * statistics.median(steps)
        out["gemm_ms"][batch] = 1e3 * statistics.median(bares)
        out["ratio_to_gemm"][batch] = statistics.median(s / g for s, g in zip(steps, bares))
    if args.epochs:
        model = minidl.MLP(list(SIZES), dtype=dtype, seed=0)
        optimizer = minidl.SGD(model, lr=LR, momentum=args.momentum, nesterov=args.nesterov)

        class Clock:
            def on_train_begin(self, run):
                self.marks = [time.perf_counter()]

            def on_epoch_end(self, run):
                self.marks.append(time.perf_counter())

        clock = Clock()
        minidl.fit(model, "cross_entropy", optimizer, X, y, epochs=args.epochs,
                   batch_size=args.epoch_batch, callbacks=[clock], comm=None)
        out["epoch_s"] = statistics.median(np.diff(clock.marks)[1:])
    return out


def torch_worker(args, dtype, X, y):
    import torch
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)                 # share memory: data held once
    out = {"version": torch.__version__, "step_ms": {}}

    def build():
        layers = [torch.nn.Linear(SIZES[0], SIZES[1])]
        for fan_in, fan_out in zip(SIZES[1:-1], SIZES[2:]):
            layers += [torch.nn.ReLU(), torch.nn.Linear(fan_in, fan_out)]
        net = torch.nn.Sequential(*layers).to(tdtype)
        return net, torch.optim.SGD(net.parameters(), lr=LR, momentum=args.momentum, nesterov=args.nesterov)

    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step(net, optimizer, x, labels):
        optimizer.zero_grad()
        loss_fn(net(x), labels).backward()
        optimizer.step()

    for batch in args.batches:
        net, optimizer = build()
        slices = [(Xt[i * batch:(i + 1) * batch], yt[i * batch:(i + 1) * batch])
                  for i in range(min(16, len(X) // batch))]

        def step(i):
            train_step(net, optimizer, *slices[i % len(slices)])

        timed(step, args.warmup)
        out["step_ms"][batch] = 1e3 * statistics.median(timed(step, args.loops)
                                                        for _ in range(args.subrounds))
    if args.epochs:
        net, optimizer = build()
        generator = torch.Generator().manual_seed(0)
        marks = [time.perf_counter()]
        for _ in range(args.epochs):
            order = torch.randperm(len(Xt), generator=generator)
            for start in range(0, len(Xt), args.epoch_batch):
                rows = order[start:start + args.epoch_batch]
                train_step(net, optimizer, Xt[rows], yt[rows])
            marks.append(time.perf_counter())
        out["epoch_s"] = statistics.median(np.diff(marks)[1:])
    return out


def sklearn_worker(args, dtype, X, y):
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    out = {"version": sklearn.__version__}
    if not args.epochs:
        return out

    def fit(epochs):
        clf = MLPClassifier(hidden_layer_sizes=SIZES[1:-1], solver="sgd", batch_size=args.epoch_batch,
                            learning_rate_init=LR, momentum=args.momentum, nesterovs_momentum=args.nesterov,
                            alpha=0.0, max_iter=epochs, tol=0.0, n_iter_no_change=10**6,
                            shuffle=True, random_state=0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        if clf.coefs_[0].dtype != X.dtype:
            sys.exit(f"scikit-learn trained in {clf.coefs_[0].dtype}, not {X.dtype}")
        return time.perf_counter() - start

    extra = max(args.epochs - 1, 1)
    out["epoch_s"] = (fit(1 + extra) - fit(1)) / extra                # marginal: no set-up cost
    steps = -(-len(X) // args.epoch_batch)
    out["step_ms"] = {args.epoch_batch: 1e3 * out["epoch_s"] / steps}
    out["step_derived"] = True
    return out


def digits_worker(impl, seeds, config):
    """Seconds to the early stop and test accuracy, per seed, on scikit-learn's digits."""
    from minidl.data import load_dataset
    data = load_dataset("digits")                                     # 60/20/20, standardised
    results = []
    for seed in seeds:
        start = time.perf_counter()
        if impl == "minidl":
            import minidl
            model = minidl.MLP([64, 128, 10], dtype="float64", seed=seed)
            if config == "matched":                                   # MLPClassifier's rule
                optimizer, batch = minidl.Adam(model, lr=1e-3), 200
                stop = minidl.EarlyStopping(monitor="val_accuracy", patience=10, min_delta=1e-4,
                                            restore_best_weights=True)
            else:                                                     # `minidl train` defaults
                optimizer, batch = minidl.SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-3), 32
                stop = minidl.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
            history = minidl.fit(model, "cross_entropy", optimizer, data.X_train, data.y_train,
                                 epochs=200, batch_size=batch, validation_data=(data.X_val, data.y_val),
                                 callbacks=[stop], seed=seed, comm=None)
            seconds = time.perf_counter() - start
            accuracy = float(np.mean(model.predict(data.X_test).argmax(axis=1) == data.y_test))
            epochs, steps = history.epochs_run, history.steps
        else:
            from sklearn.neural_network import MLPClassifier
            X = np.concatenate([data.X_train, data.X_val])
            y = np.concatenate([data.y_train, data.y_val])
            clf = MLPClassifier(hidden_layer_sizes=(128,), early_stopping=True, random_state=seed,
                                validation_fraction=len(data.X_val) / len(X))
            clf.fit(X, y)
            seconds = time.perf_counter() - start
            accuracy = float(clf.score(data.X_test, data.y_test))
            epochs = clf.n_iter_
            steps = epochs * -(-int(len(X) * (1 - clf.validation_fraction)) // min(200, len(X)))
        results.append({"seconds": seconds, "test_accuracy": accuracy, "epochs": epochs, "steps": steps})
    return {"runs": results}


def worker(args):
    impl, dtype, threads = args.worker, args.dtype[0], args.threads[0]
    with limit_threads(impl, threads):
        if args.digits:
            result = digits_worker(impl, args.seeds, args.digits)
        else:
            X, y = synthetic(args.samples, dtype)
            run = {"minidl": minidl_worker, "torch": torch_worker, "sklearn": sklearn_worker}[impl]
            result = run(args, dtype, X, y)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


# ---------------------------------------------------------------------- the conductor
def run_worker(impl, dtype, threads, args, digits=None):
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--dtype", dtype,
               "--threads", str(threads), "--samples", str(args.samples),
               "--batch", *map(str, args.batches), "--epoch-batch", str(args.epoch_batch),
               "--epochs", str(args.epochs), "--loops", str(args.loops),
               "--subrounds", str(args.subrounds), "--warmup", str(args.warmup),
               "--seeds", *map(str, args.seeds), "--momentum", str(args.momentum)]
    if args.nesterov:
        command.append("--nesterov")
    if digits:
        command += ["--digits", digits]
    machine.wait_until_quiet(args.wait_quiet)
    with machine.ForeignCores() as guard:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        sys.exit(f"{impl} worker failed ({' '.join(command)}):\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]), foreign_cores=guard.value)


def median_of(rounds, *keys):
    values = []
    for result in rounds:
        value = result
        for key in keys:
            value = value.get(str(key)) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def paired(rounds_a, rounds_b, *keys, spread=False):
    """Median over rounds of a / b (same round), or None; with spread, (median, min, max)."""
    ratios = []
    for a, b in zip(rounds_a, rounds_b):
        x, z = median_of([a], *keys), median_of([b], *keys)
        if x and z:
            ratios.append(x / z)
    median = statistics.median(ratios) if ratios else None
    if spread:
        return (median, min(ratios), max(ratios)) if ratios else (None, None, None)
    return median


def with_spread(row, key, values):
    """row[key] = the median of values (already there), row[key_min], row[key_max] its range."""
    values = [value for value in values if value is not None]
    row[key + "_min"], row[key + "_max"] = (min(values), max(values)) if values else (None, None)


def measure(args, impls, threads, dtype):
    """{impl: [worker result per round]}, contenders alternating and the order rotating."""
    results = {impl: [] for impl in impls}
    for r in range(args.rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for impl in order:
            results[impl].append(run_worker(impl, dtype, threads, args))
    return results


def over_gemm_epoch(rounds, mini, batch, samples):
    """Median over rounds of a peer's epoch / the bare GEMMs of an epoch (minidl's GEMM time
    per step x samples / batch, same round): the most peer/minidl per epoch could reach if
    minidl's epoch cost nothing but its matrix multiplies. None without minidl's GEMMs."""
    ratios = []
    for peer, ours in zip(rounds, mini):
        epoch, gemm_ms = median_of([peer], "epoch_s"), median_of([ours], "gemm_ms", batch)
        if epoch and gemm_ms:
            ratios.append(epoch / (gemm_ms / 1e3 * samples / batch))
    return statistics.median(ratios) if ratios else None


def rows_for(results, threads, dtype, args, common):
    """One JSON-able row per (impl, batch), with the paired ratios."""
    rows = []
    mini = results.get("minidl", [])
    for impl, rounds in results.items():
        batches = sorted({int(b) for result in rounds for b in result.get("step_ms", {})} |
                         ({args.epoch_batch} if args.epochs else set()))
        for batch in batches:
            row = {"impl": impl, "dtype": dtype, "threads": threads, "batch": batch,
                   "step_ms": median_of(rounds, "step_ms", batch),
                   "epoch_s": median_of(rounds, "epoch_s") if batch == args.epoch_batch else None,
                   "version": rounds[0]["version"], "rounds": len(rounds),
                   "per_round": {key: [median_of([result], key, batch) if key == "step_ms" else
                                       median_of([result], key) for result in rounds]
                                 for key in ("step_ms", "epoch_s")},
                   "peak_rss_mb": max(result["peak_rss_mb"] for result in rounds),
                   "foreign_cores": max((result.get("foreign_cores") or 0.0) for result in rounds),
                   "foreign_cores_per_round": [result.get("foreign_cores") for result in rounds], **common}
            if impl == "minidl":
                row["gemm_ms"] = median_of(rounds, "gemm_ms", batch)
                row["ratio_to_gemm"] = median_of(rounds, "ratio_to_gemm", batch)
                with_spread(row, "ratio_to_gemm", [median_of([result], "ratio_to_gemm", batch)
                                                   for result in rounds])
            else:
                row["step_derived"] = bool(rounds[0].get("step_derived"))
                key = "minidl_over_" + impl + "_step"
                row[key], row[key + "_min"], row[key + "_max"] = paired(mini, rounds, "step_ms", batch,
                                                                        spread=True)
                if row["epoch_s"] is not None:
                    key = impl + "_over_minidl_epoch"
                    row[key], row[key + "_min"], row[key + "_max"] = paired(rounds, mini, "epoch_s", spread=True)
                    row[impl + "_over_gemm_epoch"] = over_gemm_epoch(rounds, mini, batch, args.samples)
            rows.append(row)
    return rows


def print_table(rows, threads, dtype):
    print(f"\n{dtype}, {threads} thread(s)")
    print(f"{'impl':8} {'batch':>5} {'step_ms':>8} {'epoch_s':>8} {'foreign':>7}  notes "
          f"(ratios: median over rounds [min, max])")

    def ratio(row, key):
        return f"{row[key]:.2f} [{row[key + '_min']:.2f}, {row[key + '_max']:.2f}]"

    for row in rows:
        notes = []
        if row["impl"] == "minidl":
            notes.append(f"bare GEMMs {row['gemm_ms']:.3f} ms, step/GEMMs {ratio(row, 'ratio_to_gemm')}")
        else:
            if row.get(f"minidl_over_{row['impl']}_step") is not None:
                notes.append(f"minidl/{row['impl']} per step {ratio(row, 'minidl_over_' + row['impl'] + '_step')}")
            if row.get(f"{row['impl']}_over_minidl_epoch") is not None:
                notes.append(f"{row['impl']}/minidl per epoch {ratio(row, row['impl'] + '_over_minidl_epoch')}")
            ceiling = row.get(f"{row['impl']}_over_gemm_epoch")
            if ceiling is not None:
                notes.append(f"{row['impl']}/bare GEMMs per epoch {ceiling:.2f} (the most "
                             f"{row['impl']}/minidl can be)")
            if row.get("step_derived"):
                notes.append("step = epoch / steps")
        epoch = "" if row["epoch_s"] is None else f"{row['epoch_s']:.3f}"
        step = "" if row["step_ms"] is None else f"{row['step_ms']:.3f}"
        print(f"{row['impl']:8} {row['batch']:>5} {step:>8} {epoch:>8} {row['foreign_cores']:>7.2f}  "
              f"{'; '.join(notes)}")
    busy = max((row["foreign_cores"] for row in rows), default=None)
    if machine.busy_note(busy):
        print(machine.busy_note(busy, f"{dtype}, {threads} thread(s) (the foreign column: the busiest round)"))
    sys.stdout.flush()


def digits(args, impls, common):
    rows = []
    setups = [("sklearn", "default", 200), ("minidl", "matched", 200), ("minidl", "train-defaults", 32)]
    for impl, config, batch in setups:
        if impl not in impls:
            continue
        runs = run_worker(impl, "float64", 1, args, digits=config)["runs"]
        seconds = statistics.median(run["seconds"] for run in runs)
        steps = statistics.median(run["steps"] for run in runs)
        epochs = statistics.median(run["epochs"] for run in runs)
        rows.append({"impl": impl, "dtype": "float64", "threads": 1, "batch": batch,
                     "step_ms": 1e3 * seconds / steps, "epoch_s": seconds / epochs,
                     "benchmark": "digits", "config": config,
                     "seconds_to_stop": seconds, "epochs_to_stop": epochs,
                     "test_accuracy": statistics.mean(run["test_accuracy"] for run in runs),
                     "seeds": args.seeds, "runs": runs, **common})
    return rows


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--batch", dest="batches", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--epoch-batch", type=int, default=128, help="batch size of the epochs (128)")
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per contender and round, the first not timed (3; 0: none)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--loops", type=int, default=15, help="timed steps per block (15)")
    parser.add_argument("--subrounds", type=int, default=5, help="blocks per batch size and round (5)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    machine.add_momentum_argument(parser, "SGD momentum of all three (0.9; 0: plain SGD)")
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum for all three")
    parser.add_argument("--no-digits", dest="run_digits", action="store_false")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="digits seeds")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 thread, float32, batch 32, 4,096 samples, 1 round, 1 digits seed")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    machine.add_guard_arguments(parser)
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--digits", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and not args.worker:
        args.threads, args.dtype, args.batches, args.epoch_batch = [1], ["float32"], [32], 32
        args.samples, args.epochs, args.rounds, args.seeds = 4096, 2, 1, [0]
        args.loops, args.subrounds, args.warmup = 3, 2, 2
    if min(args.threads + args.batches + [args.epoch_batch, args.samples, args.rounds]) < 1:
        parser.error("--threads, --batch, --epoch-batch, --samples and --rounds must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if importlib.util.find_spec("threadpoolctl") is None:
        sys.exit('benchmarks/peers.py needs threadpoolctl to set thread counts: pip install -e ".[bench]"')
    impls = [impl for impl in IMPLS if impl in args.impl and installed(impl)]
    missing = [impl for impl in args.impl if impl not in impls]
    common = {"numpy": np.__version__, "python": platform.python_version(), "momentum": args.momentum,
              "nesterov": args.nesterov, "lr": LR, "samples": args.samples,
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    note = sys.stderr if args.json else sys.stdout
    for impl in missing:
        print(f"note: {impl} is not installed: skipped", file=note)
    if not args.json:
        print(f"MLP {'-'.join(map(str, SIZES))}, ReLU, softmax cross-entropy, SGD lr {LR} momentum "
              f"{args.momentum}{' (Nesterov)' if args.nesterov else ''}; {args.samples} x {SIZES[0]} "
              f"synthetic samples, 10 classes; epochs at batch {args.epoch_batch}")
        print(f"{machine.describe()}; {args.rounds} interleaved rounds of {', '.join(impls)}, "
              f"each in its own process; medians, paired ratios")
    for threads in args.threads:
        for dtype in args.dtype:
            results = measure(args, impls, threads, dtype)
            rows = rows_for(results, threads, dtype, args, dict(common, loadavg=os.getloadavg()[0]))
            if args.json:
                for row in rows:
                    print(json.dumps(row), flush=True)
            else:
                print_table(rows, threads, dtype)
    if args.run_digits and "sklearn" not in impls:
        print("note: the digits comparison needs scikit-learn (its dataset and its MLP): skipped", file=note)
    elif args.run_digits and "minidl" in impls:
        rows = digits(args, impls, dict(common, loadavg=os.getloadavg()[0]))
        if args.json:
            for row in rows:
                print(json.dumps(row), flush=True)
        else:
            print(f"\ndigits end to end, to the early stop (float64, 1 thread, seeds {args.seeds}):")
            sklearn = next((row for row in rows if row["impl"] == "sklearn"), None)
            for row in rows:
                versus = "" if sklearn is None or row is sklearn else \
                    f"; sklearn/minidl time {sklearn['seconds_to_stop'] / row['seconds_to_stop']:.2f}"
                print(f"{row['impl']:8} {row['config']:15} {row['seconds_to_stop']:.2f} s to stop after "
                      f"{row['epochs_to_stop']:.0f} epochs (median), mean test accuracy "
                      f"{row['test_accuracy']:.4f}{versus}")
    if not args.json:
        versions = {impl: results[impl][0]["version"] for impl in impls} if args.threads else {}
        print(f"\nversions: {versions}; OPENBLAS_CORETYPE={common['openblas_coretype'] or '(unset)'}")


if __name__ == "__main__":
    main()
