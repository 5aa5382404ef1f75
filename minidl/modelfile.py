"""The model file: ``model.save(path)`` writes it, ``minidl.load(path)`` reads it back.

ONE .npz, written atomically (files.atomic_write), read with files.read_npz (no pickle):

    0.weight, 0.bias, 2.weight, ...   the parameters under state_dict names (PyTorch's keys)
    standardization/mean, .../std     (optional) the input standardisation, (D,) each
    __model__                         a 0-d unicode array holding a JSON document:
                                      {"format", "version", "config": model.config(),
                                       "trainable": one flag per Dense layer}

So ``numpy.load(path)["0.weight"]`` reads a weight with NumPy alone. ``load`` also accepts
what ``minidl train`` writes: a run directory, its final.npz (architecture from the
config.toml beside it, standardisation from data.json) or a training checkpoint.
"""
import json
import os

import numpy as np

from . import rundir
from .files import FileError, atomic_write, check_shapes, mlp_shapes, read_npz
from .model import MLP
from .preflight import check_writable_file
from .validation import check_finite, check_path, numeric_array

FORMAT, FORMAT_VERSION = "minidl-model", 1
MODEL_KEY = "__model__"
MEAN, STD = "standardization/mean", "standardization/std"


def check_standardization(name, standardization, n_features):
    """(mean, std) as float64 arrays of shape (n_features,), finite, std > 0; or None."""
    if standardization is None:
        return None
    try:
        mean, std = standardization
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (mean, std), got {standardization!r}") from None
    pair = []
    for label, array in (("mean", mean), ("std", std)):
        array = numeric_array(f"{name} {label}", array).astype(np.float64)
        if array.shape != (n_features,):
            raise ValueError(f"{name} {label} has shape {array.shape}, the model takes {n_features} features")
        check_finite(f"{name} {label}", array)
        pair.append(array)
    if np.any(pair[1] <= 0):
        raise ValueError(f"{name} std must be positive")
    return tuple(pair)


def save_model(model, path, standardization=None):
    """Write ``model`` (and the optional (mean, std) of its inputs) to ``path`` atomically."""
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a minidl.MLP, got {type(model).__name__}")
    path = check_writable_file(path, "path", example="model.npz")
    arrays = model.state_dict()
    standardization = check_standardization("standardization", standardization, model.in_features)
    if standardization is not None:
        arrays[MEAN], arrays[STD] = standardization
    header = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "config": model.config(),
                         "trainable": model.trainable})
    atomic_write(path, lambda handle: np.savez(handle, **arrays, **{MODEL_KEY: np.array(header)}))


def load(path, *, with_standardization=False):
    """The MLP saved at ``path``: a model file (model.save), a run directory, its final.npz or
    a training checkpoint. With ``with_standardization=True``, (model, (mean, std) or None).

    A missing, damaged or foreign file raises ValueError naming it (files.read_npz's checks;
    the architecture it states is checked against its arrays before the model is built).
    """
    path = check_path("path", path)
    if os.path.isdir(path):
        path = os.path.join(path, rundir.FINAL)
    if not os.path.exists(path):
        raise FileError(f"no model at {path}: pass a file written by model.save, a run directory, "
                        f"its final.npz or a checkpoint")
    arrays = read_npz(path, ".npz model", error=FileError)
    if MODEL_KEY in arrays:
        model, standardization = _from_arrays(path, arrays)
    else:                                                  # what `minidl train` writes
        model = rundir.model_from_arrays(path, arrays)
        standardization = _run_standardization(path, model) if with_standardization else None
    return (model, standardization) if with_standardization else model


def _from_arrays(path, arrays):
    """(model, standardization or None) from a model file's arrays; its __model__ header
    checked, and its layer sizes against the parameter arrays before the model is built."""
    try:
        header = json.loads(str(arrays.pop(MODEL_KEY)))
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        if header.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {header.get('version')}, this minidl reads {FORMAT_VERSION}")
        check_shapes(path, mlp_shapes(path, header["config"].get("sizes")), arrays)
        model = MLP(**header["config"])
        model.trainable = header["trainable"]              # checked: one boolean per Dense layer
        standardization = None
        if MEAN in arrays or STD in arrays:
            standardization = check_standardization("standardization", (arrays.pop(MEAN, None),
                                                                        arrays.pop(STD, None)), model.in_features)
        model.load_state_dict(arrays)                     # keys, shapes, finite values
    except FileError:
        raise                                              # names the file already
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{path} is not a valid minidl model file: {error}") from None
    return model, standardization


def _run_standardization(path, model):
    """The standardisation in the data.json beside a run's final.npz or checkpoint, or None."""
    data_path = os.path.join(os.path.dirname(path), rundir.DATA)
    if not os.path.exists(data_path):
        return None
    try:
        with open(data_path) as handle:
            fitted = json.load(handle).get("standardization")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"cannot read {data_path}: {error}") from None
    if fitted is None:
        return None
    try:
        return check_standardization(f"{data_path}: standardization", (fitted["mean"], fitted["std"]),
                                     model.in_features)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{data_path}: malformed standardization: {error}") from None
