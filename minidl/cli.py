"""The `minidl` command: train | evaluate | plot | gradcheck.

Every training option is a flag and a key of a TOML config file (--config; flags override
the file, the file overrides the defaults). Bad arguments, bad data and missing optional
dependencies end with one line on stderr and exit code 2, never a traceback.
"""
import argparse
import datetime
import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from . import rundir
from .comm import collectively, resolve_comm
from .data import DATASETS, load_dataset
from .finetune import replace_head
from .layers import ACTIVATIONS
from .model import MLP
from .optim import SGD, Adam
from .mpi import launched_by_mpi, set_blas_threads
from .train import FailureInjection, evaluate, fit

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A problem with what the user asked for: reported in one line, exit code 2."""


def _ints(text):
    if isinstance(text, list):
        return [int(item) for item in text]
    return [int(item) for item in str(text).replace(" ", "").split(",") if item != ""]


def _names(text):
    if isinstance(text, list):
        return [str(item) for item in text]
    names = [item for item in str(text).replace(" ", "").split(",") if item]
    return names[0] if len(names) == 1 else names


@dataclass
class Option:
    key: str
    kind: object            # int, float, str, bool, _ints or _names
    default: object
    help: str
    choices: tuple = None


TRAIN_OPTIONS = [
    # data
    Option("dataset", str, "digits", "dataset", DATASETS),
    Option("data_dir", str, None, "directory holding mnist / fashion-mnist files (default: download into ~/.cache/minidl)"),
    Option("xor_points", int, 400, "points in the xor dataset (4 = the classic four corners)"),
    Option("val_fraction", float, 0.2, "validation fraction (stratified)"),
    Option("test_fraction", float, 0.2, "test fraction (stratified; mnist uses its official test set)"),
    Option("data_seed", int, 0, "seed of the train/val/test split"),
    # model
    Option("hidden", _ints, [128], "hidden layer widths, comma-separated (e.g. 128,64)"),
    Option("activation", _names, "relu", f"hidden activation, or one per hidden layer: {', '.join(ACTIVATIONS)}"),
    Option("negative_slope", float, 0.01, "LeakyReLU slope"),
    Option("init", str, "auto", "weight initialisation", ("auto", "he", "glorot", "torch")),
    Option("dtype", str, "float64", "floating-point type", ("float32", "float64")),
    Option("seed", int, 0, "seed of the weight initialisation and of the per-epoch shuffle"),
    Option("loss", str, None, "loss (default: the dataset's: cross_entropy, or binary_cross_entropy for xor)",
           ("cross_entropy", "mse", "binary_cross_entropy")),
    # optimizer
    Option("optimizer", str, "sgd", "optimizer", ("sgd", "adam")),
    Option("lr", float, None, "learning rate (default 0.05 for sgd, 0.001 for adam)"),
    Option("momentum", float, 0.9, "SGD momentum"),
    Option("dampening", float, 0.0, "SGD dampening"),
    Option("nesterov", bool, False, "SGD Nesterov momentum"),
    Option("weight_decay", float, 1e-3, "L2 weight decay (as PyTorch: added to the gradient)"),
    Option("beta1", float, 0.9, "Adam beta1"),
    Option("beta2", float, 0.999, "Adam beta2"),
    Option("eps", float, 1e-8, "Adam epsilon"),
    # loop
    Option("epochs", int, 200, "maximum number of epochs"),
    Option("batch_size", int, 32, "global batch size"),
    Option("check_every_steps", int, None, "validate every K optimizer steps instead of every epoch"),
    # early stopping
    Option("early_stopping", bool, True, "stop early on the monitored metric"),
    Option("monitor", str, "val_loss", "metric to monitor (loss, accuracy, val_loss, val_accuracy)"),
    Option("mode", str, "auto", "whether the monitored metric should go down or up", ("auto", "min", "max")),
    Option("patience", int, 10, "checks without improvement before stopping"),
    Option("min_delta", float, 0.0, "smallest change that counts as an improvement"),
    Option("baseline", float, None, "value the monitor must beat"),
    Option("restore_best_weights", bool, True, "end with the weights of the best check"),
    Option("start_from_epoch", int, 0, "checks to ignore at the start (warm-up)"),
    Option("stopping_threshold", float, None, "stop as soon as the monitor is better than this"),
    Option("divergence_threshold", float, None, "stop as soon as the monitor is worse than this"),
    Option("check_finite", bool, True, "stop at once on a NaN/inf monitored value"),
    # plateau LR
    Option("reduce_lr", bool, False, "reduce the learning rate on a plateau"),
    Option("lr_factor", float, 0.1, "ReduceLROnPlateau factor"),
    Option("lr_patience", int, 5, "ReduceLROnPlateau patience (checks)"),
    Option("lr_min_delta", float, 1e-4, "ReduceLROnPlateau min_delta"),
    Option("lr_cooldown", int, 0, "ReduceLROnPlateau cooldown (checks)"),
    Option("min_lr", float, 0.0, "lower bound of the learning rate"),
    # fine-tuning
    Option("init_from", str, None, "start from this run directory, final.npz or checkpoint"),
    Option("freeze", _ints, [], "Dense layers to freeze, indexed from 0 (e.g. 0 or 0,1)"),
    Option("new_head", bool, False, "replace the output layer (for a new number of outputs)"),
    # parallel
    Option("sync", str, "grad", "data-parallel mode under mpiexec", ("grad", "params")),
    Option("sync_every", int, 1, "with --sync params: average parameters every K steps"),
    Option("threads", int, None, "BLAS threads per process (default: cores / local ranks)"),
    Option("check_replicas", bool, False, "debugging aid: after every step, check that all ranks "
                                          "hold bit-identical parameters (a hash allgather)"),
    Option("fail_on_rank", int, None, "testing aid: raise on this rank ..."),
    Option("fail_at_step", int, None, "... at this optimizer step"),
]
OPTIONS = {option.key: option for option in TRAIN_OPTIONS}
# Keys that may differ when resuming: they do not change the trajectory.
RESUME_MAY_CHANGE = ("epochs", "threads", "check_replicas", "fail_on_rank", "fail_at_step")


def _coerce(option, value, origin):
    """``value`` converted to the option's kind, or a UsageError naming where it came from."""
    if value is None:
        return None
    try:
        if option.kind is bool:
            if not isinstance(value, bool):
                raise TypeError
            converted = value
        elif option.kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            converted = int(value)
        elif option.kind is float:
            if isinstance(value, bool):
                raise TypeError
            converted = float(value)
            if not math.isfinite(converted):
                raise ValueError
        else:
            converted = option.kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{origin}: {option.key} = {value!r} is not a valid "
                         f"{getattr(option.kind, '__name__', 'value').strip('_')}") from None
    if option.choices and converted not in option.choices:
        raise UsageError(f"{origin}: {option.key} must be one of {', '.join(option.choices)}, got {converted!r}")
    return converted


def merge_config(*layers):
    """The defaults updated by each (origin, values) layer in turn, every value checked."""
    config = {key: option.default for key, option in OPTIONS.items()}
    for origin, values in layers:
        unknown = sorted(set(values) - set(OPTIONS))
        if unknown:
            raise UsageError(f"{origin}: unknown option(s) {', '.join(unknown)}; see minidl train --help")
        config.update({key: _coerce(OPTIONS[key], value, origin) for key, value in values.items()})
    return config


def resolve_config(args, saved=None):
    """defaults < saved run config (when resuming) < --config file < flags."""
    layers = [] if saved is None else [("the run's config.toml", saved)]
    if args.config:
        layers.append((args.config, rundir.read_toml(args.config)))
    layers.append(("command line", {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}))
    return merge_config(*layers)


def _add_train_flags(parser):
    for option in TRAIN_OPTIONS:
        flag = "--" + option.key.replace("_", "-")
        default_text = "" if option.default is None else f" (default: {option.default})"
        if option.kind is bool:
            parser.add_argument(flag, dest=option.key, action=argparse.BooleanOptionalAction,
                                default=None, help=option.help + default_text)
        else:
            kind = option.kind if option.kind in (int, float, str) else str
            parser.add_argument(flag, dest=option.key, type=kind, default=None, metavar=option.key.upper(),
                                help=option.help + default_text)


def build_parser():
    parser = _Parser(prog="minidl", description="Train and check multilayer perceptrons, in NumPy.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train with early stopping and write a run directory",
                                description="Train an MLP (default: digits, 64-128-10, SGD, early stopping "
                                            "on val_loss with patience 10, best weights restored).")
    train.add_argument("--config", help="TOML file of options (keys as the flags, with underscores)")
    train.add_argument("--output", help="run directory (default: runs/<timestamp>)")
    resume_or_overwrite = train.add_mutually_exclusive_group()
    resume_or_overwrite.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    resume_or_overwrite.add_argument("--overwrite", action="store_true",
                                     help="replace minidl's files in a non-empty --output")
    train.add_argument("--quiet", action="store_true", help="no progress bar, only the summary line")
    train.add_argument("--verbose", action="store_true", help="one line per check")
    train.add_argument("--no-plot", dest="plot", action="store_false", help="do not write curves.png")
    _add_train_flags(train)

    evaluate_cmd = commands.add_parser("evaluate", help="evaluate a trained model on a dataset split")
    evaluate_cmd.add_argument("model", help="run directory, final.npz or checkpoint")
    evaluate_cmd.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate_cmd.add_argument("--dataset", choices=DATASETS, help="default: the run's dataset")
    evaluate_cmd.add_argument("--data-dir")
    evaluate_cmd.add_argument("--json", action="store_true", help="print one JSON object")

    plot = commands.add_parser("plot", help="plot a history file (json or csv) to PNG")
    plot.add_argument("history", help="history.json, history.csv or a run directory")
    plot.add_argument("-o", "--output", help="PNG path (default: curves.png beside the history)")

    gradcheck = commands.add_parser("gradcheck", help="finite-difference gradient check of an architecture")
    gradcheck.add_argument("--sizes", default="4,8,3", help="layer widths incl. input and output")
    gradcheck.add_argument("--activation", default="tanh")
    gradcheck.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "mse", "binary_cross_entropy"))
    gradcheck.add_argument("--batch-size", type=int, default=5)
    gradcheck.add_argument("--seed", type=int, default=0)
    gradcheck.add_argument("--eps", type=float, default=1e-5)
    gradcheck.add_argument("--tolerance", type=float, default=1e-6)

    golden = commands.add_parser("golden", help="write or check a golden file (see docs/oracle.md)")
    golden_commands = golden.add_subparsers(dest="golden_command", metavar="write|check")
    golden_commands.required = True
    write = golden_commands.add_parser("write", help="write minidl's float64 answer for a seeded model and batch")
    write.add_argument("path")
    write.add_argument("--sizes", default="4,8,3", help="layer widths incl. input and output")
    write.add_argument("--activation", default="relu", help="one activation, or one per hidden layer")
    write.add_argument("--negative-slope", default="0.01", help="LeakyReLU slope, or one per hidden layer")
    write.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "mse", "binary_cross_entropy"))
    write.add_argument("--seed", type=int, default=0)
    write.add_argument("--batch-size", type=int, default=8)
    write.add_argument("--trajectory-steps", type=int, default=0)
    write.add_argument("--optimizer", choices=("sgd", "adam"))
    write.add_argument("--optimizer-args", help='JSON keyword arguments, e.g. \'{"lr": 0.01}\'')
    check = golden_commands.add_parser("check", help="recompute a golden file with this minidl (exit 1 on mismatch)")
    check.add_argument("path")
    check.add_argument("--rtol", type=float)
    return parser


# --------------------------------------------------------------------------- train
def _prepare_output(args, rank=0):
    output = args.output or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output {output} exists and is not a directory")
    non_empty = os.path.isdir(output) and os.listdir(output)
    if args.resume and not os.path.isdir(output):
        raise UsageError(f"--resume: {output} does not exist; nothing to resume")
    if non_empty and not (args.resume or args.overwrite):
        raise UsageError(f"{output} is not empty: pass --resume to continue that run, --overwrite to "
                         f"replace it, or another --output")
    if args.overwrite and rank == 0:                  # one rank deletes, the others only check
        for name in rundir.OUTPUTS:
            if os.path.exists(os.path.join(output, name)):
                os.unlink(os.path.join(output, name))
    return output


def _check_resume_config(config, saved):
    changed = [key for key in OPTIONS if key not in RESUME_MAY_CHANGE and config.get(key) != saved.get(key)]
    if changed:
        details = ", ".join(f"{key}: run has {saved.get(key)!r}, now {config.get(key)!r}" for key in changed)
        raise UsageError(f"cannot resume with different settings ({details}); resume with the same flags")


def _build_model(config, dataset):
    if config["init_from"]:
        model = rundir.load_model(config["init_from"])
        if model.in_features != dataset.n_features:
            raise UsageError(f"--init-from model takes {model.in_features} inputs, {dataset.name} has "
                             f"{dataset.n_features} features")
        if config["new_head"]:
            model = replace_head(model, dataset.n_outputs, seed=config["seed"])
        elif model.out_features != dataset.n_outputs:
            raise UsageError(f"--init-from model has {model.out_features} outputs, {dataset.name} needs "
                             f"{dataset.n_outputs}: add --new-head")
        if model.dtype.name != config["dtype"]:
            converted = MLP(**dict(model.config(), dtype=config["dtype"]))
            converted.params[...] = model.params                # cast to the requested dtype
            model = converted
        config["hidden"] = list(model.sizes[1:-1])
        config["activation"] = list(model.activations)
    else:
        sizes = [dataset.n_features] + config["hidden"] + [dataset.n_outputs]
        model = MLP(sizes, activation=config["activation"], dtype=config["dtype"], seed=config["seed"],
                    init=config["init"], negative_slope=config["negative_slope"])
    try:
        model.freeze(*config["freeze"])
    except ValueError as error:
        raise UsageError(f"--freeze: {error}") from None
    return model


DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}


def _build_optimizer(config, model):
    """The optimizer; fills in config["lr"] when it was left to the optimizer's default."""
    if config["lr"] is None:
        config["lr"] = DEFAULT_LR[config["optimizer"]]
    if config["optimizer"] == "adam":
        return Adam(model, lr=config["lr"], betas=(config["beta1"], config["beta2"]), eps=config["eps"],
                    weight_decay=config["weight_decay"])
    return SGD(model, lr=config["lr"], momentum=config["momentum"], dampening=config["dampening"],
               nesterov=config["nesterov"], weight_decay=config["weight_decay"])


def _build_callbacks(config):
    from .monitor import EarlyStopping, ReduceLROnPlateau
    callbacks = []
    if config["early_stopping"]:
        callbacks.append(EarlyStopping(
            monitor=config["monitor"], mode=config["mode"], min_delta=config["min_delta"],
            patience=config["patience"], baseline=config["baseline"],
            restore_best_weights=config["restore_best_weights"], start_from_epoch=config["start_from_epoch"],
            stopping_threshold=config["stopping_threshold"], divergence_threshold=config["divergence_threshold"],
            check_finite=config["check_finite"]))
    if config["reduce_lr"]:
        callbacks.append(ReduceLROnPlateau(
            monitor=config["monitor"], factor=config["lr_factor"], patience=config["lr_patience"],
            mode=config["mode"], min_delta=config["lr_min_delta"], cooldown=config["lr_cooldown"],
            min_lr=config["min_lr"]))
    return callbacks


class _RunFiles:
    """Writes config.toml and data.json when training begins, i.e. once fit has accepted every
    argument: a run refused at start-up leaves no files behind that would need --overwrite."""

    def __init__(self, output, config, info):
        self.output, self.config, self.info = output, config, info

    def on_train_begin(self, run):
        if run.comm.rank == 0:
            os.makedirs(self.output, exist_ok=True)
            rundir.write_text(os.path.join(self.output, rundir.CONFIG), rundir.to_toml(self.config))
            rundir.write_json(os.path.join(self.output, rundir.DATA), self.info)


def _set_up_training(args, comm):
    """Everything before fit: output directory, configuration, data, model, optimizer, callbacks.

    Runs on every rank inside ``collectively``, so a bad argument fails on all ranks alike.
    """
    output = _prepare_output(args, comm.rank)
    config_path = os.path.join(output, rundir.CONFIG)
    saved = rundir.read_toml(config_path) if args.resume and os.path.exists(config_path) else None
    config = resolve_config(args, saved)
    if saved is not None:
        _check_resume_config(config, merge_config(("the run's config.toml", saved)))
    for key in ("epochs", "batch_size", "check_every_steps", "sync_every", "threads"):   # before any division
        if config[key] is not None and config[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {config[key]}")
    if (config["fail_on_rank"] is None) != (config["fail_at_step"] is None):
        raise UsageError("--fail-on-rank and --fail-at-step go together (a testing aid: raise on rank R at step S)")
    if config["threads"] is not None:
        try:
            set_blas_threads(config["threads"], comm)
        except ImportError as error:
            raise UsageError(f"--threads: {error}") from None
    dataset = load_dataset(config["dataset"], seed=config["data_seed"], val_fraction=config["val_fraction"],
                           test_fraction=config["test_fraction"], data_dir=config["data_dir"],
                           xor_points=config["xor_points"])
    config["loss"] = config["loss"] or dataset.loss
    if config["loss"] == "cross_entropy" and dataset.n_outputs < 2:
        raise UsageError(f"cross_entropy needs at least 2 outputs (one per class); {dataset.name} has "
                         f"{dataset.n_outputs}: use --loss binary_cross_entropy")
    model = _build_model(config, dataset)
    optimizer = _build_optimizer(config, model)
    from .progress import ProgressBar
    progress = ProgressBar(math.ceil(len(dataset.X_train) / config["batch_size"]), config["epochs"],
                           enabled=comm.rank == 0 and not args.quiet, verbose=args.verbose)
    callbacks = _build_callbacks(config) + [progress, _RunFiles(output, config, dataset.info)]
    if config["fail_on_rank"] is not None:
        callbacks.append(FailureInjection(config["fail_on_rank"], config["fail_at_step"]))
    return output, config, dataset, model, optimizer, callbacks


def cmd_train(args):
    comm = resolve_comm("auto")
    output, config, dataset, model, optimizer, callbacks = collectively(comm, lambda: _set_up_training(args, comm))
    checkpoint = os.path.join(output, rundir.CHECKPOINT)
    resume = args.resume and os.path.exists(checkpoint)
    history = fit(model, config["loss"], optimizer, dataset.X_train, dataset.y_train,
                  epochs=config["epochs"], batch_size=config["batch_size"],
                  validation_data=(dataset.X_val, dataset.y_val), callbacks=callbacks,
                  seed=config["seed"], check_every_steps=config["check_every_steps"], comm=comm,
                  sync=config["sync"], sync_every=config["sync_every"],
                  check_replicas=config["check_replicas"], checkpoint=checkpoint, resume=resume)
    test = evaluate(model, dataset.X_test, dataset.y_test, config["loss"], comm=comm)
    summary = dict(history.summary(), monitor=config["monitor"] if config["early_stopping"] else None,
                   best_value=_best_value(history, config), test_loss=test["loss"],
                   dataset=dataset.name, output=output)
    if "accuracy" in test:
        summary["test_accuracy"] = test["accuracy"]
    if comm.rank == 0:
        _write_outputs(output, model, history, summary, args.plot)
        print(_summary_line(summary, config), flush=True)
    if history.stop_reason == "interrupted":
        print(f"minidl: interrupted; the state is saved. Continue with: minidl train --output {output} --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _best_value(history, config):
    if history.best_check is None or not config["early_stopping"]:
        return None
    return history.records[history.best_check].get(config["monitor"])


def _write_outputs(output, model, history, summary, plot):
    history.to_json(os.path.join(output, rundir.HISTORY_JSON))
    history.to_csv(os.path.join(output, rundir.HISTORY_CSV))
    rundir.write_params(os.path.join(output, rundir.FINAL), model)
    rundir.write_json(os.path.join(output, rundir.SUMMARY), summary)
    if plot and history.records:
        from .plot import plot_history
        try:
            plot_history(history.records, os.path.join(output, rundir.CURVES), history.best_epoch,
                         history.stopped_epoch, title=f"{summary['dataset']}: stop reason {history.stop_reason}",
                         steps_per_epoch=history.steps_per_epoch)
        except ValueError as error:          # matplotlib missing: the run itself is fine
            print(f"minidl: note: no curves.png ({error})", file=sys.stderr)


def _summary_line(summary, config):
    parts = [f"stopped: {summary['stop_reason']} after {summary['epochs_run']} epochs"]
    if summary["best_epoch"] is not None:
        parts.append(f"best {config['monitor']} {summary['best_value']:.4g} at epoch {summary['best_epoch']}")
    if summary["restored_from"] is not None:
        parts.append(f"restored weights from epoch {summary['restored_from']}")
    test = f"test loss {summary['test_loss']:.4f}"
    if "test_accuracy" in summary:
        test += f", accuracy {summary['test_accuracy']:.4f}"
    parts.append(test)
    if summary["samples_per_second"]:
        parts.append(f"{summary['samples_per_second']:,.0f} samples/s")
    parts.append(f"run directory {summary['output']}")
    return "minidl: " + " | ".join(parts)


# --------------------------------------------------------------------------- other commands
def cmd_evaluate(args):
    model = rundir.load_model(args.model)
    run_dir = args.model if os.path.isdir(args.model) else os.path.dirname(args.model)
    config_path = os.path.join(run_dir, rundir.CONFIG)
    saved = rundir.read_toml(config_path) if os.path.exists(config_path) else {}
    name = args.dataset or saved.get("dataset", "digits")
    dataset = load_dataset(name, seed=saved.get("data_seed", 0), val_fraction=saved.get("val_fraction", 0.2),
                           test_fraction=saved.get("test_fraction", 0.2),
                           data_dir=args.data_dir or saved.get("data_dir"), xor_points=saved.get("xor_points", 400))
    if model.in_features != dataset.n_features or model.out_features != dataset.n_outputs:
        raise UsageError(f"the model maps {model.in_features} -> {model.out_features}, {name} needs "
                         f"{dataset.n_features} -> {dataset.n_outputs}")
    X, y = dataset.split(args.split)
    metrics = evaluate(model, X, y, saved.get("loss") or dataset.loss)
    result = {"dataset": name, "split": args.split, "samples": len(X), **metrics}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{name} {args.split} ({len(X)} samples): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def cmd_plot(args):
    from .plot import plot_history
    from .train import read_history_csv
    path = args.history
    if os.path.isdir(path):
        path = os.path.join(path, rundir.HISTORY_JSON)
    if not os.path.exists(path):
        raise UsageError(f"no history file at {path}")
    best = stopped = steps_per_epoch = None
    if path.endswith(".csv"):
        records = read_history_csv(path)
    else:
        try:
            with open(path) as handle:
                data = json.load(handle)
            records, best, stopped = data["records"], data.get("best_epoch"), data.get("stopped_epoch")
            steps_per_epoch = data.get("steps_per_epoch")
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise UsageError(f"{path} is not a minidl history file: {error}") from None
    output = args.output or os.path.join(os.path.dirname(path) or ".", rundir.CURVES)
    plot_history(records, output, best, stopped, steps_per_epoch=steps_per_epoch)
    print(f"wrote {output}")
    return 0


def cmd_gradcheck(args):
    from .gradcheck import check_gradients
    try:
        sizes = _ints(args.sizes)
    except ValueError:
        raise UsageError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
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
    verdict = "ok" if report.ok(args.tolerance) else "FAILED"
    print(f"max relative error {report.max_error:.3e} (tolerance {args.tolerance:.0e}): {verdict}")
    return 0 if report.ok(args.tolerance) else 1


def cmd_golden(args):
    from .golden import check_golden, write_golden
    if args.golden_command == "check":
        if not os.path.exists(args.path):
            raise UsageError(f"no golden file at {args.path}")
        report = check_golden(args.path, rtol=args.rtol)
        print(report)
        return 0 if report.ok else 1
    try:
        slopes = [float(item) for item in args.negative_slope.split(",")]
        optimizer_args = json.loads(args.optimizer_args or "{}")
    except ValueError as error:
        raise UsageError(f"--negative-slope / --optimizer-args: {error}") from None
    optimizer = None
    if args.optimizer or args.optimizer_args:
        optimizer = (args.optimizer or "sgd", optimizer_args)
    write_golden(args.path, sizes=_ints(args.sizes), activation=_names(args.activation),
                 negative_slope=slopes[0] if len(slopes) == 1 else slopes, loss=args.loss, seed=args.seed,
                 batch=args.batch_size, trajectory_steps=args.trajectory_steps, optimizer=optimizer)
    print(f"wrote {args.path}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "plot": cmd_plot, "gradcheck": cmd_gradcheck,
            "golden": cmd_golden}


def launcher_rank():
    """This process's rank as the MPI launcher set it in the environment (0 without one)."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that, under mpiexec, prints usage errors on rank 0 only (all ranks exit 2)."""

    def error(self, message):
        if launcher_rank() == 0:
            self.print_usage(sys.stderr)
            self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")
        self.exit(EXIT_USAGE)


def main(argv=None):
    """Run a command; errors in what was asked for become one line and exit code 2.

    Under mpiexec an error that every rank raised together (start-up validation is collective)
    is printed once, by rank 0; any other error propagates, so the abort hook ends the whole
    job with its traceback instead of leaving the other ranks waiting. Set MINIDL_DEBUG=1 to
    see the traceback of a usage error too.
    """
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError) as error:     # UsageError, DataError, CheckpointError, validation
        distributed = launched_by_mpi() is not None
        if os.environ.get("MINIDL_DEBUG") or (distributed and not getattr(error, "collective", False)):
            raise
        if launcher_rank() == 0:
            print(f"minidl: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def entry_point():
    sys.exit(main())
