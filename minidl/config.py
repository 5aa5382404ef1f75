"""The configuration of `minidl train`: what can be set, how it is layered, what it builds.

One table of options (SECTIONS, flattened as TRAIN_OPTIONS) gives every flag and TOML key its kind, default and help;
merge_config / resolve_config layer defaults < saved run config < --config file < flags; the
build_* functions turn a resolved config into the dataset, model, optimizer and callbacks; and
prepare_output / check_resume_config / RunFiles handle the run directory the config belongs to.
"""
import datetime
import math
import os
from dataclasses import dataclass

from . import rundir
from .data import DATASETS, load_dataset
from .finetune import replace_head
from .layers import ACTIVATIONS
from .model import INIT_CHOICES, MLP
from .modelfile import load as load_model
from .losses import LOSSES
from .monitor import EarlyStopping, ReduceLROnPlateau
from .optim import OPTIMIZERS, SGD, Adam
from .parallel import SYNC_MODES
from .preflight import check_fits_in_memory, check_writable_directory, model_bytes
from .schedules import CosineAnnealingLR, ExponentialLR, LinearLR, SequentialLR, StepLR
from .threads import thread_count


class UsageError(ValueError):
    """A problem with what the user asked for: reported in one line, exit code 2."""


# --------------------------------------------------------------------------- the options
def _ints(text):
    """A list of ints from "128,64", "128" or a TOML list."""
    if isinstance(text, list):
        return [int(item) for item in text]
    return [int(item) for item in str(text).replace(" ", "").split(",") if item != ""]


def _names(text):
    """A name from "relu", or a list of names from "relu,tanh" or a TOML list."""
    if isinstance(text, list):
        return [str(item) for item in text]
    names = [item for item in str(text).replace(" ", "").split(",") if item]
    return names[0] if len(names) == 1 else names


@dataclass
class Option:
    """One training option: a flag (--key-with-dashes) and a TOML key (key_with_underscores)."""
    key: str
    kind: object            # int, float, str, bool, _ints or _names
    default: object
    help: str
    choices: tuple = None
    minimum: int = None     # for int options (and each int of a list): the smallest value allowed


DEFAULT_LR = {"sgd": 0.05, "adam": 0.001}
LR_SCHEDULES = ("none", "step", "exponential", "cosine")
SECTIONS = {                      # section of `minidl train --help` -> its options
    "data": [
        Option("dataset", str, "digits", "dataset", DATASETS),
        Option("data_dir", str, None, "directory holding mnist / fashion-mnist files (default: download into ~/.cache/minidl)"),
        Option("xor_points", int, 400, "points in the xor dataset (4 = the classic four corners)", minimum=4),
        Option("val_fraction", float, 0.2, "validation fraction (stratified)"),
        Option("test_fraction", float, 0.2, "test fraction (stratified; mnist uses its official test set)"),
        Option("data_seed", int, 0, "seed of the train/val/test split", minimum=0),
    ],
    "model": [
        Option("hidden", _ints, [128], "hidden layer widths, comma-separated (e.g. 128,64)", minimum=1),
        Option("activation", _names, "relu", f"hidden activation, or one per hidden layer: {', '.join(ACTIVATIONS)}"),
        Option("negative_slope", float, 0.01, "LeakyReLU slope"),
        Option("init", str, "auto", "weight initialisation", INIT_CHOICES),
        Option("dtype", str, "float64", "floating-point type", ("float32", "float64")),
        Option("seed", int, 0, "seed of the weight initialisation and of the per-epoch shuffle", minimum=0),
        Option("loss", str, None, "loss (default: the dataset's: cross_entropy, or binary_cross_entropy for xor)",
               tuple(LOSSES)),
    ],
    "optimizer": [
        Option("optimizer", str, "sgd", "optimizer", tuple(OPTIMIZERS)),
        Option("lr", float, None, f"learning rate (default {DEFAULT_LR['sgd']} for sgd, {DEFAULT_LR['adam']} for adam)"),
        Option("momentum", float, 0.9, "SGD momentum"),
        Option("dampening", float, 0.0, "SGD dampening"),
        Option("nesterov", bool, False, "SGD Nesterov momentum"),
        Option("weight_decay", float, 1e-3, "L2 weight decay (as PyTorch: added to the gradient)"),
        Option("beta1", float, 0.9, "Adam beta1"),
        Option("beta2", float, 0.999, "Adam beta2"),
        Option("eps", float, 1e-8, "Adam epsilon"),
    ],
    "loop": [
        Option("epochs", int, 200, "maximum number of epochs", minimum=1),
        Option("batch_size", int, 32, "global batch size", minimum=1),
        Option("check_every_steps", int, None, "validate every K optimizer steps instead of every epoch", minimum=1),
    ],
    "early stopping": [
        Option("early_stopping", bool, True, "stop early on the monitored metric"),
        Option("monitor", str, "val_loss", "metric to monitor (loss, accuracy, val_loss, val_accuracy)"),
        Option("mode", str, "auto", "whether the monitored metric should go down or up", ("auto", "min", "max")),
        Option("patience", int, 10, "checks without improvement before stopping", minimum=0),
        Option("min_delta", float, 0.0, "smallest change that counts as an improvement"),
        Option("baseline", float, None, "value the monitor must beat"),
        Option("restore_best_weights", bool, True, "end with the weights of the best check"),
        Option("start_from_epoch", int, 0, "checks to ignore at the start (warm-up)", minimum=0),
        Option("stopping_threshold", float, None, "stop as soon as the monitor is better than this"),
        Option("divergence_threshold", float, None, "stop as soon as the monitor is worse than this"),
        Option("check_finite", bool, True, "stop at once on a NaN/inf monitored value"),
    ],
    "plateau LR": [
        Option("reduce_lr", bool, False, "reduce the learning rate on a plateau"),
        Option("lr_factor", float, 0.1, "ReduceLROnPlateau factor"),
        Option("lr_patience", int, 5, "ReduceLROnPlateau patience (checks)", minimum=0),
        Option("lr_min_delta", float, 1e-4, "ReduceLROnPlateau min_delta"),
        Option("lr_cooldown", int, 0, "ReduceLROnPlateau cooldown (checks)", minimum=0),
        Option("min_lr", float, 0.0, "lower bound of the learning rate"),
    ],
    "learning-rate schedule": [
        Option("lr_schedule", str, "none", "schedule stepped at every epoch's end (PyTorch's StepLR, "
                                           "ExponentialLR, CosineAnnealingLR)", LR_SCHEDULES),
        Option("lr_step_size", int, 30, "--lr-schedule step: multiply the lr by --lr-gamma every K epochs", minimum=1),
        Option("lr_gamma", float, 0.1, "--lr-schedule step / exponential: the factor gamma"),
        Option("lr_t_max", int, None, "--lr-schedule cosine: T_max, epochs from lr to --lr-eta-min "
                                      "(default: the epochs after the warm-up)", minimum=1),
        Option("lr_eta_min", float, 0.0, "--lr-schedule cosine: the lowest learning rate eta_min"),
        Option("lr_warmup_epochs", int, 0, "linear warm-up (LinearLR) over N epochs before the schedule", minimum=0),
        Option("lr_warmup_start_factor", float, 0.1, "the warm-up's first lr, as a fraction of --lr"),
    ],
    "fine-tuning": [
        Option("init_from", str, None, "start from this run directory, final.npz or checkpoint"),
        Option("freeze", _ints, [], "Dense layers to freeze, indexed from 0 (e.g. 0 or 0,1)", minimum=0),
        Option("new_head", bool, False, "replace the output layer (for a new number of outputs)"),
    ],
    "parallel": [
        Option("sync", str, "grad", "data-parallel mode under mpiexec", SYNC_MODES),
        Option("sync_every", int, 1, "with --sync params: average parameters every K steps", minimum=1),
        Option("threads", thread_count, "auto", "BLAS threads per process: a number, or auto: time a few "
                                                "passes of the model at 1 .. cores / local ranks threads "
                                                "and keep the fastest (docs/threads.md)"),
        Option("collective_timeout", float, None, "seconds a collective may wait for a frozen or lost rank "
                                                  "before the job is aborted (default: $MINIDL_COLLECTIVE_TIMEOUT, "
                                                  "else 600)"),
        Option("check_replicas", bool, False, "debugging aid: after every step, check that all ranks "
                                              "hold bit-identical parameters (a hash allgather)"),
        Option("fail_on_rank", int, None, "testing aid: raise on this rank ...", minimum=0),
        Option("fail_at_step", int, None, "... at this optimizer step", minimum=0),
    ],
}
TRAIN_OPTIONS = [option for options in SECTIONS.values() for option in options]
OPTIONS = {option.key: option for option in TRAIN_OPTIONS}
# Keys that may differ when resuming: they do not change the trajectory.
RESUME_MAY_CHANGE = ("epochs", "threads", "collective_timeout", "check_replicas", "fail_on_rank",
                     "fail_at_step")


def _coerce(option, value, origin):
    """``value`` converted to the option's kind, or a UsageError naming where it came from."""
    if value is None:
        return None
    where = f"--{option.key.replace('_', '-')}" if origin == "command line" else f"{origin}: {option.key}"
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
        raise UsageError(f"{where} = {value!r} is not a valid "
                         f"{getattr(option.kind, '__name__', 'value').strip('_')}") from None
    if option.minimum is not None:
        for number in converted if isinstance(converted, list) else [converted]:
            if number < option.minimum:
                raise UsageError(f"{where} must be >= {option.minimum}, got {value!r}")
    if option.choices and converted not in option.choices:
        raise UsageError(f"{where} must be one of {', '.join(option.choices)}, got {converted!r}")
    return converted


def default_config():
    """Every option at its default."""
    return {key: option.default for key, option in OPTIONS.items()}


def merge_config(*layers):
    """The defaults updated by each (origin, values) layer in turn, every value checked."""
    config = default_config()
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


# --------------------------------------------------------------------------- the run directory
def prepare_output(args):
    """The run directory of ``args.output`` (default runs/<timestamp>), checked against
    --resume / --overwrite; with --overwrite, minidl's files in it are deleted. Rank 0's job."""
    output = args.output or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output {output} exists and is not a directory")
    check_writable_directory(output, "--output")
    non_empty = os.path.isdir(output) and os.listdir(output)
    if args.resume and not os.path.isdir(output):
        raise UsageError(f"--resume: {output} does not exist; nothing to resume")
    if non_empty and not (args.resume or args.overwrite):
        raise UsageError(f"{output} is not empty: pass --resume to continue that run, --overwrite to "
                         f"replace it, or another --output")
    if args.overwrite:
        for name in rundir.OUTPUTS:
            if os.path.exists(os.path.join(output, name)):
                os.unlink(os.path.join(output, name))
    return output


def check_resume_config(config, saved):
    """Refuse to resume a run with settings that would change its trajectory."""
    changed = [key for key in OPTIONS if key not in RESUME_MAY_CHANGE and config.get(key) != saved.get(key)]
    if changed:
        details = ", ".join(f"{key}: run has {saved.get(key)!r}, now {config.get(key)!r}" for key in changed)
        raise UsageError(f"cannot resume with different settings ({details}); resume with the same flags")


class RunFiles:
    """Writes config.toml and data.json when training begins, i.e. once fit has accepted every
    argument: a run refused at start-up leaves no files behind that would need --overwrite."""

    def __init__(self, output, config, info):
        self.output, self.config, self.info = output, config, info

    def on_train_begin(self, run):
        if run.comm.rank == 0:
            os.makedirs(self.output, exist_ok=True)
            rundir.write_text(os.path.join(self.output, rundir.CONFIG), rundir.to_toml(self.config))
            rundir.write_json(os.path.join(self.output, rundir.DATA), self.info)


# --------------------------------------------------------------------------- what a config builds
def build_dataset(config):
    """The dataset and split the config names."""
    if config["dataset"] == "xor":                 # (points, 2) inputs, labels and copies: 6 floats a point
        check_fits_in_memory(f"--xor-points {config['xor_points']}", 8 * 6 * config["xor_points"],
                             "use fewer --xor-points")
    return load_dataset(config["dataset"], seed=config["data_seed"], val_fraction=config["val_fraction"],
                        test_fraction=config["test_fraction"], data_dir=config["data_dir"],
                        xor_points=config["xor_points"])


def build_model(config, dataset, initial=None):
    """A new model for ``dataset``, or ``initial``, the --init-from model (with --new-head, a
    new output layer); then --freeze. With --init-from, config["hidden"] and ["activation"] are
    set to the loaded model's, so that config.toml describes the model trained."""
    if config["init_from"]:
        model = initial or load_model(config["init_from"])
        if model.in_features != dataset.n_features:
            raise UsageError(f"--init-from model takes {model.in_features} inputs, {dataset.name} has "
                             f"{dataset.n_features} features")
        if config["new_head"]:
            model = replace_head(model, dataset.n_outputs, seed=config["seed"])
        elif model.out_features != dataset.n_outputs:
            raise UsageError(f"--init-from model has {model.out_features} outputs, {dataset.name} needs "
                             f"{dataset.n_outputs}: add --new-head")
        if model.dtype.name != config["dtype"]:
            model = model.copy(dtype=config["dtype"])
        config["hidden"] = list(model.sizes[1:-1])
        config["activation"] = list(model.activations)
    else:
        sizes = [dataset.n_features] + config["hidden"] + [dataset.n_outputs]
        check_fits_in_memory(f"a {'-'.join(map(str, sizes))} MLP in {config['dtype']}",
                             model_bytes(sizes, config["dtype"], min(config["batch_size"], len(dataset.X_train))),
                             "use smaller --hidden or --batch-size")
        model = MLP(sizes, activation=config["activation"], dtype=config["dtype"], seed=config["seed"],
                    init=config["init"], negative_slope=config["negative_slope"])
    try:
        model.freeze(*config["freeze"])
    except ValueError as error:
        raise UsageError(f"--freeze: {error}") from None
    return model


def _arguments(config, *same, **renamed):
    """Keyword arguments from ``config``: the keys named in ``same`` as they are, and
    ``keyword="config key"`` for those whose option has another name."""
    return {**{key: config[key] for key in same}, **{keyword: config[key] for keyword, key in renamed.items()}}


def build_optimizer(config, model):
    """The optimizer; fills in config["lr"] when it was left to the optimizer's default."""
    if config["lr"] is None:
        config["lr"] = DEFAULT_LR[config["optimizer"]]
    if config["optimizer"] == "adam":
        return Adam(model, betas=(config["beta1"], config["beta2"]),
                    **_arguments(config, "lr", "eps", "weight_decay"))
    return SGD(model, **_arguments(config, "lr", "momentum", "dampening", "nesterov", "weight_decay"))


def build_schedule(config, optimizer):
    """The learning-rate schedule of --lr-schedule and --lr-warmup-epochs (None without one),
    built on ``optimizer``: LinearLR(start_factor, 1.0, N) for N warm-up epochs, then the
    schedule, through SequentialLR(milestones=[N]); warm-up alone holds the lr at the end."""
    name, warmup = config["lr_schedule"], config["lr_warmup_epochs"]
    if name == "none" and not warmup:
        return None
    try:
        if warmup < 0:
            raise ValueError(f"must be >= 0, got {warmup}")
        ramp = LinearLR(optimizer, config["lr_warmup_start_factor"], 1.0, warmup) if warmup else None
        if name == "none":
            return ramp
        if name == "step":
            schedule = StepLR(optimizer, config["lr_step_size"], config["lr_gamma"])
        elif name == "exponential":
            schedule = ExponentialLR(optimizer, config["lr_gamma"])
        else:
            if config["lr_t_max"] is None:                       # saved in config.toml: resumes keep it
                config["lr_t_max"] = config["epochs"] - warmup
            t_max = config["lr_t_max"]
            schedule = CosineAnnealingLR(optimizer, t_max, config["lr_eta_min"])
        return SequentialLR(optimizer, [ramp, schedule], [warmup]) if ramp else schedule
    except (TypeError, ValueError) as error:
        raise UsageError(f"--lr-schedule {name} / --lr-warmup-epochs {warmup}: {error}") from None


def build_callbacks(config, optimizer=None):
    """EarlyStopping, ReduceLROnPlateau and the learning-rate schedule, each when switched on
    (the schedule needs ``optimizer``). The schedule acts at epoch ends, after the check
    where ReduceLROnPlateau acts: see docs/optimizers.md."""
    callbacks = []
    if config["early_stopping"]:
        callbacks.append(EarlyStopping(**_arguments(
            config, "monitor", "mode", "min_delta", "patience", "baseline", "restore_best_weights",
            "start_from_epoch", "stopping_threshold", "divergence_threshold", "check_finite")))
    if config["reduce_lr"]:
        callbacks.append(ReduceLROnPlateau(**_arguments(
            config, "monitor", "mode", "min_lr", factor="lr_factor", patience="lr_patience",
            min_delta="lr_min_delta", cooldown="lr_cooldown")))
    if config["lr_schedule"] != "none" or config["lr_warmup_epochs"]:
        if optimizer is None:
            raise UsageError("--lr-schedule / --lr-warmup-epochs: build_callbacks needs the optimizer")
        callbacks.append(build_schedule(config, optimizer))
    return callbacks


def check_options_not_in_use(config):
    """Refuse invalid values of options this run does not use (--beta1 with SGD, --lr-factor
    without --reduce-lr, ...): config.toml records every option, and a run resumed or copied
    from it with the option switched on would fail then. Each is checked by building what
    uses it, on a 1-1 model: the same checks as when it is in use."""
    probe = MLP([1, 1], dtype=config["dtype"])
    variants = [(f"--optimizer {name}", {"optimizer": name, "lr": config["lr"] or DEFAULT_LR[name]})
                for name in OPTIMIZERS if name != config["optimizer"]]
    variants.append(("--early-stopping, --reduce-lr and --lr-warmup-epochs",
                     {"early_stopping": True, "reduce_lr": True, "lr_warmup_epochs": config["lr_warmup_epochs"] or 1}))
    variants += [(f"--lr-schedule {name}", {"lr_schedule": name, "lr_t_max": config["lr_t_max"] or 1})
                 for name in LR_SCHEDULES if name not in ("none", config["lr_schedule"])]
    for what, change in variants:
        trial = {**config, **change}
        try:
            build_callbacks(trial, build_optimizer(trial, probe))
        except (TypeError, ValueError) as error:
            raise UsageError(f"{error} (an option of {what}: not in use in this run, but config.toml "
                             f"records it, so it must be valid; fix it or leave it out)") from None
