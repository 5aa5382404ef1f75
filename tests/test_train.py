"""fit(): validation split, shuffling, checks, metrics, History files, the callback protocol,
stop reasons, best-weight restoring, the XOR early-stopping demo and exact resume."""
import importlib.util
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EXACT_TOL, FakeTTY, assert_close, kill_after_checks
from minidl import MLP, SGD, Adam
from minidl import checkpoint as ckpt
from minidl.data import make_blobs, make_xor
from minidl.monitor import EarlyStopping, ReduceLROnPlateau
from minidl.checkpoint import History, read_history_csv
from minidl.comm import SerialComm
from minidl.loop import evaluate, fit, split_validation

SCRIPTS = Path(__file__).parent / "scripts"


def noisy_problem():
    """A small noisy 2-class problem that overfits: val_loss falls, then rises (best at check 3)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    y = (X[:, 0] + 0.8 * rng.standard_normal(40) > 0).astype(int)
    X_val = rng.standard_normal((40, 2))
    y_val = (X_val[:, 0] + 0.8 * rng.standard_normal(40) > 0).astype(int)
    return X, y, (X_val, y_val)


def noisy_fit(callbacks, epochs=40, **kwargs):
    X, y, validation = noisy_problem()
    model = MLP([2, 32, 2], seed=0)
    history = fit(model, "cross_entropy", SGD(model, lr=0.2, momentum=0.9), X, y, epochs=epochs,
                  batch_size=8, validation_data=validation, callbacks=callbacks, **kwargs)
    return model, history


class Recorder:
    """Copies of the live parameters at every check and after every step."""

    def __init__(self):
        self.at_check, self.at_step, self.hooks = {}, {}, []

    def on_train_begin(self, run):
        self.hooks.append("on_train_begin")

    def on_step_end(self, run):
        self.at_step[run.step] = run.model.params.copy()

    def on_check(self, run):
        self.hooks.append("on_check")
        self.at_check[run.check] = run.model.params.copy()

    def on_epoch_end(self, run):
        self.hooks.append("on_epoch_end")

    def on_stop(self, run):
        self.hooks.append("on_stop")

    def on_train_end(self, run):
        self.hooks.append("on_train_end")


class InterruptAt:
    """Simulates Ctrl-C: sets run.interrupted after optimizer step ``step``."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, run):
        if run.step == self.step:
            run.interrupted = True


class StopAt:
    """A callback asking to stop after optimizer step ``step``."""

    def __init__(self, step, reason="external"):
        self.step, self.reason = step, reason

    def on_step_end(self, run):
        if run.step == self.step:
            run.request_stop(self.reason)


# ------------------------------------------------------------------------ validation split
def test_split_validation_takes_the_last_fraction_like_keras():
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10)
    X_train, y_train, (X_val, y_val) = split_validation(X, y, 0.2)
    assert np.array_equal(y_train, np.arange(8)) and np.array_equal(y_val, [8, 9])
    assert np.array_equal(X_val, X[8:])
    # Keras: split_at = ceil(n * (1 - fraction)): 0.25 of 10 leaves 8 + 2, 0.15 leaves 9 + 1
    assert len(split_validation(X, y, 0.25)[0]) == 8
    assert len(split_validation(X, y, 0.15)[0]) == 9
    assert split_validation(X, y, 0.0)[2] is None


@pytest.mark.parametrize("n, fraction, error", [(10, 0.01, ValueError), (10, 0.09, ValueError),
                                                (1, 0.5, ValueError), (10, 1.0, ValueError),
                                                (10, -0.1, ValueError), (10, 1.5, ValueError),
                                                (10, math.nan, ValueError), (10, "0.2", TypeError)])
def test_impossible_validation_splits_are_rejected(n, fraction, error):
    X, y = np.zeros((n, 2)), np.zeros(n, int)
    with pytest.raises(error):
        split_validation(X, y, fraction)
    model = MLP([2, 3, 2])
    before = model.params.copy()
    with pytest.raises(error):
        fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=1, batch_size=2,
            validation_split=fraction)
    assert np.array_equal(model.params, before)


def test_validation_split_equals_validation_data_of_the_last_rows():
    X, y = make_blobs(50, seed=1)
    runs = []
    for kwargs in (dict(validation_split=0.2), dict(validation_data=(X[40:], y[40:]))):
        model = MLP([2, 6, 3], seed=2)
        data = (X, y) if "validation_split" in kwargs else (X[:40], y[:40])
        history = fit(model, "cross_entropy", SGD(model, lr=0.1), *data, epochs=3, batch_size=8, **kwargs)
        runs.append((model.params.copy(), history["val_loss"], history["val_accuracy"]))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]


def test_validation_data_and_split_together_are_rejected():
    X, y = make_blobs(20, seed=0)
    model = MLP([2, 3, 3])
    with pytest.raises(ValueError, match="not both"):
        fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=1, batch_size=4,
            validation_split=0.2, validation_data=(X, y))


# ------------------------------------------------------------------------ shuffling
def batch_order(init_seed, fit_seed, n=12, epochs=2):
    """The sample order fit visits, read off a linear model on one-hot inputs with batch size 1:
    sample i only moves weight i, so the weight that changed names the sample."""
    X, y = np.eye(n), np.ones((n, 1))
    model = MLP([n, 1], seed=init_seed)
    recorder = Recorder()
    fit(model, "mse", SGD(model, lr=0.01), X, y, epochs=epochs, batch_size=1, seed=fit_seed,
        callbacks=[recorder])
    order, previous = [], np.r_[MLP([n, 1], seed=init_seed).params]
    for step in sorted(recorder.at_step):
        moved = np.flatnonzero(recorder.at_step[step][:n] != previous[:n])
        assert len(moved) == 1
        order.append(int(moved[0]))
        previous = recorder.at_step[step]
    return order


def test_shuffle_depends_on_seed_and_epoch_not_on_the_initialisation():
    order = batch_order(init_seed=1, fit_seed=5)
    assert order == batch_order(init_seed=2, fit_seed=5)
    assert order != batch_order(init_seed=1, fit_seed=6)
    epoch0, epoch1 = order[:12], order[12:]
    assert sorted(epoch0) == sorted(epoch1) == list(range(12)) and epoch0 != epoch1
    # the documented rule: the shuffle of epoch e is default_rng([seed, e]).permutation(n)
    assert epoch0 == np.random.default_rng([5, 0]).permutation(12).tolist()
    assert epoch1 == np.random.default_rng([5, 1]).permutation(12).tolist()


def test_fit_is_deterministic():
    runs = [noisy_fit([], epochs=3) for _ in range(2)]
    assert np.array_equal(runs[0][0].params, runs[1][0].params)
    assert runs[0][1]["val_loss"] == runs[1][1]["val_loss"]


# ------------------------------------------------------------------------ checks and metrics
def test_check_every_steps_records_epoch_and_step_and_patience_counts_checks():
    X, y = make_blobs(40, seed=0)                       # 5 steps per epoch of 8
    model = MLP([2, 4, 3])
    stopper = EarlyStopping(monitor="loss", patience=2, min_delta=1e9)    # never improves after check 0
    history = fit(model, "cross_entropy", SGD(model, lr=0.01), X, y, epochs=10, batch_size=8,
                  check_every_steps=3, callbacks=[stopper])
    assert history["step"] == [3, 6, 9]
    assert history["epoch"] == [0, 1, 1]
    assert history["check"] == [0, 1, 2]
    assert history.stop_reason == "patience"
    assert (history.stopped_check, history.stopped_epoch) == (2, 1)
    assert (history.best_check, history.best_epoch) == (0, 0)
    assert history.steps == 9 and history.epochs_run == 2        # a partial epoch counts


def test_checks_at_each_epoch_end_without_check_every_steps():
    X, y = make_blobs(40, seed=0)
    model = MLP([2, 4, 3])
    history = fit(model, "cross_entropy", SGD(model, lr=0.01), X, y, epochs=3, batch_size=16)
    assert history["epoch"] == [0, 1, 2] and history["step"] == [3, 6, 9]
    assert history.stop_reason == "max_epochs" and history.stopped_epoch is None
    assert history.epochs_run == 3 and history.best_epoch is None


def test_metrics_per_check_are_the_documented_ones_and_correct():
    X, y = make_blobs(60, seed=0)
    model = MLP([2, 5, 3], seed=1)
    seen = []

    class Check:
        def on_check(self, run):
            seen.append((dict(run.metrics), evaluate(run.model, X, y), evaluate(run.model, X[48:], y[48:])))

    history = fit(model, "cross_entropy", SGD(model, lr=0.0), X, y, epochs=2, batch_size=7,
                  validation_split=0.2, callbacks=[Check()])        # lr 0: the model never changes
    assert history.keys() == ["check", "epoch", "step", "loss", "accuracy", "val_loss",
                              "val_accuracy", "lr", "time"]
    for metrics, _, val in seen:
        assert metrics["val_loss"] == val["loss"] and metrics["val_accuracy"] == val["accuracy"]
        assert metrics["lr"] == 0.0
    train = evaluate(model, X[:48], y[:48])
    for record in history.records:                    # the epoch's mean over its batches
        assert_close(record["loss"], train["loss"], EXACT_TOL, "training loss")
        assert record["accuracy"] == train["accuracy"]
    assert 0 < history["time"][0] <= history["time"][1]


def test_regression_checks_have_no_accuracy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    y = X @ rng.standard_normal((3, 2))
    model = MLP([3, 4, 2])
    history = fit(model, "mse", Adam(model, lr=0.01), X, y, epochs=2, batch_size=10, validation_split=0.2)
    assert history.keys() == ["check", "epoch", "step", "loss", "val_loss", "lr", "time"]


def test_evaluate_matches_a_direct_computation(rng):
    model = MLP([3, 4, 5], seed=2)
    X, y = rng.standard_normal((23, 3)), rng.integers(0, 5, 23)
    z = model.predict(X)
    shifted = z - z.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(23), y])
    result = evaluate(model, X, y, batch_size=4)
    assert_close(result["loss"], expected, EXACT_TOL, "evaluate loss")
    assert result["accuracy"] == np.mean(z.argmax(axis=1) == y)


def test_history_saves_json_and_csv_that_read_back(tmp_path):
    model, history = noisy_fit([EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)])
    history.to_json(tmp_path / "h.json")
    history.to_csv(tmp_path / "h.csv")
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["records"] == history.records
    assert data["stop_reason"] == "patience" and data["best_epoch"] == history.best_epoch == 3
    assert data["stopped_epoch"] == history.stopped_epoch == 6 and data["restored_from"] == 3
    back = History.from_dict(data)
    assert back.records == history.records and back.summary() == history.summary()
    rows = read_history_csv(tmp_path / "h.csv")
    assert len(rows) == len(history.records) == 7
    for row, record in zip(rows, history.records):
        assert row == {key: float(value) for key, value in record.items()}     # repr round-trips
    assert sorted(os.listdir(tmp_path)) == ["h.csv", "h.json"]


# ------------------------------------------------------------------------ callbacks and stops
def test_hooks_are_called_in_protocol_order():
    recorder = Recorder()
    X, y = make_blobs(20, seed=0)
    model = MLP([2, 3, 3])
    fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=2, batch_size=10, callbacks=[recorder])
    assert recorder.hooks == ["on_train_begin", "on_check", "on_epoch_end", "on_check", "on_epoch_end",
                              "on_stop", "on_train_end"]
    assert sorted(recorder.at_step) == [1, 2, 3, 4]


def test_a_callback_asking_to_stop_ends_training_with_reason_external():
    X, y = make_blobs(40, seed=0)
    model = MLP([2, 4, 3])
    recorder = Recorder()
    history = fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=50, batch_size=8,
                  callbacks=[StopAt(7), recorder])
    assert history.stop_reason == "external"
    assert history.steps == 7 and history.epochs_run == 2
    assert history.stopped_epoch is None and history.best_epoch is None
    assert np.array_equal(model.params, recorder.at_step[7])        # no update after the request


def test_request_stop_rejects_unknown_reasons():
    X, y = make_blobs(20, seed=0)
    model = MLP([2, 3, 3])
    with pytest.raises(ValueError, match="unknown stop reason"):
        fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=2, batch_size=10,
            callbacks=[StopAt(1, reason="bored")])


@pytest.mark.parametrize("restore", [True, False])
def test_a_non_finite_training_loss_stops_with_reason_non_finite(restore):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 1))
    y = 2 * X
    model = MLP([1, 1], seed=0)
    stopper = EarlyStopping(monitor="loss", patience=10**6, restore_best_weights=restore)
    history = fit(model, "mse", SGD(model, lr=10.0), X, y, epochs=5000, batch_size=32, callbacks=[stopper])
    assert history.stop_reason == "non_finite"
    assert history.steps < 5000 and all(math.isfinite(value) for value in history["loss"])
    assert np.isfinite(model.params).all()                           # the NaN step was not applied
    if restore:
        assert np.array_equal(model.params, stopper.best_weights)
        assert history.restored_from == history.best_epoch == 0
        assert np.abs(model.params).max() < 1e3


def test_a_non_finite_monitored_value_stops_and_restores_the_best_weights():
    """Inputs so large that the validation loss overflows before the training loss does."""
    X, y, _ = noisy_problem()
    model = MLP([2, 4, 2], seed=0)
    stopper = EarlyStopping(monitor="val_loss", patience=100, restore_best_weights=True)
    with np.errstate(over="ignore", invalid="ignore"):
        history = fit(model, "cross_entropy", SGD(model, lr=1e3), X, y, epochs=500, batch_size=40,
                      validation_data=(X * 1e300, y), callbacks=[stopper])
    assert history.stop_reason == stopper.stop_reason == "non_finite"
    assert math.isfinite(history["val_loss"][0]) and not math.isfinite(history["val_loss"][-1])
    assert history.stopped_check == len(history) - 1 and history.restored_from == history.best_epoch == 0
    assert np.array_equal(model.params, stopper.best_weights) and np.isfinite(model.params).all()


def test_monitoring_val_loss_without_validation_data_fails_at_start():
    X, y = make_blobs(20, seed=0)
    model = MLP([2, 3, 3])
    before = model.params.copy()
    recorder = Recorder()
    for monitor in (EarlyStopping(monitor="val_loss"), ReduceLROnPlateau(monitor="val_accuracy")):
        with pytest.raises(ValueError, match="validation_data or validation_split"):
            fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=2, batch_size=5,
                callbacks=[recorder, monitor])
    with pytest.raises(ValueError, match="'val_acc'"):
        fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=2, batch_size=5,
            validation_split=0.2, callbacks=[EarlyStopping(monitor="val_acc")])
    assert np.array_equal(model.params, before) and recorder.hooks == []


# ------------------------------------------------------------------------ restoring best weights
def test_restore_best_weights_after_an_early_stop():
    recorder = Recorder()
    stopper = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    model, history = noisy_fit([stopper, recorder])
    assert history.stop_reason == "patience"
    assert history.best_check == 3 < history.stopped_check == 6
    assert np.array_equal(model.params, recorder.at_check[3])
    assert not np.array_equal(model.params, recorder.at_check[6])
    assert history.restored_from == 3


def test_restore_best_weights_after_max_epochs():
    recorder = Recorder()
    stopper = EarlyStopping(monitor="val_loss", patience=1000, restore_best_weights=True)
    model, history = noisy_fit([stopper, recorder], epochs=12)
    assert history.stop_reason == "max_epochs" and history.stopped_epoch is None
    assert history.best_epoch == 3
    assert np.array_equal(model.params, recorder.at_check[3])
    assert not np.array_equal(model.params, recorder.at_check[11])


def test_without_restore_the_last_weights_stay():
    recorder = Recorder()
    model, history = noisy_fit([EarlyStopping(monitor="val_loss", patience=3), recorder])
    assert history.stop_reason == "patience" and history.restored_from is None
    assert np.array_equal(model.params, recorder.at_check[6])


def test_restore_after_an_interrupt_keeps_the_live_state_in_the_checkpoint(tmp_path):
    recorder = Recorder()
    stopper = EarlyStopping(monitor="val_loss", patience=1000, restore_best_weights=True)
    model, history = noisy_fit([stopper, recorder, InterruptAt(32)], checkpoint=tmp_path / "c.npz")
    assert history.stop_reason == "interrupted"
    assert history.steps == 32 and history.epochs_run == 7              # mid-epoch 6
    assert np.array_equal(model.params, recorder.at_check[3])           # restored: best check 3
    arrays, meta = ckpt.load_checkpoint(tmp_path / "c.npz")
    assert np.array_equal(arrays["params"], recorder.at_step[32])       # the LIVE state
    assert not np.array_equal(arrays["params"], model.params)
    assert meta["stop_reason"] == "interrupted"
    assert meta["counters"] == {"epoch": 6, "batch": 2, "step": 32, "check": 6}


def test_a_real_sigterm_interrupts_at_the_next_step(tmp_path):
    class Signal:
        def on_step_end(self, run):
            if run.step == 9:
                os.kill(os.getpid(), signal.SIGTERM)

    caught = []

    def fallback(signum, frame):                  # only reached if fit installed no handler
        caught.append(signum)

    previous = signal.signal(signal.SIGTERM, fallback)
    try:
        model, history = noisy_fit([EarlyStopping(monitor="val_loss", patience=1000, restore_best_weights=True),
                                    Signal()], checkpoint=tmp_path / "c.npz")
        assert signal.getsignal(signal.SIGTERM) is fallback                # fit put ours back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert caught == []
    assert history.stop_reason == "interrupted" and history.steps == 9


# ------------------------------------------------------------------------ ReduceLROnPlateau in fit
def test_reduce_lr_on_plateau_lowers_the_optimizer_lr_and_history_records_it():
    X, y = make_blobs(40, seed=0)
    model = MLP([2, 4, 3])
    optimizer = SGD(model, lr=0.1)
    plateau = ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5, min_delta=1e9, min_lr=0.02)
    history = fit(model, "cross_entropy", optimizer, X, y, epochs=5, batch_size=8, callbacks=[plateau])
    # a check records the lr used during its steps; the plateau lowers it after checks 1, 2, 3
    assert history["lr"] == [0.1, 0.1, 0.05, 0.025, 0.02]
    assert optimizer.lr == 0.02 and plateau.num_reductions == 3


def test_reduce_lr_changes_the_steps_that_follow():
    X, y = make_blobs(40, seed=0)
    runs = []
    for plateau in ([], [ReduceLROnPlateau(monitor="loss", patience=1, min_delta=1e9)]):
        model = MLP([2, 4, 3])
        fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=1, batch_size=8, callbacks=plateau)
        first = model.params.copy()
        fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=3, batch_size=8, callbacks=plateau)
        runs.append((first, model.params.copy()))
    assert np.array_equal(runs[0][0], runs[1][0]) and not np.array_equal(runs[0][1], runs[1][1])


# ------------------------------------------------------------------------ bad inputs
def bad_fit_cases():
    X, y = make_blobs(20, seed=0)
    other = MLP([2, 3, 3])
    nan_X = X.copy()
    nan_X[3, 1] = np.nan
    return {
        "optimizer_on_another_model": (dict(optimizer=SGD(other, lr=0.1)), TypeError, "built on this model"),
        "not_an_optimizer": (dict(optimizer="sgd"), TypeError, "optimizer"),
        "not_a_model": (dict(model=object()), TypeError, "minidl.MLP"),
        "epochs_0": (dict(epochs=0), ValueError, "epochs"),
        "epochs_float": (dict(epochs=2.5), TypeError, "epochs"),
        "batch_size_0": (dict(batch_size=0), ValueError, "batch_size"),
        "seed_negative": (dict(seed=-1), ValueError, "seed"),
        "check_every_0": (dict(check_every_steps=0), ValueError, "check_every_steps"),
        "y_length": (dict(y=y[:-1]), ValueError, "shape"),
        "y_class_out_of_range": (dict(y=y + 3), ValueError, "class indices"),
        "nan_in_X": (dict(X=nan_X), ValueError, "non-finite"),
        "X_1d": (dict(X=X[:, 0]), ValueError, "2-D"),
        "X_features": (dict(X=np.c_[X, X]), ValueError, "features"),
        "unknown_loss": (dict(loss="hinge"), ValueError, "hinge"),
        "validation_not_a_pair": (dict(validation_data=(X,)), TypeError, "pair"),
        "validation_y_mismatch": (dict(validation_data=(X, y[:3])), ValueError, "shape"),
        "validation_nan": (dict(validation_data=(nan_X, y)), ValueError, "non-finite"),
        "resume_without_checkpoint": (dict(resume=True), ValueError, "checkpoint"),
    }


@pytest.mark.parametrize("case", sorted(bad_fit_cases()))
def test_bad_inputs_to_fit_are_rejected_before_training(case):
    X, y = make_blobs(20, seed=0)
    model = MLP([2, 3, 3])
    before = model.params.copy()
    kwargs = dict(model=model, loss="cross_entropy", optimizer=SGD(model, lr=0.1), X=X, y=y,
                  epochs=2, batch_size=5)
    change, error, match = bad_fit_cases()[case]
    kwargs.update(change)
    if "model" in change:
        kwargs["optimizer"] = SGD(MLP([2, 3, 3]), lr=0.1)
    with pytest.raises(error, match=match):
        fit(**kwargs)
    assert np.array_equal(model.params, before)


# ------------------------------------------------------------------------ the XOR demo (issue 3)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_demo_learns_and_stops_on_patience(seed):
    X, y = make_xor(400, noise=0.15, seed=seed)
    # make_xor cycles through the corners, so the last 20% holds every corner equally often
    assert np.array_equal(np.bincount(y[320:]), [40, 40])
    model = MLP([2, 10, 1], activation="relu", seed=seed)
    stopper = EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    history = fit(model, "binary_cross_entropy", SGD(model, lr=0.1, momentum=0.9), X, y.reshape(-1, 1),
                  epochs=500, batch_size=16, validation_split=0.2, callbacks=[stopper], seed=seed)
    assert history.stop_reason == "patience"
    assert history.stopped_epoch == history.best_epoch + 10 < 499
    assert history.records[history.best_check]["val_accuracy"] >= 0.95
    assert evaluate(model, X[320:], y[320:].reshape(-1, 1), "binary_cross_entropy")["accuracy"] >= 0.95


# ------------------------------------------------------------------------ exact resume
def blobs_run(epochs, checkpoint=None, resume=False, extra=(), batch_size=10, check_every_steps=None,
              model_seed=1, seed=7):
    X, y = make_blobs(150, classes=3, spread=2.0, seed=3)
    model = MLP([2, 16, 3], seed=model_seed)
    optimizer = Adam(model, lr=0.01)
    callbacks = [EarlyStopping(monitor="val_loss", patience=1000, restore_best_weights=True),
                 ReduceLROnPlateau(monitor="val_loss", patience=2, factor=0.5), *extra]
    history = fit(model, "cross_entropy", optimizer, X, y, epochs=epochs, batch_size=batch_size,
                  validation_split=0.2, callbacks=callbacks, seed=seed, check_every_steps=check_every_steps,
                  checkpoint=checkpoint, resume=resume)
    return model, optimizer, callbacks, history


def without_time(history, ignore=("time",)):
    return [{k: v for k, v in record.items() if k not in ignore} for record in history.records]


def assert_same_run(a, b, path_a=None, path_b=None, ignore=("time",)):
    model_a, opt_a, cb_a, hist_a = a
    model_b, opt_b, cb_b, hist_b = b
    assert np.array_equal(model_a.params, model_b.params)
    for name, array in opt_a.state_dict().items():
        other = opt_b.state_dict()[name]
        assert np.array_equal(array, other) if isinstance(array, np.ndarray) else array == other, name
    assert without_time(hist_a, ignore) == without_time(hist_b, ignore)
    summary_a, summary_b = hist_a.summary(), hist_b.summary()
    for key in ("stop_reason", "best_epoch", "stopped_epoch", "restored_from", "epochs_run", "steps", "checks"):
        assert summary_a[key] == summary_b[key], key
    assert np.array_equal(cb_a[0].best_weights, cb_b[0].best_weights)
    assert cb_a[1].state_dict() == cb_b[1].state_dict()
    if path_a is not None:
        arrays_a, arrays_b = ckpt.load_checkpoint(path_a)[0], ckpt.load_checkpoint(path_b)[0]
        assert sorted(arrays_a) == sorted(arrays_b)
        for name in arrays_a:
            assert np.array_equal(arrays_a[name], arrays_b[name]), name


def test_resume_after_k_epochs_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    full = blobs_run(9, tmp_path / "full.npz")
    first = blobs_run(4, tmp_path / "part.npz")
    assert first[3].stop_reason == "max_epochs" and first[3].epochs_run == 4
    assert not np.array_equal(first[0].params, full[0].params)
    resumed = blobs_run(9, tmp_path / "part.npz", resume=True, model_seed=99)   # init is overwritten
    assert_same_run(full, resumed, tmp_path / "full.npz", tmp_path / "part.npz")
    assert resumed[1].lr < 0.01                                 # the plateau state came through


def test_resume_from_the_middle_of_an_epoch_is_bit_identical(tmp_path):
    full = blobs_run(6, tmp_path / "full.npz", check_every_steps=5)
    part = blobs_run(6, tmp_path / "part.npz", check_every_steps=5, extra=[InterruptAt(27)])
    assert part[3].stop_reason == "interrupted"
    meta = ckpt.load_checkpoint(tmp_path / "part.npz")[1]
    assert meta["counters"]["step"] == 27 and meta["counters"]["batch"] == 27 - 12 * 2   # 12 steps per epoch
    resumed = blobs_run(6, tmp_path / "part.npz", check_every_steps=5, resume=True)
    assert_same_run(full, resumed, tmp_path / "full.npz", tmp_path / "part.npz")


class CopyCheckpointAfterEpoch:
    """Copies the checkpoint written by the check at the end of epoch ``epoch``: the file a
    crash right after that check would leave."""

    def __init__(self, epoch, source, target):
        self.epoch, self.source, self.target = epoch, source, target

    def on_epoch_end(self, run):
        if run.epoch == self.epoch:
            self.target.write_bytes(self.source.read_bytes())


def test_resume_from_a_checkpoint_written_at_an_epoch_end_check_is_bit_identical(tmp_path):
    copy = CopyCheckpointAfterEpoch(2, tmp_path / "full.npz", tmp_path / "crash.npz")
    full = blobs_run(6, tmp_path / "full.npz", extra=[copy])
    meta = ckpt.load_checkpoint(tmp_path / "crash.npz")[1]
    assert meta["stop_reason"] is None and meta["counters"] == {"epoch": 2, "batch": 12, "step": 36, "check": 3}
    resumed = blobs_run(6, tmp_path / "crash.npz", resume=True)
    assert_same_run(full, resumed, ignore=("time",))


def test_resume_from_a_check_time_checkpoint_numbers_checks_consecutively(tmp_path):
    copy = CopyCheckpointAfterEpoch(2, tmp_path / "full.npz", tmp_path / "crash.npz")
    blobs_run(4, tmp_path / "full.npz", extra=[copy])
    resumed = blobs_run(4, tmp_path / "crash.npz", resume=True)
    assert resumed[3]["check"] == [0, 1, 2, 3]


class CopyCheckpointOnStop:
    """At on_stop (before the Checkpoint callback's final save) the file on disk is the one
    written by the last check: the file a crash between that check and the end would leave."""

    def __init__(self, source, target):
        self.source, self.target = source, target

    def on_stop(self, run):
        self.target.write_bytes(self.source.read_bytes())


def test_resume_from_the_checkpoint_of_the_stopping_check_stops_too(tmp_path):
    X, y, validation = noisy_problem()
    runs = []
    for path, resume, extra in ((tmp_path / "full.npz", False,
                                 [CopyCheckpointOnStop(tmp_path / "full.npz", tmp_path / "crash.npz")]),
                                (tmp_path / "crash.npz", True, [])):
        model = MLP([2, 32, 2], seed=0)
        stopper = EarlyStopping(monitor="val_loss", patience=3)
        history = fit(model, "cross_entropy", SGD(model, lr=0.2, momentum=0.9), X, y, epochs=40, batch_size=8,
                      validation_data=validation, callbacks=[stopper, *extra], checkpoint=path, resume=resume)
        runs.append((model.params.copy(), history))
    assert runs[0][1].stop_reason == "patience" and runs[0][1].steps == 35
    assert runs[1][1].steps == 35 and len(runs[1][1]) == 7
    assert np.array_equal(runs[0][0], runs[1][0])


def test_resuming_a_run_that_stopped_early_changes_nothing(tmp_path):
    X, y, validation = noisy_problem()
    runs = []
    for resume in (False, True):
        model = MLP([2, 32, 2], seed=0)
        stopper = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        history = fit(model, "cross_entropy", SGD(model, lr=0.2, momentum=0.9), X, y, epochs=40,
                      batch_size=8, validation_data=validation, callbacks=[stopper],
                      checkpoint=tmp_path / "c.npz", resume=resume)
        runs.append((model.params.copy(), history))
    assert runs[1][1].stop_reason == "patience" and runs[1][1].steps == runs[0][1].steps
    assert np.array_equal(runs[0][0], runs[1][0])


def test_resume_in_a_different_environment_warns_but_works(tmp_path):
    full = blobs_run(6)
    blobs_run(3, tmp_path / "c.npz")
    arrays, meta = ckpt.load_checkpoint(tmp_path / "c.npz")
    meta["environment"] = dict(meta["environment"], numpy="0.0.1", processes=1)
    ckpt.save_checkpoint(tmp_path / "c.npz", arrays, meta)
    with pytest.warns(RuntimeWarning, match="different environment.*may differ by rounding"):
        resumed = blobs_run(6, tmp_path / "c.npz", resume=True)
    assert_same_run(full, resumed)


@pytest.mark.parametrize("change, match", [(dict(batch_size=15), "batch_size"), (dict(seed=8), "seed"),
                                           (dict(check_every_steps=5), "check_every_steps")])
def test_resume_with_different_settings_is_a_checkpoint_error(tmp_path, change, match):
    blobs_run(2, tmp_path / "c.npz")
    with pytest.raises(ckpt.CheckpointError, match=match):
        blobs_run(4, tmp_path / "c.npz", resume=True, **change)


def test_resume_with_other_callbacks_is_a_checkpoint_error(tmp_path):
    blobs_run(2, tmp_path / "c.npz")
    X, y = make_blobs(150, classes=3, spread=2.0, seed=3)
    model = MLP([2, 16, 3], seed=1)
    with pytest.raises(ckpt.CheckpointError, match="same callbacks"):
        fit(model, "cross_entropy", Adam(model, lr=0.01), X, y, epochs=4, batch_size=10, validation_split=0.2,
            seed=7, callbacks=[ReduceLROnPlateau(monitor="val_loss")], checkpoint=tmp_path / "c.npz", resume=True)


def load_worker():
    spec = importlib.util.spec_from_file_location("resume_worker", SCRIPTS / "resume_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_bit_identically(tmp_path):
    worker = load_worker()
    checkpoint, out = tmp_path / "c.npz", tmp_path / "out.npy"
    command = [sys.executable, str(SCRIPTS / "resume_worker.py"), str(checkpoint), str(out)]
    process = subprocess.Popen(command + ["--sleep", "0.3"])
    try:
        kill_after_checks(process, checkpoint, checks=2, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    meta = ckpt.load_checkpoint(checkpoint)[1]
    total = worker.EPOCHS * 12                                   # 120 training samples, batch 10
    assert meta["stop_reason"] is None and 2 <= meta["counters"]["check"] and meta["counters"]["step"] < total
    assert not out.exists()
    done = subprocess.run(command + ["--resume"], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reference, history = worker.train(None)
    assert history.steps == total
    assert np.array_equal(np.load(out), reference.params)


def test_cross_entropy_on_a_single_output_is_refused():
    model = MLP([2, 4, 1], seed=0)
    with pytest.raises(ValueError, match="binary_cross_entropy"):
        fit(model, "cross_entropy", SGD(model, lr=0.1), np.zeros((8, 2)), np.zeros(8, int), epochs=1, batch_size=4)


def test_names_from_before_the_split_still_import():
    """minidl.train and minidl.comm were split (loop, checkpoint, parallel, simulated); the
    names users imported from them keep working and are the same objects."""
    import minidl.callbacks
    import minidl.checkpoint
    import minidl.comm
    import minidl.loop
    import minidl.parallel
    import minidl.simulated
    import minidl.train
    for name in ("fit", "evaluate", "split_validation", "Trainer"):
        assert getattr(minidl.train, name) is getattr(minidl.loop, name)
    for name in ("Run", "STOP_REASONS", "TRAINER_REASONS"):
        assert getattr(minidl.train, name) is getattr(minidl.callbacks, name)
    for name in ("History", "Checkpoint", "read_history_csv"):
        assert getattr(minidl.train, name) is getattr(minidl.checkpoint, name)
    for name in ("FailureInjection", "ReplicaCheck", "SYNC_MODES", "rounding_environment"):
        assert getattr(minidl.train, name) is getattr(minidl.parallel, name)
    for name in ("shard", "allreduce_scalars", "collectively", "check_same"):
        assert getattr(minidl.comm, name) is getattr(minidl.parallel, name)
    for name in ("run_simulated", "SimComm", "SimWorld", "CollectiveTimeout", "CollectiveMismatch",
                 "RankAborted"):
        assert getattr(minidl.comm, name) is getattr(minidl.simulated, name)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        minidl.comm.nonexistent


@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), float("inf"), "soon", True])
def test_collective_timeout_must_be_positive_seconds(bad):
    X, y = np.zeros((8, 2)), np.zeros(8, int)
    model = MLP([2, 3, 2])
    with pytest.raises(ValueError, match="collective_timeout must be a (positive )?number of seconds"):
        fit(model, "cross_entropy", SGD(model), X, y, epochs=1, batch_size=4, collective_timeout=bad)


def test_collective_timeout_comes_from_the_argument_then_the_environment_then_the_default():
    from minidl import watchdog
    assert watchdog.default_timeout({}) == watchdog.DEFAULT_TIMEOUT >= 300
    assert watchdog.default_timeout({"MINIDL_COLLECTIVE_TIMEOUT": "42.5"}) == 42.5
    with pytest.raises(ValueError, match="MINIDL_COLLECTIVE_TIMEOUT must be a positive number"):
        watchdog.default_timeout({"MINIDL_COLLECTIVE_TIMEOUT": "-3"})
    comm = SerialComm()
    X, y = np.zeros((8, 2)), np.zeros(8, int)
    model = MLP([2, 3, 2])
    fit(model, "cross_entropy", SGD(model), X, y, epochs=1, batch_size=4, comm=comm, collective_timeout=7)
    assert comm.collective_timeout == 7.0


# ------------------------------------------------------------------------ fit(verbose=...)
BAR = re.compile(r"epoch (\d+)/(\d+):[^\r\n]*?\| *(\d+)/(\d+) \[")


def bar_counts(text):
    """{epoch (1-based): [count, ...] in the order tqdm drew them}, checking every total."""
    assert not re.search(r": \d+step \[", text), "a count past the total (tqdm drops the bar)"
    counts = {}
    for epoch, _, count, total in BAR.findall(text):
        assert int(count) <= int(total), (epoch, count, total)
        counts.setdefault(int(epoch), []).append(int(count))
    return counts


def check_lines(text):
    return [line for line in text.splitlines() if line.startswith("epoch ") and "val_loss" in line]


def verbose_fit(verbose, stream, monkeypatch, epochs=3, callbacks=(), **kwargs):
    """4 steps per epoch (32 training samples, batches of 8), with sys.stderr = ``stream``."""
    monkeypatch.setattr(sys, "stderr", stream)
    X, y = make_blobs(40, seed=0)
    model = MLP([2, 4, 3], seed=0)
    kwargs = {"verbose": verbose} if verbose is not None else {}
    return fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=epochs, batch_size=8,
               validation_split=0.2, callbacks=list(callbacks), **kwargs)


def test_fit_shows_a_bar_by_default_on_a_terminal_counting_to_n_of_n(monkeypatch):
    stream = FakeTTY()
    verbose_fit(None, stream, monkeypatch)                    # verbose="auto"
    counts = bar_counts(stream.getvalue())
    assert sorted(counts) == [1, 2, 3]
    for epoch, seen in counts.items():
        assert seen[-1] == 4 and seen == sorted(seen), (epoch, seen)   # ends at 4/4, never 5/4
    assert "epoch 1/3" in stream.getvalue() and check_lines(stream.getvalue()) == []


@pytest.mark.parametrize("verbose, tty, bar, lines", [
    ("auto", False, False, 0),          # not a terminal: silent
    (0, True, False, 0),
    (False, True, False, 0),
    (1, True, True, 0),
    (True, False, False, 3),            # asked for, but no terminal: a line per check
    (2, True, False, 3),                # Keras's verbose=2: a line per check, never a bar
    (2, False, False, 3),
])
def test_fit_verbose_levels(monkeypatch, verbose, tty, bar, lines):
    stream = FakeTTY() if tty else io.StringIO()
    verbose_fit(verbose, stream, monkeypatch)
    text = stream.getvalue()
    assert bool(bar_counts(text)) == bar
    assert len(check_lines(text)) == lines
    if not bar and not lines:
        assert text == ""


@pytest.mark.parametrize("bad", ["yes", 3, -1, 1.5, None])
def test_fit_refuses_an_unknown_verbose(bad, monkeypatch):
    with pytest.raises(ValueError, match="verbose must be"):
        verbose_fit(bad if bad is not None else "None", io.StringIO(), monkeypatch)


def test_fit_adds_no_second_bar_to_a_progress_bar_callback(monkeypatch, opened_bars):
    from minidl.progress import ProgressBar
    stream = FakeTTY()
    verbose_fit("auto", stream, monkeypatch, epochs=2, callbacks=[ProgressBar(4, 2, stream=stream)])
    assert opened_bars == ["epoch 1/2", "epoch 2/2"]


def test_fit_reports_on_rank_zero_only(monkeypatch, opened_bars):
    from minidl.simulated import run_simulated
    stream = FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    X, y = make_blobs(40, seed=0)

    def train(comm, verbose):
        model = MLP([2, 4, 3], seed=0)
        return fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=2, batch_size=8,
                   validation_split=0.2, comm=comm, verbose=verbose)

    run_simulated(2, lambda comm: train(comm, "auto"))
    assert opened_bars == ["epoch 1/2", "epoch 2/2"]                 # rank 0's bars only
    assert all(seen[-1] == 4 for seen in bar_counts(stream.getvalue()).values())
    stream.seek(0), stream.truncate()
    run_simulated(2, lambda comm: train(comm, 2))
    assert len(check_lines(stream.getvalue())) == 2                 # one per check, not one per rank


def test_the_bar_of_a_run_resumed_mid_epoch_continues_from_its_batch(tmp_path, monkeypatch):
    blobs_run(6, tmp_path / "part.npz", extra=[InterruptAt(27)])   # 12 steps per epoch: epoch 3, batch 3
    stream = FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    blobs_run(6, tmp_path / "part.npz", resume=True)
    counts = bar_counts(stream.getvalue())
    assert sorted(counts) == [3, 4, 5, 6]
    assert counts[3][0] == 3 and counts[3][-1] == 12             # drawn at 3/12: 3 batches were done
    assert all(seen[-1] == 12 and seen == sorted(seen) for seen in counts.values())
