"""EarlyStopping and ReduceLROnPlateau: the decision table against Keras and Lightning, the
documented deviations, the callback hooks, validation, and state_dict resume."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidl.monitor import STOP_REASONS, EarlyStopping, ReduceLROnPlateau

NAN, INF = math.nan, math.inf
KERAS_PATIENCE_LOSSES = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
VALUES = st.lists(st.one_of(st.sampled_from([NAN, INF, -INF, 0.0, 0.5, 1.0]),
                            st.floats(-2, 2, allow_nan=False)), max_size=25)

# Each row: (id, constructor kwargs, values, (stop check, reason, best, best_epoch, final wait)).
# Updates stop at the first True; "stop check" is None when the sequence ran out first.
TABLE = [
    # Keras early_stopping_test.py: test_early_stopping_patience asserts
    # stopped_epoch == max(patience, 1) + 2: wait counts from the 8.0 at check 2, patience=0 acts as 1.
    *[(f"keras_patience_{p}", dict(monitor="loss", patience=p), KERAS_PATIENCE_LOSSES,
       (max(p, 1) + 2, "patience", 8.0, 2, max(p, 1))) for p in range(4)],
    # Lightning test_early_stopping.py: test_early_stopping_patience, (losses, patience, stop epoch).
    ("lightning_patience_a", dict(patience=3), [6, 5, 5, 5, 5, 5], (4, "patience", 5.0, 1, 3)),
    ("lightning_patience_b", dict(patience=1), [6, 5, 4, 4, 3, 3], (3, "patience", 4.0, 2, 1)),
    ("lightning_patience_c", dict(patience=3), [6, 5, 6, 5, 5, 5], (4, "patience", 5.0, 1, 3)),
    # Ties are no improvement (Keras and Lightning both compare strictly).
    ("tie", dict(patience=1), [1.0, 1.0], (1, "patience", 1.0, 0, 1)),
    ("tie_max", dict(mode="max", patience=1), [0.5, 0.6, 0.6], (2, "patience", 0.6, 1, 1)),
    # min_delta: a gain of exactly min_delta is no improvement (Keras, derived: v + d < best).
    ("min_delta_exact", dict(min_delta=0.5, patience=1), [1.0, 0.5], (1, "patience", 1.0, 0, 1)),
    ("min_delta_exact_max", dict(mode="max", min_delta=0.25, patience=1), [0.5, 0.75],
     (1, "patience", 0.5, 0, 1)),
    # Keras: self.min_delta = abs(min_delta), so a negative min_delta is the same test.
    ("min_delta_negative", dict(min_delta=-0.5, patience=1), [1.0, 0.5], (1, "patience", 1.0, 0, 1)),
    ("min_delta_beaten", dict(min_delta=0.5, patience=1), [1.0, 0.25], (None, None, 0.25, 1, 0)),
    # Keras/Lightning: best moves only on a qualifying improvement, so small gains add up.
    ("min_delta_cumulative", dict(min_delta=0.5, patience=3), [1.0, 0.7, 0.4], (None, None, 0.4, 2, 0)),
    # mode="auto": max when the name contains "acc" (Keras ReduceLROnPlateau's rule), else min.
    ("auto_val_acc", dict(monitor="val_acc", patience=1), [0.5, 0.6, 0.55], (2, "patience", 0.6, 1, 1)),
    ("auto_accuracy", dict(monitor="accuracy", patience=1), [0.5, 0.6, 0.55], (2, "patience", 0.6, 1, 1)),
    ("auto_val_loss", dict(monitor="val_loss", patience=1), [0.5, 0.6], (1, "patience", 0.5, 0, 1)),
    ("auto_mse", dict(monitor="val_mse", patience=1), [0.5, 0.6], (1, "patience", 0.5, 0, 1)),
    # Keras test_early_stopping_with_start_from_epoch: at least patience + start_from_epoch epochs.
    ("warmup_patience_3", dict(start_from_epoch=2, patience=3), [1.0] * 10, (5, "patience", 1.0, 2, 3)),
    ("warmup_patience_0", dict(start_from_epoch=2, patience=0), [1.0] * 10, (3, "patience", 1.0, 2, 1)),
    # Keras: warm-up checks are ignored entirely, so a better warm-up value never becomes best.
    ("warmup_hides_better", dict(start_from_epoch=2, patience=1), [0.1, 0.2, 0.5, 0.6, 0.7],
     (3, "patience", 0.5, 2, 1)),
    ("warmup_ignores_threshold", dict(start_from_epoch=2, stopping_threshold=0.5, patience=1),
     [0.1, 0.2, 0.3], (2, "stopping_threshold", 0.3, 2, 0)),
    # Keras test_early_stopping_final_weights_when_restoring_model_weights, first case.
    ("keras_restore_case", dict(patience=2), [0.2, 0.15, 0.1, 0.11, 0.12], (4, "patience", 0.1, 2, 2)),
    # baseline, Keras test (same file): never beaten, patience=5, so exactly 5 epochs are trained.
    ("keras_baseline", dict(patience=5, baseline=0.5), [0.9, 0.8, 0.7, 0.71, 0.72, 0.73],
     (4, "patience", 0.7, 2, 5)),
    # baseline, minidl deviation: a deadline. Improving below the baseline does not reset wait and
    # does not postpone the stop (Keras's code returns early on each improvement and runs on).
    ("baseline_deadline", dict(patience=2, baseline=0.5), [0.9, 0.8, 0.7, 0.6], (1, "patience", 0.8, 1, 2)),
    ("baseline_patience_0", dict(patience=0, baseline=0.5), [0.9, 0.8], (1, "patience", 0.8, 1, 2)),
    # baseline beaten: from then on plain patience (Keras agrees on this sequence).
    ("baseline_beaten", dict(patience=2, baseline=0.5), [0.9, 0.4, 0.45, 0.3, 0.35, 0.36],
     (5, "patience", 0.3, 3, 2)),
    ("baseline_beaten_first", dict(patience=1, baseline=0.5), [0.4, 0.45], (1, "patience", 0.4, 0, 1)),
    ("baseline_max", dict(monitor="val_accuracy", patience=2, baseline=0.9), [0.5, 0.95, 0.94, 0.93],
     (3, "patience", 0.95, 1, 2)),
    # Lightning test_early_stopping.py: test_early_stopping_thresholds (default patience 3).
    ("lightning_no_threshold", dict(patience=3), [8, 4, 2, 3, 4, 5, 8, 10], (5, "patience", 2.0, 2, 3)),
    # ... stops at epoch 8 on 2 < 2.9; minidl deviation: the crossing value is also a new best.
    ("lightning_stopping", dict(patience=3, stopping_threshold=2.9), [9, 8, 7, 6, 5, 6, 4, 3, 2, 1],
     (8, "stopping_threshold", 2.0, 8, 0)),
    ("lightning_divergence", dict(patience=3, divergence_threshold=15.9), [9, 4, 2, 16, 32, 64],
     (3, "divergence_threshold", 2.0, 2, 1)),
    # Lightning test_early_stopping_reasons: decreasing loss with stopping_threshold=0.6 and
    # increasing loss with divergence_threshold=8.0.
    ("lightning_reason_stopping", dict(stopping_threshold=0.6, patience=3), [5.0, 3.0, 1.0, 0.5],
     (3, "stopping_threshold", 0.5, 3, 0)),
    ("lightning_reason_divergence", dict(divergence_threshold=8.0, patience=3), [1.0, 2.0, 5.0, 10.0],
     (3, "divergence_threshold", 1.0, 0, 3)),
    # Lightning: thresholds compare strictly and ignore min_delta; crossing without beating best
    # by min_delta stops but leaves best alone.
    ("stopping_equal", dict(stopping_threshold=0.5, patience=3), [1.0, 0.5], (None, None, 0.5, 1, 0)),
    ("divergence_equal", dict(divergence_threshold=2.0, patience=3), [1.0, 2.0], (None, None, 1.0, 0, 1)),
    ("stopping_not_best", dict(stopping_threshold=0.5, min_delta=0.2, patience=5), [0.6, 0.45],
     (1, "stopping_threshold", 0.6, 0, 1)),
    ("stopping_max", dict(monitor="val_accuracy", stopping_threshold=0.9), [0.5, 0.95],
     (1, "stopping_threshold", 0.95, 1, 0)),
    ("divergence_max", dict(monitor="val_accuracy", divergence_threshold=0.1, patience=3), [0.5, 0.05],
     (1, "divergence_threshold", 0.5, 0, 1)),
    # Lightning test_early_stopping_on_non_finite_monitor: [4, 3, nan|inf, 2, 1] stops at epoch 2.
    ("lightning_nan", dict(patience=3), [4, 3, NAN, 2, 1], (2, "non_finite", 3.0, 1, 0)),
    ("lightning_inf", dict(patience=3), [4, 3, INF, 2, 1], (2, "non_finite", 3.0, 1, 0)),
    # Lightning order: non-finite before the thresholds.
    ("non_finite_before_divergence", dict(divergence_threshold=10.0), [1.0, INF],
     (1, "non_finite", 1.0, 0, 0)),
    # minidl: a non-finite value never becomes best (Lightning without check_finite takes -inf,
    # Keras takes a NaN first value).
    ("minus_inf", dict(patience=3), [4.0, -INF], (1, "non_finite", 4.0, 0, 0)),
    ("nan_first", dict(), [NAN, 1.0], (0, "non_finite", None, None, 0)),
    # check_finite=False: non-finite is no improvement (Lightning: NaN comparisons are False).
    ("nan_unchecked", dict(patience=3, check_finite=False), [4, 3, NAN, 2, 1], (None, None, 1.0, 4, 0)),
    ("nan_unchecked_patience", dict(patience=2, check_finite=False), [4.0, NAN, NAN],
     (2, "patience", 4.0, 0, 2)),
    # NaN first, unchecked: no patience stop on the first check (Keras `epoch > 0`), and the NaN is
    # not best, so 5 and 4 are improvements (in Keras the NaN would be best and unbeatable).
    ("nan_first_unchecked", dict(patience=0, check_finite=False), [NAN, 5.0, 4.0], (None, None, 4.0, 2, 0)),
    ("all_nan_unchecked", dict(patience=1, check_finite=False), [NAN, NAN], (1, "patience", None, None, 2)),
    ("minus_inf_unchecked", dict(patience=2, check_finite=False), [1.0, -INF, 2.0],
     (2, "patience", 1.0, 0, 2)),
    ("inf_max_unchecked", dict(monitor="val_acc", patience=1, check_finite=False), [0.5, INF],
     (1, "patience", 0.5, 0, 1)),
    # Lightning with check_finite=False still compares +-inf with the thresholds.
    ("inf_diverges_unchecked", dict(divergence_threshold=10.0, patience=5, check_finite=False), [1.0, INF],
     (1, "divergence_threshold", 1.0, 0, 1)),
    ("minus_inf_stops_unchecked", dict(stopping_threshold=0.5, patience=5, check_finite=False), [1.0, -INF],
     (1, "stopping_threshold", 1.0, 0, 1)),
    # minidl: check_finite acts during warm-up too (a NaN model does not recover); unchecked, the
    # warm-up NaNs are ignored like any warm-up value.
    ("nan_in_warmup", dict(start_from_epoch=3), [1.0, NAN], (1, "non_finite", None, None, 0)),
    ("nan_in_warmup_unchecked", dict(start_from_epoch=2, check_finite=False), [NAN, NAN, 1.0],
     (None, None, 1.0, 2, 0)),
]


@pytest.mark.parametrize("kwargs, values, expected", [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_decision_table(kwargs, values, expected):
    monitor = EarlyStopping(**kwargs)
    for check, value in enumerate(values):
        if monitor.update(value, step=10 * check):
            break
    stop_check, reason, best, best_epoch, wait = expected
    assert (monitor.stopped_epoch, monitor.stop_reason) == (stop_check, reason)
    assert (monitor.best, monitor.best_epoch, monitor.wait) == (best, best_epoch, wait)
    assert monitor.stopped_step == (None if stop_check is None else 10 * stop_check)
    assert monitor.best_step == (None if best_epoch is None else 10 * best_epoch)
    assert monitor.num_checks == check + 1


def test_numpy_scalars_are_values():
    monitor = EarlyStopping(patience=1)
    assert not monitor.update(np.float32(0.5))
    assert not monitor.update(np.int64(0))
    assert monitor.update(np.float16(0.0))
    assert monitor.best == 0.0 and type(monitor.best) is float


# ---- the anchors' rules restated from their sources, as oracles ------------------------------------

def keras_early_stopping(values, mode, min_delta, patience, start_from_epoch):
    """Keras 3 (3422977a) EarlyStopping.on_epoch_end without baseline, restated:
    (stopped epoch or None, best, best_epoch, wait) at the first stop."""
    delta = abs(min_delta) if mode == "max" else -abs(min_delta)
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    best = best_epoch = None
    wait = 0
    for epoch, value in enumerate(values):
        if epoch < start_from_epoch:
            continue
        wait += 1
        if best is None or better(value - delta, best):
            best, best_epoch, wait = value, epoch, 0
            continue
        if wait >= patience and epoch > 0:
            return epoch, best, best_epoch, wait
    return None, best, best_epoch, wait


def lightning_early_stopping(values, mode, min_delta, patience, stopping, divergence, check_finite):
    """Lightning (7f0c3436) EarlyStopping._evaluate_stopping_criteria, restated:
    (stopped check or None, reason) at the first stop."""
    delta = abs(min_delta) if mode == "max" else -abs(min_delta)
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    best, wait = (-INF if mode == "max" else INF), 0
    for check, value in enumerate(values):
        if check_finite and not math.isfinite(value):
            return check, "non_finite"
        if stopping is not None and better(value, stopping):
            return check, "stopping_threshold"
        if divergence is not None and better(-value, -divergence):
            return check, "divergence_threshold"
        if better(value - delta, best):
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return check, "patience"
    return None, None


def run_until_stop(monitor, values):
    for value in values:
        if monitor.update(value):
            break
    return monitor


FINITE_VALUES = st.lists(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(-2, 2)), max_size=25)


@given(values=FINITE_VALUES, mode=st.sampled_from(["min", "max"]),
       min_delta=st.sampled_from([0.0, 0.25, -0.5]), patience=st.integers(0, 3),
       start_from_epoch=st.integers(0, 2))
def test_same_decisions_as_keras(values, mode, min_delta, patience, start_from_epoch):
    # Finite values without baseline: the decisions and state at the stop are Keras's.
    monitor = run_until_stop(EarlyStopping(mode=mode, min_delta=min_delta, patience=patience,
                                           start_from_epoch=start_from_epoch), values)
    assert (monitor.stopped_epoch, monitor.best, monitor.best_epoch, monitor.wait) == \
        keras_early_stopping(values, mode, min_delta, patience, start_from_epoch)


@given(values=VALUES, mode=st.sampled_from(["min", "max"]), min_delta=st.sampled_from([0.0, 0.25]),
       patience=st.integers(0, 3),
       thresholds=st.sampled_from([(None, None), (1.5, None), (None, -1.5), (1.5, -1.5)]),
       check_finite=st.booleans())
def test_same_decisions_as_lightning(values, mode, min_delta, patience, thresholds, check_finite):
    # Lightning's stop check and reason, NaN and +-inf included (with check_finite=False only
    # for NaN: Lightning would take -inf or +inf as best, which minidl never does).
    if not check_finite:
        values = [value if not math.isinf(value) else NAN for value in values]
    sign = 1.0 if mode == "max" else -1.0
    stopping, divergence = (None if t is None else sign * t for t in thresholds)
    monitor = run_until_stop(EarlyStopping(mode=mode, min_delta=min_delta, patience=patience,
                                           check_finite=check_finite, stopping_threshold=stopping,
                                           divergence_threshold=divergence), values)
    expected = lightning_early_stopping(values, mode, min_delta, patience, stopping, divergence, check_finite)
    if expected == (0, "patience"):       # a NaN first value: minidl keeps Keras's `epoch > 0`
        assert monitor.stopped_epoch != 0
    else:
        assert (monitor.stopped_epoch, monitor.stop_reason) == expected


# ---- callback hooks, with a fake run: weights at check k are all k ------------------------------

def fake_run(lr=0.1):
    run = SimpleNamespace(model=SimpleNamespace(params=np.full(3, -1.0)), optimizer=SimpleNamespace(lr=lr),
                          metrics={}, step=0, restored_from=None, stops=[])
    run.request_stop = run.stops.append
    return run


def drive(callback, run, values, monitor="val_loss", interrupt_after=None):
    """Play fit(): per epoch set the weights to the epoch index, check, and stop when asked
    (or after epoch ``interrupt_after``, as an interrupt or another callback would). Returns
    the number of epochs trained."""
    def call(hook):                                # as fit's Run.call: only the hooks defined
        method = getattr(callback, hook, None)
        if method is not None:
            method(run)

    call("on_train_begin")
    epochs = 0
    for epoch, value in enumerate(values):
        epochs += 1
        run.model.params[...] = epoch
        run.step = 10 * (epoch + 1)
        run.metrics = {"loss": 0.0, monitor: value}
        call("on_check")
        call("on_epoch_end")
        if run.stops or epoch == interrupt_after:
            break
    call("on_train_end")
    return epochs


def test_restore_after_early_stop():
    # Keras test_early_stopping_final_weights_when_restoring_model_weights: restores epoch 2.
    stopper, run = EarlyStopping(patience=2, restore_best_weights=True), fake_run()
    assert drive(stopper, run, [0.2, 0.15, 0.1, 0.11, 0.12]) == 5
    assert run.stops == ["patience"]
    assert np.all(run.model.params == 2) and run.restored_from == 2
    assert (stopper.best_step, stopper.stopped_step) == (30, 50)


def test_restore_when_baseline_never_beaten():
    # Keras (same test): no epoch beats baseline=0.5, so 5 epochs run and epoch 2 is restored.
    stopper, run = EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True), fake_run()
    assert drive(stopper, run, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]) == 5
    assert np.all(run.model.params == 2) and run.restored_from == 2


def test_restore_after_interrupt_or_other_callback():
    # Keras (same test): another callback stops at epoch 3; the hook still restores epoch 2.
    stopper, run = EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True), fake_run()
    assert drive(stopper, run, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], interrupt_after=3) == 4
    assert run.stops == [] and stopper.stop_reason is None
    assert np.all(run.model.params == 2) and run.restored_from == 2


def test_restore_after_max_epochs():
    # Keras 3 restores in on_train_end whenever a snapshot exists (keras-team/keras#12511).
    stopper, run = EarlyStopping(patience=5, restore_best_weights=True), fake_run()
    assert drive(stopper, run, [0.3, 0.1, 0.2]) == 3
    assert run.stops == [] and np.all(run.model.params == 1) and run.restored_from == 1


def test_restore_threshold_crossing_as_best():
    # minidl deviation: the value that crosses stopping_threshold is recorded, weights too.
    stopper, run = EarlyStopping(stopping_threshold=0.5, restore_best_weights=True), fake_run()
    assert drive(stopper, run, [1.0, 0.7, 0.4, 0.3]) == 3
    assert run.stops == ["stopping_threshold"] and np.all(run.model.params == 2)


def test_no_restore_without_a_best_or_when_off():
    stopper, run = EarlyStopping(restore_best_weights=True), fake_run()
    drive(stopper, run, [NAN, 1.0])                   # non_finite at check 0: nothing to restore
    assert run.stops == ["non_finite"] and np.all(run.model.params == 0) and run.restored_from is None
    stopper, run = EarlyStopping(patience=1), fake_run()
    drive(stopper, run, [0.1, 0.2])
    assert stopper.best_weights is None and np.all(run.model.params == 1) and run.restored_from is None


def test_best_weights_are_a_copy():
    stopper, weights = EarlyStopping(restore_best_weights=True), np.zeros(3)
    stopper.update(1.0, weights=weights)
    weights += 5
    assert np.all(stopper.best_weights == 0)


def test_train_begin_resets_for_reuse():
    # keras-team/keras#20521: a reused instance must not carry the previous run's state.
    stopper = EarlyStopping(patience=1, restore_best_weights=True)
    first, second = fake_run(), fake_run()
    drive(stopper, first, [0.1, 0.2])
    drive(stopper, second, [5.0, 4.0, 4.5])
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (4.0, 1, 2)
    assert second.restored_from == 1 and np.all(second.model.params == 1)


def test_missing_metric_names_monitor_and_available():
    run = fake_run()
    run.metrics = {"val_loss": 1.0, "loss": 2.0}
    for callback in (EarlyStopping(monitor="val_accuracy"), ReduceLROnPlateau(monitor="val_acc")):
        with pytest.raises(ValueError, match=r"'val_acc.*\['loss', 'val_loss'\]"):
            callback.on_check(run)


# ---- ReduceLROnPlateau ----------------------------------------------------------------------------

def lr_trace(reducer, values, lr=0.1):
    lrs = []
    for value in values:
        lr = reducer.update(value, lr)
        lrs.append(lr)
    return lrs


def test_plateau_keras_fit():
    # Keras reduce_lr_on_plateau_test.py: test_reduces_lr_with_model_fit (2 epochs, 0.1 -> 0.01).
    assert lr_trace(ReduceLROnPlateau(patience=1, min_delta=100), [1.0, 0.9]) == [0.1, 0.1 * 0.1]


def test_plateau_cooldown():
    # Keras test_cooldown: cooldown=2 over 4 epochs gives 2 reductions, 0.1 -> 0.001.
    reducer = ReduceLROnPlateau(patience=1, min_delta=100, cooldown=2)
    lrs = lr_trace(reducer, [1.0, 0.9, 0.8, 0.7])
    assert lrs == pytest.approx([0.1, 0.01, 0.01, 0.001], rel=1e-15)
    assert reducer.num_reductions == 2 and reducer.cooldown_counter == 2


def test_plateau_min_lr():
    # Keras test_honors_min_lr: the learning rate holds at min_lr=0.005; at min_lr no reduction
    # is counted (Keras: lr > float32(min_lr) on its float32 variable; here lr > min_lr).
    reducer = ReduceLROnPlateau(patience=1, min_delta=10, min_lr=0.005)
    assert lr_trace(reducer, [1.0, 0.9, 0.8, 0.7]) == pytest.approx([0.1, 0.01, 0.005, 0.005], rel=1e-15)
    assert reducer.num_reductions == 2 and reducer.wait == 1


def test_plateau_patience():
    # Keras: wait >= patience, so patience=2 reduces on the 2nd non-improving check (not the 3rd,
    # as PyTorch's scheduler, pytorch/pytorch#2545).
    reducer = ReduceLROnPlateau(patience=2, min_delta=0)
    assert lr_trace(reducer, [1, 2, 3, 4, 5]) == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001], rel=1e-15)
    reducer = ReduceLROnPlateau(patience=2, min_delta=0)
    assert lr_trace(reducer, [3, 4, 2, 5, 1, 6]) == [0.1] * 6        # improvements reset wait
    assert (reducer.best, reducer.wait) == (1.0, 1)


def test_plateau_cooldown_still_tracks_best_and_nan_is_never_best():
    # The first NaN is a non-improving check (Keras would take it as best): reduce, cooldown 3.
    # In cooldown 1.0 and 0.5 still become best; the NaN after the cooldown reduces again.
    reducer = ReduceLROnPlateau(patience=1, min_delta=0, cooldown=3)
    lrs = lr_trace(reducer, [NAN, 1.0, 2.0, 0.5, NAN, INF])
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.001, 0.001], rel=1e-15)
    assert (reducer.best, reducer.num_reductions, reducer.cooldown_counter) == (0.5, 2, 2)
    assert ReduceLROnPlateau(monitor="val_accuracy").mode == "max"


def test_plateau_hook_sets_lr():
    reducer, run = ReduceLROnPlateau(patience=1, min_delta=0), fake_run(lr=0.5)
    drive(reducer, run, [1.0, 2.0, 3.0])
    assert run.optimizer.lr == pytest.approx(0.005, rel=1e-15) and reducer.num_reductions == 2


@pytest.mark.parametrize("factor", [1.0, 1.5, 0.0, -0.1])
def test_plateau_factor_validation(factor):
    with pytest.raises(ValueError, match="factor"):            # Keras raises for factor >= 1
        ReduceLROnPlateau(factor=factor)


# ---- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(patience=-1), ValueError, "patience"),
    (dict(patience=1.5), TypeError, "patience"),
    (dict(patience=True), TypeError, "patience"),
    (dict(mode="maximum"), ValueError, "mode"),
    (dict(monitor=3), TypeError, "monitor"),
    (dict(monitor=""), TypeError, "monitor"),
    (dict(min_delta=NAN), ValueError, "min_delta"),
    (dict(min_delta="0.1"), TypeError, "min_delta"),
    (dict(baseline=INF), ValueError, "baseline"),
    (dict(start_from_epoch=-1), ValueError, "start_from_epoch"),
    (dict(stopping_threshold=NAN), ValueError, "stopping_threshold"),
    (dict(divergence_threshold=-INF), ValueError, "divergence_threshold"),
    (dict(stopping_threshold=2.0, divergence_threshold=1.0), ValueError, "better than"),
    (dict(mode="max", stopping_threshold=0.5, divergence_threshold=0.9), ValueError, "better than"),
    (dict(restore_best_weights="yes"), TypeError, "restore_best_weights"),
    (dict(check_finite=1), TypeError, "check_finite"),
])
def test_constructor_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        EarlyStopping(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(patience=-1), ValueError, "patience"),
    (dict(cooldown=-1), ValueError, "cooldown"),
    (dict(min_lr=-1e-3), ValueError, "min_lr"),
    (dict(min_lr=INF), ValueError, "min_lr"),
    (dict(mode="up"), ValueError, "mode"),
])
def test_plateau_constructor_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        ReduceLROnPlateau(**kwargs)


@pytest.mark.parametrize("value", ["1.0", None, True, np.array([1.0]), 1 + 2j])
def test_update_rejects_non_real_values(value):
    with pytest.raises(TypeError, match="real number"):
        EarlyStopping().update(value)
    with pytest.raises(TypeError, match="real number"):
        ReduceLROnPlateau().update(value, 0.1)


def test_update_argument_validation():
    monitor = EarlyStopping()
    with pytest.raises(ValueError, match="step"):
        monitor.update(1.0, step=-1)
    with pytest.raises(TypeError, match="step"):
        monitor.update(1.0, step=1.5)
    restoring = EarlyStopping(restore_best_weights=True)
    with pytest.raises(ValueError, match="weights="):
        restoring.update(1.0)
    with pytest.raises(TypeError, match="weights"):
        restoring.update(1.0, weights=["a", "b"])
    assert restoring.num_checks == 0 and restoring.best is None
    with pytest.raises(ValueError, match="lr"):
        ReduceLROnPlateau().update(1.0, -0.1)
    assert monitor.num_checks == 0                       # rejected calls are not checks


# ---- state_dict / resume ----------------------------------------------------------------------------

@st.composite
def early_stopping_configs(draw):
    mode = draw(st.sampled_from(["min", "max"]))
    sign = 1.0 if mode == "max" else -1.0
    return dict(mode=mode, min_delta=draw(st.sampled_from([0.0, 0.1, 0.5])),
                patience=draw(st.integers(0, 3)), baseline=draw(st.sampled_from([None, 0.0, 1.0])),
                restore_best_weights=True, start_from_epoch=draw(st.integers(0, 2)),
                stopping_threshold=draw(st.sampled_from([None, 1.8 * sign])),
                divergence_threshold=draw(st.sampled_from([None, -1.8 * sign])),
                check_finite=draw(st.booleans()))


def observe(monitor):
    """Everything the monitor exposes, best_weights as a tuple, for equality checks."""
    state = monitor.state_dict()
    weights = state.pop("best_weights", None)
    return state, None if weights is None else tuple(weights)


def json_round_trip(state):
    """What a checkpoint does: arrays stay arrays, the rest goes through strict JSON."""
    arrays = {key: value for key, value in state.items() if isinstance(value, np.ndarray)}
    scalars = {key: value for key, value in state.items() if key not in arrays}
    return {**json.loads(json.dumps(scalars, allow_nan=False)), **arrays}


@given(config=early_stopping_configs(), values=VALUES, data=st.data())
def test_early_stopping_resume_matches_uninterrupted(config, values, data):
    split = data.draw(st.integers(0, len(values)))
    whole, first = EarlyStopping(**config), EarlyStopping(**config)
    decisions = [whole.update(v, weights=np.full(2, float(k)), step=k) for k, v in enumerate(values)]
    for k, v in enumerate(values[:split]):
        first.update(v, weights=np.full(2, float(k)), step=k)
    resumed = EarlyStopping(**config)
    resumed.update(123.0, weights=np.zeros(2))            # stale state that the load must replace
    resumed.load_state_dict(json_round_trip(first.state_dict()))
    tail = [resumed.update(v, weights=np.full(2, float(k)), step=k)
            for k, v in enumerate(values[split:], start=split)]
    assert tail == decisions[split:]
    assert observe(resumed) == observe(whole)


@given(values=VALUES, data=st.data())
def test_plateau_resume_matches_uninterrupted(values, data):
    config = dict(mode=data.draw(st.sampled_from(["min", "max"])), patience=data.draw(st.integers(0, 3)),
                  cooldown=data.draw(st.integers(0, 2)), min_delta=0.1, min_lr=1e-4)
    split = data.draw(st.integers(0, len(values)))
    whole, first, resumed = (ReduceLROnPlateau(**config) for _ in range(3))
    lrs = lr_trace(whole, values)
    lr = (lr_trace(first, values[:split]) or [0.1])[-1]
    resumed.load_state_dict(json_round_trip(first.state_dict()))
    assert lr_trace(resumed, values[split:], lr) == lrs[split:]
    assert resumed.state_dict() == whole.state_dict()


@given(config=early_stopping_configs(), values=VALUES)
def test_non_finite_is_never_best(config, values):
    monitor = EarlyStopping(**config)
    for k, value in enumerate(values):                    # keep going after stops: a state machine
        monitor.update(value, weights=np.full(2, float(k)))
        assert monitor.best is None or math.isfinite(monitor.best)
        assert monitor.best is None or monitor.best == values[monitor.best_epoch]
        assert (monitor.best_weights is None) == (monitor.best is None)
        assert monitor.best is None or np.all(monitor.best_weights == monitor.best_epoch)
        assert monitor.stop_reason in STOP_REASONS + (None,)


def test_load_state_dict_validates_and_changes_nothing_on_error():
    monitor = EarlyStopping(patience=2)
    for value in [3.0, 2.0, 2.5]:
        monitor.update(value)
    good = monitor.state_dict()
    bad_states = {
        "type": {**good, "type": "ReduceLROnPlateau"},
        "monitor": {**good, "monitor": "val_accuracy"},
        "mode": {**good, "mode": "max"},
        "missing": {key: value for key, value in good.items() if key != "wait"},
        "non-finite best": {**good, "best": NAN},
        "reason": {**good, "stop_reason": "bored"},
        "best without epoch": {**good, "best_epoch": None},
        "epoch out of range": {**good, "best_epoch": 3},
        "negative wait": {**good, "wait": -1},
    }
    fresh = EarlyStopping(patience=2)
    for name, state in bad_states.items():
        with pytest.raises((ValueError, TypeError)):
            fresh.load_state_dict(state)
        assert fresh.state_dict() == EarlyStopping(patience=2).state_dict(), name
    fresh.load_state_dict(good)
    assert fresh.update(2.5) and fresh.stopped_epoch == 3      # continues: wait 1 -> 2


def test_a_rate_within_rounding_of_min_lr_is_not_reduced_again():
    """lr 0.1, factor 0.1, min_lr 0.001, patience 1 on a flat sequence: two reductions leave
    0.0010000000000000002 in float64; that is min_lr, not a rate to reduce once more."""
    plateau = ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.001, min_delta=0)
    lr, rates = 0.1, []
    for _ in range(6):
        lr = plateau.update(1.0, lr)
        rates.append(lr)
    assert rates[:3] == [0.1, 0.1 * 0.1, 0.1 * 0.1 * 0.1] and 0.1 * 0.1 * 0.1 != 0.001
    assert rates[3:] == [rates[2]] * 3 and plateau.num_reductions == 2
    above = ReduceLROnPlateau(factor=0.5, patience=1, min_lr=0.001)   # 1e-4 above min_lr: reduced
    assert [above.update(1.0, 0.0010001) for _ in range(2)] == [0.0010001, 0.001] and above.num_reductions == 1
