"""Losses: closed forms (also through a single Dense layer), the former kernels' bits, the table
of losses and accuracies, reductions, stability, num_samples."""
import contextlib
import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import EXACT_TOL, FLOAT32_TOL, assert_close
from minidl import MLP, binary_cross_entropy, loss_and_grads, mse, softmax_cross_entropy
from minidl.layers import stable_sigmoid
from minidl.losses import LOSSES, has_accuracy, loss_kernel

LOSS_FUNCTIONS = {"mse": mse, "cross_entropy": softmax_cross_entropy,
                  "binary_cross_entropy": binary_cross_entropy}


def naive_softmax(z):
    """Textbook softmax, safe for the moderate logits used with it here."""
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def naive_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def onehot(labels, classes):
    return np.eye(classes)[labels]


@contextlib.contextmanager
def no_overflow():
    """Raise on overflow, division by zero or invalid operations, and on any warning.

    Underflow stays allowed: exp(-|z|) rounding to 0 for |z| = 1e4 is the stable form working.
    """
    with np.errstate(over="raise", divide="raise", invalid="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def assert_loss_close(actual, expected):
    """Within EXACT_TOL on the scale max(1, L).

    logsumexp(z) - z_y (and p_y - 1 in the gradient) is accurate to ~1e-16 absolute, not
    relative, when the fit is nearly perfect and L is tiny, in minidl as in PyTorch.
    """
    assert abs(actual - expected) <= EXACT_TOL * max(1.0, abs(expected)), (actual, expected)


@st.composite
def batches(draw, min_outputs=1):
    n = draw(st.integers(1, 12))
    k = draw(st.integers(min_outputs, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, k, np.random.default_rng(seed)


# ----------------------------------------------------------------- closed forms of the losses
@given(batches())
def test_mse_closed_form(batch):
    n, k, rng = batch
    z, y = rng.normal(0, 2, (n, k)), rng.normal(0, 2, (n, k))
    loss, dz = mse(z, y)
    assert_close(loss, np.sum((z - y) ** 2) / (n * k), EXACT_TOL, "loss")   # mean, no 1/2
    assert_close(dz, 2 * (z - y) / (n * k), EXACT_TOL, "dz")


@given(batches(min_outputs=2))
def test_softmax_cross_entropy_closed_form(batch):
    n, c, rng = batch
    # logits of scale 1: with near-certain predictions in every row, p_y - 1 has only absolute
    # accuracy and dz would be compared against its own rounding (the huge-logit tests below
    # cover that regime through its limits)
    z, labels = rng.normal(0, 1, (n, c)), rng.integers(0, c, n)
    loss, dz = softmax_cross_entropy(z, labels)
    p = naive_softmax(z)
    assert_loss_close(loss, -np.mean(np.log(p[np.arange(n), labels])))
    assert_close(dz, (p - onehot(labels, c)) / n, EXACT_TOL, "dz")


@given(batches())
def test_binary_cross_entropy_closed_form(batch):
    n, k, rng = batch
    z = rng.normal(0, 3, (n, k))
    hard, soft = rng.integers(0, 2, (n, k)).astype(float), rng.uniform(0, 1, (n, k))
    s = naive_sigmoid(z)
    for y in (hard, soft):
        loss, dz = binary_cross_entropy(z, y)
        assert_close(loss, -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s)), 1e-10, "loss")
        if y is hard:
            assert_close(dz, (s - y) / (n * k), EXACT_TOL, "dz")
        else:   # sigmoid(z) - y may cancel to ~0 in every entry: compare on dz's scale 1/(N*K)
            assert np.max(np.abs(dz - (s - y) / (n * k))) <= EXACT_TOL / (n * k)


@given(batches(min_outputs=2))
def test_cross_entropy_probability_targets(batch):
    n, c, rng = batch
    z, labels = rng.normal(0, 1, (n, c)), rng.integers(0, c, n)
    # one-hot targets are the same as integer labels
    by_label, by_onehot = softmax_cross_entropy(z, labels), softmax_cross_entropy(z, onehot(labels, c))
    assert_loss_close(by_onehot[0], by_label[0])
    assert_close(by_onehot[1], by_label[1], EXACT_TOL, "dz")
    # soft targets: L = -sum(y log p) / N, dz = (p * rowsum(y) - y) / N (rows need not sum to 1)
    y = rng.uniform(0, 1, (n, c))
    loss, dz = softmax_cross_entropy(z, y)
    p = naive_softmax(z)
    assert_close(loss, -np.sum(y * np.log(p)) / n, 1e-10, "soft loss")
    assert_close(dz, (p * y.sum(axis=1, keepdims=True) - y) / n, EXACT_TOL, "soft dz")


# ----------------------------------------------------------------- the former fused kernels
def former_kernel(name, z, y, n):
    """The workspace kernels minidl had before its plain reference forms, kept as the comparison
    (without the workspace: each array new). Row values were repeated into a full (N, C) tile
    before meeting the logits, and the label entries reached by take/put at flat indices."""
    if name == "mse":
        scale = 1.0 / (n * z.shape[1])
        diff = np.subtract(z, y)
        loss = float(np.vdot(diff, diff)) * scale
        diff *= 2 * scale
        return loss, diff
    if name == "binary_cross_entropy":
        scale = 1.0 / (n * z.shape[1])
        loss = float((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum()) * scale
        dz = stable_sigmoid(z, out=np.empty_like(z))
        dz -= y
        dz *= scale
        return loss, dz
    tile = np.empty_like(z)
    row = np.maximum.reduce(z, axis=1, keepdims=True)
    np.copyto(tile, row)
    shifted = np.subtract(z, tile)
    exp = np.exp(shifted)
    sums = np.add.reduce(exp, axis=1, keepdims=True, out=row)
    np.copyto(tile, sums)
    exp /= tile
    log_sums = np.log(sums, out=row)
    if y.ndim == 1:
        flat = np.arange(0, z.size, z.shape[1], dtype=np.int64) + y
        picked = np.take(shifted, flat, mode="clip")
        loss = float(log_sums.sum() - picked.sum()) / n
        np.take(exp, flat, out=picked, mode="clip")
        picked -= 1
        np.put(exp, flat, picked, mode="clip")
    else:
        loss = float(np.vdot(y, log_sums - shifted)) / n
        exp *= y.sum(axis=1, keepdims=True)
        exp -= y
    exp /= n
    return loss, exp


@st.composite
def logits_and_targets(draw):
    """Any loss on (N, K) logits of one dtype: N from 0 (with a divisor n > N, a rank's empty
    share) or 1, huge logits, ties (few distinct values), labels or probability targets."""
    name = draw(st.sampled_from(sorted(LOSSES)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rows, k = draw(st.integers(0, 9)), draw(st.integers(1, 7))
    values = st.sampled_from([0.0, 1.0, -1.0, 1e4, -1e4, 1e30]) | st.floats(-1e4, 1e4, width=32)
    z = np.array(draw(st.lists(values, min_size=rows * k, max_size=rows * k)), dtype)
    z = z.reshape(rows, k)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if name == "cross_entropy" and draw(st.booleans()):
        y = rng.integers(0, k, rows)
    elif name == "mse":
        y = rng.normal(0, 3, (rows, k)).astype(dtype)
    else:
        y = rng.choice([0.0, 0.5, 1.0, rng.uniform()], (rows, k)).astype(dtype)
    return name, z, y, rows + draw(st.integers(0 if rows else 1, 3))


@given(logits_and_targets())
def test_reference_forms_give_the_bits_of_the_former_kernels(case):
    name, z, y, n = case
    with np.errstate(all="ignore"):                 # overflow to inf must agree too
        loss, dz = loss_kernel(name)(z, y, n)
        former_loss, former_dz = former_kernel(name, z, y, n)
    assert np.float64(loss).tobytes() == np.float64(former_loss).tobytes()
    assert dz.dtype == z.dtype and dz.shape == z.shape
    assert dz.tobytes() == former_dz.tobytes()


# ----------------------------------------------------------------- the table and its accuracies
def test_losses_table_says_which_losses_have_an_accuracy():
    assert {name: loss.count_correct is not None for name, loss in LOSSES.items()} == \
        {"mse": False, "cross_entropy": True, "binary_cross_entropy": True}
    assert all(loss.name == name for name, loss in LOSSES.items())
    assert has_accuracy("ce") and has_accuracy("bce") and not has_accuracy("mse")


def test_count_correct_judges_rows_for_cross_entropy_and_outputs_for_bce():
    z = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [0.0, 0.0, -1.0]])
    count = LOSSES["cross_entropy"].count_correct
    assert count(z, np.array([0, 1, 0, 0])) == (3, 4)                 # argmax ties: the first
    assert count(z, onehot(np.array([0, 1, 0, 0]), 3)) == (3, 4)
    assert count(z, np.array([[0.7, 0.2, 0.1]] * 4)) == (2, 4)        # the target's likeliest class
    y = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.4], [1.0, 0.0, 0.5], [0.0, 0.0, 0.6]])
    assert LOSSES["binary_cross_entropy"].count_correct(z, y) == (8, 12)   # z > 0 against y >= 0.5


# ----------------------------------------------------------------- closed forms through Dense
@st.composite
def single_layer(draw):
    n, k, rng = draw(batches(min_outputs=1))
    d = draw(st.integers(1, 6))
    model = MLP([d, k], seed=draw(st.integers(0, 1000)), init="torch")
    return model, rng.normal(0, 1, (n, d)), rng


@given(single_layer())
def test_single_dense_layer_mse_gradient_closed_form(setup):
    model, X, rng = setup
    n, k = X.shape[0], model.out_features
    Y = rng.normal(0, 1, (n, k))
    W, b = model.state_dict()["0.weight"], model.state_dict()["0.bias"]
    residual = X @ W.T + b - Y                                         # (N, K)
    loss, grads = loss_and_grads(model, X, Y, loss="mse")
    assert_close(loss, np.sum(residual ** 2) / (n * k), EXACT_TOL, "loss")
    assert_close(grads["0.weight"], 2 / (n * k) * residual.T @ X, EXACT_TOL, "dW")
    assert_close(grads["0.bias"], 2 / (n * k) * residual.sum(axis=0), EXACT_TOL, "db")


@given(single_layer())
def test_single_dense_layer_cross_entropy_gradient_closed_form(setup):
    model, X, rng = setup
    n, c = X.shape[0], model.out_features
    labels = rng.integers(0, c, n)
    W, b = model.state_dict()["0.weight"], model.state_dict()["0.bias"]
    dz = (naive_softmax(X @ W.T + b) - onehot(labels, c)) / n
    _, grads = loss_and_grads(model, X, labels, loss="cross_entropy")
    assert_close(grads["0.weight"], dz.T @ X, EXACT_TOL, "dW")
    assert_close(grads["0.bias"], dz.sum(axis=0), EXACT_TOL, "db")


@given(single_layer())
def test_single_dense_layer_bce_gradient_closed_form(setup):
    model, X, rng = setup
    n, k = X.shape[0], model.out_features
    Y = (rng.uniform(0, 1, (n, k)) < 0.5).astype(float)
    W, b = model.state_dict()["0.weight"], model.state_dict()["0.bias"]
    dz = (naive_sigmoid(X @ W.T + b) - Y) / (n * k)
    _, grads = loss_and_grads(model, X, Y, loss="binary_cross_entropy")
    assert_close(grads["0.weight"], dz.T @ X, EXACT_TOL, "dW")
    assert_close(grads["0.bias"], dz.sum(axis=0), EXACT_TOL, "db")


# ----------------------------------------------------------------- stability: limit values
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cross_entropy_huge_logits_take_their_limit_values(sign):
    z = sign * np.array([[1e4, 0.0], [1e4, 0.0]])
    with no_overflow():
        right, d_right = softmax_cross_entropy(z, [0, 0] if sign > 0 else [1, 1])
        wrong, d_wrong = softmax_cross_entropy(z, [1, 1] if sign > 0 else [0, 0])
    n = 2
    assert right == 0.0
    np.testing.assert_array_equal(d_right, np.zeros((2, 2)))
    assert wrong == 1e4                                  # logsumexp(z) - z_y = 1e4 exactly
    expected = np.array([[1.0, -1.0], [1.0, -1.0]]) / n * sign
    np.testing.assert_array_equal(d_wrong, expected)


def test_cross_entropy_mixed_huge_logits():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]])
    with no_overflow():
        loss, dz = softmax_cross_entropy(z, [1, 2, 0])
    # row 0: lse = 1e4, label logit -1e4 -> 2e4; row 1: 0; row 2: lse = 1e4 + log 2, label 1e4 -> log 2
    assert_close(loss, (2e4 + 0.0 + math.log(2)) / 3, EXACT_TOL, "loss")
    expected = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-0.5, 0.5, 0.0]]) / 3
    assert_close(dz, expected, EXACT_TOL, "dz")


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("value", [0.0, 1e4, -1e4])
def test_cross_entropy_ties_give_log_c(classes, value):
    n = 3
    z = np.full((n, classes), value)
    labels = np.arange(n) % classes
    with no_overflow():
        loss, dz = softmax_cross_entropy(z, labels)
    assert_close(loss, math.log(classes), EXACT_TOL, "loss")
    assert_close(dz, (1 / classes - onehot(labels, classes)) / n, EXACT_TOL, "dz")


def test_cross_entropy_batch_of_one_one_hot_target():
    z = np.array([[2.0, -1.0, 0.5]])
    loss, dz = softmax_cross_entropy(z, np.array([[0.0, 0.0, 1.0]]))
    p = naive_softmax(z)
    assert_close(loss, -math.log(p[0, 2]), EXACT_TOL, "loss")
    assert_close(dz, p - [[0, 0, 1]], EXACT_TOL, "dz")                 # N = 1: no division


def test_binary_cross_entropy_huge_logits_take_their_limit_values():
    z = np.array([[1e4, -1e4, 1e4, -1e4]])
    y = np.array([[1.0, 0.0, 0.0, 1.0]])           # two right, two maximally wrong
    with no_overflow():
        loss, dz = binary_cross_entropy(z, y)
    assert loss == (0.0 + 0.0 + 1e4 + 1e4) / 4
    np.testing.assert_array_equal(dz, np.array([[0.0, 0.0, 1.0, -1.0]]) / 4)
    with no_overflow():
        half, d_half = binary_cross_entropy(z, np.full((1, 4), 0.5))
    assert half == 1e4 / 2                          # max(z,0) - z/2 = |z|/2 when log1p(e^-|z|) = 0
    np.testing.assert_array_equal(d_half, np.array([[0.5, -0.5, 0.5, -0.5]]) / 4)


def test_binary_cross_entropy_at_zero_logits_is_log_2():
    z = np.zeros((3, 2))
    y = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    loss, dz = binary_cross_entropy(z, y)
    assert_close(loss, math.log(2), EXACT_TOL, "loss")
    assert_close(dz, (0.5 - y) / 6, EXACT_TOL, "dz")


@pytest.mark.parametrize("loss", sorted(LOSS_FUNCTIONS))
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh", "identity"])
def test_model_on_huge_inputs_has_finite_loss_and_gradients(activation, loss, rng):
    model = MLP([3, 8, 3], activation=activation, seed=0, init="torch")
    X = rng.choice([-1e4, 1e4], (5, 3))
    y = rng.integers(0, 3, 5) if loss == "cross_entropy" else rng.integers(0, 2, (5, 3)).astype(float)
    with no_overflow():
        value, grads = loss_and_grads(model, X, y, loss=loss)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_float32_logits_give_float32_gradients_that_match_float64(name, rng):
    z = rng.normal(0, 2, (6, 3))
    y = rng.integers(0, 3, 6) if name == "cross_entropy" else rng.uniform(0, 1, (6, 3))
    loss32, dz32 = LOSS_FUNCTIONS[name](z.astype(np.float32), y)
    loss64, dz64 = LOSS_FUNCTIONS[name](z, y)
    assert dz32.dtype == np.float32 and dz64.dtype == np.float64
    assert_close(loss32, loss64, FLOAT32_TOL, "loss")
    assert_close(dz32, dz64, FLOAT32_TOL, "dz")


# ----------------------------------------------------------------- targets, shapes, num_samples
@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy"])
def test_one_dimensional_targets_for_one_output_are_not_broadcast(name, rng):
    z = rng.normal(0, 1, (5, 1))
    y = rng.uniform(0, 1, 5)
    loss_1d, dz_1d = LOSS_FUNCTIONS[name](z, y)
    loss_2d, dz_2d = LOSS_FUNCTIONS[name](z, y.reshape(5, 1))
    assert dz_1d.shape == (5, 1)                     # not (5, 5) as (N,) - (N, 1) would broadcast
    assert loss_1d == loss_2d
    np.testing.assert_array_equal(dz_1d, dz_2d)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_num_samples_rescales_the_mean(name, rng):
    z = rng.normal(0, 1, (4, 3))
    y = rng.integers(0, 3, 4) if name == "cross_entropy" else rng.uniform(0, 1, (4, 3))
    loss, dz = LOSS_FUNCTIONS[name](z, y)
    loss_global, dz_global = LOSS_FUNCTIONS[name](z, y, num_samples=10)
    assert_close(loss_global, loss * 4 / 10, EXACT_TOL, "loss")
    assert_close(dz_global, dz * 4 / 10, EXACT_TOL, "dz")
    same = LOSS_FUNCTIONS[name](z, y, num_samples=4)
    assert same[0] == loss
    np.testing.assert_array_equal(same[1], dz)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_shards_with_global_num_samples_add_up_to_the_full_batch(name, rng):
    z = rng.normal(0, 1, (7, 3))
    y = rng.integers(0, 3, 7) if name == "cross_entropy" else rng.uniform(0, 1, (7, 3))
    loss, dz = LOSS_FUNCTIONS[name](z, y)
    parts = [LOSS_FUNCTIONS[name](z[rows], y[rows], num_samples=7)
             for rows in (slice(0, 5), slice(5, 7), slice(7, 7))]          # last shard is empty
    assert_close(sum(part[0] for part in parts), loss, EXACT_TOL, "loss")
    assert_close(np.concatenate([part[1] for part in parts]), dz, EXACT_TOL, "dz")


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_zero_row_batch_with_num_samples_gives_zero_loss(name):
    y = np.zeros(0, np.int64) if name == "cross_entropy" else np.zeros((0, 3))
    loss, dz = LOSS_FUNCTIONS[name](np.zeros((0, 3)), y, num_samples=5)
    assert loss == 0.0
    assert dz.shape == (0, 3)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_num_samples_smaller_than_rows_is_rejected(name, rng):
    y = rng.integers(0, 3, 4) if name == "cross_entropy" else rng.uniform(0, 1, (4, 3))
    with pytest.raises(ValueError, match="num_samples"):
        LOSS_FUNCTIONS[name](rng.normal(0, 1, (4, 3)), y, num_samples=3)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_losses_do_not_modify_their_inputs(name, rng):
    z = rng.normal(0, 1, (4, 3))
    y = rng.integers(0, 3, 4) if name == "cross_entropy" else rng.uniform(0, 1, (4, 3))
    z_before, y_before = z.copy(), y.copy()
    LOSS_FUNCTIONS[name](z, y)
    np.testing.assert_array_equal(z, z_before)
    np.testing.assert_array_equal(y, y_before)


@pytest.mark.parametrize("alias, canonical", [("ce", "cross_entropy"),
                                              ("softmax_cross_entropy", "cross_entropy"),
                                              ("bce", "binary_cross_entropy")])
def test_loss_aliases_give_identical_results(alias, canonical, rng):
    model = MLP([3, 4, 2], seed=1)
    X = rng.normal(0, 1, (5, 3))
    y = rng.integers(0, 2, 5) if canonical == "cross_entropy" else rng.uniform(0, 1, (5, 2))
    loss_a, grads_a = loss_and_grads(model, X, y, loss=alias)
    loss_c, grads_c = loss_and_grads(model, X, y, loss=canonical)
    assert loss_a == loss_c
    for name in grads_c:
        np.testing.assert_array_equal(grads_a[name], grads_c[name])
