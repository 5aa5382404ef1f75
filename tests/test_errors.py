"""Bad input at every public entry point: a TypeError or ValueError that names the argument.

TypeError: the wrong kind of thing (strings, objects, complex, bool where numbers are meant).
ValueError: the right kind with a wrong value (shape, range, non-finite, empty).
"""
import numpy as np
import pytest

from minidl import (MLP, SGD, Adam, binary_cross_entropy, check_gradients, loss_and_grads, mse,
                    softmax_cross_entropy)

LOSS_FUNCTIONS = {"mse": mse, "cross_entropy": softmax_cross_entropy,
                  "binary_cross_entropy": binary_cross_entropy}
GOOD_X = np.ones((4, 3))
GOOD_LABELS = np.array([0, 1, 1, 0])


def model():
    return MLP([3, 5, 2], seed=0)


# Bad feature matrices X for a model with 3 inputs (and logits for a loss on 2 outputs).
BAD_ARRAYS = [
    ("empty", np.zeros((0, 3)), ValueError, "empty"),
    ("1-D", np.ones(3), ValueError, "2-D"),
    ("3-D", np.ones((4, 3, 1)), ValueError, "2-D"),
    ("scalar", 1.0, ValueError, "2-D"),
    ("nan", np.where(np.eye(4, 3) > 0, np.nan, 1.0), ValueError, "non-finite"),
    ("inf", np.full((4, 3), np.inf), ValueError, "non-finite"),
    ("-inf", np.array([[-np.inf, 1.0, 1.0]] * 4), ValueError, "non-finite"),
    ("complex", np.ones((4, 3), complex), TypeError, "real numbers"),
    ("object", np.array([[object()] * 3] * 4), TypeError, "real numbers"),
    ("string", np.full((4, 3), "1.0"), TypeError, "real numbers"),
    ("bool", np.ones((4, 3), bool), TypeError, "booleans"),
    ("ragged", [[1.0, 2.0, 3.0], [1.0]], TypeError, "real numbers"),
    ("None", None, TypeError, "real numbers"),
]


def bad_arrays(width):
    """BAD_ARRAYS with `width` columns, plus a wrong-width case."""
    cases = []
    for name, value, error, message in BAD_ARRAYS:
        if isinstance(value, np.ndarray) and value.ndim == 2:
            value = value[:, :1].repeat(width, axis=1)
        elif name == "ragged":
            value = [[1.0] * width, [1.0]]
        cases.append(pytest.param(value, error, message, id=name))
    cases.append(pytest.param(np.ones((4, width + 1)), ValueError, "features|shape", id="width"))
    return cases


# ----------------------------------------------------------------- the MLP constructor
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sizes=[]), ValueError, "sizes"),
    (dict(sizes=[4]), ValueError, "sizes"),
    (dict(sizes=5), TypeError, "sizes"),
    (dict(sizes=None), TypeError, "sizes"),
    (dict(sizes=[4, 0, 2]), ValueError, "sizes"),
    (dict(sizes=[4, -3]), ValueError, "sizes"),
    (dict(sizes=[4.0, 2]), TypeError, "sizes"),
    (dict(sizes=[4, 2.5]), TypeError, "sizes"),
    (dict(sizes=[True, 2]), TypeError, "sizes"),
    (dict(sizes=["4", 2]), TypeError, "sizes"),
    (dict(sizes=[4, 3, 2], activation="softplus"), ValueError, "activation"),
    (dict(sizes=[4, 3, 2], activation="ReLU"), ValueError, "activation"),
    (dict(sizes=[4, 3, 3, 2], activation=["relu"]), ValueError, "activation"),
    (dict(sizes=[4, 3, 2], activation=["relu", "tanh"]), ValueError, "activation"),
    (dict(sizes=[4, 3, 2], activation=[3]), ValueError, "activation"),
    (dict(sizes=[4, 3, 2], activation=[["relu"]]), ValueError, "activation"),
    (dict(sizes=[4, 3, 2], activation=None), TypeError, "activation"),
    (dict(sizes=[4, 3, 2], activation=5), TypeError, "activation"),
    (dict(sizes=[4, 3, 3, 2], negative_slope=[0.1]), ValueError, "negative_slope"),
    (dict(sizes=[4, 3, 2], negative_slope=None), TypeError, "negative_slope"),
    (dict(sizes=[4, 3, 2], negative_slope="0"), TypeError, "negative_slope"),
    (dict(sizes=[4, 3, 2], negative_slope=float("nan")), ValueError, "negative_slope"),
    (dict(sizes=[4, 3, 2], negative_slope=[float("inf")]), ValueError, "negative_slope"),
    (dict(sizes=[4, 2], dtype="float16"), TypeError, "dtype"),
    (dict(sizes=[4, 2], dtype="int64"), TypeError, "dtype"),
    (dict(sizes=[4, 2], dtype="double precision"), TypeError, "dtype"),
    (dict(sizes=[4, 2], dtype=np.complex128), TypeError, "dtype"),
    (dict(sizes=[4, 2], seed=-1), (TypeError, ValueError), "seed"),
    (dict(sizes=[4, 2], seed=1.5), TypeError, "seed"),
    (dict(sizes=[4, 2], seed="0"), TypeError, "seed"),
    (dict(sizes=[4, 2], seed=True), TypeError, "seed"),
    (dict(sizes=[4, 2], init="xavier"), ValueError, "init"),
    (dict(sizes=[4, 2], init=None), ValueError, "init"),
])
def test_mlp_constructor_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(**kwargs)


def test_mlp_constructor_accepts_numpy_integers_and_dtype_objects():
    model = MLP(np.array([3, 4, 2]), dtype=np.float32, seed=np.int64(3))
    assert model.sizes == (3, 4, 2) and model.dtype == np.float32


# ----------------------------------------------------------------- forward / predict / backward
@pytest.mark.parametrize("X, error, match", bad_arrays(3))
def test_forward_rejects_bad_inputs(X, error, match):
    with pytest.raises(error, match=match):
        model().forward(X)


@pytest.mark.parametrize("X, error, match", bad_arrays(3))
def test_predict_rejects_bad_inputs(X, error, match):
    with pytest.raises(error, match=match):
        model().predict(X)


@pytest.mark.parametrize("X, error, match", bad_arrays(3))
def test_messages_name_the_argument_X(X, error, match):
    with pytest.raises(error, match="X"):
        model().forward(X)


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-5, ValueError), (2.0, TypeError),
                                               (None, TypeError)])
def test_predict_rejects_bad_batch_size(batch_size, error):
    with pytest.raises(error, match="batch_size"):
        model().predict(GOOD_X, batch_size=batch_size)


def test_backward_before_forward_is_rejected():
    with pytest.raises(ValueError, match="forward"):
        model().backward(np.ones((4, 2)))


@pytest.mark.parametrize("dlogits, error, match", [
    (np.ones((3, 2)), ValueError, "rows"),
    (np.ones((4, 3)), ValueError, "features"),
    (np.ones(4), ValueError, "2-D"),
    (np.full((4, 2), np.nan), ValueError, "non-finite"),
    (np.full((4, 2), "x"), TypeError, "real numbers"),
    (np.ones((4, 2), complex), TypeError, "real numbers"),
])
def test_backward_rejects_bad_dlogits(dlogits, error, match):
    net = model()
    net.forward(GOOD_X)
    with pytest.raises(error, match=match):
        net.backward(dlogits)
    with pytest.raises(error, match="dlogits"):
        net.backward(dlogits)


# ----------------------------------------------------------------- loss_and_grads
@pytest.mark.parametrize("X, error, match", bad_arrays(3))
def test_loss_and_grads_rejects_bad_X(X, error, match):
    with pytest.raises(error, match=match):
        loss_and_grads(model(), X, GOOD_LABELS)
    with pytest.raises(error, match="X"):
        loss_and_grads(model(), X, GOOD_LABELS)


BAD_LABELS = [
    pytest.param(np.array([0, 1, 1]), ValueError, "shape", id="too-few"),
    pytest.param(np.array([0, 1, 1, 0, 1]), ValueError, "shape", id="too-many"),
    pytest.param(np.array([[0], [1], [1], [0]]), ValueError, "shape", id="column"),
    pytest.param(np.array([0, 1, 2, 0]), ValueError, "class indices", id="too-large"),
    pytest.param(np.array([0, -1, 1, 0]), ValueError, "class indices", id="negative"),
    pytest.param(np.array([0.0, 1.0, 0.5, 0.0]), ValueError, "integral", id="non-integral"),
    pytest.param(np.array([0.0, 1.0, np.nan, 0.0]), ValueError, "non-finite", id="nan"),
    pytest.param(np.array([0.0, np.inf, 1.0, 0.0]), ValueError, "non-finite", id="inf"),
    pytest.param(np.array([True, False, True, False]), TypeError, "bool", id="bool"),
    pytest.param(np.array(["0", "1", "1", "0"]), TypeError, "real numbers", id="string"),
    pytest.param(np.array([0, 1, 1, 0], complex), TypeError, "real numbers", id="complex"),
    pytest.param(np.array([0, 1, 1, object()]), TypeError, "real numbers", id="object"),
    pytest.param(np.ones((4, 2)) * 2, ValueError, r"\[0", id="probabilities-above-1"),
    pytest.param(np.full((4, 2), np.nan), ValueError, "non-finite", id="probabilities-nan"),
]


@pytest.mark.parametrize("y, error, match", BAD_LABELS)
def test_loss_and_grads_rejects_bad_class_labels(y, error, match):
    with pytest.raises(error, match=match):
        loss_and_grads(model(), GOOD_X, y, loss="cross_entropy")
    with pytest.raises(error, match="^y "):                   # named as the caller named it
        loss_and_grads(model(), GOOD_X, y, loss="cross_entropy")


def test_non_integral_float_labels_are_rejected_but_integral_floats_accepted():
    net = model()
    loss_int, _ = loss_and_grads(net, GOOD_X, GOOD_LABELS)
    loss_float, _ = loss_and_grads(net, GOOD_X, GOOD_LABELS.astype(float))
    assert loss_int == loss_float
    with pytest.raises(ValueError, match="integral"):
        loss_and_grads(net, GOOD_X, GOOD_LABELS + 1e-9)


BAD_REAL_TARGETS = [
    pytest.param(np.ones((4, 3)), ValueError, "shape", id="wrong-width"),
    pytest.param(np.ones((3, 2)), ValueError, "shape", id="wrong-rows"),
    pytest.param(np.ones(4), ValueError, "shape", id="1-D-for-2-outputs"),
    pytest.param(np.ones((4, 2, 1)), ValueError, "shape", id="3-D"),
    pytest.param(np.full((4, 2), np.nan), ValueError, "non-finite", id="nan"),
    pytest.param(np.full((4, 2), -np.inf), ValueError, "non-finite", id="inf"),
    pytest.param(np.ones((4, 2), complex), TypeError, "real numbers", id="complex"),
    pytest.param(np.full((4, 2), "a"), TypeError, "real numbers", id="string"),
    pytest.param(np.array([[None, 1.0]] * 4), TypeError, "real numbers", id="object"),
]


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy"])
@pytest.mark.parametrize("y, error, match", BAD_REAL_TARGETS)
def test_loss_and_grads_rejects_bad_real_targets(loss, y, error, match):
    with pytest.raises(error, match=match):
        loss_and_grads(model(), GOOD_X, y, loss=loss)
    with pytest.raises(error, match="^y "):                   # named as the caller named it
        loss_and_grads(model(), GOOD_X, y, loss=loss)


@pytest.mark.parametrize("y", [np.full((4, 2), 1.5), np.full((4, 2), -0.5)])
def test_bce_targets_outside_the_unit_interval_are_rejected(y):
    with pytest.raises(ValueError, match=r"y must lie in \[0.0, 1.0\]"):
        loss_and_grads(model(), GOOD_X, y, loss="binary_cross_entropy")


@pytest.mark.parametrize("loss, error", [("hinge", ValueError), ("MSE", ValueError), (None, TypeError),
                                         (3, TypeError), (mse, TypeError)])
def test_loss_and_grads_rejects_unknown_losses(loss, error):
    with pytest.raises(error, match="loss"):
        loss_and_grads(model(), GOOD_X, GOOD_LABELS, loss=loss)


@pytest.mark.parametrize("not_a_model", [None, "MLP", MLP, np.ones(3)])
def test_loss_and_grads_rejects_things_that_are_not_models(not_a_model):
    with pytest.raises(TypeError, match="model"):
        loss_and_grads(not_a_model, GOOD_X, GOOD_LABELS)


# ----------------------------------------------------------------- the loss functions
def loss_case(name, n=4, k=2):
    return np.arange(n) % k if name == "cross_entropy" else np.full((n, k), 0.5)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
@pytest.mark.parametrize("logits, error, match", bad_arrays(2)[:-1])   # any width is fine
def test_loss_functions_reject_bad_logits(name, logits, error, match):
    with pytest.raises(error, match=match):
        LOSS_FUNCTIONS[name](logits, loss_case(name))
    with pytest.raises(error, match="logits"):
        LOSS_FUNCTIONS[name](logits, loss_case(name))


@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy"])
@pytest.mark.parametrize("targets, error, match", BAD_REAL_TARGETS)
def test_real_valued_losses_reject_bad_targets(name, targets, error, match):
    with pytest.raises(error, match=match):
        LOSS_FUNCTIONS[name](np.zeros((4, 2)), targets)


@pytest.mark.parametrize("targets, error, match", BAD_LABELS)
def test_cross_entropy_rejects_bad_targets(targets, error, match):
    with pytest.raises(error, match=match):
        softmax_cross_entropy(np.zeros((4, 2)), targets)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
@pytest.mark.parametrize("num_samples, error", [(0, ValueError), (-4, ValueError), (3, ValueError),
                                                (4.0, TypeError), (True, TypeError), ("4", TypeError),
                                                (np.nan, TypeError)])
def test_loss_functions_reject_bad_num_samples(name, num_samples, error):
    with pytest.raises(error, match="num_samples"):
        LOSS_FUNCTIONS[name](np.zeros((4, 2)), loss_case(name), num_samples=num_samples)


@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_empty_batch_needs_num_samples(name):
    y = np.zeros(0, int) if name == "cross_entropy" else np.zeros((0, 2))
    with pytest.raises(ValueError, match="logits is empty"):
        LOSS_FUNCTIONS[name](np.zeros((0, 2)), y)
    loss, dz = LOSS_FUNCTIONS[name](np.zeros((0, 2)), y, num_samples=np.int64(3))
    assert loss == 0.0 and dz.shape == (0, 2)


# ----------------------------------------------------------------- load_state_dict
@pytest.mark.parametrize("state, error, match", [
    pytest.param(None, TypeError, "state", id="None"),
    pytest.param([("0.weight", np.zeros((5, 3)))], TypeError, "state", id="list-of-pairs"),
    pytest.param({}, ValueError, r"missing \['0.weight', '0.bias', '2.weight', '2.bias'\]", id="empty"),
    pytest.param({"0.weight": np.zeros((5, 3))}, ValueError, "missing", id="missing"),
    pytest.param("extra", ValueError, r"unexpected \['1.weight'\]", id="extra"),
    pytest.param("transposed", ValueError, r"state\['0.weight'\] has shape \(3, 5\)", id="transposed"),
    pytest.param("flat", ValueError, r"state\['2.bias'\] has shape \(2, 1\)", id="column-bias"),
    pytest.param("nan", ValueError, r"state\['0.bias'\] contains non-finite", id="nan"),
    pytest.param("inf", ValueError, r"state\['2.weight'\] contains non-finite", id="inf"),
    pytest.param("string", TypeError, r"state\['0.bias'\]", id="string"),
    pytest.param("complex", TypeError, r"state\['2.weight'\]", id="complex"),
])
def test_load_state_dict_rejects_bad_state(state, error, match):
    net = model()
    good = net.state_dict()
    if state == "extra":
        state = dict(good, **{"1.weight": np.zeros(1)})
    elif state == "transposed":
        state = dict(good, **{"0.weight": good["0.weight"].T})
    elif state == "flat":
        state = dict(good, **{"2.bias": good["2.bias"].reshape(2, 1)})
    elif state == "nan":
        state = dict(good, **{"0.bias": np.full(5, np.nan)})
    elif state == "inf":
        state = dict(good, **{"2.weight": np.full((2, 5), np.inf)})
    elif state == "string":
        state = dict(good, **{"0.bias": np.full(5, "0")})
    elif state == "complex":
        state = dict(good, **{"2.weight": good["2.weight"].astype(complex)})
    before = net.params.copy()
    with pytest.raises(error, match=match):
        net.load_state_dict(state)
    np.testing.assert_array_equal(net.params, before)


# ----------------------------------------------------------------- optimizers
@pytest.mark.parametrize("cls, kwargs, error, match", [
    (SGD, dict(lr=-0.1), ValueError, "lr"),
    (SGD, dict(lr="fast"), TypeError, "lr"),
    (SGD, dict(momentum=-1), ValueError, "momentum"),
    (SGD, dict(weight_decay=np.nan), ValueError, "weight_decay"),
    (SGD, dict(nesterov=True), ValueError, "nesterov"),
    (Adam, dict(lr=np.inf), ValueError, "lr"),
    (Adam, dict(betas=(0.9, 1.0)), ValueError, "betas"),
    (Adam, dict(betas="ab"), TypeError, "betas"),
    (Adam, dict(eps=-1.0), ValueError, "eps"),
    (Adam, dict(weight_decay=None), TypeError, "weight_decay"),
])
def test_optimizer_constructors_reject_bad_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(model(), **kwargs)


# ----------------------------------------------------------------- check_gradients
@pytest.mark.parametrize("X, error, match", bad_arrays(3))
def test_check_gradients_rejects_bad_X(X, error, match):
    with pytest.raises(error, match=match):
        check_gradients(model(), X, GOOD_LABELS)


@pytest.mark.parametrize("y, error, match", BAD_LABELS)
def test_check_gradients_rejects_bad_labels(y, error, match):
    with pytest.raises(error, match=match):
        check_gradients(model(), GOOD_X, y)


@pytest.mark.parametrize("eps, error", [(0.0, ValueError), (-1e-6, ValueError), (np.nan, ValueError),
                                        (np.inf, ValueError), ("1e-6", TypeError), (None, TypeError)])
def test_check_gradients_rejects_bad_eps(eps, error):
    with pytest.raises(error, match="eps"):
        check_gradients(model(), GOOD_X, GOOD_LABELS, eps=eps)


@pytest.mark.parametrize("loss, error", [("hinge", ValueError), (None, TypeError)])
def test_check_gradients_rejects_unknown_losses(loss, error):
    with pytest.raises(error, match="loss"):
        check_gradients(model(), GOOD_X, GOOD_LABELS, loss=loss)


@pytest.mark.parametrize("not_a_model", [None, "MLP", np.ones(3)])
def test_check_gradients_rejects_things_that_are_not_models(not_a_model):
    with pytest.raises(TypeError, match="model"):
        check_gradients(not_a_model, GOOD_X, GOOD_LABELS)
