"""Input checks for the public entry points.

Every public function validates its arguments here and raises ``TypeError`` (wrong kind of
thing) or ``ValueError`` (right kind, wrong value) with a message that names the argument,
says what was expected and what was found. Internal code calls the unchecked kernels.
"""
import numbers
import os
import warnings

import numpy as np

FLOAT_DTYPES = ("float32", "float64")


def as_dtype(dtype):
    """Resolve a dtype name or object to np.float32 / np.float64, or raise."""
    if dtype is None:
        raise TypeError("dtype must be 'float32' or 'float64', got None")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # NumPy's deprecation of odd names ('a')
            resolved = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError):  # np.dtype("01") raises SyntaxError
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if resolved.name not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {resolved.name!r}")
    return resolved


def numeric_array(name, value):
    """np.asarray(value), rejecting what is not real numbers (objects, strings, complex)."""
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of real numbers: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array


def check_finite(name, array, advice="remove or impute them before training"):
    """Raise ValueError if ``array`` holds NaN or infinity, naming where."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"{name} contains non-finite values (first at index {tuple(bad.tolist())}); "
                         f"{advice}")


def as_float_dtype(name, array, dtype):
    """``array`` (finite) as a C-contiguous ``dtype`` array; values finite in their own dtype
    that overflow ``dtype`` (1e39 given to a float32 model) raise ValueError instead of
    silently becoming inf. One pass over the cast array, and only when narrowing."""
    with np.errstate(over="ignore"):
        cast = np.ascontiguousarray(array, dtype=dtype)
    if array.dtype.kind == "f" and cast.dtype.itemsize < array.dtype.itemsize and not np.isfinite(cast).all():
        limit = np.finfo(cast.dtype).max
        raise ValueError(f"{name} has values up to {np.abs(array).max():.3g}, which overflow {cast.dtype} "
                         f"(max {limit:.2g}): scale them (e.g. standardize the inputs) or use a "
                         f"float64 model (dtype='float64')")
    return cast


def check_inputs(name, X, dtype, n_features=None, allow_empty=False):
    """Return X as a C-contiguous (N, D) array of ``dtype`` after checking it.

    Rejects non-numeric data (TypeError), a wrong number of dimensions or features,
    an empty batch (unless ``allow_empty``) and non-finite values (ValueError).
    """
    array = numeric_array(name, X)
    if array.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, got booleans; convert with .astype(float)")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {array.shape}")
    if array.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (0 samples): pass at least one sample")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(f"{name} has {array.shape[1]} features per sample but the model expects "
                         f"{n_features}")
    check_finite(name, array)
    return as_float_dtype(name, array, dtype)


def check_same_keys(what, mapping, names, hint=""):
    """Raise ValueError unless ``mapping`` has exactly the keys ``names`` (listing the difference)."""
    missing = [name for name in names if name not in mapping]
    extra = [name for name in mapping if name not in names]
    if missing or extra:
        raise ValueError(f"{what} keys do not match the model: missing {missing}, unexpected "
                         f"{extra}; expected {list(names)}{hint}")


def check_state_keys(what, state, required, optional=(), kind=None):
    """Raise unless ``state`` is a dict (TypeError) whose "type" is ``kind`` (if given), with
    every ``required`` key and no key outside ``required`` and ``optional`` (ValueError naming
    them): a state_dict() to load."""
    if not isinstance(state, dict):
        raise TypeError(f"{what} must be a dict from state_dict(), got {type(state).__name__}")
    if kind is not None and state.get("type") != kind:
        raise ValueError(f"{what} has type={state.get('type')!r}: load the state_dict() of a {kind}")
    missing = [key for key in required if key not in state]
    unknown = [key for key in state if key not in required and key not in optional]
    if missing or unknown:
        raise ValueError(f"{what} does not match: missing keys {missing}, unknown keys {unknown}; "
                         f"load a state_dict() of the same kind of object")


def check_state_array(name, value, shape=None, dtype=None, non_negative=False):
    """A new array holding the saved state ``value``, of ``shape`` (None: any 1-D shape) and
    ``dtype`` (None: its own), finite, and >= 0 if ``non_negative``; or raise naming ``name``.
    A loaded state is never broadcast, and never brings NaN or inf into training."""
    array = numeric_array(name, value)
    expected = "1-D (one value per parameter)" if shape is None else tuple(shape)
    if (array.ndim != 1) if shape is None else (array.shape != expected):
        raise ValueError(f"{name} has shape {array.shape}, expected {expected}: a state of another model?")
    with np.errstate(over="ignore"):
        array = np.array(array, dtype=dtype)
    check_finite(name, array, "the state is damaged: load one saved by a healthy run")
    if non_negative and array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0 everywhere, got {array.min()} at index "
                         f"{int(np.argmin(array))}: the state is damaged")
    return array


def check_positive_int(name, value, minimum=1):
    """Return ``value`` as an int >= minimum (1 unless told), or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_non_negative_int(name, value):
    """Return ``value`` as an int >= 0 (a count or an index), or raise."""
    return check_positive_int(name, value, minimum=0)


def check_path(name, value):
    """``value`` as a str path: a str or os.PathLike (TypeError naming ``name`` otherwise)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {type(value).__name__}")
    return os.fspath(value)


def check_flag(name, value):
    """``value`` as a bool: True or False (NumPy's too), not 1, "yes" or None."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_layer_flags(name, flags, count):
    """``flags`` as a list of ``count`` bools (one per Dense layer, e.g. which are trainable),
    or ValueError naming ``name``."""
    flags = list(flags)
    if len(flags) != count or not all(isinstance(flag, bool) for flag in flags):
        raise ValueError(f"{name} must be {count} booleans (one per Dense layer), got {flags!r}")
    return flags


def check_real(name, value, minimum=None, maximum=None, min_inclusive=True, max_inclusive=True):
    """Return ``value`` as a finite float within the given bounds, or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value < minimum or (value == minimum and not min_inclusive)):
        bound = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {bound} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (value == maximum and not max_inclusive)):
        bound = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {bound} {maximum}, got {value}")
    return value


def check_class_labels(name, y, n_rows, n_classes):
    """Return integer class labels (N,) as int64 after checking range and integrality."""
    labels = numeric_array(name, y)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows},) to match the inputs, got {labels.shape}")
    if labels.dtype.kind == "f":
        check_finite(name, labels)
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"{name} must be integral class indices, got non-integer values "
                             f"such as {labels[labels != np.round(labels)][0]}")
    if labels.dtype.kind == "b":
        raise TypeError(f"{name} must be integer class indices, got booleans")
    if n_rows and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} must be class indices in [0, {n_classes - 1}] for {n_classes} "
                         f"outputs, got values in [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def check_targets(name, y, shape, dtype, low=None, high=None):
    """Return real-valued targets shaped like the outputs ``shape`` (N, K).

    A 1-D target of length N is accepted when K == 1 and reshaped to (N, 1), never
    broadcast (PyTorch broadcasts (N,) against (N, 1) to (N, N), a classic silent bug).
    """
    targets = numeric_array(name, y)
    if targets.ndim == 1 and shape[1] == 1:
        targets = targets.reshape(-1, 1)
    if targets.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} to match the outputs, "
                         f"got {targets.shape}")
    check_finite(name, targets)
    if (low is not None and targets.size and targets.min() < low) or \
            (high is not None and targets.size and targets.max() > high):
        raise ValueError(f"{name} must lie in [{low}, {high}], got values in "
                         f"[{targets.min()}, {targets.max()}]")
    return as_float_dtype(name, targets, dtype)


def per_hidden_layer(name, value, count, kinds):
    """One value for every hidden layer, or a list with one per hidden layer."""
    try:
        single = isinstance(value, kinds) or isinstance(value, (str, bytes, dict))   # checked as one value
        values = [value] * count if single else list(value)
    except TypeError:
        raise TypeError(f"{name} must be one value or a list of {count} (one per hidden layer), "
                        f"got {value!r}") from None
    if len(values) != count:
        raise ValueError(f"{name} must be one value or a list of {count} (one per hidden layer), "
                         f"got {len(values)}")
    return values
