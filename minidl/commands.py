"""The commands besides `train`: evaluate | predict | plot | gradcheck | golden.

Each takes the parsed arguments of minidl.cli and returns an exit code (minidl.errors); a
problem with what was asked for is raised (UsageError and other ValueErrors), for
minidl.cli.main to report in one line.
"""
import json
import os

import numpy as np

from . import rundir
from .config import UsageError, _ints, _names, build_dataset, default_config
from .errors import EXIT_CHECK_FAILED
from .loop import evaluate
from .model import MLP
from .modelfile import load as load_model
from .validation import check_positive_int, check_real


def cmd_evaluate(args):
    """Print the metrics of a saved model on a split of its run's dataset (or --dataset)."""
    model = load_model(args.model)
    run_dir = args.model if os.path.isdir(args.model) else os.path.dirname(args.model)
    config_path = os.path.join(run_dir, rundir.CONFIG)
    config = default_config()      # for what the run's config.toml does not say (a lone checkpoint has none)
    if os.path.exists(config_path):
        config.update(rundir.read_toml(config_path))
    config.update({key: getattr(args, key) for key in ("dataset", "data_dir") if getattr(args, key)})
    name = config["dataset"]
    dataset = build_dataset(config)
    if model.in_features != dataset.n_features or model.out_features != dataset.n_outputs:
        raise UsageError(f"the model maps {model.in_features} -> {model.out_features}, {name} needs "
                         f"{dataset.n_features} -> {dataset.n_outputs}")
    X, y = dataset.split(args.split)
    metrics = evaluate(model, X, y, config["loss"] or dataset.loss)
    result = {"dataset": name, "split": args.split, "samples": len(X), **metrics}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{name} {args.split} ({len(X)} samples): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def cmd_predict(args):
    """Predict classes or probabilities for the rows of --input with a saved model."""
    from .predict import predict_file
    predict_file(args.model, args.input, args.output, args.proba)
    return 0


def cmd_plot(args):
    """Write the curves of a history file (json or csv) to PNG; never replaces a PNG unless told."""
    from .plot import plot_history, read_run_history
    path = args.history
    if os.path.isdir(path):
        path = os.path.join(path, rundir.HISTORY_JSON)
    if not os.path.exists(path):
        raise UsageError(f"no history file at {path}")
    try:
        records, facts = read_run_history(path)
    except ValueError as error:
        raise UsageError(f"{path} is not a minidl history file: {error}") from None
    output = args.output or os.path.join(os.path.dirname(path) or ".", rundir.CURVES)
    if os.path.exists(output) and not (args.output or args.overwrite):
        raise UsageError(f"{output} exists (the run's own plot): write elsewhere with -o FILE, "
                         f"or replace it with --overwrite")
    plot_history(records, output, **facts)
    print(f"wrote {output}")
    return 0


def _sizes(text):
    """--sizes of gradcheck and golden write: at least two positive ints, input to output."""
    try:
        sizes = _ints(text)
    except ValueError:
        sizes = []
    if len(sizes) < 2 or min(sizes) < 1:
        raise UsageError(f"--sizes must be two or more comma-separated positive integers (input, "
                         f"hidden..., output widths), got {text!r}")
    return sizes


def cmd_gradcheck(args):
    """Check backprop against finite differences on a random model and batch; 1 when it fails."""
    from .gradcheck import check_gradients
    sizes = _sizes(args.sizes)
    tolerance = check_real("--tolerance", args.tolerance, minimum=0.0)
    check_positive_int("--batch-size", args.batch_size)
    model = MLP(sizes, activation=_names(args.activation), seed=args.seed)
    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((args.batch_size, sizes[0]))
    if args.loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], args.batch_size)
    elif args.loss == "binary_cross_entropy":
        y = rng.random((args.batch_size, sizes[-1]))
    else:
        y = rng.standard_normal((args.batch_size, sizes[-1]))
    report = check_gradients(model, X, y, args.loss, eps=args.eps)
    print(report)
    ok = report.ok(tolerance)
    print(f"max relative error {report.max_error:.3e} (tolerance {tolerance:.0e}): {'ok' if ok else 'FAILED'}")
    return 0 if ok else EXIT_CHECK_FAILED


def cmd_golden(args):
    """Write a golden file, or check this minidl against one (1 on mismatch)."""
    from .golden import check_golden, write_golden
    if args.golden_command == "check":
        if not os.path.exists(args.path):
            raise UsageError(f"no golden file at {args.path}")
        report = check_golden(args.path, rtol=args.rtol)
        print(report)
        return 0 if report.ok else EXIT_CHECK_FAILED
    try:
        slopes = [float(item) for item in args.negative_slope.split(",")]
        optimizer_args = json.loads(args.optimizer_args or "{}")
    except ValueError as error:
        raise UsageError(f"--negative-slope / --optimizer-args: {error}") from None
    optimizer = None
    if args.optimizer or args.optimizer_args:
        optimizer = (args.optimizer or "sgd", optimizer_args)
    write_golden(args.path, sizes=_sizes(args.sizes), activation=_names(args.activation),
                 negative_slope=slopes[0] if len(slopes) == 1 else slopes, loss=args.loss, seed=args.seed,
                 batch=args.batch_size, trajectory_steps=args.trajectory_steps, optimizer=optimizer)
    print(f"wrote {args.path}")
    return 0
