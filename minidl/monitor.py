"""Early stopping and plateau learning-rate reduction: state machines over a metric stream.

Both classes take one metric value per *check* (one evaluation, usually once per epoch)
through ``update`` and work in any training loop, also someone else's. Checks are numbered
from 0 and ``patience`` counts checks, not epochs. The hook methods ``on_train_begin``,
``on_check`` and (EarlyStopping) ``on_train_end`` plug them into ``minidl.fit``.

Notation: s = +1 in "max" mode and -1 in "min" mode, so s*v is a score where higher is
better, and d = |min_delta|. A value v *improves on* a reference r when

    v is finite  and  (r is None  or  s*v - d > s*r)   min: v + d < r,  max: v - d > r

This is the strict test of Keras and Lightning, evaluated in the same floating-point form: a
tie, or a gain of exactly d, is no improvement. ``best`` moves only on an improvement, so gains
smaller than d add up against the old best. A non-finite value never improves on anything and
so never becomes ``best``. The full rules, with the anchors they follow, are in
docs/early_stopping.md.
"""
import math
import numbers

import numpy as np

from .validation import check_flag, check_non_negative_int, check_real, check_state_array, check_state_keys, numeric_array

STOP_REASONS = ("patience", "stopping_threshold", "divergence_threshold", "non_finite")


def _metric_value(value):
    """The monitored value as a float; NaN and inf pass (the monitor decides what they mean)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"the monitored value must be a real number (float, int or NumPy scalar), "
                        f"got {type(value).__name__} {value!r}")
    return float(value)


def _count(name, value):
    return check_non_negative_int(name, value)


def _maybe_count(name, value):
    return None if value is None else _count(name, value)


def _maybe_real(name, value):
    """None, or a finite float (so a NaN can never be loaded as best or used as a threshold)."""
    return None if value is None else check_real(name, value)


def _maybe_array(name, value):
    """None, or a copy of a finite 1-D array (the flat parameters)."""
    return None if value is None else check_state_array(name, value)


def _reason(name, value):
    if value is not None and value not in STOP_REASONS:
        raise ValueError(f"{name} must be None or one of {STOP_REASONS}, got {value!r}")
    return value


class _Monitor:
    """What both monitors share: the monitored name, the direction, the improvement test,
    the metric lookup of ``on_check`` and a validated ``state_dict``/``load_state_dict``.

    mode="auto" resolves to "max" when the monitor's name contains "acc" (so also
    "accuracy"), else "min": the rule of Keras's ReduceLROnPlateau. ``self.mode`` holds the
    resolved "min" or "max".
    """
    _STATE = {}          # state attribute -> validator, for state_dict/load_state_dict
    _SETTINGS = ("monitor", "mode", "min_delta", "patience")   # and each subclass's own settings

    def __init__(self, monitor, mode, min_delta, patience):
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor must be a non-empty metric name, got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.min_delta = abs(check_real("min_delta", min_delta))       # Keras: abs(min_delta)
        self.patience = check_non_negative_int("patience", patience)
        self.reset()

    def settings(self):
        """The settings (not the state): fit compares them across ranks at start-up."""
        return {name: getattr(self, name) for name in self._SETTINGS}

    def _score(self, value):
        """s * value: higher is better in either mode (negation is exact in floating point)."""
        return value if self.mode == "max" else -value

    def _improves(self, value, reference):
        return math.isfinite(value) and (
            reference is None or self._score(value) - self.min_delta > self._score(reference))

    def _metric(self, run):
        try:
            return run.metrics[self.monitor]
        except KeyError:
            raise ValueError(f"{type(self).__name__} monitors {self.monitor!r}, which is not among "
                             f"this check's metrics {sorted(run.metrics)}") from None

    def on_train_begin(self, run):
        """Reset all state (Keras does too); a resuming trainer loads its saved state after this."""
        self.reset()

    def state_dict(self):
        """The state: JSON-able scalars, plus a NumPy array (a copy) for best weights."""
        state = {"type": type(self).__name__, "monitor": self.monitor, "mode": self.mode}
        for name in self._STATE:
            value = getattr(self, name)
            state[name] = value.copy() if isinstance(value, np.ndarray) else value
        return state

    def load_state_dict(self, state):
        """Restore a ``state_dict()``; all of it is validated first, so a bad state changes nothing."""
        self._load_assign(self._load_check(state))

    def _load_check(self, state):
        """The validated values of ``state`` to assign; raises naming the key, changes nothing."""
        what = f"{type(self).__name__} state"
        own = {"monitor": self.monitor, "mode": self.mode}
        check_state_keys(what, state, ("type", *own, *self._STATE), kind=type(self).__name__)
        for key, value in own.items():
            if state[key] != value:
                raise ValueError(f"this state is for {key}={state[key]!r}, but this monitor has "
                                 f"{key}={value!r}")
        values = {name: check(f"{what} {name!r}", state[name]) for name, check in self._STATE.items()}
        self._check_state(values)
        return values

    def _load_assign(self, values):
        vars(self).update(values)

    def _check_state(self, values):
        """Cross-field checks of a state about to be loaded (none by default)."""


class EarlyStopping(_Monitor):
    """Stop training when a monitored metric has stopped improving.

    ``update(value)`` is one check; it returns True when training should stop now. The rules,
    in order, for check number k (from 0), w = start_from_epoch, p = max(patience, 1):

    1. A non-finite value with check_finite=True stops at once, also during warm-up: reason
       "non_finite" (Lightning).
    2. Checks k < w are ignored entirely: no best, no wait, no threshold (Keras warm-up).
    3. If the value improves on ``best`` (see the module docstring; the first finite value
       always does), it becomes ``best`` at ``best_epoch = k`` (with a copy of ``weights`` when
       restore_best_weights). ``wait`` becomes 0 if it improved AND also improves on
       ``baseline``; otherwise ``wait += 1`` (Keras counts every check since the last reset).
    4. Stop with the first reason that holds (Lightning's order, all comparisons strict, no d):
       "stopping_threshold" if s*v > s*stopping_threshold; "divergence_threshold" if
       s*v < s*divergence_threshold; "patience" if wait >= p and k > w (Keras: patience=0 acts
       as 1, and no patience stop on the first monitored check, `epoch > 0` in Keras).

    Deviations from the anchors, all documented: a non-finite value never becomes best (Keras
    takes a NaN first value); a value that crosses stopping_threshold and improves is recorded
    as best before stopping (Lightning drops it); baseline is a deadline: until a value beats
    both best and baseline, wait keeps counting, also on improving checks, so a run that never
    reaches the baseline stops after p checks (as Keras documents it; Keras's code returns
    early on every improvement and keeps going). With check_finite=False a non-finite value is
    no improvement, though +-inf can still cross a threshold (Lightning).

    State: num_checks, best (None until a finite value arrives; never non-finite), best_epoch,
    best_step, best_weights (copy or None), wait, stopped_epoch, stopped_step, stop_reason
    (one of STOP_REASONS or None). stopped_* describe the latest check that signalled a stop.
    best_epoch and stopped_epoch keep Keras's names but are CHECK indices (they are epochs
    when fit checks once per epoch); ``best_check`` and ``stopped_check`` are the same
    numbers under names that say so. fit's History turns them into epochs.
    """
    _SETTINGS = _Monitor._SETTINGS + ("baseline", "restore_best_weights", "start_from_epoch",
                                  "stopping_threshold", "divergence_threshold", "check_finite")
    _STATE = {"num_checks": _count, "best": _maybe_real, "best_epoch": _maybe_count,
              "best_step": _maybe_count, "best_weights": _maybe_array, "wait": _count,
              "stopped_epoch": _maybe_count, "stopped_step": _maybe_count, "stop_reason": _reason}

    def __init__(self, monitor="val_loss", mode="auto", min_delta=0, patience=0, baseline=None,
                 restore_best_weights=False, start_from_epoch=0, stopping_threshold=None,
                 divergence_threshold=None, check_finite=True):
        super().__init__(monitor, mode, min_delta, patience)
        self.baseline = _maybe_real("baseline", baseline)
        self.restore_best_weights = check_flag("restore_best_weights", restore_best_weights)
        self.start_from_epoch = _count("start_from_epoch", start_from_epoch)
        self.stopping_threshold = _maybe_real("stopping_threshold", stopping_threshold)
        self.divergence_threshold = _maybe_real("divergence_threshold", divergence_threshold)
        self.check_finite = check_flag("check_finite", check_finite)
        if self.stopping_threshold is not None and self.divergence_threshold is not None and \
                self._score(self.stopping_threshold) <= self._score(self.divergence_threshold):
            raise ValueError(f"in {self.mode} mode stopping_threshold must be better than "
                             f"divergence_threshold, got {stopping_threshold} and {divergence_threshold}")

    def reset(self):
        """Forget every check: the state of a fresh monitor (Keras resets on train begin)."""
        self.num_checks = self.wait = 0
        self.best = self.best_epoch = self.best_step = self.best_weights = None
        self._weights_shape = None   # of the parameters watched (not state): what best_weights must fit
        self.stopped_epoch = self.stopped_step = self.stop_reason = None

    def update(self, value, *, weights=None, step=None):
        """Record one check of the monitored value; return True if training should stop now.

        weights: the flat parameter array, copied when a new best is recorded; required when
        restore_best_weights is true (ignored otherwise). step: an optimizer-step count kept
        as best_step / stopped_step.
        """
        value = _metric_value(value)
        step = _maybe_count("step", step)
        if self.restore_best_weights:
            if weights is None:
                raise ValueError("restore_best_weights=True: pass update(value, weights=params)")
            weights = numeric_array("weights", weights)      # checked before any state changes
            self._check_weights_shape("weights", weights, self._weights_shape)
            self._weights_shape = weights.shape
        check, self.num_checks = self.num_checks, self.num_checks + 1
        if self.check_finite and not math.isfinite(value):
            return self._stop("non_finite", check, step)
        if check < self.start_from_epoch:
            return False
        improved = self._improves(value, self.best)
        if improved:
            self.best, self.best_epoch, self.best_step = value, check, step
            if self.restore_best_weights:
                self.best_weights = weights.copy()
        self.wait = 0 if improved and self._improves(value, self.baseline) else self.wait + 1
        score = self._score(value)
        if self.stopping_threshold is not None and score > self._score(self.stopping_threshold):
            return self._stop("stopping_threshold", check, step)
        if self.divergence_threshold is not None and score < self._score(self.divergence_threshold):
            return self._stop("divergence_threshold", check, step)
        if self.wait >= max(self.patience, 1) and check > self.start_from_epoch:
            return self._stop("patience", check, step)
        return False

    def _stop(self, reason, check, step):
        self.stop_reason, self.stopped_epoch, self.stopped_step = reason, check, step
        return True

    def _check_state(self, values):
        if (values["best"] is None) != (values["best_epoch"] is None):
            raise ValueError("EarlyStopping state: best and best_epoch must both be None or both set")
        checks = values["num_checks"]          # check indices are below it, wait counts at most all
        for name, limit in (("best_epoch", checks - 1), ("stopped_epoch", checks - 1), ("wait", checks)):
            if values[name] is not None and values[name] > limit:
                raise ValueError(f"EarlyStopping state: {name}={values[name]} is more than {limit}, "
                                 f"impossible after num_checks={checks} checks")
        self._check_weights_shape("EarlyStopping state 'best_weights'", values["best_weights"],
                                  self._weights_shape)

    @staticmethod
    def _check_weights_shape(name, weights, shape):
        """Best weights are the flat parameters: refuse another shape, never broadcast it."""
        if weights is not None and shape is not None and weights.shape != tuple(shape):
            raise ValueError(f"{name} has shape {weights.shape}, the model's parameters have shape "
                             f"{tuple(shape)}: the state belongs to another model")

    @property
    def best_check(self):
        """The index of the best check (Keras's name for it is best_epoch)."""
        return self.best_epoch

    @property
    def stopped_check(self):
        """The index of the check that signalled the latest stop (Keras: stopped_epoch)."""
        return self.stopped_epoch

    def on_train_begin(self, run):
        """Reset, and note the parameters' shape: a resume's best_weights must have it."""
        super().on_train_begin(run)
        self._weights_shape = run.model.params.shape

    def on_check(self, run):
        if self.update(self._metric(run), weights=run.model.params, step=run.step):
            run.request_stop(self.stop_reason)

    def on_train_end(self, run):
        """Tell the run which check was best and restore its weights if asked, however
        training ended (stop, max epochs, interrupt)."""
        run.best_check = self.best_check
        if self.restore_best_weights and self.best_weights is not None:
            self._check_weights_shape("EarlyStopping best_weights", self.best_weights, run.model.params.shape)
            run.model.params[...] = self.best_weights
            run.restored_from = self.best_check


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when the metric has stopped improving.

    Keras's rules, per check: if cooldown_counter > 0, decrement it and set wait = 0. Then
    if the value improves on best (strict, d = |min_delta|), best = value and wait = 0;
    else, outside cooldown, wait += 1 and, when wait >= patience and lr > min_lr,

        lr = max(lr * factor, min_lr),   cooldown_counter = cooldown,   wait = 0

    (num_reductions counts these). So patience=2 reduces on the 2nd non-improving check
    (PyTorch's scheduler waits for the 3rd). Keras compares its float32 learning-rate variable
    with float32(min_lr); minidl's lr is float64 and a rate within rounding of min_lr (4 ulps) is
    at min_lr, so a learning rate at min_lr is never "reduced" again. A non-finite value is no
    improvement and never becomes best (Keras takes a NaN first value as best).
    """
    _SETTINGS = _Monitor._SETTINGS + ("factor", "cooldown", "min_lr")
    _STATE = {"best": _maybe_real, "wait": _count, "cooldown_counter": _count,
              "num_reductions": _count}

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta, patience)
        self.factor = check_real("factor", factor, 0.0, 1.0, min_inclusive=False, max_inclusive=False)
        self.cooldown = _count("cooldown", cooldown)
        self.min_lr = check_real("min_lr", min_lr, minimum=0.0)

    def reset(self):
        """Forget every check (Keras resets on train begin)."""
        self.best = None
        self.wait = self.cooldown_counter = self.num_reductions = 0

    def update(self, value, lr):
        """Record one check of the monitored value; return the learning rate to use next."""
        value = _metric_value(value)
        lr = check_real("lr", lr, minimum=0.0)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improves(value, self.best):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and not self._at_min_lr(lr):
                lr = max(lr * self.factor, self.min_lr)
                self.cooldown_counter, self.wait = self.cooldown, 0
                self.num_reductions += 1
        return lr

    def _check_state(self, values):
        if values["cooldown_counter"] > self.cooldown:
            raise ValueError(f"ReduceLROnPlateau state 'cooldown_counter'={values['cooldown_counter']} "
                             f"exceeds this monitor's cooldown={self.cooldown}")

    def _at_min_lr(self, lr):
        """lr is at min_lr, or within rounding of it (4 ulps): 0.1 * 0.1 * 0.1 is
        0.0010000000000000002, and one more "reduction" onto min_lr=0.001 would be none."""
        return lr - self.min_lr <= 4 * math.ulp(self.min_lr)

    def on_check(self, run):
        run.optimizer.lr = self.update(self._metric(run), run.optimizer.lr)
