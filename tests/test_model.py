"""The MLP: a hand-worked network, the flat buffers, state_dict, float32, zero-row batches."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import EXACT_TOL, FLOAT32_TOL, assert_close
from minidl import MLP, SGD, Dense, LeakyReLU, ReLU, Sigmoid, Tanh, Identity, loss_and_grads, mse
from minidl.losses import loss_kernel

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "identity"]
LOSSES = ["mse", "cross_entropy", "binary_cross_entropy"]


def targets_for(loss, rng, n, k):
    if loss == "cross_entropy":
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return (rng.uniform(0, 1, (n, k)) < 0.5).astype(float)
    return rng.normal(0, 1, (n, k))


# ----------------------------------------------------------------- a 2-3-1 network by hand
def test_hand_worked_2_3_1_network():
    """Dense(2->3), ReLU, Dense(3->1), MSE on N = 4 samples; every number worked out by hand.

    All values are dyadic fractions, so float64 represents them exactly.
    """
    X = np.array([[1.0, 2.0], [3.0, -1.0], [-2.0, 1.0], [0.0, -1.0]])      # (N, D) = (4, 2)
    Y = np.array([[1.0], [3.0], [4.0], [2.0]])                              # (N, K) = (4, 1)
    W1 = np.array([[0.5, -1.0], [1.0, 1.0], [-0.5, 0.25]])                  # (3, 2)
    b1 = np.array([0.5, 0.0, 1.0])
    W2 = np.array([[1.0, -0.5, 2.0]])                                       # (1, 3)
    b2 = np.array([0.25])
    model = MLP([2, 3, 1], activation="relu")
    model.load_state_dict({"0.weight": W1, "0.bias": b1, "2.weight": W2, "2.bias": b2})
    dense1, relu, dense2 = model.layers

    # z1 = X W1^T + b1, row by row:
    #   [1, 2]:  [0.5 - 2 + 0.5,   1 + 2,  -0.5 + 0.5 + 1]     = [-1,   3,  1   ]
    #   [3,-1]:  [1.5 + 1 + 0.5,   3 - 1,  -1.5 - 0.25 + 1]    = [ 3,   2, -0.75]
    #   [-2,1]:  [-1 - 1 + 0.5,   -2 + 1,   1 + 0.25 + 1]      = [-1.5, -1,  2.25]
    #   [0,-1]:  [0 + 1 + 0.5,     0 - 1,   0 - 0.25 + 1]      = [ 1.5, -1,  0.75]
    z1 = dense1.forward(X)
    np.testing.assert_array_equal(z1, [[-1, 3, 1], [3, 2, -0.75], [-1.5, -1, 2.25], [1.5, -1, 0.75]])
    # h = relu(z1): negatives become 0
    h = relu.forward(z1)
    np.testing.assert_array_equal(h, [[0, 3, 1], [3, 2, 0], [0, 0, 2.25], [1.5, 0, 0.75]])
    # z2 = h W2^T + b2 = h0 - 0.5 h1 + 2 h2 + 0.25:
    #   0 - 1.5 + 2 + 0.25 = 0.75;   3 - 1 + 0 + 0.25 = 2.25;
    #   0 + 0 + 4.5 + 0.25 = 4.75;   1.5 + 0 + 1.5 + 0.25 = 3.25
    z2 = dense2.forward(h)
    np.testing.assert_array_equal(z2, [[0.75], [2.25], [4.75], [3.25]])
    # z2 - Y = [-0.25, -0.75, 0.75, 1.25]
    # loss = (0.0625 + 0.5625 + 0.5625 + 1.5625) / (N*K = 4) = 2.75 / 4 = 0.6875
    # dz2 = 2 (z2 - Y) / (N*K) = (z2 - Y) / 2 = [-0.125, -0.375, 0.375, 0.625]
    loss, dz2 = mse(z2, Y)
    assert loss == 0.6875
    np.testing.assert_array_equal(dz2, [[-0.125], [-0.375], [0.375], [0.625]])
    # dh = dz2 W2 = dz2 * [1, -0.5, 2]
    dh = dense2.backward(dz2)
    np.testing.assert_array_equal(dh, [[-0.125, 0.0625, -0.25], [-0.375, 0.1875, -0.75],
                                       [0.375, -0.1875, 0.75], [0.625, -0.3125, 1.25]])
    # dW2 = dz2^T h = -0.125 [0, 3, 1] - 0.375 [3, 2, 0] + 0.375 [0, 0, 2.25] + 0.625 [1.5, 0, 0.75]
    #     = [-1.125 + 0.9375,  -0.375 - 0.75,  -0.125 + 0.84375 + 0.46875] = [-0.1875, -1.125, 1.1875]
    # db2 = sum(dz2) = 0.5
    np.testing.assert_array_equal(dense2.dW, [[-0.1875, -1.125, 1.1875]])
    np.testing.assert_array_equal(dense2.db, [0.5])
    # dz1 = dh * [z1 > 0], mask [[0,1,1], [1,1,0], [0,0,1], [1,0,1]]
    dz1 = relu.backward(dh)
    np.testing.assert_array_equal(dz1, [[0, 0.0625, -0.25], [-0.375, 0.1875, 0],
                                        [0, 0, 0.75], [0.625, 0, 1.25]])
    # dW1 = dz1^T X:
    #   row 0: -0.375 [3, -1] + 0.625 [0, -1]                 = [-1.125, -0.25  ]
    #   row 1: 0.0625 [1, 2] + 0.1875 [3, -1]                 = [ 0.625, -0.0625]
    #   row 2: -0.25 [1, 2] + 0.75 [-2, 1] + 1.25 [0, -1]     = [-1.75,  -1.0   ]
    # db1 = column sums of dz1 = [0.25, 0.25, 1.75]
    # dX = dz1 W1 = [[0.1875, 0], [0, 0.5625], [-0.375, 0.1875], [-0.3125, -0.3125]]
    dX = dense1.backward(dz1)
    np.testing.assert_array_equal(dense1.dW, [[-1.125, -0.25], [0.625, -0.0625], [-1.75, -1.0]])
    np.testing.assert_array_equal(dense1.db, [0.25, 0.25, 1.75])
    np.testing.assert_array_equal(dX, [[0.1875, 0], [0, 0.5625], [-0.375, 0.1875], [-0.3125, -0.3125]])

    # The whole model in one call gives the same numbers.
    loss, grads = loss_and_grads(model, X, Y, loss="mse")
    assert loss == 0.6875
    np.testing.assert_array_equal(grads["0.weight"], [[-1.125, -0.25], [0.625, -0.0625], [-1.75, -1.0]])
    np.testing.assert_array_equal(grads["0.bias"], [0.25, 0.25, 1.75])
    np.testing.assert_array_equal(grads["2.weight"], [[-0.1875, -1.125, 1.1875]])
    np.testing.assert_array_equal(grads["2.bias"], [0.5])
    np.testing.assert_array_equal(model.forward(X), [[0.75], [2.25], [4.75], [3.25]])
    model.backward(dz2)
    np.testing.assert_array_equal(model.backward(dz2, input_grad=True),
                                  [[0.1875, 0], [0, 0.5625], [-0.375, 0.1875], [-0.3125, -0.3125]])


# ----------------------------------------------------------------- architecture and state_dict
def test_layers_match_the_equivalent_torch_sequential():
    model = MLP([4, 8, 8, 3], activation=["tanh", "leaky_relu"], negative_slope=[0.01, 0.2])
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [Dense, Tanh, Dense, LeakyReLU, Dense]      # Linear, Tanh, Linear, LeakyReLU, Linear
    assert model.layers[3].negative_slope == 0.2
    assert model.dense_layers == [model.layers[0], model.layers[2], model.layers[4]]
    assert [type(layer) for layer in MLP([2] * 7, activation=ACTIVATIONS).layers[1::2]] == \
        [ReLU, LeakyReLU, Sigmoid, Tanh, Identity]
    assert model.num_parameters == 8 * 4 + 8 + 8 * 8 + 8 + 3 * 8 + 3
    assert (model.in_features, model.out_features) == (4, 3)


def test_state_dict_keys_and_shapes_are_those_of_nn_sequential():
    # nn.Sequential(Linear(4, 8), ReLU(), Linear(8, 8), ReLU(), Linear(8, 3)).state_dict()
    state = MLP([4, 8, 8, 3]).state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert [value.shape for value in state.values()] == [(8, 4), (8,), (8, 8), (8,), (3, 8), (3,)]
    assert all(value.dtype == np.float64 for value in state.values())
    assert all(value.dtype == np.float32 for value in MLP([4, 8, 3], dtype="float32").state_dict().values())


def test_state_dict_returns_copies():
    model = MLP([3, 5, 2], seed=3)
    before = model.params.copy()
    state = model.state_dict()
    for value in state.values():
        assert not np.shares_memory(value, model.params)
        value += 1.0
    np.testing.assert_array_equal(model.params, before)


def test_state_dict_round_trip(rng):
    source, target = MLP([3, 5, 4, 2], seed=1), MLP([3, 5, 4, 2], seed=2)
    assert not np.array_equal(source.params, target.params)
    state = source.state_dict()
    target.load_state_dict(state)
    np.testing.assert_array_equal(target.params, source.params)
    X = rng.normal(0, 1, (6, 3))
    np.testing.assert_array_equal(target.forward(X), source.forward(X))
    state["0.weight"] += 1.0                               # loading copied, it did not keep views
    np.testing.assert_array_equal(target.params, source.params)


def test_load_state_dict_accepts_lists_and_converts_float32():
    model = MLP([2, 1], dtype="float32")
    model.load_state_dict({"0.weight": [[0.1, 0.2]], "0.bias": np.array([0.3])})
    assert model.params.dtype == np.float32
    np.testing.assert_array_equal(model.params, np.array([0.1, 0.2, 0.3], np.float32))


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "nan"])
def test_load_state_dict_rejects_bad_state_and_changes_nothing(change):
    model = MLP([3, 4, 2], seed=0)
    before = model.params.copy()
    state = MLP([3, 4, 2], seed=1).state_dict()
    if change == "missing":
        del state["2.bias"]
        match = r"missing \['2.bias'\]"
    elif change == "extra":
        state["4.weight"] = np.zeros((2, 2))
        match = r"unexpected \['4.weight'\]"
    elif change == "shape":
        state["2.weight"] = np.zeros((4, 2))               # transposed
        match = r"2\.weight"
    else:
        state["2.bias"][1] = np.nan
        match = r"2\.bias.*non-finite"
    with pytest.raises(ValueError, match=match):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.params, before)  # all checked before anything is written


# ----------------------------------------------------------------- the flat buffer layout
def test_named_parameters_and_dense_tensors_are_views_into_the_flat_buffers():
    model = MLP([3, 4, 2], seed=0)
    named, named_grads = model.named_parameters(), model.named_gradients()
    assert list(named) == list(model.state_dict()) == list(named_grads)
    flat = np.concatenate([view.ravel() for view in named.values()])
    np.testing.assert_array_equal(flat, model.params)      # state_dict order, row-major, W then b
    for view in named.values():
        assert np.shares_memory(view, model.params)
    for view in named_grads.values():
        assert np.shares_memory(view, model.grads)
    named["2.weight"][1, 3] = 42.0
    assert model.params[3 * 4 + 4 + 1 * 4 + 3] == 42.0
    assert model.dense_layers[1].W[1, 3] == 42.0
    for dense, (w, b) in zip(model.dense_layers, [("0.weight", "0.bias"), ("2.weight", "2.bias")]):
        assert np.shares_memory(dense.W, model.params) and np.shares_memory(dense.b, model.params)
        assert np.shares_memory(dense.dW, model.grads) and np.shares_memory(dense.db, model.grads)
        np.testing.assert_array_equal(dense.W, named[w])
        np.testing.assert_array_equal(dense.b, named[b])
    model.params[:] = 0.5                                   # writing the flat buffer moves every view
    assert all(np.all(view == 0.5) for view in named.values())


def test_use_gradient_buffer_rebinds_every_layer_to_the_new_buffer(rng):
    """fit moves model.grads where its communicator reduces fastest (an MPI shared-memory
    window on one node): backward must then write there, and nothing else may change."""
    model = MLP([3, 4, 2], seed=0)
    X, y = rng.normal(size=(5, 3)), rng.integers(0, 2, 5)
    expected = loss_and_grads(model, X, y)[1]
    before = model.grads.copy()
    buffer = np.full_like(model.grads, np.nan)
    model.use_gradient_buffer(buffer)
    assert model.grads is buffer
    np.testing.assert_array_equal(buffer, before)                      # contents carried over
    for dense in model.dense_layers:
        assert np.shares_memory(dense.dW, buffer) and np.shares_memory(dense.db, buffer)
    buffer[...] = np.nan
    assert loss_and_grads(model, X, y)[1].keys() == expected.keys()     # backward writes into buffer
    for name, grad in expected.items():
        np.testing.assert_array_equal(model.named_gradients()[name], grad)
    assert not np.isnan(buffer).any()
    model.use_gradient_buffer(model.grads)                                      # the same buffer: no-op
    assert model.grads is buffer
    with pytest.raises(ValueError, match="shape"):
        model.use_gradient_buffer(np.zeros(3))
    with pytest.raises(ValueError, match="dtype"):
        model.use_gradient_buffer(np.zeros(model.grads.shape, np.float32))


def test_layout_describes_contiguous_spans():
    model = MLP([3, 4, 2])
    assert model.layout() == [("0.weight", 0, 12, (4, 3)), ("0.bias", 12, 16, (4,)),
                              ("2.weight", 16, 24, (2, 4)), ("2.bias", 24, 26, (2,))]


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_and_grads_has_state_dict_keys_order_shapes_and_returns_copies(loss, rng):
    model = MLP([3, 5, 4, 2], seed=4)
    X = rng.normal(0, 1, (6, 3))
    y = targets_for(loss, rng, 6, 2)
    value, grads = loss_and_grads(model, X, y, loss=loss)
    assert isinstance(value, float)
    state = model.state_dict()
    assert list(grads) == list(state)
    assert [g.shape for g in grads.values()] == [s.shape for s in state.values()]
    for name, grad in grads.items():
        assert not np.shares_memory(grad, model.grads)
        np.testing.assert_array_equal(grad, model.named_gradients()[name])


@pytest.mark.parametrize("loss", LOSSES)
def test_gradients_are_overwritten_not_accumulated(loss, rng):
    model = MLP([3, 5, 2], activation="tanh", seed=0)
    XA, XB = rng.normal(0, 1, (4, 3)), rng.normal(0, 1, (7, 3))
    yA, yB = targets_for(loss, rng, 4, 2), targets_for(loss, rng, 7, 2)
    first_loss, first = loss_and_grads(model, XA, yA, loss=loss)
    loss_and_grads(model, XB, yB, loss=loss)               # a different batch size in between
    again_loss, again = loss_and_grads(model, XA, yA, loss=loss)
    assert again_loss == first_loss
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])
    # the same through the public forward/backward, twice in a row
    _, dlogits = loss_kernel(loss)(model.forward(XA), yA, 4)
    model.backward(dlogits)
    once = model.grads.copy()
    model.backward(dlogits)
    np.testing.assert_array_equal(model.grads, once)
    np.testing.assert_array_equal(once, np.concatenate([g.ravel() for g in first.values()]))


def test_forward_returns_a_new_array_each_call(rng):
    model = MLP([3, 4, 2], seed=0)
    X1, X2 = rng.normal(0, 1, (5, 3)), rng.normal(0, 1, (5, 3))
    out1 = model.forward(X1)
    saved = out1.copy()
    out2 = model.forward(X2)
    assert not np.shares_memory(out1, out2)
    np.testing.assert_array_equal(out1, saved)


def test_predict_matches_forward_for_any_batch_size_and_leaves_grads_alone(rng):
    model = MLP([3, 6, 2], activation="sigmoid", seed=0)
    X = rng.normal(0, 1, (10, 3))
    model.grads[:] = 7.0
    params = model.params.copy()
    full = model.forward(X)
    for batch_size in (1, 3, 10, 4096):
        assert_close(model.predict(X, batch_size=batch_size), full, EXACT_TOL, f"batch {batch_size}")
    assert np.all(model.grads == 7.0)
    np.testing.assert_array_equal(model.params, params)


def test_forward_backward_equals_loss_and_grads_with_input_gradient(rng):
    model = MLP([3, 5, 2], activation="tanh", seed=0)
    X, y = rng.normal(0, 1, (4, 3)), rng.integers(0, 2, 4)
    _, grads = loss_and_grads(model, X, y)
    logits = model.forward(X)
    _, dlogits = loss_kernel("cross_entropy")(logits, y, 4)
    dX = model.backward(dlogits, input_grad=True)
    assert dX.shape == X.shape
    assert model.backward(dlogits) is None
    for name, grad in model.named_gradients().items():
        np.testing.assert_array_equal(grad, grads[name])


# ----------------------------------------------------------------- zero-row batches
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_internal_forward_backward_handle_zero_rows(activation):
    model = MLP([3, 4, 4, 2], activation=activation, seed=0)
    model.grads[:] = 1.0                                     # must be overwritten with exact zeros
    logits = model.forward_unchecked(np.zeros((0, 3)))
    assert logits.shape == (0, 2)
    dX = model.backward_unchecked(np.zeros((0, 2)), input_grad=True)
    assert dX.shape == (0, 3)
    assert np.all(model.grads == 0.0)


def test_zero_row_shard_through_the_model_gives_zero_loss_and_gradient():
    model = MLP([3, 4, 2], seed=0)
    model.grads[:] = 1.0
    loss, dlogits = mse(model.forward_unchecked(np.zeros((0, 3))), np.zeros((0, 2)), num_samples=8)
    model.backward(dlogits)                                  # the public backward accepts 0 rows
    assert loss == 0.0 and dlogits.shape == (0, 2)
    assert np.all(model.grads == 0.0)


# ----------------------------------------------------------------- init, config, copy, freezing
def test_same_seed_same_init_and_different_seeds_differ():
    np.testing.assert_array_equal(MLP([5, 7, 3], seed=11).params, MLP([5, 7, 3], seed=11).params)
    assert not np.array_equal(MLP([5, 7, 3], seed=11).params, MLP([5, 7, 3], seed=12).params)


@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5), seed=st.integers(0, 10**6),
       init=st.sampled_from(["auto", "he", "glorot", "torch"]))
def test_float32_init_is_float64_init_rounded(sizes, seed, init):
    model32 = MLP(sizes, dtype="float32", seed=seed, init=init)
    model64 = MLP(sizes, dtype="float64", seed=seed, init=init)
    assert model32.params.dtype == np.float32 and model32.grads.dtype == np.float32
    np.testing.assert_array_equal(model32.params, model64.params.astype(np.float32))


def test_auto_init_uses_he_for_relu_family_and_glorot_otherwise():
    model = MLP([40, 40, 40, 40], activation=["relu", "tanh"], init="auto", seed=0)
    rng = np.random.default_rng(0)                           # replay the same draws
    he = rng.normal(0, np.sqrt(2 / 40), (40, 40))
    glorot1 = rng.uniform(-np.sqrt(6 / 80), np.sqrt(6 / 80), (40, 40))
    glorot2 = rng.uniform(-np.sqrt(6 / 80), np.sqrt(6 / 80), (40, 40))
    np.testing.assert_array_equal(model.dense_layers[0].W, he)
    np.testing.assert_array_equal(model.dense_layers[1].W, glorot1)
    np.testing.assert_array_equal(model.dense_layers[2].W, glorot2)        # output layer: Glorot
    assert all(np.all(dense.b == 0) for dense in model.dense_layers)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS + ["mixed"])
def test_float32_agrees_with_float64(activation, loss, rng):
    acts = ["tanh", "leaky_relu", "sigmoid"] if activation == "mixed" else activation
    sizes = [5, 16, 12, 8, 3]
    model32 = MLP(sizes, activation=acts, dtype="float32", seed=7, init="torch")
    model64 = MLP(sizes, activation=acts, dtype="float64", seed=7, init="torch")
    X = rng.normal(0, 1, (16, 5))
    y = targets_for(loss, rng, 16, 3)
    loss32, grads32 = loss_and_grads(model32, X, y, loss=loss)
    loss64, grads64 = loss_and_grads(model64, X, y, loss=loss)
    assert isinstance(loss32, float)
    assert_close(loss32, loss64, FLOAT32_TOL, "loss")
    for name in grads64:
        assert grads32[name].dtype == np.float32
        assert_close(grads32[name], grads64[name], FLOAT32_TOL, name)
    assert model32.forward(X).dtype == np.float32


def test_config_rebuilds_the_architecture_and_copy_is_independent(rng):
    model = MLP([3, 4, 4, 2], activation=["leaky_relu", "sigmoid"], negative_slope=0.3,
                dtype="float32", seed=5, init="glorot")
    model.freeze(1)
    rebuilt = MLP(**model.config())
    np.testing.assert_array_equal(rebuilt.params, model.params)
    assert rebuilt.config() == model.config()
    assert model.config()["negative_slope"][0] == pytest.approx(0.3)
    twin = model.copy()
    assert twin.config() == model.config()
    assert [d.trainable for d in twin.dense_layers] == [True, False, True]
    twin.params[:] = 0
    assert not np.all(model.params == 0)
    X = rng.normal(0, 1, (2, 3))
    np.testing.assert_array_equal(model.copy().forward(X), model.forward(X))


def test_freeze_and_unfreeze_select_trainable_spans():
    model = MLP([3, 4, 4, 2])                                # spans: [0, 16), [16, 36), [36, 46)
    assert model.trainable_spans() == [(0, 46)]
    model.freeze(1)
    assert model.trainable_spans() == [(0, 16), (36, 46)]
    model.freeze(-1)
    assert model.trainable_spans() == [(0, 16)]
    model.unfreeze(1, 2)
    assert model.trainable_spans() == [(0, 46)]
    for bad in (3, -4, 1.0, True):
        with pytest.raises(ValueError, match="Dense layer index"):
            model.freeze(bad)


def test_frozen_layer_is_unchanged_by_training_steps(rng):
    model = MLP([3, 5, 2], seed=0)
    model.freeze(0)
    frozen, trained = model.named_parameters()["0.weight"].copy(), model.named_parameters()["2.weight"].copy()
    optimizer = SGD(model, lr=0.1, momentum=0.9, weight_decay=0.1)
    X, y = rng.normal(0, 1, (8, 3)), rng.integers(0, 2, 8)
    for _ in range(3):
        loss_and_grads(model, X, y)
        optimizer.step()
    np.testing.assert_array_equal(model.named_parameters()["0.weight"], frozen)
    assert not np.array_equal(model.named_parameters()["2.weight"], trained)


def test_repr_names_the_architecture():
    assert repr(MLP([3, 4, 2])) == ("MLP(sizes=[3, 4, 2], activation=['relu'], dtype='float64', "
                                    "num_parameters=26)")


def test_backward_after_predict_is_refused_until_the_next_forward():
    model = MLP([3, 4, 2], seed=0)
    X = np.random.default_rng(0).standard_normal((5, 3))
    model.forward(X)
    model.predict(X[:2])                                     # replaces the cached activations
    with pytest.raises(ValueError, match="forward"):
        model.backward(np.ones((5, 2)))
    model.forward(X)
    model.backward(np.ones((5, 2)))                          # a fresh forward makes it valid again


def test_trainable_lists_and_sets_the_frozen_flags_of_every_dense_layer():
    model = MLP([3, 4, 4, 2])
    model.freeze(1)
    assert model.trainable == [True, False, True]
    model.trainable = [False, True, True]
    assert [dense.trainable for dense in model.dense_layers] == [False, True, True]
    for bad in ([True, True], [1, 0, 1], "yes"):
        with pytest.raises(ValueError, match="trainable must be 3 booleans"):
            model.trainable = bad
    assert model.trainable == [False, True, True]                  # a refused list changes nothing
    assert model.copy().trainable == model.trainable
    assert model.copy(n_outputs=5).trainable == [False, True, True]   # the new head is trainable


def test_a_checkpoint_loaded_as_a_model_keeps_its_frozen_layers(tmp_path):
    import minidl
    X, y = np.random.default_rng(0).normal(size=(12, 3)), np.arange(12) % 2
    model = MLP([3, 4, 2])
    model.freeze(0)
    minidl.fit(model, "cross_entropy", minidl.SGD(model, lr=0.1), X, y, epochs=1, batch_size=4,
               checkpoint=tmp_path / "run.npz", comm=None)
    assert minidl.load(tmp_path / "run.npz").trainable == [False, True]
