"""minidl against PyTorch in float64: forward, losses, every gradient, SGD and Adam trajectories.

The oracle is the equivalent torch.nn.Sequential, built from minidl's state_dict with
torch's own strict load_state_dict (so the keys and (out, in) layouts must agree too).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TORCH_TOL, assert_close
from minidl import MLP, SGD, Adam, loss_and_grads
from minidl.losses import loss_kernel

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "identity"]
LOSS_WIDTHS = [("mse", 1), ("mse", 3), ("cross_entropy", 2), ("cross_entropy", 5),
               ("binary_cross_entropy", 1), ("binary_cross_entropy", 3)]
TRAJECTORY_TOL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """These tensors are tiny: extra OpenMP threads only spin-wait (30x slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torch_sequential(model):
    """The torch.nn.Sequential equivalent of ``model``, holding the same float64 parameters."""
    modules = []
    for index, dense in enumerate(model.dense_layers):
        modules.append(torch.nn.Linear(dense.in_features, dense.out_features, dtype=torch.float64))
        if index < len(model.dense_layers) - 1:
            name = model.activations[index]
            if name == "leaky_relu":
                modules.append(torch.nn.LeakyReLU(model.layers[2 * index + 1].negative_slope))
            else:
                modules.append({"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh,
                                "identity": torch.nn.Identity}[name]())
    sequential = torch.nn.Sequential(*modules)
    sequential.load_state_dict({name: torch.from_numpy(value) for name, value in model.state_dict().items()})
    return sequential


def torch_loss(loss, logits, y):
    if loss == "mse":
        return torch.nn.MSELoss()(logits, torch.from_numpy(y))
    if loss == "binary_cross_entropy":
        return torch.nn.BCEWithLogitsLoss()(logits, torch.from_numpy(y))
    return torch.nn.CrossEntropyLoss()(logits, torch.from_numpy(y))   # int64 labels or probabilities


def targets_for(loss, rng, n, k, soft):
    if loss == "cross_entropy":
        return rng.dirichlet(np.ones(k), n) if soft else rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return rng.uniform(0, 1, (n, k)) if soft else rng.integers(0, 2, (n, k)).astype(np.float64)
    return rng.normal(0, 1, (n, k))


@st.composite
def problems(draw):
    loss, k = draw(st.sampled_from(LOSS_WIDTHS))
    depth = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 16), min_size=depth, max_size=depth)) + [k]
    activation = draw(st.sampled_from(ACTIVATIONS + ["mixed"]))
    if activation == "mixed":
        activation = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=depth - 1, max_size=depth - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    model = MLP(sizes, activation=activation, seed=seed, init=draw(st.sampled_from(["auto", "torch"])),
                negative_slope=draw(st.sampled_from([0.01, 0.25])))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 16))
    X = rng.normal(0, draw(st.sampled_from([0.5, 2.0])), (n, sizes[0]))
    return model, X, targets_for(loss, rng, n, k, soft=draw(st.booleans())), loss


def compare_with_torch(model, X, y, loss):
    sequential = torch_sequential(model)
    X_torch = torch.from_numpy(X.copy()).requires_grad_(True)
    logits_torch = sequential(X_torch)
    loss_torch = torch_loss(loss, logits_torch, y)
    loss_torch.backward()

    value, grads = loss_and_grads(model, X, y, loss=loss)
    logits = model.forward(X)
    _, dlogits = loss_kernel(loss)(logits, y, len(X))
    dX = model.backward(dlogits, input_grad=True)

    assert_close(logits, logits_torch.detach().numpy(), TORCH_TOL, "logits")
    assert_close(value, loss_torch.item(), TORCH_TOL, "loss")
    torch_grads = {name: p.grad.numpy() for name, p in sequential.named_parameters()}
    assert list(torch_grads) == list(grads)
    for name in grads:
        assert_close(grads[name], torch_grads[name], TORCH_TOL, name)
    assert_close(dX, X_torch.grad.numpy(), TORCH_TOL, "input")


@settings(max_examples=15)
@given(problem=problems())
def test_generated_models_match_torch(problem):
    compare_with_torch(*problem)


@pytest.mark.parametrize("loss_width", LOSS_WIDTHS, ids=[f"{loss}-{k}" for loss, k in LOSS_WIDTHS])
@pytest.mark.parametrize("activation", ACTIVATIONS + ["mixed"])
def test_every_activation_and_loss_matches_torch(activation, loss_width):
    loss, k = loss_width
    rng = np.random.default_rng(len(activation) * 10 + k)
    acts = ["tanh", "leaky_relu", "sigmoid", "relu"] if activation == "mixed" else activation
    model = MLP([6, 9, 8, 7, 5, k], activation=acts, seed=3, init="torch", negative_slope=0.1)
    X = rng.normal(0, 1.5, (11, 6))
    compare_with_torch(model, X, targets_for(loss, rng, 11, k, soft=False), loss)
    compare_with_torch(model, X, targets_for(loss, rng, 11, k, soft=True), loss)


def test_torch_keys_and_shapes_match_state_dict():
    model = MLP([4, 8, 8, 3])
    reference = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                                    torch.nn.ReLU(), torch.nn.Linear(8, 3)).state_dict()
    assert {k: tuple(v.shape) for k, v in reference.items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert list(reference) == list(model.state_dict())


# ----------------------------------------------------------------- optimizer trajectories
SGD_OPTIONS = [dict(lr=0.05), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, dampening=0.3),
               dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, weight_decay=0.01),
               dict(lr=0.02, momentum=0.8, dampening=0.5, weight_decay=0.05),
               dict(lr=0.02, momentum=0.7, nesterov=True, weight_decay=0.1)]
ADAM_OPTIONS = [dict(lr=1e-3), dict(lr=0.01, weight_decay=0.01), dict(lr=0.01, betas=(0.8, 0.99)),
                dict(lr=0.01, betas=(0.3, 0.9), eps=1e-6),
                dict(lr=0.005, betas=(0.95, 0.9999), weight_decay=0.1)]
OPTIMIZERS = [(SGD, torch.optim.SGD, options) for options in SGD_OPTIONS] + \
             [(Adam, torch.optim.Adam, options) for options in ADAM_OPTIONS]
OPTIMIZER_IDS = [f"sgd{options}" for options in SGD_OPTIONS] + [f"adam{options}" for options in ADAM_OPTIONS]


def torch_parameters(sequential, model):
    """The torch parameters in minidl's flat order, with their spans in model.params."""
    named = dict(sequential.named_parameters())
    return [(named[name], slice(start, stop)) for name, start, stop, _ in model.layout()]


@pytest.mark.parametrize("ours, theirs, options", OPTIMIZERS, ids=OPTIMIZER_IDS)
def test_optimizer_trajectory_on_given_gradients_matches_torch(ours, theirs, options):
    """100 steps fed the same gradient sequence: the update rules alone, step by step."""
    rng = np.random.default_rng(0)
    model = MLP([3, 4, 2], seed=0, init="torch")
    sequential = torch_sequential(model)
    parameters = torch_parameters(sequential, model)
    optimizer = ours(model, **options)
    reference = theirs([p for p, _ in parameters], **options)
    for step in range(100):
        g = rng.normal(0, 1, model.num_parameters) * (10.0 if step % 10 == 0 else 1.0)
        model.grads[:] = g
        for p, span in parameters:
            p.grad = torch.from_numpy(g[span].reshape(p.shape).copy())
        optimizer.step()
        reference.step()
    theirs_flat = np.concatenate([p.detach().numpy().ravel() for p, _ in parameters])
    assert_close(model.params, theirs_flat, TRAJECTORY_TOL, "params after 100 steps")


@pytest.mark.parametrize("ours, theirs, options", OPTIMIZERS, ids=OPTIMIZER_IDS)
def test_training_trajectory_matches_torch(ours, theirs, options):
    """100 steps of full training (forward, loss, backward, step) on one batch."""
    rng = np.random.default_rng(1)
    model = MLP([4, 8, 6, 3], activation=["tanh", "sigmoid"], seed=2, init="torch")
    X, y = rng.normal(0, 1, (16, 4)), rng.integers(0, 3, 16)
    sequential = torch_sequential(model)
    optimizer = ours(model, **options)
    reference = theirs(sequential.parameters(), **options)
    X_torch, y_torch = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(100):
        loss_and_grads(model, X, y)
        optimizer.step()
        reference.zero_grad()
        torch.nn.CrossEntropyLoss()(sequential(X_torch), y_torch).backward()
        reference.step()
    for name, value in model.state_dict().items():
        assert_close(value, sequential.state_dict()[name].numpy(), TRAJECTORY_TOL, name)
    assert not np.allclose(model.params, MLP([4, 8, 6, 3], seed=2, init="torch").params)  # it moved


def test_frozen_layer_matches_torch_requires_grad_false():
    rng = np.random.default_rng(2)
    model = MLP([3, 5, 2], seed=0, init="torch")
    model.freeze(0)
    sequential = torch_sequential(model)
    for p in sequential[0].parameters():
        p.requires_grad_(False)
    optimizer = Adam(model, lr=0.01, weight_decay=0.1)
    reference = torch.optim.Adam([p for p in sequential.parameters() if p.requires_grad], lr=0.01,
                                 weight_decay=0.1)
    X, y = rng.normal(0, 1, (8, 3)), rng.integers(0, 2, 8)
    for _ in range(20):
        loss_and_grads(model, X, y)
        optimizer.step()
        reference.zero_grad()
        torch.nn.CrossEntropyLoss()(sequential(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        reference.step()
    for name, value in model.state_dict().items():
        assert_close(value, sequential.state_dict()[name].numpy(), TRAJECTORY_TOL, name)
