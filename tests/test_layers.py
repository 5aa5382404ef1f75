"""Layers one at a time: closed forms, vector-Jacobian checks, stability, buffer contracts."""
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import EXACT_TOL, FD_TOL, assert_close
from minidl import Dense, Identity, LeakyReLU, ReLU, Sigmoid, Tanh, check_layer
from minidl.layers import ACTIVATIONS, make_activation, stable_sigmoid

ACTIVATION_FACTORIES = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "leaky_relu_0.2": lambda: LeakyReLU(0.2),
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "identity": Identity,
}
KINKED = ("relu", "leaky_relu", "leaky_relu_0.2")
# As in test_gradcheck: central differences with step eps err by ~1e-16 sum|y * dy| / eps, so
# steps 1e-5 then 1e-4 are tried (a wrong backward is off at every step), and inputs whose every
# gradient is below what any step resolves (tanh/sigmoid saturated everywhere) are skipped.
STEPS = (1e-5, 1e-4)
RESOLVABLE = 1e-5


@st.composite
def layer_inputs(draw, max_rows=8, max_cols=8):
    """A seeded float64 (N, D) input with entries of scale up to 3."""
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    return np.random.default_rng(seed).normal(0.0, scale, (rows, cols))


def assert_vector_jacobian_product_matches(layer, x, seed):
    """check_layer's f = sum(layer.forward(x) * dy), dy drawn from default_rng(seed) as it does."""
    dy = np.random.default_rng(seed).standard_normal(layer.forward(x).shape)
    scale = max(1.0, float(np.sum(np.abs(layer.forward(x) * dy))))
    dx = layer.backward(dy)
    assume(np.max(np.abs(dx)) == 0 or np.max(np.abs(dx)) >= RESOLVABLE * scale)
    for eps in STEPS:
        report = check_layer(layer, x, eps=eps, seed=seed)
        if report.max_error <= FD_TOL:
            break
    assert report.max_error <= FD_TOL, f"eps {eps}\n{report}"
    return report


# ----------------------------------------------------------------- vector-Jacobian checks
@given(x=layer_inputs(), out_features=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_dense_vector_jacobian_product_matches_central_differences(x, out_features, seed):
    layer = Dense(x.shape[1], out_features)
    layer.initialize(np.random.default_rng(seed), "torch")      # random W and b
    report = assert_vector_jacobian_product_matches(layer, x, seed)
    assert set(report.errors) == {"x", "W", "b"}


@pytest.mark.parametrize("name", sorted(ACTIVATION_FACTORIES))
@given(x=layer_inputs(), seed=st.integers(0, 2**32 - 1))
def test_activation_vector_jacobian_product_matches_central_differences(name, x, seed):
    if name in KINKED:                  # central differences are meaningless across the kink
        assume(np.min(np.abs(x)) > 1e-3)
    report = assert_vector_jacobian_product_matches(ACTIVATION_FACTORIES[name](), x, seed)
    assert set(report.errors) == {"x"}


# ----------------------------------------------------------------- closed forms
def test_dense_forward_and_backward_closed_forms(rng):
    x = rng.standard_normal((5, 3))
    dy = rng.standard_normal((5, 4))
    layer = Dense(3, 4)
    layer.initialize(rng, "torch")
    W, b = layer.W.copy(), layer.b.copy()
    assert W.shape == (4, 3) and b.shape == (4,)                 # torch.nn.Linear layout (out, in)
    y = layer.forward(x)
    assert_close(y, x @ W.T + b, EXACT_TOL, "y")
    dx = layer.backward(dy)
    assert_close(layer.dW, dy.T @ x, EXACT_TOL, "dW")
    assert_close(layer.db, dy.sum(axis=0), EXACT_TOL, "db")
    assert_close(dx, dy @ W, EXACT_TOL, "dx")
    assert layer.backward(dy, need_dx=False) is None


def test_dense_backward_overwrites_rather_than_accumulates(rng):
    layer = Dense(3, 2)
    layer.initialize(rng, "glorot")
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.forward(x)
    layer.backward(dy)
    first_dW, first_db = layer.dW.copy(), layer.db.copy()
    layer.backward(dy)
    np.testing.assert_array_equal(layer.dW, first_dW)
    np.testing.assert_array_equal(layer.db, first_db)


def test_dense_parameters_are_views_into_given_flat_buffers():
    params, grads = np.arange(8.0), np.zeros(8)
    layer = Dense(3, 2, params, grads)
    np.testing.assert_array_equal(layer.W, [[0, 1, 2], [3, 4, 5]])   # W first, row-major
    np.testing.assert_array_equal(layer.b, [6, 7])
    params[0] = 100.0
    assert layer.W[0, 0] == 100.0
    layer.forward(np.ones((1, 3)))
    layer.backward(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(grads, [1, 1, 1, 2, 2, 2, 1, 2])


@pytest.mark.parametrize("scheme", ["he", "glorot", "torch"])
def test_dense_initialization_schemes_have_documented_ranges(scheme):
    layer = Dense(50, 40)
    layer.initialize(np.random.default_rng(0), scheme)
    if scheme == "he":          # Normal(0, 2/in): sample std within 10% of sqrt(2/50) = 0.2
        assert abs(layer.W.std() - 0.2) < 0.02
        assert np.all(layer.b == 0)
    elif scheme == "glorot":    # Uniform(+-sqrt(6/90))
        assert np.abs(layer.W).max() <= np.sqrt(6 / 90)
        assert np.abs(layer.W).max() > 0.9 * np.sqrt(6 / 90)
        assert np.all(layer.b == 0)
    else:                       # Uniform(+-1/sqrt(50)) for W and b
        assert np.abs(layer.W).max() <= 1 / np.sqrt(50)
        assert np.abs(layer.b).max() <= 1 / np.sqrt(50)
        assert np.any(layer.b != 0)
    with pytest.raises(ValueError, match="init"):
        layer.initialize(np.random.default_rng(0), "xavier")


def test_relu_values_and_gradient_at_zero_is_zero():
    x = np.array([[-2.0, 0.0, 3.0]])
    layer = ReLU()
    np.testing.assert_array_equal(layer.forward(x), [[0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(layer.backward(np.array([[5.0, 5.0, 5.0]])), [[0.0, 0.0, 5.0]])


def test_leaky_relu_values_and_gradient_at_zero_is_the_slope():
    x = np.array([[-2.0, 0.0, 3.0]])
    layer = LeakyReLU(0.25)
    np.testing.assert_array_equal(layer.forward(x), [[-0.5, 0.0, 3.0]])
    np.testing.assert_array_equal(layer.backward(np.array([[4.0, 4.0, 4.0]])), [[1.0, 1.0, 4.0]])
    assert LeakyReLU().negative_slope == 0.01                      # torch.nn.LeakyReLU's default


def test_sigmoid_and_tanh_closed_forms(rng):
    x = rng.normal(0, 3, (4, 5))
    dy = rng.standard_normal((4, 5))
    s = 1 / (1 + np.exp(-x))
    sigmoid = Sigmoid()
    assert_close(sigmoid.forward(x), s, EXACT_TOL, "sigmoid")
    assert_close(sigmoid.backward(dy), dy * s * (1 - s), EXACT_TOL, "dsigmoid")
    tanh = Tanh()
    assert_close(tanh.forward(x), np.tanh(x), EXACT_TOL, "tanh")
    assert_close(tanh.backward(dy), dy * (1 - np.tanh(x) ** 2), EXACT_TOL, "dtanh")
    assert Sigmoid().forward(np.zeros((1, 1)))[0, 0] == 0.5


def test_identity_copies():
    x = np.arange(6.0).reshape(2, 3)
    layer = Identity()
    y = layer.forward(x)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x)
    dx = layer.backward(x)
    np.testing.assert_array_equal(dx, x)


# ----------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturating_activations_are_finite_at_huge_inputs_without_overflow(dtype):
    x = np.array([[1e4, -1e4, 0.0, 50.0, -50.0, 1e30, -1e30]], dtype)
    dy = np.ones_like(x)
    # Underflow is allowed: exp(-|x|) rounding to 0 for |x| = 1e4 IS the stable form working.
    with np.errstate(over="raise", divide="raise", invalid="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        sigmoid, tanh = Sigmoid(), Tanh()
        s, ds = sigmoid.forward(x), sigmoid.backward(dy)
        t, dt = tanh.forward(x), tanh.backward(dy)
    for array in (s, ds, t, dt):
        assert array.dtype == dtype
        assert np.all(np.isfinite(array))
    np.testing.assert_array_equal(s[0, [0, 1, 2, 5, 6]], [1.0, 0.0, 0.5, 1.0, 0.0])
    np.testing.assert_array_equal(t[0, [0, 1, 2, 5, 6]], [1.0, -1.0, 0.0, 1.0, -1.0])
    np.testing.assert_array_equal(ds[0, [0, 1, 5, 6]], 0.0)          # saturated: zero gradient
    np.testing.assert_array_equal(dt[0, [0, 1, 5, 6]], 0.0)
    assert ds[0, 2] == 0.25 and dt[0, 2] == 1.0


@given(x=layer_inputs())
def test_stable_sigmoid_matches_naive_formula_where_naive_is_safe(x):
    assert_close(stable_sigmoid(x), 1 / (1 + np.exp(-x)), EXACT_TOL, "sigmoid")


# ----------------------------------------------------------------- out= buffers
@pytest.mark.parametrize("name", sorted(ACTIVATION_FACTORIES))
def test_activation_writes_into_given_out_buffers(name, rng):
    x = rng.standard_normal((3, 4))
    dy = rng.standard_normal((3, 4))
    fresh, buffered = ACTIVATION_FACTORIES[name](), ACTIVATION_FACTORIES[name]()
    expected_y, expected_dx = fresh.forward(x), fresh.backward(dy)
    y_buffer, dx_buffer = np.empty_like(x), dy.copy()
    assert buffered.forward(x, out=y_buffer) is y_buffer
    assert buffered.backward(dx_buffer, out=dx_buffer) is dx_buffer       # in place, as the MLP does
    np.testing.assert_array_equal(y_buffer, expected_y)
    np.testing.assert_array_equal(dx_buffer, expected_dx)


def test_dense_writes_into_given_out_buffers(rng):
    layer = Dense(3, 2)
    layer.initialize(rng, "torch")
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    y_buffer, dx_buffer = np.empty((4, 2)), np.empty((4, 3))
    assert layer.forward(x, out=y_buffer) is y_buffer
    assert layer.backward(dy, out=dx_buffer) is dx_buffer
    assert_close(y_buffer, x @ layer.W.T + layer.b, EXACT_TOL, "y")
    assert_close(dx_buffer, dy @ layer.W, EXACT_TOL, "dx")


def test_make_activation_knows_every_name_and_rejects_others():
    assert sorted(ACTIVATIONS) == ["identity", "leaky_relu", "relu", "sigmoid", "tanh"]
    for name, cls in ACTIVATIONS.items():
        assert type(make_activation(name)) is cls
    for bad in ("softplus", "ReLU", None, 3):
        with pytest.raises(ValueError, match="activation"):
            make_activation(bad)
