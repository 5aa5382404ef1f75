"""The oracle: compare() against PyTorch float64, 100-step optimizer trajectories against
torch.optim, planted bugs that must fail, the Report, trajectory() and replay_monitor()."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TORCH_TOL
from minidl import MLP, SGD, Adam, loss_and_grads
from minidl.interop import to_torch
from minidl.monitor import EarlyStopping, ReduceLROnPlateau
from minidl.oracle import compare, compare_trajectory, replay_monitor, trajectory

try:
    import torch
    torch.set_num_threads(1)        # tensors here are tiny: extra threads only add overhead
except ImportError:
    torch = None

TRAJECTORY_TOL = 1e-10          # docs/oracle.md: 100-step SGD/Adam trajectories
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "identity")
LOSSES = ("cross_entropy", "mse", "binary_cross_entropy")


def needs_torch(test):
    """Mark a test that compares against PyTorch; skipped when torch is absent."""
    return pytest.mark.torch(pytest.mark.skipif(torch is None, reason="PyTorch is not installed")(test))


def make_targets(loss, rng, n, k, probabilities=False):
    if loss == "cross_entropy":
        return rng.dirichlet(np.ones(k), n) if probabilities else rng.integers(0, k, n)
    if loss == "mse":
        return rng.normal(0, 1, (n, k))
    return rng.uniform(0, 1, (n, k))


def torch_loss(loss, logits, y):
    functional = torch.nn.functional
    if loss == "cross_entropy":
        return functional.cross_entropy(logits, y)
    if loss == "mse":
        return functional.mse_loss(logits, y)
    return functional.binary_cross_entropy_with_logits(logits, y)


def torch_loss_and_grads(net, X, y, loss):
    """PyTorch's loss, logits and {name: grad} for the batch: the independent reference."""
    net.zero_grad()
    logits = net(torch.from_numpy(X))
    value = torch_loss(loss, logits, torch.from_numpy(y))
    value.backward()
    return value, logits, {name: p.grad for name, p in net.named_parameters()}


def check_against_torch(model, X, y, loss):
    net = to_torch(model)
    value, logits, grads = torch_loss_and_grads(net, X, y, loss)
    report = compare(model, X, y, loss, value, grads, their_logits=logits, rtol=TORCH_TOL)
    report.assert_ok()
    return report


# ----------------------------------------------------------------- PyTorch float64: one batch
@needs_torch
@pytest.mark.parametrize("activation,loss", list(itertools.product(ACTIVATIONS, LOSSES)))
def test_every_activation_and_loss_matches_torch(activation, loss, rng):
    model = MLP([5, 7, 6, 4], activation=activation, init="torch", seed=3, negative_slope=0.3)
    X = rng.normal(0, 1.5, (9, 5))
    report = check_against_torch(model, X, make_targets(loss, rng, 9, 4), loss)
    assert [row.name for row in report.rows] == ["loss", "logits", "0.weight", "0.bias",
                                                 "2.weight", "2.bias", "4.weight", "4.bias"]


@st.composite
def problems(draw):
    """A random architecture (activations mixed per layer), loss, batch and seed."""
    hidden = draw(st.lists(st.integers(1, 6), max_size=3))
    sizes = [draw(st.integers(1, 5))] + hidden + [draw(st.integers(1, 4))]
    activations = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=len(hidden),
                                max_size=len(hidden)))
    slopes = draw(st.lists(st.floats(0.0, 0.9), min_size=len(hidden), max_size=len(hidden)))
    return {"sizes": sizes, "activations": activations, "slopes": slopes,
            "loss": draw(st.sampled_from(LOSSES)), "n": draw(st.integers(1, 8)),
            "probabilities": draw(st.booleans()), "seed": draw(st.integers(0, 2**32 - 1))}


@needs_torch
@settings(max_examples=40)
@given(problems())
def test_random_architectures_match_torch(problem):
    sizes, loss, n = problem["sizes"], problem["loss"], problem["n"]
    rng = np.random.default_rng(problem["seed"])
    model = MLP(sizes, activation=problem["activations"], negative_slope=problem["slopes"],
                init="torch", seed=problem["seed"] % 1000)
    X = rng.normal(0, 1.5, (n, sizes[0]))
    y = make_targets(loss, rng, n, sizes[-1], problem["probabilities"])
    check_against_torch(model, X, y, loss)


@needs_torch
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_kink_at_zero_follows_torch(activation, rng):
    """A pre-activation of exactly 0: ReLU's gradient there is 0, LeakyReLU's is the slope."""
    model = MLP([3, 4, 2], activation=activation, negative_slope=0.25, init="torch")
    model.named_parameters()["0.weight"][0] = 0.0     # unit 0's pre-activation is exactly 0
    model.named_parameters()["0.bias"][0] = 0.0
    X, y = rng.normal(0, 1, (6, 3)), rng.integers(0, 2, 6)
    check_against_torch(model, X, y, "cross_entropy")
    through_unit_0 = loss_and_grads(model, X, y)[1]["0.weight"][0]
    assert (through_unit_0 == 0).all() == (activation == "relu")      # LeakyReLU passes slope * dy


@needs_torch
def test_float32_user_passes_at_the_float32_tolerance(rng):
    model = MLP([4, 6, 3], activation="tanh", init="torch", dtype="float32")
    net = to_torch(model)
    assert next(net.parameters()).dtype == torch.float32
    X, y = rng.normal(0, 1, (8, 4)).astype(np.float32), rng.integers(0, 3, 8)
    value, logits, grads = torch_loss_and_grads(net, X, y, "cross_entropy")
    report = compare(model, X, y, "cross_entropy", value, grads, their_logits=logits)
    report.assert_ok()
    assert {row.dtype for row in report.rows} == {"float32"}
    assert {row.tolerance for row in report.rows} == {1e-4}
    assert 0 < report.max_error < 1e-5          # float32 rounding is visible, and small


@needs_torch
def test_accumulated_torch_gradients_differ_by_design(rng):
    """torch adds into .grad across backward calls; minidl overwrites. Forgetting zero_grad()
    doubles torch's gradients, and the oracle says so."""
    model = MLP([3, 5, 2], init="torch")
    net = to_torch(model)
    X, y = rng.normal(0, 1, (4, 3)), rng.integers(0, 2, 4)
    for _ in range(2):
        value = torch_loss("cross_entropy", net(torch.from_numpy(X)), torch.from_numpy(y))
        value.backward()                              # no zero_grad between the two calls
    grads = {name: p.grad for name, p in net.named_parameters()}
    report = compare(model, X, y, "cross_entropy", value, grads)
    assert not report.ok and report["loss"].ok
    assert all(abs(report[name].error - 1.0) < 1e-12 for name in grads)   # exactly twice
    first, second = loss_and_grads(model, X, y)[1], loss_and_grads(model, X, y)[1]
    assert all(np.array_equal(first[name], second[name]) for name in first)


# ----------------------------------------------------------------- PyTorch: 100-step trajectories
OPTIMIZER_CASES = [           # every SGD option and Adam's, each loss at least twice
    ("sgd", {"lr": 0.1}, "cross_entropy"),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, "mse"),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-2}, "binary_cross_entropy"),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, "cross_entropy"),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}, "mse"),
    ("adam", {"lr": 1e-2}, "binary_cross_entropy"),
    ("adam", {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-2}, "cross_entropy"),
    ("adam", {"lr": 1e-2, "betas": (0.3, 0.9)}, "mse"),      # 1 - beta1 >= 0.5: lerp's other branch
]


@needs_torch
@pytest.mark.parametrize("name,hyperparameters,loss", OPTIMIZER_CASES)
def test_100_step_trajectories_match_torch_optim(name, hyperparameters, loss):
    rng = np.random.default_rng(7)
    model = MLP([4, 8, 6, 3], activation=["tanh", "leaky_relu"], init="torch", seed=1)
    batches = [(rng.normal(0, 1, (6, 4)), make_targets(loss, rng, 6, 3)) for _ in range(5)]
    net = to_torch(model)
    optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[name](net.parameters(), **hyperparameters)
    theirs = []
    for step in range(100):
        X, y = batches[step % len(batches)]
        optimizer.zero_grad()
        torch_loss(loss, net(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        optimizer.step()
        theirs.append(torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone())
    report = compare_trajectory(model, batches, (name, hyperparameters), loss, theirs,
                                rtol=TRAJECTORY_TOL)
    report.assert_ok()
    assert len(report.rows) == 100


# ----------------------------------------------------------------- planted bugs must be caught
def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def user_backprop(params, X, labels, bug=None):
    """Someone's hand-written tanh MLP with cross-entropy: Linear, tanh, Linear.

    bug: None, "missing 1/N" (dz = p - onehot, not divided by N) or "transposed" (dW2
    computed as h.T @ dz, shaped (in, out)).
    """
    W1, b1, W2, b2 = (params[name] for name in ("0.weight", "0.bias", "2.weight", "2.bias"))
    n = len(X)
    h = np.tanh(X @ W1.T + b1)                                        # (N, H)
    z = h @ W2.T + b2                                                 # (N, C)
    p = softmax(z)
    loss = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(n), labels])
    dz = p - np.eye(z.shape[1], dtype=X.dtype)[labels]
    if bug != "missing 1/N":
        dz /= n
    dW2 = h.T @ dz if bug == "transposed" else dz.T @ h
    dh = dz @ W2
    da = dh * (1 - h * h)
    grads = {"0.weight": da.T @ X, "0.bias": da.sum(axis=0), "2.weight": dW2, "2.bias": dz.sum(axis=0)}
    return loss, grads


def user_problem(rng, sizes=(4, 5, 3), dtype="float64", n=8):
    model = MLP(list(sizes), activation="tanh", init="torch", seed=2, dtype=dtype)
    X = rng.normal(0, 1, (n, sizes[0])).astype(dtype)
    return model, X, rng.integers(0, sizes[-1], n)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_correct_hand_written_backprop_passes(dtype, rng):
    model, X, y = user_problem(rng, dtype=dtype)
    loss, grads = user_backprop(model.state_dict(), X, y)
    report = compare(model, X, y, "cross_entropy", loss, grads)
    report.assert_ok()
    assert report.max_error < (1e-14 if dtype == "float64" else 1e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_missing_one_over_n_is_caught(dtype, rng):
    model, X, y = user_problem(rng, dtype=dtype, n=8)
    loss, grads = user_backprop(model.state_dict(), X, y, bug="missing 1/N")
    report = compare(model, X, y, "cross_entropy", loss, grads)
    assert not report.ok
    assert report["loss"].ok and [row.name for row in report.failures] == list(grads)
    assert all(abs(row.error - 7.0) < 1e-4 for row in report.failures)   # N - 1 = 7
    with pytest.raises(AssertionError, match="FAILED: 4 of 5 rows"):
        report.assert_ok()


def test_transposed_weight_gradient_is_caught_by_shape(rng):
    model, X, y = user_problem(rng, sizes=(4, 5, 3))
    report = compare(model, X, y, "cross_entropy", *user_backprop(model.state_dict(), X, y, "transposed"))
    assert [row.name for row in report.failures] == ["2.weight"]
    assert report["2.weight"].their_shape == (5, 3) and report["2.weight"].shape == (3, 5)
    assert "their shape is (5, 3)" in str(report)


def test_transposed_square_weight_gradient_is_caught_by_value(rng):
    model, X, y = user_problem(rng, sizes=(4, 3, 3))                  # 2.weight is (3, 3)
    report = compare(model, X, y, "cross_entropy", *user_backprop(model.state_dict(), X, y, "transposed"))
    assert [row.name for row in report.failures] == ["2.weight"]
    assert report["2.weight"].error > 1e-2


def user_adam(model, batches, steps, lr, betas, eps, bias_correction=True):
    """Someone's Adam over user_backprop's gradients; flat parameters after every step."""
    params = model.state_dict()
    m = {name: np.zeros_like(value) for name, value in params.items()}
    v = {name: np.zeros_like(value) for name, value in params.items()}
    path = []
    for t in range(1, steps + 1):
        X, y = batches[(t - 1) % len(batches)]
        _, grads = user_backprop(params, X, y)
        for name, g in grads.items():
            m[name] = betas[0] * m[name] + (1 - betas[0]) * g
            v[name] = betas[1] * v[name] + (1 - betas[1]) * g * g
            m_hat, v_hat = m[name], v[name]
            if bias_correction:
                m_hat, v_hat = m_hat / (1 - betas[0] ** t), v_hat / (1 - betas[1] ** t)
            params[name] = params[name] - lr * m_hat / (np.sqrt(v_hat) + eps)
        path.append(np.concatenate([p.reshape(-1) for p in params.values()]))
    return path


@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_without_bias_correction_is_caught(bias_correction, rng):
    model, _, _ = user_problem(rng)
    batches = [(rng.normal(0, 1, (8, 4)), rng.integers(0, 3, 8)) for _ in range(3)]
    hyperparameters = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}
    theirs = user_adam(model, batches, 100, bias_correction=bias_correction, **hyperparameters)
    report = compare_trajectory(model, batches, ("adam", hyperparameters), "cross_entropy", theirs)
    assert report.ok == bias_correction
    if bias_correction:
        assert report.max_error <= TRAJECTORY_TOL
    else:
        assert not report["step 1"].ok                # caught at the very first step


# ----------------------------------------------------------------- compare(): the contract
def test_compare_rejects_missing_extra_and_none_gradients(rng):
    model, X, y = user_problem(rng)
    loss, grads = user_backprop(model.state_dict(), X, y)
    with pytest.raises(ValueError, match=r"missing \['2.bias'\], unexpected \['fc.bias'\]"):
        compare(model, X, y, "cross_entropy", loss,
                {**{k: v for k, v in grads.items() if k != "2.bias"}, "fc.bias": grads["2.bias"]})
    with pytest.raises(ValueError, match=r"their_grads\['0.bias'\] is None"):
        compare(model, X, y, "cross_entropy", loss, {**grads, "0.bias": None})
    with pytest.raises(TypeError, match="mapping"):
        compare(model, X, y, "cross_entropy", loss, list(grads.values()))
    with pytest.raises(ValueError, match="single number"):
        compare(model, X, y, "cross_entropy", np.array([loss, loss]), grads)
    with pytest.raises(TypeError, match="their_loss must be a number"):
        compare(model, X, y, "cross_entropy", "0.5", grads)
    with pytest.raises(TypeError, match="pass rtol="):
        compare(model, X, y, "cross_entropy", loss, {k: v.astype(np.float16) for k, v in grads.items()})


def test_compare_tolerances_follow_their_dtype_unless_overridden(rng):
    model, X, y = user_problem(rng)
    loss, grads = user_backprop(model.state_dict(), X, y)
    mixed = {**grads, "0.weight": grads["0.weight"].astype(np.float32)}
    report = compare(model, X, y, "cross_entropy", float(loss), mixed)
    assert report["0.weight"].tolerance == 1e-4 and report["0.bias"].tolerance == 1e-10
    assert report["loss"].dtype == "float32"          # a bare Python float: their lowest precision
    assert compare(model, X, y, "cross_entropy", np.float64(loss), mixed)["loss"].tolerance == 1e-10
    overridden = compare(model, X, y, "cross_entropy", loss, mixed, rtol=1e-20)
    assert {row.tolerance for row in overridden.rows} == {1e-20}
    assert not overridden.ok                          # float32 rounding exceeds 1e-20


def test_compare_leaves_the_model_alone_and_reports_nan(rng):
    model, X, y = user_problem(rng, dtype="float32")
    params, grads_before = model.params.copy(), model.grads.copy()
    loss, grads = user_backprop(model.state_dict(), X, y)
    grads["2.bias"][1] = np.nan
    report = compare(model, X, y, "cross_entropy", loss, grads)
    assert np.array_equal(model.params, params) and np.array_equal(model.grads, grads_before)
    row = report["2.bias"]
    assert not row.ok and np.isnan(row.error) and row.where == "[1]" and np.isnan(row.theirs)
    assert [row.name for row in report.failures] == ["2.bias"] and np.isnan(report.max_error)


def test_report_table_and_assert_ok(rng):
    model, X, y = user_problem(rng)
    report = compare(model, X, y, "cross_entropy", *user_backprop(model.state_dict(), X, y))
    assert report.assert_ok() is None
    text = str(report)
    lines = text.splitlines()
    assert lines[0].split() == ["tensor", "shape", "dtype", "rel", "error", "tol", "worst", "at",
                                "theirs", "minidl"]
    assert [line.split()[0] for line in lines[1:-1]] == ["loss", "0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(line.endswith("ok") for line in lines[1:-1])
    assert lines[-1] == "ok: all 5 rows within tolerance"
    with pytest.raises(KeyError, match="no row 'logits'"):
        report["logits"]


# ----------------------------------------------------------------- trajectory()
def manual_trajectory(model, optimizer, batches, steps, loss="cross_entropy"):
    """minidl's own training step, written out: the definition trajectory() must match."""
    path = []
    for step in range(steps):
        X, y = batches[step % len(batches)]
        loss_and_grads(model, X, y, loss)
        optimizer.step()
        path.append(model.params.copy())
    return path


def test_trajectory_is_minidls_training_and_touches_nothing(rng):
    model, _, _ = user_problem(rng)
    model.freeze(0)
    batches = [(rng.normal(0, 1, (8, 4)), rng.integers(0, 3, 8)) for _ in range(2)]
    optimizer = Adam(model, lr=0.01, weight_decay=1e-3)
    params = model.params.copy()
    path = trajectory(model, batches, optimizer, "cross_entropy", steps=5)    # batches cycled
    assert np.array_equal(model.params, params)
    assert optimizer.step_count == 0 and not optimizer.exp_avg.any()
    twin = model.copy()
    expected = manual_trajectory(twin, Adam(twin, lr=0.01, weight_decay=1e-3), batches, 5)
    assert len(path) == 5 and all(np.array_equal(a, b) for a, b in zip(path, expected))
    assert np.array_equal(path[-1][:20], params[:20])                 # frozen layer 0 (4*4+4)
    spec_path = trajectory(model, batches, ("adam", {"lr": 0.01, "weight_decay": 1e-3}), "cross_entropy", 5)
    assert all(np.array_equal(a, b) for a, b in zip(path, spec_path))
    assert len(trajectory(model, batches, "sgd", "cross_entropy")) == 2        # default: one pass


def test_trajectory_runs_in_float64(rng):
    model, _, _ = user_problem(rng, dtype="float32")
    batches = [(rng.normal(0, 1, (8, 4)), rng.integers(0, 3, 8))]
    path = trajectory(model, batches, SGD(model, lr=0.1, momentum=0.9), "cross_entropy", steps=3)
    reference = MLP(**dict(model.config(), dtype="float64"))
    reference.params[...] = model.params
    expected = manual_trajectory(reference, SGD(reference, lr=0.1, momentum=0.9), batches, 3)
    assert all(p.dtype == np.float64 and np.array_equal(p, q) for p, q in zip(path, expected))


def test_trajectory_and_compare_trajectory_errors(rng):
    model, X, y = user_problem(rng)
    with pytest.raises(ValueError, match="batches is empty"):
        trajectory(model, [], "sgd", "cross_entropy")
    with pytest.raises(TypeError, match=r"batches\[0\] is not an \(X, y\) pair"):
        trajectory(model, (X, y), "sgd", "cross_entropy")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        trajectory(model, [(X, y)], ("rmsprop", {}), "cross_entropy")
    with pytest.raises(TypeError, match=r"a \(name, \{hyperparameters\}\) pair, got \('sgd',\)"):
        trajectory(model, [(X, y)], ("sgd",), "cross_entropy")
    with pytest.raises(TypeError, match="hyperparameters must be a mapping"):
        trajectory(model, [(X, y)], ("sgd", 0.1), "cross_entropy")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        trajectory(model, [(X, y)], "sgd", "cross_entropy", steps=0)
    with pytest.raises(ValueError, match="their_params is empty"):
        compare_trajectory(model, [(X, y)], "sgd", "cross_entropy", [])
    with pytest.raises(ValueError, match="missing"):
        compare_trajectory(model, [(X, y)], "sgd", "cross_entropy", [{"0.weight": model.params}])


def test_compare_trajectory_accepts_state_dicts_and_names_the_worst_element(rng):
    model, X, y = user_problem(rng)
    path = trajectory(model, [(X, y)], "sgd", "cross_entropy", steps=2)
    states = []
    for flat in path:
        step_model = model.copy()
        step_model.params[...] = flat
        states.append(step_model.state_dict())
    states[1]["2.weight"][1, 4] += 1e-3
    report = compare_trajectory(model, [(X, y)], "sgd", "cross_entropy", states)
    assert report["step 1"].ok and report["step 1"].error == 0.0
    assert not report["step 2"].ok and report["step 2"].where == "2.weight[1, 4]"


# ----------------------------------------------------------------- replay_monitor()
def test_early_stopping_replay_records_every_decision():
    records = replay_monitor(EarlyStopping(patience=2), [1.0, 0.8, 0.9, 0.85, 0.7])
    assert [r["stop"] for r in records] == [False, False, False, True, False]
    assert records[3] == {"check": 3, "value": 0.85, "stop": True, "stop_reason": "patience",
                          "best": 0.8, "best_epoch": 1, "wait": 2}
    assert [r["wait"] for r in records] == [0, 0, 1, 2, 0]
    assert replay_monitor(EarlyStopping(), [1.0, float("nan")])[1]["stop_reason"] == "non_finite"


def test_replay_matches_a_live_monitor_and_leaves_it_alone():
    rng = np.random.default_rng(4)
    values = list(np.cumsum(rng.normal(-0.05, 0.3, 40)))
    monitor = EarlyStopping(patience=3, min_delta=0.05, baseline=1.0, restore_best_weights=True)
    monitor.update(-100.0, weights=np.zeros(2))                       # some prior state
    before = monitor.state_dict()
    records = replay_monitor(monitor, values)
    after = monitor.state_dict()
    assert before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k]) if isinstance(before[k], np.ndarray) else before[k] == after[k]
        for k in before)
    live = EarlyStopping(patience=3, min_delta=0.05, baseline=1.0)
    for record, value in zip(records, values):
        stop = live.update(value)
        assert (record["stop"], record["best"], record["best_epoch"], record["wait"]) == \
            (stop, live.best, live.best_epoch, live.wait)


def test_plateau_replay_records_the_learning_rate():
    records = replay_monitor(ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0),
                             [1.0, 1.0, 1.0, 0.5, 0.6], lr=0.1)
    assert [r["lr"] for r in records] == [0.1, 0.05, 0.025, 0.025, 0.0125]
    assert [r["reduced"] for r in records] == [False, True, True, False, True]
    assert [r["best"] for r in records] == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert records[0].keys() == {"check", "value", "lr", "reduced", "best", "wait", "cooldown_counter"}


def test_replay_monitor_errors():
    with pytest.raises(TypeError, match="needs the starting learning rate"):
        replay_monitor(ReduceLROnPlateau(), [1.0])
    with pytest.raises(TypeError, match="only for ReduceLROnPlateau"):
        replay_monitor(EarlyStopping(), [1.0], lr=0.1)
    with pytest.raises(TypeError, match="EarlyStopping or ReduceLROnPlateau"):
        replay_monitor(object(), [1.0])
