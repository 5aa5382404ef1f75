"""Callbacks: the hooks the training loop calls, and the Run each hook receives.

A callback is any object with some of these methods (the loop calls those it finds), or a
subclass of ``Callback`` below that overrides some; LambdaCallback and ModelCheckpoint are ready-made:

    on_train_begin(run)   reset state (fit then loads checkpointed state when resuming)
    on_step_end(run)      after every optimizer step
    on_check(run)         run.metrics holds loss, val_loss, accuracy, val_accuracy, lr
    on_check_end(run)     the ranks have agreed on this check's stop decision: the state is
                          complete (the Checkpoint callback saves here)
    on_epoch_end(run)
    on_stop(run)          the loop has ended, weights are still live (checkpoint them here)
    on_train_end(run)     finish: restore best weights, close progress bars

A callback stops training with ``run.request_stop(reason)``; one with a ``monitor``
attribute names the metric it watches, and fit refuses a metric it does not produce; one with
``state_dict``/``load_state_dict`` has its state saved in checkpoints and restored on resume;
one with ``settings()`` (a JSON-like dict) has them compared across ranks at start-up.
Stop reasons: the monitor's patience / stopping_threshold / divergence_threshold /
non_finite, and the trainer's max_epochs, interrupted (SIGINT/SIGTERM) and external.
"""
import contextlib
import reprlib
import signal
import threading

from . import monitor
from .checkpoint import History
from .validation import check_flag

HOOKS = ("on_train_begin", "on_step_end", "on_check", "on_check_end", "on_epoch_end", "on_stop",
         "on_train_end")
TRAINER_REASONS = ("max_epochs", "interrupted", "external")
STOP_REASONS = monitor.STOP_REASONS + TRAINER_REASONS       # priority order when ranks disagree


class Run:
    """What callbacks see: the model, optimizer, comm, history, counters and current metrics.

    epoch: index of the epoch being trained; batch: index of the next batch in it;
    step: optimizer steps so far; check: number of checks so far (the current check's index
    inside on_check). sync: the sync strategy (``run.sync.in_sync``: every rank holds the
    same parameters now). best_check and restored_from: check indices, set by EarlyStopping
    when training ends. training_state(): the (arrays, meta) a checkpoint holds; collective.
    """

    def __init__(self, model, optimizer, comm, callbacks, sync, training_state):
        self.model, self.optimizer, self.comm, self.sync = model, optimizer, comm, sync
        self.callbacks = callbacks
        self.training_state = training_state
        self.history = History()
        self.metrics = {}
        self.epoch = self.batch = self.step = self.check = 0
        self.batches_per_epoch = None    # set by fit: optimizer steps in a full epoch
        self.stop_reason = None          # agreed by all ranks
        self.stop_requested = None       # asked for on this rank, not yet agreed
        self.best_check = self.restored_from = None
        self.interrupted = False
        self.elapsed = 0.0
        self.samples_seen = 0

    def request_stop(self, reason="external"):
        """Ask the trainer to stop; the ranks agree on it at the next step or check."""
        if reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {reason!r}; use one of {STOP_REASONS}")
        if self.stop_requested is None:
            self.stop_requested = reason


class Callback:
    """The base class of callbacks: every hook, as a method that does nothing. Override those
    you need; each receives the ``Run`` above (run.model, run.optimizer, run.comm, run.history,
    run.metrics, run.epoch / batch / step / check, run.request_stop(reason)).

    fit binds only the hooks a callback overrides (``hook_method``), so the no-ops cost
    nothing per step. A base class is optional: any object with some of these methods works.
    """

    def on_train_begin(self, run):
        """Before the first step: reset state (a resume then loads the saved state_dict)."""

    def on_step_end(self, run):
        """After every optimizer step."""

    def on_check(self, run):
        """At a check: run.metrics holds loss, val_loss, accuracy, val_accuracy, lr."""

    def on_check_end(self, run):
        """After the ranks agreed on the check's stop decision: the state is complete."""

    def on_epoch_end(self, run):
        """After an epoch's last step (and its check)."""

    def on_stop(self, run):
        """The loop has ended; the weights are still the live ones."""

    def on_train_end(self, run):
        """Finish: restore best weights, close files and progress bars."""


def check_callbacks(callbacks):
    """``callbacks`` as a new list: None (no callbacks) or a list or tuple of callback objects,
    each a Callback or an object with at least one hook method; else TypeError naming it."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be None or a list or tuple of callback objects, got "
                        f"{type(callbacks).__name__} {reprlib.repr(callbacks)}")
    for index, callback in enumerate(callbacks):
        if isinstance(callback, type):
            raise TypeError(f"callbacks[{index}] is the class {callback.__name__}, not a callback "
                            f"object: pass an instance, e.g. {callback.__name__}(...)")
        if not isinstance(callback, Callback) and not any(callable(getattr(callback, hook, None))
                                                          for hook in HOOKS):
            raise TypeError(f"callbacks[{index}] is {type(callback).__name__} {reprlib.repr(callback)}, "
                            f"not a callback: pass a minidl.Callback subclass or an object with at "
                            f"least one of the methods {', '.join(HOOKS)}")
    return list(callbacks)


def hook_method(callback, hook):
    """``callback``'s bound method for ``hook``, or None when it has none or only Callback's no-op."""
    method = getattr(callback, hook, None)
    inherited = getattr(type(callback), hook, None) is getattr(Callback, hook)
    if method is None or (inherited and hook not in getattr(callback, "__dict__", {})):
        return None
    return method


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_check_end=lambda run: ...)``, one keyword
    per hook (see HOOKS), each a function of the Run."""

    def __init__(self, **hooks):
        unknown = sorted(set(hooks) - set(HOOKS))
        if unknown:
            raise TypeError(f"LambdaCallback got unknown hook(s) {unknown}; allowed: {list(HOOKS)}")
        for hook, function in hooks.items():
            if not callable(function):
                raise TypeError(f"LambdaCallback {hook} must be a function of run, got {function!r}")
            setattr(self, hook, function)           # an instance attribute: fit binds it


class _Best(monitor._Monitor):
    """The best value of a metric, by EarlyStopping's improvement rule (minidl/monitor.py)."""
    _STATE = {"best": monitor._maybe_real}

    def reset(self):
        self.best = None

    def update(self, value):
        """Record a value; True when it improves on the best so far (which it then becomes)."""
        improved = self._improves(monitor._metric_value(value), self.best)
        if improved:
            self.best = float(value)
        return improved


class ModelCheckpoint(Callback):
    """Save the model (model.save, loadable with minidl.load) at checks.

    path may contain {epoch} and {check} (0-based indices), e.g. "model-{epoch:03d}.npz".
    save_best_only=True: save only when ``monitor`` improves on its best so far (mode "min",
    "max" or "auto", and min_delta, as in EarlyStopping); False: save at every check (then
    nothing is monitored). standardization: an optional (mean, std) stored in each file.
    Only rank 0 writes. The best so far is in state_dict, so a resumed fit keeps it.
    """

    def __init__(self, path, monitor="val_loss", mode="auto", save_best_only=True, min_delta=0,
                 standardization=None):
        self.path = str(path)
        try:
            self.path.format(epoch=0, check=0)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"path {self.path!r} may only contain {{epoch}} and {{check}} fields: "
                             f"{error!r}") from None
        self.save_best_only = check_flag("save_best_only", save_best_only)
        self._best = _Best(monitor, mode, min_delta, patience=0)
        self.monitor = monitor if save_best_only else None          # what fit checks it produces
        self.mode = self._best.mode
        self.standardization = standardization
        self.saved = []                                             # paths written by this fit

    @property
    def best(self):
        return self._best.best

    def settings(self):
        return {"path": self.path, "monitor": self._best.monitor, "mode": self.mode,
                "min_delta": self._best.min_delta, "save_best_only": self.save_best_only}

    def on_train_begin(self, run):
        self._best.reset()
        self.saved = []

    def on_check_end(self, run):
        if self.save_best_only and not self._best.update(self._best._metric(run)):
            return
        if run.comm.rank == 0:
            path = self.path.format(epoch=run.epoch, check=run.check - 1)   # this check's index
            run.model.save(path, self.standardization)
            self.saved.append(path)

    def state_dict(self):
        return self._best.state_dict()

    def load_state_dict(self, state):
        self._best.load_state_dict(state)

    def _load_check(self, state):          # the two halves of load_state_dict (minidl/checkpoint.py)
        return self._best._load_check(state)

    def _load_assign(self, values):
        self._best._load_assign(values)


@contextlib.contextmanager
def catch_interrupts(run):
    """SIGINT/SIGTERM set run.interrupted (an agreed stop at the next step); a second Ctrl-C
    raises KeyboardInterrupt at once. Only the main thread can install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if run.interrupted and signum == signal.SIGINT:
            raise KeyboardInterrupt
        run.interrupted = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
