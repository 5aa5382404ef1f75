"""minidl as a correctness oracle for other implementations.

``compare`` checks someone's loss and gradients (logits too, if given) for one batch,
``compare_trajectory`` someone's parameters after every optimizer step, ``replay_monitor``
someone's early-stopping or plateau decisions. minidl's side is always computed in float64,
on a copy: the caller's model and optimizer are never touched.

Every tensor is scored with the error of minidl.gradcheck,

    error(a, b) = max|a - b| / max(tiny, max|b|)        a theirs, b minidl's (the reference)

against a tolerance that defaults to the precision of *their* tensor: 1e-10 for float64,
1e-4 for float32; ``rtol=`` overrides both. The precision contract and the conventions
(weight layout, reductions, ReLU at 0, ...) are in docs/oracle.md.
"""
import copy
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .gradcheck import relative_error
from .interop import to_numpy
from .gradcheck import loss_and_grads
from .model import MLP
from .monitor import EarlyStopping, ReduceLROnPlateau
from .optim import OPTIMIZERS, Optimizer
from .validation import check_positive_int, check_real, check_same_keys

DEFAULT_RTOL = {"float64": 1e-10, "float32": 1e-4}


@dataclass(frozen=True)
class Row:
    """One compared tensor: its error, the worst element (index, their value, minidl's value)."""
    name: str
    shape: tuple           # minidl's shape
    their_shape: tuple
    dtype: str             # their dtype
    error: float           # inf when the shapes differ, nan when theirs holds NaN
    tolerance: float
    where: str             # the worst element, e.g. "[2, 0]" or "0.weight[2, 0]"; "" for scalars
    theirs: float
    ours: float

    @property
    def ok(self):
        return self.error <= self.tolerance


class Report:
    """The rows of a comparison; ``ok`` when every row is within its tolerance."""

    def __init__(self, rows, title=""):
        self.rows = list(rows)
        self.title = title

    @property
    def ok(self):
        return all(row.ok for row in self.rows)

    @property
    def failures(self):
        return [row for row in self.rows if not row.ok]

    @property
    def max_error(self):
        """The largest row error (NaN if any row's is)."""
        return float(np.max([row.error for row in self.rows])) if self.rows else 0.0

    def __getitem__(self, name):
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; rows are {[row.name for row in self.rows]}")

    def assert_ok(self):
        """Raise AssertionError with the whole table unless every row passes."""
        if not self.ok:
            raise AssertionError("minidl oracle: mismatch\n" + str(self))

    def __str__(self):
        header = ("tensor", "shape", "dtype", "rel error", "tol", "worst at", "theirs", "minidl", "")
        table = [header]
        for row in self.rows:
            if row.shape != row.their_shape:
                table.append((row.name, str(row.shape), row.dtype, "-", f"{row.tolerance:.0e}", "-",
                              "-", "-", f"FAIL: their shape is {row.their_shape}"))
            else:
                table.append((row.name, str(row.shape), row.dtype, f"{row.error:.2e}",
                              f"{row.tolerance:.0e}", row.where or "-", f"{row.theirs:.10g}",
                              f"{row.ours:.10g}", "ok" if row.ok else "FAIL"))
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = [self.title] if self.title else []
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                  for line in table]
        failed = [row.name for row in self.failures]
        lines.append(f"FAILED: {len(failed)} of {len(self.rows)} rows ({', '.join(failed)})" if failed
                     else f"ok: all {len(self.rows)} rows within tolerance")
        return "\n".join(lines)

    def __repr__(self):
        return f"<Report ok={self.ok} rows={len(self.rows)} max_error={self.max_error:.3e}>"


def _tolerance(rtol, dtype, name):
    if rtol is not None:
        return rtol
    if dtype.name not in DEFAULT_RTOL:
        raise TypeError(f"{name} has dtype {dtype.name}: default tolerances exist for float64 "
                        f"(1e-10) and float32 (1e-4); pass rtol=")
    return DEFAULT_RTOL[dtype.name]


def _index(flat_index, shape):
    """"[2, 0]" for the element at ``flat_index`` of an array of ``shape``; "" for a scalar."""
    return f"[{', '.join(str(int(i)) for i in np.unravel_index(flat_index, shape))}]" if shape else ""


def _row(name, theirs, ours, tolerance, locate=None):
    """Score ``theirs`` against the float64 reference ``ours``; ``locate(flat index, shape)``
    names the worst element (default: its index, "[2, 0]")."""
    ours = np.asarray(ours, np.float64)
    if theirs.shape != ours.shape:
        return Row(name, ours.shape, theirs.shape, theirs.dtype.name, float("inf"), tolerance,
                   "", float("nan"), float("nan"))
    diff = np.abs(theirs.astype(np.float64) - ours)
    worst = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))     # a NaN is the worst
    where = (locate or _index)(worst, ours.shape)
    return Row(name, ours.shape, theirs.shape, theirs.dtype.name, relative_error(theirs, ours),
               tolerance, where, float(theirs.reshape(-1)[worst]), float(ours.reshape(-1)[worst]))


def _float64_copy(model):
    """An independent float64 twin of ``model``: same architecture, weights, frozen layers."""
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a minidl.MLP, got {type(model).__name__}")
    return model.copy(dtype="float64")


def _their_tensors(what, given, names):
    """{name: NumPy array} for exactly ``names`` from a mapping of arrays or tensors."""
    if not isinstance(given, Mapping):
        raise TypeError(f"{what} must be a mapping of names to arrays (keyed like "
                        f"model.state_dict()), got {type(given).__name__}")
    check_same_keys(what, given, list(names), " (PyTorch nn.Sequential names)")
    tensors = {}
    for name in names:
        if given[name] is None:
            raise ValueError(f"{what}[{name!r}] is None: was backward() called, and does the "
                             f"parameter take part in the loss?")
        tensors[name] = to_numpy(given[name], f"{what}[{name!r}]")
    return tensors


def compare(model, X, y, loss, their_loss, their_grads, *, rtol=None, their_logits=None):
    """Check another implementation's loss and gradients for one batch against minidl's.

    model: a minidl MLP holding the same weights as theirs (see minidl.interop); X (N, D) and
    y the batch; loss "cross_entropy", "mse" or "binary_cross_entropy" (PyTorch's mean
    reductions); their_loss a number, array or tensor; their_grads {state_dict name: array or
    tensor}, every parameter exactly once; their_logits (N, C), optional, adds a "logits" row.

    minidl's loss, logits and gradients are computed in float64 on a copy of the model. Each
    row's tolerance is ``rtol`` or the default for their tensor's dtype (float64 1e-10,
    float32 1e-4); a loss given as a Python float takes the lowest precision of their grads.
    Returns a Report: ``report.ok``, ``report.assert_ok()``, ``print(report)``.
    """
    if rtol is not None:
        rtol = check_real("rtol", rtol, minimum=0.0)
    reference = _float64_copy(model)
    X, y = to_numpy(X, "X"), to_numpy(y, "y")
    our_loss, our_grads = loss_and_grads(reference, X, y, loss)
    grads = _their_tensors("their_grads", their_grads, list(our_grads))

    if isinstance(their_loss, bool) or not (isinstance(their_loss, numbers.Real) or
                                            hasattr(their_loss, "shape")):
        raise TypeError(f"their_loss must be a number, array or tensor, got {type(their_loss).__name__}")
    loss_value = to_numpy(their_loss, "their_loss")
    if loss_value.size != 1:
        raise ValueError(f"their_loss must be a single number, got shape {loss_value.shape}")
    loss_value = loss_value.reshape(())
    if type(their_loss) in (int, float):            # a bare Python number: no dtype of its own
        loss_value = loss_value.astype(min((g.dtype for g in grads.values()), key=lambda d: d.itemsize))

    rows = [_row("loss", loss_value, our_loss, _tolerance(rtol, loss_value.dtype, "their_loss"))]
    if their_logits is not None:
        logits = to_numpy(their_logits, "their_logits")
        rows.append(_row("logits", logits, reference.predict(X),
                         _tolerance(rtol, logits.dtype, "their_logits")))
    rows += [_row(name, grad, our_grads[name], _tolerance(rtol, grad.dtype, f"their_grads[{name!r}]"))
             for name, grad in grads.items()]
    return Report(rows)


# ----------------------------------------------------------------- optimizer trajectories
def make_optimizer(optimizer, model):
    """A new optimizer for ``model``: same type and hyperparameters as an Optimizer instance
    (its state is NOT copied: moments start at zero, the step count at 0), or built from a
    spec "sgd" / "adam" / (name, {hyperparameters})."""
    if isinstance(optimizer, Optimizer):
        return type(optimizer)(model, **optimizer.hyperparameters())
    if isinstance(optimizer, str):
        optimizer = (optimizer, {})
    if not (isinstance(optimizer, (tuple, list)) and len(optimizer) == 2):
        raise TypeError(f"optimizer must be an SGD/Adam instance, a name or a (name, "
                        f"{{hyperparameters}}) pair, got {optimizer!r}")
    name, hyperparameters = optimizer
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    if not isinstance(hyperparameters, Mapping):
        raise TypeError(f"optimizer hyperparameters must be a mapping, got {type(hyperparameters).__name__}")
    return OPTIMIZERS[name](model, **hyperparameters)


def trajectory(model, batches, optimizer, loss, steps=None):
    """The flat parameters after each of ``steps`` optimizer steps, from the model's weights.

    batches: a list of (X, y); step t (from 0) uses batches[t % len(batches)], so the batches
    are cycled when steps > len(batches); steps defaults to len(batches).
    optimizer: an SGD/Adam instance (a fresh one of the same type and hyperparameters is
    used: its moments and step count are not carried over) or a spec such as
    ("adam", {"lr": 1e-3}). Each step: forward, ``loss``, backward (gradients overwritten),
    optimizer.step(), exactly like minidl.fit.

    Runs in float64 on a copy: ``model`` and ``optimizer`` are untouched. Returns a list of
    float64 vectors in model.params layout, i.e. the state_dict tensors flattened row-major
    and concatenated in order (torch.nn.utils.parameters_to_vector of an nn.Sequential).
    """
    work = _float64_copy(model)
    step_optimizer = make_optimizer(optimizer, work)
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: pass a list of (X, y) pairs")
    for i, batch in enumerate(batches):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"batches[{i}] is not an (X, y) pair: batches must be a list of "
                            f"(X, y) pairs, e.g. [(X, y)] for a single batch")
    batches = [(to_numpy(X, f"batches[{i}] inputs"), to_numpy(y, f"batches[{i}] targets"))
               for i, (X, y) in enumerate(batches)]
    steps = len(batches) if steps is None else check_positive_int("steps", steps)
    path = []
    for step in range(steps):
        X, y = batches[step % len(batches)]
        loss_and_grads(work, X, y, loss)                 # writes work.grads
        step_optimizer.step()
        path.append(work.params.copy())
    return path


def compare_trajectory(model, batches, optimizer, loss, their_params, *, rtol=None):
    """Check another optimizer's parameters after every step against ``trajectory``.

    their_params: one entry per step, each a flat vector in model.params layout (e.g.
    torch.nn.utils.parameters_to_vector(net.parameters())) or a state dict. The report has a
    row "step t" per step; "worst at" names the tensor and element, e.g. "0.weight[2, 1]".
    """
    if rtol is not None:
        rtol = check_real("rtol", rtol, minimum=0.0)
    their_params = list(their_params)
    if not their_params:
        raise ValueError("their_params is empty: pass their parameters after each step")
    reference = trajectory(model, batches, optimizer, loss, steps=len(their_params))
    layout = model.layout()

    def locate(flat_index, _):
        for name, start, stop, shape in layout:
            if start <= flat_index < stop:
                return name + _index(flat_index - start, shape)

    rows = []
    for step, (theirs, ours) in enumerate(zip(their_params, reference), start=1):
        name = f"step {step}"
        if isinstance(theirs, Mapping):
            tensors = _their_tensors(f"their_params[{step - 1}]", theirs, [e[0] for e in layout])
            theirs = np.concatenate([tensor.reshape(-1) for tensor in tensors.values()])
        else:
            theirs = to_numpy(theirs, f"their_params[{step - 1}]")
        rows.append(_row(name, theirs, ours, _tolerance(rtol, theirs.dtype, name), locate))
    return Report(rows)


# ----------------------------------------------------------------- monitor replay
def replay_monitor(monitor, values, *, lr=None):
    """Every decision of ``monitor`` over the metric stream ``values``, one dict per check.

    The replay runs on a reset deep copy (the monitor passed in is untouched), from a fresh
    state, check k = 0, 1, ... A training loop stops at the first record with stop=True; the
    records after it show what the monitor would have said had training gone on.

    EarlyStopping:     {"check", "value", "stop", "stop_reason", "best", "best_epoch", "wait"}
    ReduceLROnPlateau: {"check", "value", "lr", "reduced", "best", "wait", "cooldown_counter"},
                       starting from the learning rate ``lr`` (required).
    """
    if not isinstance(monitor, (EarlyStopping, ReduceLROnPlateau)):
        raise TypeError(f"monitor must be an EarlyStopping or ReduceLROnPlateau, got "
                        f"{type(monitor).__name__}")
    replica = copy.deepcopy(monitor)
    replica.reset()
    records = []
    if isinstance(replica, EarlyStopping):
        if lr is not None:
            raise TypeError("lr= is only for ReduceLROnPlateau")
        replica.restore_best_weights = False        # weights play no part in the decisions
        for check, value in enumerate(values):
            stop = replica.update(value)
            records.append({"check": check, "value": float(value), "stop": stop,
                            "stop_reason": replica.stop_reason if stop else None,
                            "best": replica.best, "best_epoch": replica.best_epoch,
                            "wait": replica.wait})
        return records
    if lr is None:
        raise TypeError("ReduceLROnPlateau needs the starting learning rate: pass lr=")
    lr = check_real("lr", lr, minimum=0.0)
    for check, value in enumerate(values):
        reductions = replica.num_reductions
        lr = replica.update(value, lr)
        records.append({"check": check, "value": float(value), "lr": lr,
                        "reduced": replica.num_reductions > reductions, "best": replica.best,
                        "wait": replica.wait, "cooldown_counter": replica.cooldown_counter})
    return records
