"""Interop: exact round trips torch -> minidl -> torch and Keras -> minidl -> Keras, dtypes,
unsupported layers named, and no dependency on torch for NumPy arrays."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import EXACT_TOL, assert_close
from minidl import MLP
from minidl.interop import from_keras, from_torch, to_keras, to_torch, to_torch_state_dict

try:
    import torch
    from torch import nn
    torch.set_num_threads(1)        # tensors here are tiny: extra threads only add overhead
except ImportError:
    torch = None


def needs_torch(test):
    """Mark a test that uses PyTorch; skipped when torch is absent."""
    return pytest.mark.torch(pytest.mark.skipif(torch is None, reason="PyTorch is not installed")(test))


def assert_same_arrays(actual, expected):
    """Same keys in the same order, same dtypes, bit-for-bit equal values."""
    assert list(actual) == list(expected)
    for name in expected:
        a, b = np.asarray(actual[name]), np.asarray(expected[name])
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name


def torch_net(dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.2), nn.Linear(6, 5), nn.Tanh(),
                         nn.Linear(5, 5), nn.Sigmoid(), nn.Linear(5, 3), nn.Identity(),
                         nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).to(dtype)


# ----------------------------------------------------------------- PyTorch
@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_round_trip_is_exact(dtype, rng):
    net = torch_net(getattr(torch, dtype))
    model = from_torch(net)
    assert model.dtype == np.dtype(dtype)
    assert model.activations == ("leaky_relu", "tanh", "sigmoid", "identity", "relu")
    assert model.config()["negative_slope"][0] == pytest.approx(0.2)
    expected = {name: t.detach().numpy() for name, t in net.state_dict().items()}
    assert_same_arrays(to_torch_state_dict(model), expected)
    assert_same_arrays({k: t.detach().numpy() for k, t in to_torch(model).state_dict().items()},
                       expected)
    X = rng.normal(0, 1, (7, 4)).astype(dtype)
    assert_close(model.predict(X), net(torch.from_numpy(X)).detach().numpy(),
                 EXACT_TOL if dtype == "float64" else 1e-6, "logits")


@needs_torch
def test_torch_state_dict_of_tensors_or_arrays(rng):
    net = torch_net(torch.float64)
    activations = ["leaky_relu", "tanh", "sigmoid", "identity", "relu"]
    slopes = [0.2, 0.01, 0.01, 0.01, 0.01]
    for state in (net.state_dict(), {k: t.numpy() for k, t in net.state_dict().items()}):
        model = from_torch(state, activation=activations, negative_slope=slopes)
        assert model.config() == from_torch(net).config()
        assert_same_arrays(to_torch_state_dict(model), {k: t.numpy() for k, t in net.state_dict().items()})
    with pytest.raises(TypeError, match="pass activation="):
        from_torch(net.state_dict())
    with pytest.raises(TypeError, match="only for a bare state dict"):
        from_torch(net, activation="relu")


@needs_torch
def test_dtype_override_and_mixed_sources():
    net = torch_net(torch.float32)
    assert from_torch(net, dtype="float64").dtype == np.float64
    state = {k: t.numpy() for k, t in net.state_dict().items()}
    assert from_torch(state, activation="relu").dtype == np.float32
    state["0.bias"] = state["0.bias"].astype(np.float64)              # mixed: widened, lossless
    assert from_torch(state, activation="relu").dtype == np.float64
    state["0.bias"] = np.arange(6)                                     # integers too
    assert from_torch(state, activation="relu").dtype == np.float64


@needs_torch
@pytest.mark.parametrize("layers,message", [
    (lambda: [nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)],
     r"layer 1 \(BatchNorm1d\) is not supported"),
    (lambda: [nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2)],
     r"layer 2 \(Dropout\) is not supported"),
    (lambda: [nn.Linear(3, 4), nn.Linear(4, 2)],
     r"layer 1 \(Linear\) directly follows layer 0 \(Linear\): put nn.Identity\(\)"),
    (lambda: [nn.Linear(3, 4), nn.ReLU(), nn.Tanh(), nn.Linear(4, 2)],
     r"layer 2 \(Tanh\) follows layer 1 \(an activation\)"),
    (lambda: [nn.ReLU(), nn.Linear(3, 2)], r"layer 0 \(ReLU\) starts the model"),
    (lambda: [nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid()],
     r"layer 3 \(Sigmoid\) follows the last Linear: .* BCEWithLogitsLoss"),
    (lambda: [nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2)],
     r"layer 0 \(Linear\) has no bias"),
    (lambda: [nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)],
     r"Dense layer 1 takes 5 inputs but Dense layer 0 outputs 4"),
    (lambda: [], "empty"),
])
def test_unsupported_torch_layers_are_named(layers, message):
    with pytest.raises(ValueError, match=message):
        from_torch(nn.Sequential(*layers()))


@needs_torch
def test_unsupported_torch_objects_and_state_dicts():
    with pytest.raises(TypeError, match="expected a torch.nn.Sequential, got Linear"):
        from_torch(nn.Linear(3, 2))
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'1.running_mean' is not a Linear weight or bias"):
        from_torch(bn.state_dict(), activation="relu")
    dropout = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layers are at \['0', '3'\].*\['0', '2'\]"):
        from_torch(dropout.state_dict(), activation="relu")
    with pytest.raises(ValueError, match="layer 'fc2' has no bias"):
        from_torch({"fc1.weight": np.ones((4, 3)), "fc1.bias": np.ones(4),
                    "fc2.weight": np.ones((2, 4))}, activation="relu")
    with pytest.raises(ValueError, match="layer 'norm' has weight \\(4,\\)"):
        from_torch({"fc1.weight": np.ones((4, 3)), "fc1.bias": np.ones(4),
                    "norm.weight": np.ones(4), "norm.bias": np.ones(4)}, activation="relu")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        from_torch({"0.weight": np.ones((4, 3)), "0.bias": np.ones(4), "2.weight": np.ones((2, 4)),
                    "2.bias": np.ones(2)}, activation="gelu")
    with pytest.raises(TypeError, match="expected a torch.nn.Sequential or a state dict"):
        from_torch([np.ones((4, 3))])


def test_named_state_dict_in_mapping_order(rng):
    """Non-numeric layer names (a custom module's "fc1", "fc2") are taken in mapping order."""
    state = {"fc1.weight": rng.normal(0, 1, (4, 3)), "fc1.bias": rng.normal(0, 1, 4),
             "fc2.weight": rng.normal(0, 1, (2, 4)), "fc2.bias": rng.normal(0, 1, 2)}
    model = from_torch(state, activation="tanh")
    assert model.sizes == (3, 4, 2)
    X = rng.normal(0, 1, (5, 3))
    hidden = np.tanh(X @ state["fc1.weight"].T + state["fc1.bias"])
    expected = hidden @ state["fc2.weight"].T + state["fc2.bias"]
    assert_close(model.predict(X), expected, EXACT_TOL, "logits")


# ----------------------------------------------------------------- Keras
def keras_weights(rng, dtype="float32"):
    """What keras_model.get_weights() returns for Dense(5) -> Dense(4) -> Dense(2) on 3 inputs."""
    shapes = [(3, 5), (5,), (5, 4), (4,), (4, 2), (2,)]
    return [rng.normal(0, 1, shape).astype(dtype) for shape in shapes]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_round_trip_is_exact_flat_and_pairs(dtype, rng):
    flat = keras_weights(rng, dtype)
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    for weights in (flat, pairs, [[k.tolist(), b.tolist()] for k, b in pairs]):
        model = from_keras(weights, ["relu", "linear"], dtype=dtype)
        assert model.activations == ("relu", "identity") and model.dtype == np.dtype(dtype)
        exported = to_keras(model)
        assert len(exported) == 6 and all(a.dtype == b.dtype and np.array_equal(a, b)
                                           for a, b in zip(exported, flat))
        assert all(np.array_equal(a, b) for pair, expected in zip(to_keras(model, pairs=True), pairs)
                   for a, b in zip(pair, expected))
    X = rng.normal(0, 1, (6, 3))
    model = from_keras(flat, ["relu", "linear"], dtype="float64")
    k0, b0, k1, b1, k2, b2 = (w.astype(np.float64) for w in flat)
    expected = (np.maximum(X @ k0 + b0, 0) @ k1 + b1) @ k2 + b2        # Keras: y = x @ K + b
    assert_close(model.predict(X), expected, EXACT_TOL, "logits")


def test_keras_to_torch_layout_is_a_transpose(rng):
    flat = keras_weights(rng, "float64")
    state = to_torch_state_dict(from_keras(flat, "tanh"))
    assert np.array_equal(state["0.weight"], flat[0].T) and np.array_equal(state["4.bias"], flat[5])


@pytest.mark.parametrize("weights,message", [
    (lambda w: w[:5], r"ends with the kernel of Dense layer 2 and no bias: Dense\(use_bias=False\)"),
    (lambda w: [w[0], w[2], w[3]], r"weights\[1\] has shape \(5, 4\) where the bias \(5,\) of Dense layer 0"),
    (lambda w: w[:2] + [np.ones(5)] * 4 + w[2:], r"weights\[2\] has shape \(5,\) where the kernel"),
    (lambda w: [], "empty"),
    (lambda w: {"kernel": w[0]}, "must be a list"),
])
def test_unsupported_keras_weights_are_named(weights, message, rng):
    with pytest.raises((ValueError, TypeError), match=message):
        from_keras(weights(keras_weights(rng)), "relu")


def test_no_torch_import_for_numpy_arrays():
    """Arrays never import torch: the oracle works where torch is not installed."""
    code = """
import sys
import numpy as np
from minidl.interop import from_keras, from_torch, to_keras
from minidl.oracle import compare
state = {"0.weight": np.ones((4, 3)), "0.bias": np.zeros(4),
         "2.weight": np.ones((2, 4)), "2.bias": np.zeros(2)}
model = from_torch(state, activation="relu")
from_keras(to_keras(model), "relu")
assert "torch" not in sys.modules, "torch was imported"
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_to_functions_reject_non_models():
    with pytest.raises(TypeError, match="minidl.MLP"):
        to_torch_state_dict({"0.weight": np.ones((2, 2))})
    with pytest.raises(TypeError, match="minidl.MLP"):
        to_keras(object())


def test_exported_arrays_are_copies():
    model = MLP([3, 4, 2])
    to_torch_state_dict(model)["0.weight"][...] = 7.0
    to_keras(model)[0][...] = 7.0
    assert not (model.params == 7.0).any()
