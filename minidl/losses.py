"""Losses: each returns ``(loss, dlogits)`` from one fused, numerically stable computation.

Reductions are PyTorch's defaults (``reduction="mean"``):

    mse                   mean over all N*K elements     L = sum((z - y)**2) / (N*K)
    softmax_cross_entropy mean over the N rows           L = sum_i(logsumexp(z_i) - z_i[y_i]) / N
    binary_cross_entropy  mean over all N*K elements     L = sum(softplus-form) / (N*K)

``num_samples=`` replaces the local row count N in that mean (MSE and BCE still divide by K
too). The data-parallel mode passes the *global* batch size, so each rank's loss and
gradient are its share of the global mean and the ranks' gradients simply add up.
With ``num_samples`` given, a batch may have zero rows (a rank's empty share).

``LOSSES`` is the one table of losses: per canonical name, the unchecked function, the target
check and, for the losses with an accuracy, how to count the correct predictions.
"""
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .layers import stable_sigmoid
from .validation import (check_class_labels, check_inputs, check_positive_int, check_targets,
                         numeric_array)


def _mse(z, y, n):
    """L = sum((z - y)**2) / (n*K);  dz = 2 (z - y) / (n*K).  z, y: (N, K)."""
    scale = 1.0 / (n * z.shape[1])
    diff = z - y                                                     # (N, K)
    loss = float(np.vdot(diff, diff)) * scale
    return loss, 2 * scale * diff


def _log_softmax_parts(z):
    """Stable softmax of logits z (N, C): (shifted, log_sums, probs) with shifted = z - max_c z,
    log_sums = log sum_c exp(shifted) (so logsumexp(z_i) - z_ic = log_sums_i - shifted_ic) and
    probs = softmax(z). Subtracting the row maximum first keeps exp in (0, 1]: no overflow."""
    shifted = z - z.max(axis=1, keepdims=True)                       # (N, C), row max is 0
    exp = np.exp(shifted)                                            # (N, C), in (0, 1]
    sums = exp.sum(axis=1, keepdims=True)                            # (N, 1), >= 1
    return shifted, np.log(sums), exp / sums


def _cross_entropy_labels(z, y, n):
    """L = sum_i(logsumexp(z_i) - z_i[y_i]) / n;  dz = (softmax(z) - onehot(y)) / n.

    z (N, C) logits, y (N,) integer labels.
    """
    shifted, log_sums, probs = _log_softmax_parts(z)
    rows = np.arange(len(z))
    loss = float(log_sums.sum() - shifted[rows, y].sum()) / n
    probs[rows, y] -= 1                                              # now softmax - onehot
    return loss, probs / n


def _cross_entropy_probabilities(z, y, n):
    """L = sum_ic y_ic (logsumexp(z_i) - z_ic) / n;  dz = (softmax(z) * sum_c y_ic - y) / n.

    z (N, C) logits, y (N, C) probability targets; dz is (softmax(z) - y) / n when the rows of
    y sum to 1 (they need not, as in PyTorch).
    """
    shifted, log_sums, probs = _log_softmax_parts(z)
    loss = float(np.vdot(y, log_sums - shifted)) / n
    return loss, (probs * y.sum(axis=1, keepdims=True) - y) / n


def _softmax_cross_entropy(z, y, n):
    """Cross-entropy of softmax(z): integer labels y (N,) or probability targets y (N, C)."""
    return (_cross_entropy_labels if y.ndim == 1 else _cross_entropy_probabilities)(z, y, n)


def _binary_cross_entropy(z, y, n):
    """L = sum(max(z, 0) - z*y + log1p(exp(-|z|))) / (n*K);  dz = (sigmoid(z) - y) / (n*K).

    z, y: (N, K). The softplus form never takes the log of a probability, so it is finite for
    any logit.
    """
    scale = 1.0 / (n * z.shape[1])
    loss = float((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum()) * scale
    return loss, (stable_sigmoid(z) - y) * scale


def _class_hits(z, y):
    """(rows whose largest logit is the label, N); for probability targets the label is the
    target's most probable class."""
    labels = y if y.ndim == 1 else y.argmax(axis=1)                  # (N,)
    return int(np.count_nonzero(z.argmax(axis=1) == labels)), len(z)


def _binary_hits(z, y):
    """(outputs on the target's side of 1/2, N*K): sigmoid(z) > 1/2 exactly when z > 0."""
    return int(np.count_nonzero((z > 0) == (y >= 0.5))), y.size


def _real_targets(argument, y, shape, dtype):
    return check_targets(argument, y, shape, dtype)


def _probability_targets(argument, y, shape, dtype):
    return check_targets(argument, y, shape, dtype, low=0.0, high=1.0)


def _class_or_probability_targets(argument, y, shape, dtype):
    y = numeric_array(argument, y)
    if y.ndim == 1:
        return check_class_labels(argument, y, shape[0], shape[1])
    return _probability_targets(argument, y, shape, dtype)


class Loss(NamedTuple):
    """One loss: ``function(z, y, n) -> (loss, dz)`` on checked arrays (z (N, K) outputs, y from
    ``check_targets(argument, y, shape, dtype)``, n the divisor of the mean); ``count_correct(z, y) ->
    (n_correct, n_judged)``, or None for a loss without an accuracy."""

    name: str
    function: Callable
    check_targets: Callable
    count_correct: Callable | None


LOSSES = {loss.name: loss for loss in (
    Loss("mse", _mse, _real_targets, None),
    Loss("cross_entropy", _softmax_cross_entropy, _class_or_probability_targets, _class_hits),
    Loss("binary_cross_entropy", _binary_cross_entropy, _probability_targets, _binary_hits),
)}
ALIASES = {"softmax_cross_entropy": "cross_entropy", "bce": "binary_cross_entropy", "ce": "cross_entropy"}


def resolve_loss(name):
    """The canonical loss name for ``name`` (aliases allowed), or a ValueError listing them."""
    if not isinstance(name, str):
        raise TypeError(f"loss must be a name such as 'cross_entropy', got {type(name).__name__}")
    canonical = ALIASES.get(name, name)
    if canonical not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return canonical


def has_accuracy(name):
    """Whether loss ``name`` is a classification loss with an accuracy (all but mse)."""
    return LOSSES[resolve_loss(name)].count_correct is not None


def check_loss_targets(name, y, shape, dtype, argument="y"):
    """Validate targets for loss ``name`` against outputs of ``shape``; return them converted.
    Errors name ``argument``, the caller's name for them."""
    return LOSSES[resolve_loss(name)].check_targets(argument, y, shape, dtype)


def loss_kernel(name):
    """The unchecked ``(z, y, n) -> (loss, dz)`` of loss ``name``; dz is a new array every call."""
    return LOSSES[resolve_loss(name)].function


def _checked_call(name, logits, targets, num_samples):
    z = numeric_array("logits", logits)
    dtype = z.dtype if z.dtype in (np.float32, np.float64) else np.float64
    z = check_inputs("logits", z, dtype, allow_empty=num_samples is not None)
    y = check_loss_targets(name, targets, z.shape, dtype, "targets")
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
