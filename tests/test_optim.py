"""SGD and Adam against hand-computed updates; lr changes, state round trips, frozen layers.

The expected values are computed here with plain Python floats from PyTorch's documented
update rules (torch.optim.SGD / torch.optim.Adam), independently of minidl's NumPy code.
The model is MLP([1, 1]): its flat parameter vector is [W, b], two scalars.
"""
import math

import numpy as np
import pytest

from conftest import EXACT_TOL, assert_close
from minidl import MLP, SGD, Adam

P0 = [1.0, -2.0]                                        # [W, b] before the first step
GRADS = [[1.0, 0.5], [2.0, -1.0], [-1.0, 0.25]]         # g_1, g_2, g_3 for [W, b]


def scalar_model(params=P0):
    model = MLP([1, 1])
    model.params[:] = params
    return model


def run(optimizer, grads=GRADS):
    """Apply one step per gradient; return the parameters after each step."""
    trajectory = []
    for g in grads:
        optimizer.model.grads[:] = g
        optimizer.step()
        trajectory.append(optimizer.model.params.tolist())
    return trajectory


def sgd_reference(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD's documented algorithm for one scalar parameter; returns p after each step."""
    trajectory, buf = [], None
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        if momentum != 0:
            buf = g if t == 1 else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        trajectory.append(p)
    return trajectory


def adam_reference(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """torch.optim.Adam's documented algorithm (amsgrad=False) for one scalar parameter."""
    beta1, beta2 = betas
    trajectory, m, v = [], 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
        trajectory.append(p)
    return trajectory


def reference_trajectory(reference, **options):
    """The reference applied to W and b separately, as [[W_1, b_1], [W_2, b_2], ...]."""
    per_parameter = [reference(P0[i], [g[i] for g in GRADS], **options) for i in range(2)]
    return [list(step) for step in zip(*per_parameter)]


# ----------------------------------------------------------------- literal numbers
def test_plain_sgd_three_steps_by_hand():
    # W: 1 - 0.1*1 = 0.9;  0.9 - 0.1*2 = 0.7;  0.7 - 0.1*(-1) = 0.8
    # b: -2 - 0.1*0.5 = -2.05;  -2.05 - 0.1*(-1) = -1.95;  -1.95 - 0.1*0.25 = -1.975
    trajectory = run(SGD(scalar_model(), lr=0.1))
    assert_close(trajectory, [[0.9, -2.05], [0.7, -1.95], [0.8, -1.975]], EXACT_TOL, "p")


def test_momentum_sgd_three_steps_by_hand():
    # W: buf = 1 (the first gradient itself)        -> p = 1 - 0.1*1 = 0.9
    #    buf = 0.9*1 + 2 = 2.9                       -> p = 0.9 - 0.29 = 0.61
    #    buf = 0.9*2.9 - 1 = 1.61                    -> p = 0.61 - 0.161 = 0.449
    # b: buf = 0.5 -> -2.05;  buf = 0.45 - 1 = -0.55 -> -1.995;  buf = -0.495 + 0.25 = -0.245 -> -1.9705
    trajectory = run(SGD(scalar_model(), lr=0.1, momentum=0.9))
    assert_close(trajectory, [[0.9, -2.05], [0.61, -1.995], [0.449, -1.9705]], EXACT_TOL, "p")


def test_nesterov_sgd_three_steps_by_hand():
    # W: buf = 1;   d = 1 + 0.9*1 = 1.9          -> p = 1 - 0.19 = 0.81
    #    buf = 2.9; d = 2 + 0.9*2.9 = 4.61       -> p = 0.81 - 0.461 = 0.349
    #    buf = 1.61; d = -1 + 0.9*1.61 = 0.449   -> p = 0.349 - 0.0449 = 0.3041
    trajectory = run(SGD(scalar_model(), lr=0.1, momentum=0.9, nesterov=True))
    assert_close([step[0] for step in trajectory], [0.81, 0.349, 0.3041], EXACT_TOL, "W")


def test_adam_first_step_moves_each_parameter_by_lr_against_its_gradient_sign():
    # t = 1: m_hat = g and v_hat = g*g, so the step is lr * g / (|g| + eps) ~ lr * sign(g)
    model = scalar_model()
    model.grads[:] = [3.0, -0.001]
    Adam(model, lr=0.01).step()
    assert_close(model.params, [1.0 - 0.01 * 3 / (3 + 1e-8), -2.0 + 0.01 * 0.001 / (0.001 + 1e-8)],
                 EXACT_TOL, "p")


# ----------------------------------------------------------------- every option, three steps
SGD_OPTIONS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "dampening": dict(lr=0.1, momentum=0.9, dampening=0.5),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.1),
    "momentum_weight_decay": dict(lr=0.05, momentum=0.5, weight_decay=0.2),
    "dampening_weight_decay": dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01),
    "nesterov_weight_decay": dict(lr=0.2, momentum=0.7, nesterov=True, weight_decay=0.05),
}
ADAM_OPTIONS = {
    "default": dict(lr=0.001),
    "lr": dict(lr=0.1),
    "weight_decay": dict(lr=0.1, weight_decay=0.1),
    "betas": dict(lr=0.1, betas=(0.5, 0.9)),
    "low_beta1": dict(lr=0.1, betas=(0.3, 0.8)),             # PyTorch's lerp takes its other branch
    "everything": dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.3),
}


@pytest.mark.parametrize("options", SGD_OPTIONS.values(), ids=SGD_OPTIONS.keys())
def test_sgd_three_steps_match_the_documented_rule(options):
    trajectory = run(SGD(scalar_model(), **options))
    assert_close(trajectory, reference_trajectory(sgd_reference, **options), EXACT_TOL, "p")


@pytest.mark.parametrize("options", ADAM_OPTIONS.values(), ids=ADAM_OPTIONS.keys())
def test_adam_three_steps_match_the_documented_rule(options):
    trajectory = run(Adam(scalar_model(), **options))
    assert_close(trajectory, reference_trajectory(adam_reference, **options), EXACT_TOL, "p")


def test_adam_with_zero_gradient_stays_put():
    model = scalar_model()
    run(Adam(model, lr=0.1), [[0.0, 0.0]] * 3)
    assert model.params.tolist() == P0


# ----------------------------------------------------------------- lr between steps
def test_sgd_lr_change_between_steps_takes_effect():
    optimizer = SGD(scalar_model(), lr=0.1)
    run(optimizer, GRADS[:1])                                 # W = 0.9
    optimizer.lr = 0.5
    run(optimizer, GRADS[1:2])                                # W = 0.9 - 0.5*2 = -0.1
    assert_close(optimizer.model.params[0], -0.1, EXACT_TOL, "W")
    assert optimizer.hyperparameters()["lr"] == 0.5


def test_adam_lr_change_between_steps_takes_effect():
    changed = Adam(scalar_model(), lr=0.1)
    run(changed, GRADS[:1])
    changed.lr = 0.02
    run(changed, GRADS[1:])
    # the reference with a per-step lr: p_t = p_{t-1} - lr_t * m_hat / (sqrt(v_hat) + eps)
    expected = []
    for i in range(2):
        p, m, v = P0[i], 0.0, 0.0
        for t, (g, lr) in enumerate(zip([g[i] for g in GRADS], [0.1, 0.02, 0.02]), start=1):
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            p -= lr * (m / (1 - 0.9 ** t)) / (math.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        expected.append(p)
    assert_close(changed.model.params, expected, EXACT_TOL, "p")


@pytest.mark.parametrize("bad, error", [(-0.1, ValueError), (float("nan"), ValueError),
                                        (float("inf"), ValueError), ("0.1", TypeError),
                                        (None, TypeError), (True, TypeError)])
def test_setting_an_invalid_lr_raises_and_keeps_the_old_one(bad, error):
    optimizer = SGD(scalar_model(), lr=0.1)
    with pytest.raises(error, match="lr"):
        optimizer.lr = bad
    assert optimizer.lr == 0.1


def test_zero_lr_changes_nothing():
    model = scalar_model()
    run(Adam(model, lr=0.0))
    run(SGD(model, lr=0.0, momentum=0.9))
    assert model.params.tolist() == P0


# ----------------------------------------------------------------- state_dict round trip
ALL_OPTIONS = [(SGD, options) for options in SGD_OPTIONS.values()] + \
              [(Adam, options) for options in ADAM_OPTIONS.values()]
ALL_IDS = [f"sgd-{name}" for name in SGD_OPTIONS] + [f"adam-{name}" for name in ADAM_OPTIONS]


@pytest.mark.parametrize("cls, options", ALL_OPTIONS, ids=ALL_IDS)
def test_optimizer_state_round_trip_continues_identically(cls, options):
    rng = np.random.default_rng(0)
    grads = rng.normal(0, 1, (6, 26))
    model = MLP([3, 4, 2], seed=0)
    optimizer = cls(model, **options)
    run(optimizer, grads[:3])
    saved_model, saved_optimizer = model.state_dict(), optimizer.state_dict()
    assert saved_optimizer["step_count"] == 3 and saved_optimizer["type"] == cls.__name__
    for value in saved_optimizer.values():                 # copies, not views of the live state
        if isinstance(value, np.ndarray):
            assert not any(np.shares_memory(value, array) for array in optimizer.state_arrays().values())
    expected = run(optimizer, grads[3:])

    resumed_model = MLP([3, 4, 2], seed=99)
    resumed_model.load_state_dict(saved_model)
    resumed = cls(resumed_model, **saved_optimizer["hyperparameters"])
    resumed.load_state_dict(saved_optimizer)
    assert run(resumed, grads[3:]) == expected             # bit for bit

    if options.get("momentum") or cls is Adam:             # and the state did matter
        fresh_model = MLP([3, 4, 2], seed=99)
        fresh_model.load_state_dict(saved_model)
        assert run(cls(fresh_model, **options), grads[3:]) != expected


def test_optimizer_state_dict_is_a_snapshot():
    optimizer = Adam(scalar_model(), lr=0.1)
    run(optimizer)
    state = optimizer.state_dict()
    state["exp_avg"][:] = 123.0
    assert not np.any(optimizer.exp_avg == 123.0)


def test_optimizer_load_state_dict_rejects_other_types_and_models():
    sgd_state = SGD(scalar_model(), lr=0.1, momentum=0.9).state_dict()
    with pytest.raises(ValueError, match="SGD"):
        Adam(scalar_model()).load_state_dict(sgd_state)
    with pytest.raises(ValueError, match="momentum_buffer"):
        SGD(MLP([2, 1]), lr=0.1, momentum=0.9).load_state_dict(sgd_state)


# ----------------------------------------------------------------- frozen layers
@pytest.mark.parametrize("cls, options", ALL_OPTIONS, ids=ALL_IDS)
def test_frozen_layers_are_unchanged_while_others_train(cls, options):
    rng = np.random.default_rng(1)
    model = MLP([3, 4, 4, 2], seed=0)
    model.freeze(0, 2)
    before = model.state_dict()
    optimizer = cls(model, **options)
    run(optimizer, rng.normal(0, 1, (3, model.num_parameters)))
    after = model.state_dict()
    for name in ("0.weight", "0.bias", "4.weight", "4.bias"):
        np.testing.assert_array_equal(after[name], before[name])
    for name in ("2.weight", "2.bias"):
        assert np.all(after[name] != before[name])
    for array in optimizer.state_arrays().values():             # their optimizer state too
        assert np.all(array[:16] == 0) and np.all(array[36:] == 0)


# ----------------------------------------------------------------- invalid hyperparameters
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr="0.1"), TypeError, "lr"),
    (dict(lr=None), TypeError, "lr"),
    (dict(momentum=-0.5), ValueError, "momentum"),
    (dict(momentum=float("inf")), ValueError, "momentum"),
    (dict(momentum="high"), TypeError, "momentum"),
    (dict(dampening=float("nan")), ValueError, "dampening"),
    (dict(weight_decay=-1e-4), ValueError, "weight_decay"),
    (dict(weight_decay=[0.1]), TypeError, "weight_decay"),
    (dict(nesterov=True), ValueError, "nesterov"),                      # needs momentum > 0
    (dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError, "nesterov"),
])
def test_sgd_rejects_invalid_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        SGD(scalar_model(), **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=-1e-3), ValueError, "lr"),
    (dict(lr=complex(1, 0)), TypeError, "lr"),
    (dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    (dict(betas=(-0.1, 0.999)), ValueError, r"betas\[0\]"),
    (dict(betas=(0.9, 1.5)), ValueError, r"betas\[1\]"),
    (dict(betas=(0.9, float("nan"))), ValueError, r"betas\[1\]"),
    (dict(betas=("0.9", 0.999)), TypeError, r"betas\[0\]"),
    (dict(betas=0.9), TypeError, "betas"),
    (dict(betas=(0.9,)), ValueError, "betas"),
    (dict(betas=(0.9, 0.99, 0.999)), ValueError, "betas"),
    (dict(eps=-1e-8), ValueError, "eps"),
    (dict(eps=float("inf")), ValueError, "eps"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(weight_decay="none"), TypeError, "weight_decay"),
])
def test_adam_rejects_invalid_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        Adam(scalar_model(), **kwargs)


@pytest.mark.parametrize("cls", [SGD, Adam])
@pytest.mark.parametrize("model", [None, "model", np.zeros(3)])
def test_optimizers_reject_things_that_are_not_models(cls, model):
    with pytest.raises(TypeError, match="model"):
        cls(model)
