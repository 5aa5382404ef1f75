"""Losses: each returns ``(loss, dlogits)`` from one fused, numerically stable computation.

Reductions are PyTorch's defaults (``reduction="mean"``):

    mse                   mean over all N*K elements     L = sum((z - y)**2) / (N*K)
    softmax_cross_entropy mean over the N rows           L = sum_i(logsumexp(z_i) - z_i[y_i]) / N
    binary_cross_entropy  mean over all N*K elements     L = sum(softplus-form) / (N*K)

``num_samples=`` replaces the local row count N in that mean (MSE and BCE still divide by K
too). The data-parallel mode passes the *global* batch size, so each rank's loss and
gradient are its share of the global mean and the ranks' gradients simply add up.
With ``num_samples`` given, a batch may have zero rows (a rank's empty share).

``loss_kernel(name)`` gives fit its unchecked kernel: a new one keeps its dz and scratch
arrays in its own workspace and reuses them in the next call, so a training loop allocates
nothing; the public functions below return new arrays.
"""
import functools

import numpy as np

from .layers import Workspace, stable_sigmoid
from .validation import (check_class_labels, check_inputs, check_positive_int, check_targets,
                         numeric_array)


def _new(key, shape, dtype):
    """The ``buffer`` of a one-off kernel call: a new array every time."""
    return np.empty(shape, dtype)


def _mse(z, y, n, buffer=_new):
    """L = sum((z - y)**2) / (n*K);  dz = 2 (z - y) / (n*K)."""
    scale = 1.0 / (n * z.shape[1])
    diff = np.subtract(z, y, out=buffer("dz", z.shape, z.dtype))     # (N, K)
    loss = float(np.vdot(diff, diff)) * scale
    diff *= 2 * scale                                                # now dz, in place
    return loss, diff


def _softmax_cross_entropy(z, y, n, buffer=_new):
    """L = sum_i(logsumexp(z_i) - z_i[y_i]) / n;  dz = (softmax(z) - onehot(y)) / n.

    With probability targets y (N, C): L = sum_ic y_ic (logsumexp(z_i) - z_ic) / n and
    dz = (softmax(z) * sum_c y_ic - y) / n, which is (softmax(z) - y) / n when rows sum to 1.
    Stable: logsumexp subtracts the row maximum first, so exp never overflows.
    Every array comes from ``buffer`` (fit's kernel reuses them, so a step allocates nothing):
    the (N, 1) row values are repeated into a full (N, C) ``tile`` before they meet the
    logits (_repeat_into), and the label entries z_i[y_i] are reached through their
    flat indices i*C + y_i with take/put instead of fancy indexing, which makes new arrays.
    """
    row = buffer("row", (len(z), 1), z.dtype)                        # (N, 1) scratch
    tile = buffer("tile", z.shape, z.dtype)                          # (N, C) scratch
    np.maximum.reduce(z, axis=1, keepdims=True, out=row)             # row maxima
    shifted = np.subtract(z, _repeat_into(tile, row),
                          out=buffer("shifted", z.shape, z.dtype))   # (N, C), row max is 0
    exp = np.exp(shifted, out=buffer("dz", z.shape, z.dtype))        # (N, C), in (0, 1]
    sums = np.add.reduce(exp, axis=1, keepdims=True, out=row)        # (N, 1), >= 1
    exp /= _repeat_into(tile, sums)                                  # now softmax(z), in place
    log_sums = np.log(sums, out=row)                                 # (N, 1), over the sums
    if y.ndim == 1:                                                  # integer class labels
        flat = np.add(_row_starts(*z.shape), y, out=buffer("flat", y.shape, np.int64))   # i*C + y_i
        picked = np.take(shifted, flat, out=buffer("picked", y.shape, z.dtype), mode="clip")
        loss = float(log_sums.sum() - picked.sum()) / n                  # flat is in range:
        np.take(exp, flat, out=picked, mode="clip")                      # "clip" never clips
        picked -= 1
        np.put(exp, flat, picked, mode="clip")                           # softmax - onehot
    else:                                                            # probability targets
        loss = float(np.vdot(y, log_sums - shifted)) / n
        exp *= y.sum(axis=1, keepdims=True)
        exp -= y
    exp /= n                                                         # now dz
    return loss, exp


def _repeat_into(tile, values):
    """``values`` (N, 1) repeated across the columns of ``tile`` (N, C), which it returns.

    A ufunc given a broadcast operand allocates an internal buffer of 8,192 elements on every
    call; np.copyto broadcasts without one, and the ufunc that then meets two full-size
    arrays needs none either. (The Dense layer's (N, H) bias add keeps its broadcast: there
    the full-size copy would cost more memory traffic than the buffer, 2-7 % of a step at
    batch 512, measured.)
    """
    np.copyto(tile, values)
    return tile


@functools.lru_cache(maxsize=16)
def _row_starts(rows, columns):
    """(rows,) int64 [0, C, 2C, ...]: where each row starts in a flattened (rows, C) array."""
    starts = np.arange(0, rows * columns, columns, dtype=np.int64)
    starts.flags.writeable = False                                   # shared by every call
    return starts


def _binary_cross_entropy(z, y, n, buffer=_new):
    """L = sum(max(z, 0) - z*y + log1p(exp(-|z|))) / (n*K);  dz = (sigmoid(z) - y) / (n*K).

    The softplus form never takes the log of a probability, so it is finite for any logit.
    """
    scale = 1.0 / (n * z.shape[1])
    loss = float((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum()) * scale
    dz = stable_sigmoid(z, out=buffer("dz", z.shape, z.dtype))       # (N, K)
    dz -= y
    dz *= scale
    return loss, dz


def _class_or_probability_targets(y, shape, dtype):
    y = numeric_array("targets", y)
    if y.ndim == 1:
        return check_class_labels("targets", y, shape[0], shape[1])
    return check_targets("targets", y, shape, dtype, low=0.0, high=1.0)


# name -> (kernel, target check); kernels take checked (N, K) outputs, targets and the divisor n.
LOSSES = {
    "mse": (_mse, lambda y, shape, dtype: check_targets("targets", y, shape, dtype)),
    "cross_entropy": (_softmax_cross_entropy, _class_or_probability_targets),
    "binary_cross_entropy": (_binary_cross_entropy,
                             lambda y, shape, dtype: check_targets("targets", y, shape, dtype, 0.0, 1.0)),
}
ALIASES = {"softmax_cross_entropy": "cross_entropy", "bce": "binary_cross_entropy", "ce": "cross_entropy"}


def resolve_loss(name):
    """The canonical loss name for ``name`` (aliases allowed), or a ValueError listing them."""
    if not isinstance(name, str):
        raise TypeError(f"loss must be a name such as 'cross_entropy', got {type(name).__name__}")
    canonical = ALIASES.get(name, name)
    if canonical not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return canonical


def check_loss_targets(name, y, shape, dtype):
    """Validate targets for loss ``name`` against outputs of ``shape``; return them converted."""
    return LOSSES[resolve_loss(name)][1](y, shape, dtype)


class _Kernel:
    """``kernel(z, y, n) -> (loss, dz)`` with a workspace: dz and the kernel's scratch arrays
    are overwritten by its next call (reallocated only when the batch size changes)."""

    def __init__(self, function):
        self.function, self.workspace = function, Workspace()

    def __call__(self, z, y, n):
        return self.function(z, y, n, self.workspace)


def loss_kernel(name):
    """A new unchecked kernel ``(z, y, n) -> (loss, dz)`` for loss ``name``; the dz it returns
    is reused by its next call (fit keeps one kernel for the whole run)."""
    return _Kernel(LOSSES[resolve_loss(name)][0])


def _checked_call(name, logits, targets, num_samples):
    z = numeric_array("logits", logits)
    dtype = z.dtype if z.dtype in (np.float32, np.float64) else np.float64
    z = check_inputs("logits", z, dtype, allow_empty=num_samples is not None)
    y = check_loss_targets(name, targets, z.shape, dtype)
    n = z.shape[0] if num_samples is None else check_positive_int("num_samples", num_samples)
    if n < z.shape[0]:
        raise ValueError(f"num_samples ({n}) is smaller than the {z.shape[0]} rows in this batch; "
                         f"pass the global batch size")
    return loss_kernel(name)(z, y, n)


def mse(outputs, targets, num_samples=None):
    """Mean squared error over all N*K elements (no 1/2), like torch.nn.MSELoss().

    outputs (N, K), targets (N, K) (or (N,) when K == 1). Returns (loss, doutputs):
        L  = sum((z - y)**2) / (n*K)
        dz = 2 (z - y) / (n*K)                   (N, K)
    with n = N, or ``num_samples`` when given.
    """
    return _checked_call("mse", outputs, targets, num_samples)


def softmax_cross_entropy(logits, targets, num_samples=None):
    """Softmax cross-entropy from logits, mean over rows, like torch.nn.CrossEntropyLoss().

    logits (N, C); targets are integer class labels (N,) in [0, C) or probability /
    one-hot targets (N, C) in [0, 1]. Returns (loss, dlogits):
        L  = sum_i(logsumexp(z_i) - z_i[y_i]) / n
        dz = (softmax(z) - onehot(y)) / n        (N, C)
    with n = N, or ``num_samples`` when given.
    """
    return _checked_call("cross_entropy", logits, targets, num_samples)


def binary_cross_entropy(logits, targets, num_samples=None):
    """Binary cross-entropy from logits over all N*K elements, like torch.nn.BCEWithLogitsLoss().

    logits (N, K), targets (N, K) in [0, 1] (or (N,) when K == 1). Returns (loss, dlogits):
        L  = sum(max(z, 0) - z*y + log1p(exp(-|z|))) / (n*K)
        dz = (sigmoid(z) - y) / (n*K)            (N, K)
    with n = N, or ``num_samples`` when given.
    """
    return _checked_call("binary_cross_entropy", logits, targets, num_samples)
