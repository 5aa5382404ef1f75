"""Golden files: minidl's float64 answers for one batch, in a versioned .npz anyone can read.

A golden file lets a user check their own framework against minidl without installing
minidl: ``np.load(path, allow_pickle=False)`` is all it takes. Format version 1 holds:

    format            0-d str    "minidl-golden"
    format_version    0-d int64  1
    minidl_version    0-d str    the minidl that wrote it
    readme            0-d str    this table
    config            0-d str    JSON; MLP(**json.loads(config)) rebuilds the model (sizes,
                                 activation per hidden layer, negative_slope, dtype, seed, init)
    loss_function     0-d str    "cross_entropy", "mse" or "binary_cross_entropy"
    inputs            (N, D)     float64
    labels            (N,) int64 class indices (cross_entropy) or (N, C) float64 targets
    param/<name>      float64    the weights under PyTorch's nn.Sequential names:
                                 "param/0.weight" (out, in), "param/0.bias" (out,), ...
    logits            (N, C)     float64, the network's outputs
    loss              0-d        float64, the loss (PyTorch's mean reduction)
    grad/<name>       float64    dloss/dparam, one per param/<name>
  optional, full-batch optimizer steps on (inputs, labels) starting from param/*:
    optimizer         0-d str    JSON {"type": "sgd" or "adam", "hyperparameters": {...}}
    trajectory/<name> (steps, *shape) float64: the parameter after steps 1, 2, ..., steps

Weights are drawn with init="torch" (non-zero biases) from ``seed``; inputs are standard
normal and labels uniform, from ``numpy.random.default_rng([seed, 1])``.
"""
import errno
import json
import os
from dataclasses import dataclass

import numpy as np

from .files import atomic_write, check_shapes, mlp_shapes, read_npz
from .losses import resolve_loss
from .gradcheck import loss_and_grads
from .model import MLP
from .optim import OPTIMIZERS
from .oracle import Report, compare, compare_trajectory, make_optimizer, trajectory
from .validation import check_non_negative_int, check_positive_int

FORMAT = "minidl-golden"
FORMAT_VERSION = 1
GOLDEN_RTOL = 1e-12         # loss, logits, gradients: minidl against its own stored answers
TRAJECTORY_RTOL = 1e-10     # the trajectory contract of docs/oracle.md
DEFAULT_OPTIMIZER = ("sgd", {"lr": 0.1})
REQUIRED = ("format", "format_version", "minidl_version", "config", "loss_function", "inputs",
            "labels", "logits", "loss")


class GoldenFileError(ValueError):
    """A file that is not a readable golden file of the supported format version."""


@dataclass
class Golden:
    """The contents of a golden file (see the module docstring for the meaning of each field)."""
    format_version: int
    minidl_version: str
    config: dict
    loss_function: str
    inputs: np.ndarray
    labels: np.ndarray
    params: dict
    logits: np.ndarray
    loss: float
    grads: dict
    optimizer: dict = None
    trajectory: dict = None

    def model(self):
        """The float64 MLP of the file, holding param/*."""
        model = MLP(**dict(self.config, dtype="float64"))
        model.load_state_dict(self.params)
        return model

    @property
    def steps(self):
        """The number of stored optimizer steps (0 without a trajectory)."""
        return 0 if self.trajectory is None else len(next(iter(self.trajectory.values())))


def write_golden(path, *, sizes, activation="relu", loss="cross_entropy", seed=0, batch=8,
                 trajectory_steps=0, optimizer=None, negative_slope=0.01):
    """Compute minidl's float64 answers for a seeded model and batch and write them to ``path``.

    sizes, activation, negative_slope, seed: as for MLP (init="torch"). batch: the number of
    samples N. trajectory_steps > 0 also stores that many full-batch steps of ``optimizer``:
    "sgd", "adam" or (name, {hyperparameters}); default ("sgd", {"lr": 0.1}). The file is
    written atomically. Returns the Golden that was written.
    """
    loss = resolve_loss(loss)
    batch = check_positive_int("batch", batch)
    trajectory_steps = check_non_negative_int("trajectory_steps", trajectory_steps)
    if optimizer is not None and not trajectory_steps:
        raise ValueError("optimizer= is only used with trajectory_steps > 0")
    model = MLP(sizes, activation=activation, dtype="float64", seed=seed, init="torch",
                negative_slope=negative_slope)
    rng = np.random.default_rng([seed, 1])
    inputs = rng.standard_normal((batch, model.in_features))              # (N, D)
    outputs = (batch, model.out_features)                                  # (N, C)
    if loss == "cross_entropy":
        labels = rng.integers(0, model.out_features, batch)               # (N,) class indices
    elif loss == "mse":
        labels = rng.standard_normal(outputs)
    else:
        labels = rng.integers(0, 2, outputs).astype(np.float64)           # binary targets
    value, grads = loss_and_grads(model, inputs, labels, loss)
    entries = {"format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION, np.int64),
               "minidl_version": np.array(_minidl_version()), "readme": np.array(__doc__),
               "config": np.array(json.dumps(model.config())), "loss_function": np.array(loss),
               "inputs": inputs, "labels": labels, "logits": model.predict(inputs),
               "loss": np.array(value, np.float64)}
    entries.update({f"param/{name}": array for name, array in model.state_dict().items()})
    entries.update({f"grad/{name}": array for name, array in grads.items()})
    if trajectory_steps:
        stepper = make_optimizer(DEFAULT_OPTIMIZER if optimizer is None else optimizer, model)
        kind = next(key for key, cls in OPTIMIZERS.items() if type(stepper) is cls)
        entries["optimizer"] = np.array(json.dumps({"type": kind,
                                                    "hyperparameters": stepper.hyperparameters()}))
        visited = np.stack(trajectory(model, [(inputs, labels)], stepper, loss, trajectory_steps))
        for name, start, stop, shape in model.layout():                  # visited is (steps, P)
            entries[f"trajectory/{name}"] = visited[:, start:stop].reshape(trajectory_steps, *shape)
    atomic_write(path, lambda handle: np.savez_compressed(handle, **entries))
    return _parse(entries, path)


def read_golden(path):
    """Read a golden file with files.read_npz's checks (no pickle: object arrays are refused
    unread); raise GoldenFileError unless it is a golden file of format version 1, and
    FileNotFoundError if there is no file at ``path``."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no golden file", str(path))
    return _parse(read_npz(path, ".npz golden file", error=GoldenFileError), path)


def _minidl_version():
    from . import __version__          # at call time: minidl/__init__ may import this module
    return __version__


def _text(entries, name, path):
    value = entries[name]
    if value.shape != () or value.dtype.kind != "U":
        raise GoldenFileError(f"{path}: {name!r} must be a 0-d string, got {value.dtype} {value.shape}")
    return str(value)


def _json(entries, name, path):
    try:
        value = json.loads(_text(entries, name, path))
    except json.JSONDecodeError as error:
        raise GoldenFileError(f"{path}: {name!r} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise GoldenFileError(f"{path}: {name!r} must be a JSON object, got {type(value).__name__}")
    return value


def _parse(entries, path):
    """A Golden from the file's entries, after checking format, version and completeness."""
    if "format" not in entries or entries["format"].dtype.kind != "U" or \
            str(entries["format"]) != FORMAT:
        raise GoldenFileError(f"{path} is not a minidl golden file (no format={FORMAT!r} entry)")
    version = entries.get("format_version")
    if version is None or version.shape != () or version.dtype.kind not in "iu" or \
            int(version) != FORMAT_VERSION:
        found = "none" if version is None else version.tolist()
        raise GoldenFileError(f"{path} has golden format version {found}, but this minidl "
                              f"({_minidl_version()}) reads format version {FORMAT_VERSION}: regenerate "
                              f"the file with `minidl golden write` or use a matching minidl")
    missing = [name for name in REQUIRED if name not in entries]
    if missing:
        raise GoldenFileError(f"{path} is incomplete: missing {missing}")
    config = _json(entries, "config", path)
    shapes = mlp_shapes(path, config.get("sizes"), error=GoldenFileError)   # before any model is built

    def group(prefix):
        return {name[len(prefix):]: array for name, array in entries.items()
                if name.startswith(prefix)}

    check_shapes(path, shapes, group("param/"), error=GoldenFileError)
    optimizer, visited = None, group("trajectory/") or None
    if visited is not None:
        if "optimizer" not in entries:
            raise GoldenFileError(f"{path} has a trajectory but no optimizer entry")
        optimizer = _json(entries, "optimizer", path)
        if set(optimizer) != {"type", "hyperparameters"}:
            raise GoldenFileError(f"{path}: 'optimizer' must hold exactly 'type' and "
                                  f"'hyperparameters', got {sorted(optimizer)}")
    return Golden(format_version=FORMAT_VERSION,
                  minidl_version=_text(entries, "minidl_version", path), config=config,
                  loss_function=_text(entries, "loss_function", path), inputs=entries["inputs"],
                  labels=entries["labels"], params=group("param/"), logits=entries["logits"],
                  loss=float(entries["loss"]), grads=group("grad/"), optimizer=optimizer,
                  trajectory=visited)


def check_golden(path, *, rtol=None):
    """Recompute a golden file with this minidl and compare: a Report (``report.ok``).

    Loss, logits and gradients must agree to ``rtol`` (default 1e-12), the trajectory, if
    any, to ``rtol`` (default 1e-10), with the error max|a - b| / max(tiny, max|b|).
    """
    golden = read_golden(path)
    model = golden.model()
    report = compare(model, golden.inputs, golden.labels, golden.loss_function,
                     np.float64(golden.loss), golden.grads, their_logits=golden.logits,
                     rtol=GOLDEN_RTOL if rtol is None else rtol)
    rows = report.rows
    if golden.trajectory is not None:
        spec = (golden.optimizer["type"], golden.optimizer["hyperparameters"])
        steps = [{name: values[t] for name, values in golden.trajectory.items()}
                 for t in range(golden.steps)]
        rows += compare_trajectory(model, [(golden.inputs, golden.labels)], spec,
                                   golden.loss_function, steps,
                                   rtol=TRAJECTORY_RTOL if rtol is None else rtol).rows
    return Report(rows, title=f"golden file {path} (format {golden.format_version}, written by "
                              f"minidl {golden.minidl_version})")
