"""fit(): the one training loop, for one process and for many.

    Trainer.fit    for each epoch: shuffle, then a step per global batch and a check
    Trainer.step   forward -> loss -> backward -> reduce (and agree to go on) -> update
    Trainer.check  training metrics, validation, agreement, callbacks, the stop vote

Distributed training is this same loop with two objects handed in: a communicator
(minidl/comm.py; SerialComm makes every collective a no-op) and a sync strategy
(minidl/parallel.py: GradientAveraging sums the ranks' gradients each step, LocalSGD
averages their parameters now and then). Every rank draws the same shuffle and takes its
share of each global batch, so the global batches are the same for any number of ranks.

Callbacks (EarlyStopping, Checkpoint, a progress bar, yours) are objects with any of the
hooks listed in minidl/callbacks.py; each hook gets the ``Run`` described there.
"""
import functools
import math
import time
import zlib

import numpy as np

from . import monitor
from .callbacks import HOOKS, STOP_REASONS, Run, catch_interrupts, check_callbacks, hook_method
from .checkpoint import Checkpoint, load_checkpoint, load_training_state, training_state
from .comm import resolve_comm
from .losses import LOSSES, check_loss_targets, loss_kernel, resolve_loss
from .model import MLP
from .optim import Optimizer
from .parallel import (ReplicaCheck, agree_on_stop, allreduce_scalars, check_agreement, check_same,
                       collectively, fingerprint, on_rank_zero, shard, sync_strategy)
from .preflight import check_writable_file
from .progress import ProgressBar
from .validation import check_inputs, check_non_negative_int, check_positive_int, check_real
from .watchdog import check_timeout


class Trainer:
    """The state and steps of one fit() call; read fit, step and check first."""

    def fit(self, resume=False, stats_before=None):
        """Train; ``stats_before``: comm.stats.snapshot() from before start-up, if earlier."""
        run, model = self.run, self.model
        self._started = time.perf_counter()
        stats_before = self.comm.stats.snapshot() if stats_before is None else stats_before
        check_same(self.comm, "the training configuration", self.fingerprint())
        collectively(self.comm, lambda: self.call("on_train_begin"))
        if resume:                                     # rank 0 alone reads the file
            state = on_rank_zero(self.comm, lambda: load_checkpoint(self._checkpoint_to_resume()), "resume")
            collectively(self.comm, lambda: load_training_state(self, *state))
            check_same(self.comm, "the resumed state", {key: getattr(run, key) for key in
                                                         ("epoch", "batch", "step", "check", "stop_reason")})
        self.comm.broadcast(model.params, label="initial_state")      # rank 0's state for all
        for array in self.optimizer.state_arrays().values():
            self.comm.broadcast(array, label="initial_state")
        self.sync.start()                                               # where gradients are summed
        self._stats_startup = self.comm.stats.since(stats_before)
        self._stats_loop = self.comm.stats.snapshot()
        with catch_interrupts(run):
            while run.epoch < self.epochs and run.stop_reason is None:
                order = np.random.default_rng([self.seed, run.epoch]).permutation(len(self.X))
                while run.batch < self.batches_per_epoch and run.stop_reason is None:
                    start = run.batch * self.batch_size
                    if not self.step(order[start:start + self.batch_size]):
                        break                                            # the ranks agreed to stop
                    run.batch += 1
                    self.call("on_step_end")
                    if self.check_every_steps and run.step % self.check_every_steps == 0:
                        self.check()
                if run.batch < self.batches_per_epoch:                  # stopped mid-epoch
                    break
                if not self.check_every_steps:
                    self.check()
                self.call("on_epoch_end")
                run.epoch, run.batch = run.epoch + 1, 0
        run.stop_reason = run.stop_reason or "max_epochs"
        self._finish()
        return run.history

    def step(self, global_rows):
        """One optimizer step on a global batch; False (and no update) if the ranks agree to stop."""
        model, run = self.model, self.run
        rows, divisor = self.sync.share(global_rows)          # this rank's rows, its loss's divisor
        xb, yb = self.gather(rows)                            # (n, D), (n,) or (n, C)
        logits = model.forward_unchecked(xb)                  # (n, C)
        value, dlogits = self.loss_fn(logits, yb, divisor)
        model.backward_unchecked(dlogits)                     # overwrites model.grads
        votes = (run.stop_requested, "non_finite" if not math.isfinite(value) else None,
                 "interrupted" if run.interrupted else None)      # this rank's reasons to stop
        run.stop_reason, steps = self.sync.reduce(rows, votes)    # summed gradients, agreed vote
        if run.stop_reason is not None:
            return False                                      # e.g. no update from a NaN step
        if steps:
            self.optimizer.step()
        correct, judged = self.count_correct(logits, yb) if self.count_correct else (0, 0)
        for index, amount in enumerate((value * divisor, correct, judged, len(rows))):
            self.sums[index] += amount                        # this rank's share of the check's sums
        run.step += 1
        run.samples_seen += len(global_rows)
        self.sync.after_step(run.step, rows)                  # local SGD: average every k steps
        return True

    def check(self):
        """Metrics of the steps since the last check and of the validation data, the same on
        every rank; the callbacks judge them (EarlyStopping, ...), then the ranks vote."""
        run = self.run
        self.sync.synchronize()                               # checks see the averaged model
        loss_sum, correct, judged, samples = allreduce_scalars(self.comm, self.sums, "metrics")
        self.sums = [0.0, 0.0, 0.0, 0.0]
        metrics = {"loss": float(loss_sum / samples) if samples else float("nan")}
        if self.count_correct:
            metrics["accuracy"] = float(correct / judged) if judged else float("nan")
        if self.validation is not None:
            validation = _evaluate(self.model, *self.validation, self.loss, self.comm)
            metrics.update({"val_" + key: value for key, value in validation.items()})
        metrics["lr"] = self.optimizer.lr
        check_agreement(self.comm, metrics, run.check)
        run.metrics = metrics
        run.history.records.append({"check": run.check, "epoch": run.epoch, "step": run.step,
                                    **metrics, "time": run.elapsed + self.elapsed_now()})
        self.call("on_check")
        run.check += 1
        run.stop_reason = agree_on_stop(self.comm, STOP_REASONS, (run.stop_requested,))
        self.call("on_check_end")

    def call(self, hook):
        """Call ``hook`` (e.g. "on_step_end") of every callback that has it, in order."""
        for method in self._hooks[hook]:
            method(self.run)

    def gather(self, rows):
        """This rank's rows of a global batch, gathered into reused buffers: (X (n, D), y)."""
        buffers = self._gather.get(len(rows))
        if buffers is None:
            self._gather = {len(rows): (np.empty((len(rows), self.X.shape[1]), self.X.dtype),
                                        np.empty((len(rows),) + self.y.shape[1:], self.y.dtype))}
            buffers = self._gather[len(rows)]
        # rows come from a permutation, so mode="clip" never clips; it spares np.take the
        # hidden full copy that its default mode="raise" makes when given out=
        np.take(self.X, rows, axis=0, out=buffers[0], mode="clip")
        np.take(self.y, rows, axis=0, out=buffers[1], mode="clip")
        return buffers

    # ------------------------------------------------------------------ start and end
    def _checkpoint_to_resume(self):
        if self.checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint=PATH to resume from")
        return self.checkpoint_path

    def _finish(self):
        run, history = self.run, self.run.history
        self.sync.synchronize()                               # local SGD ends with one shared model
        history.stop_reason = run.stop_reason
        history.steps = run.step
        history.epochs_run = run.epoch + (run.batch > 0)      # a partial epoch counts
        history.steps_per_epoch = self.batches_per_epoch
        self.call("on_stop")
        self.call("on_train_end")
        run.elapsed += self.elapsed_now()
        history.samples_per_second = run.samples_seen / run.elapsed if run.elapsed > 0 else None
        if run.best_check is not None:
            history.best_check = run.best_check
            history.best_epoch = history.records[run.best_check]["epoch"]
        if run.stop_reason in monitor.STOP_REASONS and history.records:
            history.stopped_check = len(history.records) - 1
            history.stopped_epoch = history.records[-1]["epoch"]
        if run.restored_from is not None:
            history.restored_from = history.records[run.restored_from]["epoch"]
        history.comm_stats = self.comm_stats()

    def elapsed_now(self):
        """Seconds since this fit started (resumed runs add the time saved in the checkpoint)."""
        return time.perf_counter() - self._started

    def comm_stats(self):
        """Collectives of this fit: {"ranks", "steps", "startup", "training", "per_step"}.

        startup and training map a label (gradients, stop_vote, metrics, validation, params,
        initial_state, fingerprint, errors, checkpoint, replica_check) to {"op", "calls",
        "bytes"} with bytes the payload per rank; per_step is the training total / steps.
        With sync="grad" a step costs one collective: the "gradients" allreduce of the whole
        gradient buffer, with the step's stop vote (len(STOP_REASONS) elements) at its end.
        """
        training = self.comm.stats.since(self._stats_loop)
        steps = max(self.run.step, 1)
        return {"ranks": self.comm.size, "steps": self.run.step, "startup": self._stats_startup,
                "training": training,
                "per_step": {"calls": sum(entry["calls"] for entry in training.values()) / steps,
                             "bytes": sum(entry["bytes"] for entry in training.values()) / steps}}

    @functools.cached_property
    def data_checksums(self):
        """CRC-32 of the training arrays (X, y) and of the validation arrays (or None), taken
        once: checkpoints keep them, and a resume refuses other data of the same size."""
        def crc(arrays):
            return [zlib.crc32(np.ascontiguousarray(array)) for array in arrays]
        return {"training": crc((self.X, self.y)),
                "validation": None if self.validation is None else crc(self.validation)}

    def fingerprint(self):
        """What every rank must agree on before training (parallel.fingerprint)."""
        return fingerprint({**self.config, "epochs": self.epochs}, self.model, self.optimizer,
                           self.run.callbacks, self.data_checksums)

    # ------------------------------------------------------------------ set-up
    def __init__(self, model, loss, optimizer, X, y, *, epochs, batch_size, validation_data=None,
                 validation_split=0.0, callbacks=(), seed=0, check_every_steps=None, comm=None,
                 sync="grad", sync_every=1, check_replicas=False, checkpoint=None,
                 collective_timeout=None):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a minidl.MLP, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer) or optimizer.model is not model:
            raise TypeError("optimizer must be a minidl optimizer built on this model, "
                            "e.g. minidl.SGD(model, lr=0.1)")
        self.loss = resolve_loss(loss)
        if self.loss == "cross_entropy" and model.out_features < 2:
            raise ValueError("cross_entropy needs at least 2 outputs (one per class), the model has 1: "
                             "for a yes/no target use binary_cross_entropy")
        self.loss_fn, self.count_correct = loss_kernel(self.loss), LOSSES[self.loss].count_correct
        self.epochs = check_positive_int("epochs", epochs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = check_non_negative_int("seed", seed)
        self.check_every_steps = None if check_every_steps is None else \
            check_positive_int("check_every_steps", check_every_steps)
        self.comm = resolve_comm(comm)
        if collective_timeout is not None:
            self.comm.collective_timeout = check_timeout("collective_timeout", collective_timeout)
        self.sync = sync_strategy(sync, sync_every, self.comm, model, STOP_REASONS)
        self.model, self.optimizer = model, optimizer
        self.X, self.y, self.validation = _training_data(self.loss, model, X, y, validation_data,
                                                         validation_split)
        if self.comm.size > len(self.X):
            raise ValueError(f"{self.comm.size} ranks but only {len(self.X)} training samples: "
                             f"use at most {len(self.X)} ranks")
        self.config = {"loss": self.loss, "batch_size": self.batch_size, "seed": self.seed,
                       "check_every_steps": self.check_every_steps, "n_train": len(self.X),
                       "n_val": 0 if self.validation is None else len(self.validation[0]),
                       "sync": sync, "sync_every": sync_every}   # what a resume must keep
        callbacks = check_callbacks(callbacks)
        if check_replicas:
            callbacks.append(ReplicaCheck())
        if checkpoint is not None:
            if self.comm.rank == 0:                   # the writer: found now, not after an epoch
                checkpoint = check_writable_file(checkpoint, "checkpoint")
            callbacks.append(Checkpoint(checkpoint))
        self.checkpoint_path = None if checkpoint is None else str(checkpoint)
        self._check_monitored_names(callbacks)
        self.run = Run(model, optimizer, self.comm, callbacks, self.sync, lambda: training_state(self))
        self._hooks = {hook: [method for method in (hook_method(callback, hook) for callback in callbacks)
                              if method is not None] for hook in HOOKS}   # not Callback's no-ops
        self.batches_per_epoch = self.run.batches_per_epoch = math.ceil(len(self.X) / self.batch_size)
        self.sums = [0.0, 0.0, 0.0, 0.0]             # loss sum, correct, judged, samples of a check
        self._gather = {}

    def _check_monitored_names(self, callbacks):
        names = ["loss"] + (["accuracy"] if self.count_correct else [])
        if self.validation is not None:
            names += ["val_" + name for name in names]
        names.append("lr")
        for callback in callbacks:
            watched = getattr(callback, "monitor", None)
            if isinstance(watched, str) and watched not in names:
                hint = " (fit has no validation data: pass validation_data or validation_split)" \
                    if watched.startswith("val_") and self.validation is None else ""
                raise ValueError(f"{type(callback).__name__} monitors {watched!r}, which fit does "
                                 f"not produce{hint}; available: {names}")


def fit(model, loss, optimizer, X, y, *, epochs, batch_size, validation_data=None,
        validation_split=0.0, callbacks=(), seed=0, check_every_steps=None, comm="auto",
        sync="grad", sync_every=1, check_replicas=False, checkpoint=None, resume=False,
        collective_timeout=None, verbose="auto"):
    """Train ``model`` in place on (X, y) and return its History.

    loss: "cross_entropy", "mse" or "binary_cross_entropy".  optimizer: built on ``model``.
    epochs, batch_size: the GLOBAL batch size, however many ranks share it.
    validation_split: the last fraction of (X, y), taken before shuffling (Keras's rule);
        or validation_data=(X_val, y_val).
    seed: the shuffle of epoch e is default_rng([seed, e]).permutation(n) — independent of the
        weight initialisation, identical on every rank.
    callbacks: None or a list of callback objects (minidl/callbacks.py: a minidl.Callback, or any
        object with some of its hook methods), called in order.
    check_every_steps: validate and run the monitors every k optimizer steps instead of at
        each epoch's end (patience then counts these checks).
    comm: "auto" (MPI when an MPI launcher started the process, else one process), None (one
        process) or a minidl.comm.Communicator. Every rank calls fit with the same arguments.
    sync: "grad" (default): one allreduce of the gradient per step; N ranks follow the
        1-process trajectory of the same global batch up to rounding. "params": local SGD,
        each rank steps on its own share (its own mean loss, its own optimizer state) and
        parameters are averaged, weighted by samples, every ``sync_every`` steps, before every
        check and at the end.
    check_replicas: after every step at which the ranks should agree, compare a hash of the
        parameters across ranks and raise RuntimeError if they differ (a debugging aid).
    checkpoint: a path; the full training state is saved there at every check and at the end
        by rank 0, which alone reads it to resume and broadcasts it (on any number of ranks;
        no shared filesystem needed).
    resume: continue from ``checkpoint``; in the same environment the result is bit-for-bit
        that of a run never interrupted. The same data are needed: the checkpoint holds their
        CRC-32 checksums and other data, even of the same size, are refused.
    collective_timeout: seconds a collective may wait for a frozen or lost rank before the
        job is aborted with a message (default: MINIDL_COLLECTIVE_TIMEOUT, else 600; MPI only).
    verbose: progress on sys.stderr, from rank 0 only (minidl.progress.ProgressBar).
        "auto" (default): a tqdm bar per epoch when sys.stderr is a terminal, else nothing;
        True or 1: the bar on a terminal, else one line per check (epoch, step, metrics);
        2: one line per check, never a bar (Keras's verbose=2); False or 0: nothing.
        When ``callbacks`` already holds a ProgressBar, fit adds none.

    Start-up is collective: a ValueError/TypeError on any rank (bad input, a checkpoint
    mismatch) or ranks disagreeing on the configuration raise the same error on every rank.
    The returned History's ``comm_stats`` counts the collectives and their bytes.
    """
    comm = resolve_comm(comm)
    stats_before = comm.stats.snapshot()
    trainer = collectively(comm, lambda: Trainer(
        model, loss, optimizer, X, y, epochs=epochs, batch_size=batch_size,
        validation_data=validation_data, validation_split=validation_split,
        callbacks=_with_progress(callbacks, verbose, epochs, comm.rank), seed=seed,
        check_every_steps=check_every_steps, comm=comm, sync=sync,
        sync_every=sync_every, check_replicas=check_replicas, checkpoint=checkpoint,
        collective_timeout=collective_timeout))
    return trainer.fit(resume, stats_before)


def evaluate(model, X, y, loss="cross_entropy", batch_size=4096, comm=None):
    """{"loss": mean loss, "accuracy": fraction correct (classification)} over (X, y).

    With a communicator, each rank evaluates its share and the sums and counts are reduced,
    so every rank gets the same numbers, equal to the serial ones up to rounding.
    """
    loss = resolve_loss(loss)
    comm = resolve_comm(comm)
    X = check_inputs("X", X, model.dtype, model.in_features)
    y = check_loss_targets(loss, y, (len(X), model.out_features), model.dtype)
    return _evaluate(model, X, y, loss, comm, check_positive_int("batch_size", batch_size))


def _evaluate(model, X, y, loss, comm, batch_size=4096):
    """evaluate() of checked arrays."""
    kernel, count_correct = loss_kernel(loss), LOSSES[loss].count_correct
    rows = shard(range(len(X)), comm.rank, comm.size)              # contiguous: slice, never copy
    loss_sum = correct = judged = 0.0
    for start in range(rows.start, rows.stop, batch_size):
        chunk = slice(start, min(start + batch_size, rows.stop))
        logits = model.forward_unchecked(X[chunk])
        loss_sum += kernel(logits, y[chunk], 1)[0]                 # divisor 1: a sum over rows
        if count_correct:
            counts = count_correct(logits, y[chunk])
            correct, judged = correct + counts[0], judged + counts[1]
    loss_sum, correct, judged = allreduce_scalars(comm, [loss_sum, correct, judged], "validation")
    metrics = {"loss": float(loss_sum / len(X))}
    if count_correct:
        metrics["accuracy"] = float(correct / judged)
    return metrics


def split_validation(X, y, validation_split):
    """Keras's rule: the LAST fraction of the samples, taken before any shuffling."""
    fraction = check_real("validation_split", validation_split, 0.0, 1.0, max_inclusive=False)
    if fraction == 0:
        return X, y, None
    split_at = int(math.ceil(len(X) * (1.0 - fraction)))
    if split_at == len(X) or split_at == 0:
        raise ValueError(f"validation_split={fraction} of {len(X)} samples leaves "
                         f"{split_at} for training and {len(X) - split_at} for validation; "
                         f"both need at least one sample")
    return X[:split_at], y[:split_at], (X[split_at:], y[split_at:])


def _training_data(loss, model, X, y, validation_data, validation_split):
    """(X, y, validation or None), checked against the model and the loss."""
    X = check_inputs("X", X, model.dtype, model.in_features)
    y = check_loss_targets(loss, y, (len(X), model.out_features), model.dtype)
    if validation_data is not None and validation_split:
        raise ValueError("pass validation_data or validation_split, not both")
    X, y, validation = split_validation(X, y, validation_split)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        X_val = check_inputs("validation_data[0]", validation_data[0], model.dtype, model.in_features)
        y_val = check_loss_targets(loss, validation_data[1], (len(X_val), model.out_features), model.dtype,
                                   "validation_data[1]")
        validation = (X_val, y_val)
    return X, y, validation


def _with_progress(callbacks, verbose, epochs, rank):
    """``callbacks`` as a list, with the ProgressBar of ``verbose`` at the end unless one is there."""
    callbacks = check_callbacks(callbacks)
    progress = ProgressBar.for_verbose(verbose, epochs, rank)
    if progress is not None and not any(isinstance(callback, ProgressBar) for callback in callbacks):
        callbacks.append(progress)
    return callbacks
