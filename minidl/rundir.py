"""The run directory: what `minidl train` leaves on disk, and how to read it back.

    config.toml      the resolved configuration (defaults < --config file < flags)
    data.json        the dataset, its splits and the standardisation fitted on training data
    checkpoint.npz   everything a resume needs (minidl.checkpoint), the LIVE state
    history.json     one record per check, plus the end-of-training summary
    history.csv      the same records as a table
    summary.json     stop reason, best / stopped epoch, epochs run, test metrics, speed
    final.npz        the final parameters (after any best-weights restore) under state_dict keys
    curves.png       loss / val_loss per epoch, best and stop marked, lr on a second axis
"""
import json
import os

import numpy as np

from .checkpoint import META_KEY, CheckpointError, checkpoint_contents
from .files import FileError, atomic_write, check_shapes, mlp_shapes, parameter_count
from .model import MLP
from .validation import check_state_array

CONFIG, DATA, CHECKPOINT, HISTORY_JSON, HISTORY_CSV = (
    "config.toml", "data.json", "checkpoint.npz", "history.json", "history.csv")
SUMMARY, FINAL, CURVES = "summary.json", "final.npz", "curves.png"
OUTPUTS = (CONFIG, DATA, CHECKPOINT, HISTORY_JSON, HISTORY_CSV, SUMMARY, FINAL, CURVES)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)                 # a TOML basic string is a JSON string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(config):
    """A flat TOML document for a flat dict; None values are left out (TOML has no null)."""
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in config.items() if value is not None)


def read_toml(path):
    try:
        import tomllib
    except ImportError:                          # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ValueError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"config file {path} is not UTF-8 text (byte {error.start}): TOML files are "
                         f"UTF-8; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {path} is not valid TOML: {error}") from None


def write_text(path, text):
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_params(path, model):
    """final.npz: the parameters under state_dict keys, readable with NumPy alone."""
    atomic_write(path, lambda handle: np.savez(handle, **model.state_dict()))


def model_from_arrays(path, arrays):
    """The MLP in the arrays read from ``path``: a checkpoint's or a final.npz's (with the
    config.toml beside it). minidl.load (minidl/modelfile.py) reads the file and calls this."""
    if META_KEY not in arrays:
        return _load_final(path, arrays)
    arrays, meta = checkpoint_contents(path, arrays)
    config = meta.get("model")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} has no model description: not a training checkpoint")
    shapes = mlp_shapes(path, config.get("sizes"), error=CheckpointError)
    check_shapes(path, {"params": (parameter_count(shapes),)}, arrays, error=CheckpointError)
    try:
        model = MLP(**config)
        model.params[...] = check_state_array("checkpoint params", arrays["params"], model.params.shape)
        model.trainable = meta.get("trainable", model.trainable)      # its frozen layers too
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from None
    return model


def _load_final(path, state):
    """The MLP in a final.npz's state_dict arrays, its architecture from the config.toml beside it."""
    config_path = os.path.join(os.path.dirname(path), CONFIG)
    if not os.path.exists(config_path):
        raise FileError(f"{path} holds bare parameters; its architecture comes from {config_path}, "
                        f"which is missing")
    config = read_toml(config_path)
    names = sorted((name for name in state if name.endswith(".weight") and name.split(".")[0].isdigit()),
                   key=lambda n: int(n.split(".")[0]))
    weights = [state[name] for name in names]
    if not weights or any(weight.ndim != 2 for weight in weights):
        raise FileError(f"{path} does not hold MLP parameters under state_dict keys "
                        f"(0.weight (out, in), 0.bias, 2.weight, ...); it holds {sorted(state)}")
    sizes = [weights[0].shape[1]] + [weight.shape[0] for weight in weights]
    check_shapes(path, mlp_shapes(path, sizes), state)
    try:
        model = MLP(sizes, activation=config.get("activation", "relu"), dtype=config.get("dtype", "float64"),
                    negative_slope=config.get("negative_slope", 0.01))
        model.load_state_dict(state)
    except (TypeError, ValueError) as error:
        raise FileError(f"{path} (with {config_path}): {error}") from None
    return model
