"""`minidl predict`: a saved model's predictions for new inputs read from a file.

Inputs: .npy, .npz (its one array, or the one named X) or a numeric .csv (a header line is
skipped), one sample per row; they are standardised as the run's training data were (the
(mean, std) in the run's data.json, or in the model file). Outputs: classes, or with
proba=True probabilities, one row per sample, as .npy, .csv or lines on stdout.
"""
import os
import sys

import numpy as np

from . import rundir
from .config import UsageError
from .files import FileError, atomic_write, read_npy, read_npz
from .modelfile import load


def read_inputs(path):
    """The array in a .npy, .npz (its one array, or "X") or numeric .csv (header line allowed);
    the .npy and .npz read with files.read_npy / read_npz's checks (real numbers only)."""
    if not os.path.exists(path):
        raise UsageError(f"no input file at {path}")
    kind = os.path.splitext(path)[1].lower()
    if kind not in (".npy", ".npz", ".csv"):
        raise UsageError(f"--input {path}: use a .npy, .npz or .csv file")
    try:
        if kind == ".npy":
            return read_npy(path, ".npy input array", kinds="biuf")
        if kind == ".npz":
            arrays = read_npz(path, ".npz of inputs", kinds="biuf")
        else:
            return _read_csv(path)
    except FileError as error:
        raise UsageError(f"cannot read --input {error}") from None
    if "X" in arrays or len(arrays) == 1:
        return arrays["X"] if "X" in arrays else next(iter(arrays.values()))
    raise UsageError(f"{path} holds {sorted(arrays)}: store one array, or name the inputs X")


def _read_csv(path):
    """The rows of a numeric .csv (one header line allowed), or FileError naming the file."""
    try:
        with open(path) as handle:
            first = handle.readline().split(",")
        header = not all(_is_number(cell) for cell in first)
        return np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2)
    except (OSError, ValueError) as error:              # ragged rows, text, not UTF-8
        raise FileError(f"{path}: not a numeric .csv (one row per sample, numbers separated by "
                        f"commas, at most one header line): {error}") from None


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _prediction_text(predictions):
    """One line per prediction: an integer class, or comma-separated numbers."""
    rows = predictions.reshape(len(predictions), -1)
    fmt = "%d" if predictions.dtype.kind in "iu" else "%.9g"
    return "".join(",".join(fmt % value for value in row) + "\n" for row in rows)


def predict_file(model_path, input_path, output=None, proba=False):
    """Predict for the rows of ``input_path`` with the model at ``model_path``; write the
    predictions to ``output`` (.npy or .csv), or print them one per line."""
    if output is not None and not output.endswith((".npy", ".csv")):
        raise UsageError(f"--output {output}: use a .npy or .csv file")
    model, standardization = load(model_path, with_standardization=True)
    model_dir = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
    config_path = os.path.join(model_dir, rundir.CONFIG)
    loss = rundir.read_toml(config_path).get("loss") if os.path.exists(config_path) else None
    X = read_inputs(input_path)
    if X.ndim == 1:
        X = X.reshape(-1, 1) if model.in_features == 1 else X.reshape(1, -1)
    if X.ndim != 2 or X.shape[1] != model.in_features:
        raise UsageError(f"{input_path} has rows of shape {X.shape[1:]}, the model takes "
                         f"{model.in_features} features")
    if standardization is not None:
        X = (X - standardization[0]) / standardization[1]
    if proba:
        predictions = model.predict_proba(X, loss)
    elif loss == "mse":                                     # a regression: its outputs
        predictions = model.predict(X)
    else:
        predictions = model.predict_classes(X, loss)
    if output is None:
        sys.stdout.write(_prediction_text(predictions))
    elif output.endswith(".npy"):
        atomic_write(output, lambda handle: np.save(handle, predictions))
    else:
        rundir.write_text(output, _prediction_text(predictions))
