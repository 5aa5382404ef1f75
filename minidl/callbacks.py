"""Callbacks: the hooks the training loop calls, and the Run each hook receives.

A callback is any object with some of these methods (the loop calls those it finds):

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
from . import monitor
from .checkpoint import History

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
