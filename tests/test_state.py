"""Loading state is atomic and validated (issue 17): every load_state_dict, and a resume from a
checkpoint, checks all of a state (keys, types, shapes, finite values, non-negative counts and
second moments) before it assigns any of it, so a refused state changes nothing and the error
names the offending key. Also: resume refuses other data of the same size, fit checks its
callbacks, and a float32 model refuses inputs that overflow float32."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minidl import MLP, SGD, Adam
from minidl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidl.data import make_blobs
from minidl.loop import evaluate, fit
from minidl.monitor import EarlyStopping, ReduceLROnPlateau
from minidl.schedules import CosineAnnealingLR, ExponentialLR, LinearLR, SequentialLR, StepLR


# ---------------------------------------------------------------------- objects with state
def small_model():
    return MLP([3, 4, 2], seed=0)


def stepped(optimizer, steps=3):
    """``optimizer`` after a few steps on random gradients: its buffers hold real values."""
    rng = np.random.default_rng(0)
    for _ in range(steps):
        optimizer.model.grads[...] = rng.standard_normal(optimizer.model.grads.shape)
        optimizer.step()
    return optimizer


def early_stopping():
    stopper = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    weights = small_model().params
    for step, value in enumerate((1.0, 0.5, 0.7)):
        stopper.update(value, weights=weights + value, step=step)
    return stopper


def plateau():
    reducer, lr = ReduceLROnPlateau(patience=1, cooldown=2), 0.1
    for value in (1.0, 2.0, 3.0):
        lr = reducer.update(value, lr)
    return reducer


def scheduled(build, steps=3):
    optimizer = SGD(small_model(), lr=0.1)
    schedule = build(optimizer)
    for _ in range(steps):
        schedule.step()
    return schedule


FACTORIES = {
    "sgd": lambda: stepped(SGD(small_model(), lr=0.1)),
    "sgd_momentum": lambda: stepped(SGD(small_model(), lr=0.1, momentum=0.9, dampening=0.1)),
    "sgd_nesterov": lambda: stepped(SGD(small_model(), lr=0.1, momentum=0.9, nesterov=True)),
    "adam": lambda: stepped(Adam(small_model(), lr=0.01, weight_decay=0.01)),
    "early_stopping": early_stopping,
    "reduce_lr_on_plateau": plateau,
    "step_lr": lambda: scheduled(lambda opt: StepLR(opt, step_size=2)),
    "exponential_lr": lambda: scheduled(lambda opt: ExponentialLR(opt, gamma=0.9)),
    "cosine_lr": lambda: scheduled(lambda opt: CosineAnnealingLR(opt, T_max=5)),
    "linear_lr": lambda: scheduled(lambda opt: LinearLR(opt, total_iters=4)),
    "sequential_lr": lambda: scheduled(lambda opt: SequentialLR(
        opt, [LinearLR(opt, total_iters=2), ExponentialLR(opt, gamma=0.9)], milestones=[2])),
}
OPTIONAL_KEYS = ("layer_steps", "epoch_end_pending")      # older states lack them: loading works
NON_NEGATIVE = ("exp_avg_sq",)


def assert_same_state(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert isinstance(b[key], np.ndarray) and a[key].dtype == b[key].dtype
            assert np.array_equal(a[key], b[key], equal_nan=True), key
        else:
            assert a[key] == b[key], key


def corruptions(key, value):
    """Values of ``key`` that no object can have loaded, each with the value it replaces."""
    if isinstance(value, np.ndarray):
        bad = [np.append(value, 0.0), value[:1], value.reshape(1, -1), "abc"]
        for poison in (np.nan, np.inf, -np.inf):
            poisoned = value.copy()
            poisoned[len(value) // 2] = poison
            bad.append(poisoned)
        if key in NON_NEGATIVE:
            bad.append(value - (value.max() + 1.0))
        return bad
    if isinstance(value, bool):
        return ["yes", 1, None]
    if isinstance(value, int):
        return [-1, 1.5, "3", True, None if key not in ("best_epoch", "best_step") else -2]
    if isinstance(value, float):
        return [math.nan, math.inf, -math.inf, "0.1"] + ([-1.0] if key in ("lr", "base_lr") else [])
    if value is None:
        return ["abc", math.nan, math.inf]
    if isinstance(value, str):
        return ["bogus", 3]
    if isinstance(value, dict):
        return [{}, "abc", {**value, "surprise": 1}]
    if isinstance(value, list):
        return [[-2] * len(value), value + value[:1], [], ["a"] * len(value)]
    raise AssertionError(f"no corruption for {key}={value!r}")


def perturbed(state):
    """A different but valid state (so a partial load would show): every array + 1."""
    return {key: value + 1.0 if isinstance(value, np.ndarray) else value for key, value in state.items()}


def assert_refused(target, state, key):
    """Loading ``state`` raises ValueError/TypeError naming ``key``, and changes nothing."""
    before = target.state_dict()
    with pytest.raises((ValueError, TypeError)) as error:
        target.load_state_dict(state)
    assert key in str(error.value), (key, str(error.value))
    assert_same_state(target.state_dict(), before)


@pytest.mark.parametrize("name", FACTORIES)
def test_a_state_round_trips(name):
    source, target = FACTORIES[name](), FACTORIES[name]()
    target.load_state_dict(perturbed(source.state_dict()))
    assert_same_state(target.state_dict(), perturbed(source.state_dict()))


@pytest.mark.parametrize("name", FACTORIES)
@given(data=st.data())
def test_a_corrupted_value_is_refused_by_name_and_changes_nothing(name, data):
    target, state = FACTORIES[name](), perturbed(FACTORIES[name]().state_dict())
    key = data.draw(st.sampled_from(sorted(state)), label="key")
    state[key] = data.draw(st.sampled_from(corruptions(key, state[key])), label="bad value")
    assert_refused(target, state, key)


@pytest.mark.parametrize("name", FACTORIES)
@given(data=st.data())
def test_a_missing_or_unknown_key_is_refused_by_name_and_changes_nothing(name, data):
    target, state = FACTORIES[name](), perturbed(FACTORIES[name]().state_dict())
    if data.draw(st.booleans(), label="drop a key"):
        key = data.draw(st.sampled_from(sorted(set(state) - set(OPTIONAL_KEYS))), label="key")
        del state[key]
    else:
        key = "surprise_" + data.draw(st.text("abcxyz_"), label="key suffix")
        state[key] = 0
    assert_refused(target, state, key)


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("state", [None, [], "state", 3])
def test_a_state_that_is_not_a_dict_is_a_type_error(name, state):
    target = FACTORIES[name]()
    before = target.state_dict()
    with pytest.raises(TypeError, match="dict"):
        target.load_state_dict(state)
    assert_same_state(target.state_dict(), before)


def test_a_state_without_layer_steps_loads_as_from_an_older_minidl():
    state = FACTORIES["adam"]().state_dict()
    del state["layer_steps"]
    target = Adam(small_model(), lr=0.01, weight_decay=0.01)
    target.load_state_dict(state)
    assert target.layer_steps.tolist() == [3, 3]


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_layer_steps_beyond_the_step_count_are_refused(name):
    target = FACTORIES[name]()
    state = target.state_dict()
    state["layer_steps"] = [state["step_count"] + 1, 0]
    assert_refused(target, state, "layer_steps")


def test_early_stopping_refuses_best_weights_of_another_shape_instead_of_broadcasting():
    stopper = early_stopping()                   # has seen the weights: knows their shape
    state = stopper.state_dict()
    state["best_weights"] = np.ones(1)           # 1-D, and once broadcast into every parameter
    assert_refused(stopper, state, "best_weights")


def test_early_stopping_never_broadcasts_loaded_weights_into_the_model():
    """A fresh monitor cannot know the model's shape; restoring still refuses to broadcast."""
    model = small_model()
    stopper = EarlyStopping(restore_best_weights=True)
    state = early_stopping().state_dict()
    state["best_weights"] = np.ones(1)
    stopper.load_state_dict(state)
    before = model.params.copy()

    class Run:
        pass
    run = Run()
    run.model = model
    with pytest.raises(ValueError, match="best_weights has shape"):
        stopper.on_train_end(run)
    assert np.array_equal(model.params, before)
    stopper.on_train_begin(run)                  # as fit does: now the shape is known
    with pytest.raises(ValueError, match="best_weights"):
        stopper.load_state_dict(state)


@pytest.mark.parametrize("name, key, value", [
    ("early_stopping", "wait", 4),               # more than its 3 checks
    ("early_stopping", "best_epoch", 3),         # a check index must be below num_checks
    ("reduce_lr_on_plateau", "cooldown_counter", 3),   # more than cooldown=2
])
def test_impossible_counters_are_refused(name, key, value):
    target = FACTORIES[name]()
    state = target.state_dict()
    state[key] = value
    assert_refused(target, state, key)


# ---------------------------------------------------------------------- resume from a checkpoint
X, Y = make_blobs(60, classes=3, seed=0)
X_VAL, Y_VAL = make_blobs(30, classes=3, seed=1)


def train(path, epochs, resume=False, X=X, Y=Y, validation=(X_VAL, Y_VAL), model=None, optimizer=None):
    model = MLP([2, 8, 3], seed=0) if model is None else model
    optimizer = Adam(model, lr=0.01) if optimizer is None else optimizer
    stopper = EarlyStopping(patience=100, restore_best_weights=True)
    history = fit(model, "cross_entropy", optimizer, X, Y, epochs=epochs, batch_size=16,
                  validation_data=validation, callbacks=[stopper], checkpoint=path, resume=resume,
                  verbose=0)
    return model, history


def refused_resume(path, match, **data):
    """Resume with ``data`` must raise ``match`` and leave the model and optimizer untouched."""
    model = MLP([2, 8, 3], seed=5)
    optimizer = stepped(Adam(model, lr=0.01), steps=1)
    params, state = model.params.copy(), optimizer.state_dict()
    with pytest.raises(CheckpointError, match=match):
        train(path, 4, resume=True, model=model, optimizer=optimizer, **data)
    assert np.array_equal(model.params, params)
    assert_same_state(optimizer.state_dict(), state)


def test_resume_with_the_same_data_equals_the_uninterrupted_run(tmp_path):
    whole, _ = train(tmp_path / "whole.npz", 4)
    train(tmp_path / "part.npz", 2)
    resumed, _ = train(tmp_path / "part.npz", 4, resume=True)
    assert np.array_equal(resumed.params, whole.params)


def test_resume_refuses_permuted_training_data_of_the_same_size(tmp_path):
    path = tmp_path / "ckpt.npz"
    train(path, 2)
    order = np.random.default_rng(0).permutation(len(X))
    refused_resume(path, r"other training data \(X, y: the CRC-32 checksums differ", X=X[order], Y=Y[order])


def test_resume_refuses_other_validation_data_of_the_same_size(tmp_path):
    path = tmp_path / "ckpt.npz"
    train(path, 2)
    refused_resume(path, "other validation data", validation=(X_VAL[::-1], Y_VAL[::-1]))


def test_a_checkpoint_from_before_data_checksums_resumes_unchecked(tmp_path):
    path = tmp_path / "ckpt.npz"
    train(path, 2)
    arrays, meta = load_checkpoint(path)
    assert meta["data"]["training"] and meta["data"]["validation"]
    del meta["data"]
    save_checkpoint(path, arrays, meta)
    resumed, _ = train(path, 4, resume=True)
    assert np.array_equal(resumed.params, train(tmp_path / "whole.npz", 4)[0].params)


@pytest.mark.parametrize("name, bad, match", [
    ("callback0/best_weights", np.ones(1), "best_weights"),                     # the last component
    ("optimizer/exp_avg_sq", -np.ones(51), "exp_avg_sq"),
    ("params", np.full(51, np.nan), "params"),
])
def test_a_resume_that_fails_on_any_component_changes_nothing(tmp_path, name, bad, match):
    path = tmp_path / "ckpt.npz"
    train(path, 2)
    arrays, meta = load_checkpoint(path)
    assert arrays[name].shape == (51,)                          # MLP([2, 8, 3]) has 51 parameters
    arrays[name] = bad
    save_checkpoint(path, arrays, meta)
    refused_resume(path, match)


def test_a_resume_refuses_impossible_counters(tmp_path):
    path = tmp_path / "ckpt.npz"
    train(path, 2)
    arrays, meta = load_checkpoint(path)
    meta["counters"]["step"] = -1
    save_checkpoint(path, arrays, meta)
    refused_resume(path, "step")


# ---------------------------------------------------------------------- silent API cases
@pytest.mark.parametrize("batch_size, error", [(-1, ValueError), (0, ValueError), (2.5, TypeError)])
def test_evaluate_refuses_a_bad_batch_size_by_name(batch_size, error):
    model = MLP([2, 8, 3], seed=0)
    with pytest.raises(error, match="batch_size"):
        evaluate(model, X, Y, batch_size=batch_size)


def test_callbacks_none_means_no_callbacks():
    model = MLP([2, 8, 3], seed=0)
    history = fit(model, "cross_entropy", SGD(model, lr=0.1), X, Y, epochs=1, batch_size=16,
                  callbacks=None, verbose=0)
    assert history.epochs_run == 1


class OnlyOneHook:
    def on_check(self, run):
        pass


@pytest.mark.parametrize("callbacks, match", [
    ("abc", "callbacks must be None or a list or tuple.*str"),
    (EarlyStopping(), "callbacks must be None or a list or tuple.*EarlyStopping"),
    ([OnlyOneHook(), "abc"], r"callbacks\[1\] is str 'abc', not a callback"),
    ([1], r"callbacks\[0\] is int 1, not a callback.*on_train_begin"),
    ([object()], r"callbacks\[0\] is object"),
    ([EarlyStopping], r"callbacks\[0\] is the class EarlyStopping.*instance"),
])
def test_fit_refuses_what_is_not_a_list_of_callbacks_naming_it(callbacks, match):
    model = MLP([2, 8, 3], seed=0)
    before = model.params.copy()
    with pytest.raises(TypeError, match=match):
        fit(model, "cross_entropy", SGD(model, lr=0.1), X, Y, epochs=1, batch_size=16,
            callbacks=callbacks, verbose=0)
    assert np.array_equal(model.params, before)


def test_an_object_with_one_hook_is_a_callback():
    model = MLP([2, 8, 3], seed=0)
    fit(model, "cross_entropy", SGD(model, lr=0.1), X, Y, epochs=1, batch_size=16,
        callbacks=[OnlyOneHook()], verbose=0)


FLOAT32_OVERFLOW = "overflow float32 \\(max 3.4e\\+38\\).*scale them.*float64 model"


@pytest.mark.parametrize("where", ["X", "validation_data\\[0\\]"])
def test_fit_on_a_float32_model_refuses_inputs_that_overflow_float32(where):
    model = MLP([2, 8, 3], seed=0, dtype="float32")
    huge = X * 1e39                                             # finite in float64
    train_X, validation = (huge, None) if where == "X" else (X, (huge, Y))
    with pytest.raises(ValueError, match=f"^{where} has values up to .*{FLOAT32_OVERFLOW}"):
        fit(model, "cross_entropy", SGD(model, lr=0.1), train_X, Y, epochs=1, batch_size=16,
            validation_data=validation, verbose=0)


def test_evaluate_and_predict_on_a_float32_model_refuse_inputs_that_overflow_float32():
    model = MLP([2, 8, 3], seed=0, dtype="float32")
    with pytest.raises(ValueError, match=f"^X has values up to .*{FLOAT32_OVERFLOW}"):
        evaluate(model, X * 1e39, Y)
    with pytest.raises(ValueError, match=f"^X has values up to .*{FLOAT32_OVERFLOW}"):
        model.predict(X * 1e39)
    with pytest.raises(ValueError, match=f"^(y|targets) has values up to .*{FLOAT32_OVERFLOW}"):
        evaluate(MLP([2, 1], dtype="float32"), X, np.full(len(X), 1e39), loss="mse")


def test_inputs_that_fit_the_models_dtype_are_taken():
    with np.errstate(over="ignore", invalid="ignore"):       # the logits may overflow: not our check
        MLP([2, 8, 3], seed=0).predict(X * 1e39)                               # float64 holds them
        MLP([2, 8, 3], seed=0, dtype="float32").predict((X * 1e30).astype(np.float32))
        MLP([2, 8, 3], seed=0, dtype="float32").predict(X * 1e30)             # float64 1e30 fits
