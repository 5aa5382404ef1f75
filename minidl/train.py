"""fit(): the one training loop, for one process and for many.

Each optimizer step:  forward -> loss (divided by the GLOBAL batch size) -> backward ->
comm.allreduce_sum(grads) -> agree on stop flags -> optimizer.step(). With SerialComm the
collectives are no-ops, so this is plain mini-batch training; with N ranks each rank takes its
share of every global batch and the summed gradient is exactly the global-batch gradient.
With sync="params" (local SGD) each rank instead minimizes the mean loss of its own share and
steps alone; the ranks average their parameters every ``sync_every`` steps, before every check
and at the end (docs/data_parallel.md).

Start-up is collective: the ranks compare a fingerprint of the configuration, bad input on
any rank raises the same error on every rank, then rank 0's parameters and optimizer state are
broadcast. Later failures are not collective: under MPI an uncaught exception aborts the job.

Checks (validation + callbacks' ``on_check``) run at the end of every epoch, or every
``check_every_steps`` optimizer steps. Callbacks implement any of the hooks below; each gets
the ``Run``, which holds the model, optimizer, counters and the metrics of the current check:

    on_train_begin(run)   reset state (fit then loads checkpointed state when resuming)
    on_step_end(run)      after every optimizer step
    on_check(run)         run.metrics holds loss, val_loss, accuracy, val_accuracy, lr
    on_check_end(run)     the ranks have agreed on this check's stop decision: the state is
                          complete (the Checkpoint callback saves here)
    on_epoch_end(run)
    on_stop(run)          the loop has ended, weights are still live (checkpoint them here)
    on_train_end(run)     finish: restore best weights, close progress bars

A callback stops training with ``run.request_stop(reason)`` (reason "external" by default).
Stop reasons: the monitor's patience / stopping_threshold / divergence_threshold /
non_finite, and the trainer's max_epochs, interrupted (SIGINT/SIGTERM) and external.
"""
import contextlib
import csv
import hashlib
import json
import math
import signal
import threading
import time
import warnings
import zlib

import numpy as np

from . import checkpoint as ckpt
from . import monitor
from .comm import allreduce_scalars, check_same, collectively, resolve_comm, shard
from .layers import Workspace
from .losses import check_loss_targets, loss_kernel, resolve_loss
from .model import MLP
from .optim import Optimizer
from .validation import check_inputs, check_positive_int, check_real

SYNC_MODES = ("grad", "params")

MONITOR_REASONS = monitor.STOP_REASONS      # patience, stopping/divergence_threshold, non_finite
TRAINER_REASONS = ("max_epochs", "interrupted", "external")
STOP_REASONS = MONITOR_REASONS + TRAINER_REASONS          # priority order when ranks disagree
HOOKS = ("on_train_begin", "on_step_end", "on_check", "on_check_end", "on_epoch_end", "on_stop",
         "on_train_end")


class History:
    """One record per check: check, epoch, step, loss, [accuracy], [val_loss, val_accuracy], lr, time.

    ``history["val_loss"]`` lists a metric over checks (like Keras's history.history).
    The end of training is described by stop_reason, best_epoch, stopped_epoch (0-based epoch
    indices; None when no monitor decided), restored_from, epochs_run and steps.
    comm_stats: the collectives of the run (see Trainer.comm_stats); empty tables for one process.
    """

    def __init__(self):
        self.records = []
        self.stop_reason = None
        self.best_epoch = self.best_check = None
        self.stopped_epoch = self.stopped_check = None
        self.restored_from = None
        self.epochs_run = 0
        self.steps = 0
        self.samples_per_second = None
        self.steps_per_epoch = None
        self.comm_stats = None

    def __getitem__(self, key):
        return [record.get(key) for record in self.records]

    def __len__(self):
        return len(self.records)

    def keys(self):
        return list(self.records[0]) if self.records else []

    def summary(self):
        """The end-of-training facts (JSON-able)."""
        return {"stop_reason": self.stop_reason, "best_epoch": self.best_epoch,
                "best_check": self.best_check, "stopped_epoch": self.stopped_epoch,
                "stopped_check": self.stopped_check, "restored_from": self.restored_from,
                "epochs_run": self.epochs_run, "steps": self.steps, "checks": len(self.records),
                "samples_per_second": self.samples_per_second, "steps_per_epoch": self.steps_per_epoch,
                "comm_stats": self.comm_stats}

    def to_dict(self):
        return {"records": self.records, **self.summary()}

    @classmethod
    def from_dict(cls, data):
        history = cls()
        history.records = [dict(record) for record in data["records"]]
        for key, value in data.items():
            if key not in ("records", "checks"):
                setattr(history, key, value)
        return history

    def to_json(self, path):
        text = json.dumps(self.to_dict(), indent=1)
        ckpt.atomic_write(path, lambda handle: handle.write(text.encode()))

    def to_csv(self, path):
        columns = []
        for record in self.records:
            columns += [key for key in record if key not in columns]

        def write(handle):
            lines = [",".join(columns)]
            for record in self.records:
                lines.append(",".join("" if record.get(key) is None else repr(record[key])
                                      for key in columns))
            handle.write(("\n".join(lines) + "\n").encode())
        ckpt.atomic_write(path, write)


def read_history_csv(path):
    """Records from History.to_csv, values as floats (ints where integral)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: (float(value) if value != "" else None) for key, value in row.items()} for row in rows]


class Run:
    """What callbacks see: the model, optimizer, comm, history, counters and current metrics.

    epoch: index of the epoch being trained; batch: index of the next batch in it;
    step: optimizer steps so far; check: number of checks so far (the current check's index
    inside on_check); rows: the training-set indices this rank used in the latest step.
    """

    def __init__(self, model, optimizer, comm, callbacks):
        self.model, self.optimizer, self.comm = model, optimizer, comm
        self.callbacks = callbacks
        self.history = History()
        self.metrics = {}
        self.epoch = self.batch = self.step = self.check = 0
        self.rows = None
        self.stop_reason = None          # agreed by all ranks
        self.stop_requested = None       # asked for on this rank, not yet agreed
        self.restored_from = None
        self.interrupted = False
        self.elapsed = 0.0
        self.samples_seen = 0

    def request_stop(self, reason="external"):
        """Ask the trainer to stop; the ranks agree on it at the next step or check."""
        if reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {reason!r}; use one of {STOP_REASONS}")
        if self.stop_requested is None:
            self.stop_requested = reason

    def call(self, hook):
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self)


class Checkpoint:
    """Callback: save everything a resume needs to ``path`` at every check and when training ends.

    Only rank 0 writes (atomically); all ranks then meet at a barrier. The state saved when
    training ends is the LIVE state, before any best-weights restore, so a resume continues
    the real trajectory.
    """

    def __init__(self, path):
        self.path = str(path)

    def save(self, run):
        arrays, meta = run.trainer.state()                      # collective: every rank calls it
        if run.comm.rank == 0:
            ckpt.save_checkpoint(self.path, arrays, meta)
        run.comm.barrier("checkpoint")

    def on_check_end(self, run):
        self.save(run)

    def on_stop(self, run):
        self.save(run)


class ReplicaCheck:
    """Callback, a debugging aid (fit's ``check_replicas=True``): after every step at which
    the ranks should hold identical parameters, allgather a hash of them and raise
    RuntimeError on every rank if any differs (with sync="params": after each average).
    """

    def on_step_end(self, run):
        if not run.trainer.in_sync:
            return
        digest = np.frombuffer(hashlib.blake2b(run.model.params, digest_size=8).digest(), np.uint64)
        digests = run.comm.allgather(digest.copy(), "replica_check")[:, 0]
        if (digests != digests[0]).any():
            groups = {}
            for rank, value in enumerate(digests):
                groups.setdefault(int(value), []).append(rank)
            error = RuntimeError(f"replicas diverged after step {run.step}: the ranks hold "
                                 f"{len(groups)} different parameter vectors (rank groups "
                                 f"{sorted(groups.values())})")
            error.collective = True                            # every rank saw the same digests
            raise error


class FailureInjection:
    """Callback, a testing aid: raise RuntimeError on ``rank`` once optimizer step ``step``
    (counted from 1) has finished — to prove that a failing rank ends the whole job.
    The CLI exposes it as ``--fail-on-rank R --fail-at-step S``.
    """

    def __init__(self, rank, step):
        self.rank = check_positive_int("rank", rank, minimum=0)
        self.step = check_positive_int("step", step)

    def on_train_begin(self, run):
        if self.rank >= run.comm.size:
            raise ValueError(f"FailureInjection: rank {self.rank} does not exist in a run of "
                             f"{run.comm.size} rank(s)")

    def on_step_end(self, run):
        if run.comm.rank == self.rank and run.step == self.step:
            raise RuntimeError(f"injected failure on rank {self.rank} at step {self.step} "
                               f"(FailureInjection, a testing aid)")


def rounding_environment(comm):
    """What determines rounding: process count, BLAS threads, library versions."""
    environment = {"processes": comm.size, "numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info
        environment["blas"] = sorted(f"{pool.get('internal_api')} {pool.get('version')} "
                                     f"threads={pool.get('num_threads')}" for pool in threadpool_info())
    except ImportError:
        environment["blas"] = None
    return environment


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


def _correct(loss, logits, targets, buffer=None):
    """(number correct, number judged) for classification losses; None for regression.

    ``buffer`` (a Workspace) holds the per-row scratch, so fit's step allocates nothing.
    """
    buffer = buffer or Workspace()
    if loss == "cross_entropy":
        n = len(logits)
        labels = targets if targets.ndim == 1 else targets.argmax(axis=1, out=buffer("labels", (n,), np.int64))
        predicted = logits.argmax(axis=1, out=buffer("predicted", (n,), np.int64))      # (N,)
        return int(np.count_nonzero(np.equal(predicted, labels, out=buffer("hits", (n,), bool)))), n
    if loss == "binary_cross_entropy":
        return int(np.count_nonzero((logits > 0) == (targets >= 0.5))), targets.size
    return None


def evaluate(model, X, y, loss="cross_entropy", batch_size=4096, comm=None):
    """{"loss": mean loss, "accuracy": fraction correct (classification)} over (X, y).

    With a communicator, each rank evaluates its share and the sums and counts are reduced,
    so every rank gets the same numbers, equal to the serial ones up to rounding.
    """
    loss = resolve_loss(loss)
    comm = resolve_comm(comm)
    X = check_inputs("X", X, model.dtype, model.in_features)
    y = check_loss_targets(loss, y, (len(X), model.out_features), model.dtype)
    return _evaluate(model, X, y, loss, batch_size, comm)


def _evaluate(model, X, y, loss, batch_size, comm):
    kernel = loss_kernel(loss)
    rows = shard(range(len(X)), comm.rank, comm.size)              # contiguous: slice, never copy
    loss_sum = correct = judged = 0.0
    for start in range(rows.start, rows.stop, batch_size):
        chunk = slice(start, min(start + batch_size, rows.stop))
        logits = model._forward(X[chunk])
        loss_sum += kernel(logits, y[chunk], 1)[0]                   # divisor 1: a sum over rows
        counts = _correct(loss, logits, y[chunk])
        if counts:
            correct, judged = correct + counts[0], judged + counts[1]
    loss_sum, correct, judged = allreduce_scalars(comm, [loss_sum, correct, judged], "validation")
    metrics = {"loss": float(loss_sum / len(X))}
    if loss != "mse":
        metrics["accuracy"] = float(correct / judged)
    return metrics


@contextlib.contextmanager
def _catch_interrupts(run):
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


class Trainer:
    """The state and steps of one fit() call; fit() is the public entry point."""

    def __init__(self, model, loss, optimizer, X, y, *, epochs, batch_size, validation_data,
                 validation_split, callbacks, seed, check_every_steps, comm, sync, sync_every,
                 check_replicas, checkpoint):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a minidl.MLP, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer) or optimizer.model is not model:
            raise TypeError("optimizer must be a minidl optimizer built on this model, "
                            "e.g. minidl.SGD(model, lr=0.1)")
        self.loss = resolve_loss(loss)
        if self.loss == "cross_entropy" and model.out_features < 2:
            raise ValueError("cross_entropy needs at least 2 outputs (one per class), the model has 1: "
                             "for a yes/no target use binary_cross_entropy")
        self.kernel = loss_kernel(self.loss)
        self._scratch = Workspace()                                   # _correct's per-row arrays
        self.epochs = check_positive_int("epochs", epochs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = check_positive_int("seed", seed, minimum=0)
        self.check_every_steps = None if check_every_steps is None else \
            check_positive_int("check_every_steps", check_every_steps)
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        self.sync = sync
        self.sync_every = check_positive_int("sync_every", sync_every)
        if sync == "grad" and self.sync_every != 1:
            raise ValueError(f"sync_every={sync_every} has no effect with sync='grad' (gradients "
                             f"are averaged at every step); use sync='params' for local SGD")
        self.comm = resolve_comm(comm)
        self.model, self.optimizer = model, optimizer

        X = check_inputs("X", X, model.dtype, model.in_features)
        shape = (len(X), model.out_features)
        y = check_loss_targets(self.loss, y, shape, model.dtype)
        if validation_data is not None and validation_split:
            raise ValueError("pass validation_data or validation_split, not both")
        self.X, self.y, validation = split_validation(X, y, validation_split)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            X_val = check_inputs("validation_data X", validation_data[0], model.dtype, model.in_features)
            y_val = check_loss_targets(self.loss, validation_data[1], (len(X_val), model.out_features),
                                       model.dtype)
            validation = (X_val, y_val)
        self.validation = validation
        if self.comm.size > len(self.X):
            raise ValueError(f"{self.comm.size} ranks but only {len(self.X)} training samples: "
                             f"use at most {len(self.X)} ranks")

        callbacks = list(callbacks)
        if check_replicas:
            callbacks.append(ReplicaCheck())
        if checkpoint is not None:
            callbacks.append(Checkpoint(checkpoint))
        self.checkpoint_path = None if checkpoint is None else str(checkpoint)
        self._check_monitors(callbacks)
        self.run = Run(model, optimizer, self.comm, callbacks)
        self.run.trainer = self
        self.batches_per_epoch = math.ceil(len(self.X) / self.batch_size)
        self._accumulators = [0.0, 0.0, 0.0, 0.0]          # loss sum, correct, judged, samples
        self._gather = {}
        self._unsynced_steps = self._local_samples = 0        # local SGD since the last average

    def _metric_names(self):
        names = ["loss"] + (["accuracy"] if self.loss != "mse" else [])
        if self.validation is not None:
            names += ["val_" + name for name in names]
        return names + ["lr"]

    def _check_monitors(self, callbacks):
        names = self._metric_names()
        for callback in callbacks:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor not in names:
                hint = " (fit has no validation data: pass validation_data or validation_split)" \
                    if monitor.startswith("val_") and self.validation is None else ""
                raise ValueError(f"{type(callback).__name__} monitors {monitor!r}, which fit does "
                                 f"not produce{hint}; available: {names}")

    # ------------------------------------------------------------------ state
    def fit_config(self):
        return {"loss": self.loss, "batch_size": self.batch_size, "seed": self.seed,
                "check_every_steps": self.check_every_steps, "n_train": len(self.X),
                "n_val": 0 if self.validation is None else len(self.validation[0]),
                "sync": self.sync, "sync_every": self.sync_every}

    def fingerprint(self):
        """What all ranks must agree on; compared across ranks at start-up.

        The model's init seed is left out on purpose: every rank starts from rank 0's
        broadcast weights. The data enter as CRC-32 checksums.
        """
        model = self.model.config()
        del model["seed"]
        arrays = (self.X, self.y) + (() if self.validation is None else tuple(self.validation))
        return {**self.fit_config(), "epochs": self.epochs, "model": model,
                "num_parameters": self.model.num_parameters,
                "trainable": [dense.trainable for dense in self.model.dense_layers],
                "optimizer": [type(self.optimizer).__name__, self.optimizer.hyperparameters()],
                "callbacks": [type(callback).__name__ for callback in self.run.callbacks],
                "data_crc32": [zlib.crc32(array) for array in arrays]}

    def state(self):
        """(arrays, meta) describing everything a resume needs. Collective: every rank calls it.

        The loss/accuracy sums of the current check are reduced over ranks, so rank 0's file
        holds the global sums and can be resumed on any number of ranks.
        """
        run = self.run
        accumulators = allreduce_scalars(self.comm, self._accumulators, "checkpoint")
        arrays = {"params": self.model.params}
        opt_arrays, opt_scalars = ckpt.split_state("optimizer", self.optimizer.state_dict())
        arrays.update(opt_arrays)
        callback_states = []
        for index, callback in enumerate(run.callbacks):
            if callable(getattr(callback, "state_dict", None)):
                cb_arrays, cb_scalars = ckpt.split_state(f"callback{index}", callback.state_dict())
                arrays.update(cb_arrays)
                callback_states.append({"index": index, "type": type(callback).__name__,
                                        "state": cb_scalars})
        meta = {"model": self.model.config(),
                "trainable": [dense.trainable for dense in self.model.dense_layers],
                "optimizer": opt_scalars, "callbacks": callback_states,
                "counters": {"epoch": run.epoch, "batch": run.batch, "step": run.step,
                             "check": run.check},
                "accumulators": accumulators.tolist(), "samples_seen": run.samples_seen,
                "history": run.history.to_dict(), "fit": self.fit_config(), "epochs": self.epochs,
                "elapsed": run.elapsed + self._elapsed_now(), "stop_reason": run.stop_reason,
                "environment": rounding_environment(self.comm)}
        return arrays, meta

    def load_state(self, arrays, meta):
        """Continue from a checkpoint's state; a file that does not hold a complete state of
        this run raises CheckpointError naming what is missing or mismatched."""
        missing = [key for key in ("model", "fit", "environment", "trainable", "optimizer", "callbacks",
                                   "counters", "accumulators", "samples_seen", "history", "elapsed",
                                   "stop_reason") if key not in meta]
        if missing or "params" not in arrays:
            raise ckpt.CheckpointError(f"checkpoint lacks {missing + ([] if 'params' in arrays else ['params'])}: "
                                       f"not a complete minidl training state")
        if arrays["params"].shape != self.model.params.shape:
            raise ckpt.CheckpointError(f"checkpoint params have shape {arrays['params'].shape}, this model "
                                       f"needs {self.model.params.shape}")
        try:
            self._load_state(arrays, meta)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ckpt.CheckpointError):
                raise
            raise ckpt.CheckpointError(f"checkpoint state does not fit this run: {error!r}") from None

    def _load_state(self, arrays, meta):
        run = self.run
        mine, theirs = self.model.config(), meta["model"]
        if (mine["sizes"], mine["activation"], mine["dtype"]) != \
                (theirs["sizes"], theirs["activation"], theirs["dtype"]):
            raise ckpt.CheckpointError(f"checkpoint is for model {theirs['sizes']} "
                                       f"{theirs['activation']} {theirs['dtype']}, not {mine['sizes']} "
                                       f"{mine['activation']} {mine['dtype']}")
        for key, value in self.fit_config().items():
            if meta["fit"].get(key) != value:
                raise ckpt.CheckpointError(f"checkpoint was made with {key}={meta['fit'].get(key)!r}, "
                                           f"this run has {key}={value!r}: resume with the same settings")
        if meta["environment"] != rounding_environment(self.comm):
            warnings.warn(f"resuming in a different environment ({meta['environment']} -> "
                          f"{rounding_environment(self.comm)}): results may differ by rounding",
                          RuntimeWarning, stacklevel=3)
        self.model.params[...] = arrays["params"]
        for dense, trainable in zip(self.model.dense_layers, meta["trainable"]):
            dense.trainable = trainable
        self.optimizer.load_state_dict(ckpt.merge_state("optimizer", meta["optimizer"], arrays))
        for entry in meta["callbacks"]:
            callback = run.callbacks[entry["index"]] if entry["index"] < len(run.callbacks) else None
            if type(callback).__name__ != entry["type"]:
                raise ckpt.CheckpointError(f"checkpoint holds state for callback {entry['type']} at "
                                           f"position {entry['index']}; pass the same callbacks to resume")
            callback.load_state_dict(ckpt.merge_state(f"callback{entry['index']}", entry["state"], arrays))
        counters = meta["counters"]
        run.epoch, run.batch, run.step, run.check = (counters[key] for key in ("epoch", "batch", "step", "check"))
        if run.batch >= self.batches_per_epoch:               # saved at an epoch's end
            run.epoch, run.batch = run.epoch + 1, 0
        # the saved sums are global: rank 0 carries them on, the other ranks start from zero
        self._accumulators = list(meta["accumulators"]) if self.comm.rank == 0 else [0.0] * 4
        run.samples_seen = meta["samples_seen"]
        run.history = History.from_dict(meta["history"])
        run.elapsed = meta["elapsed"]
        finished = meta["stop_reason"] in MONITOR_REASONS + ("external",)   # else: continue
        run.stop_reason = meta["stop_reason"] if finished else None

    def _elapsed_now(self):
        return time.perf_counter() - self._started

    # ------------------------------------------------------------------ the loop
    def _batch(self, rows):
        """This rank's rows of a global batch gathered into reused buffers: (X (n, D), y)."""
        buffers = self._gather.get(len(rows))
        if buffers is None:
            self._gather = {len(rows): (np.empty((len(rows), self.X.shape[1]), self.X.dtype),
                                        np.empty((len(rows),) + self.y.shape[1:], self.y.dtype))}
            buffers = self._gather[len(rows)]
        # gather without a new array; rows come from a permutation, so mode="clip" never clips,
        # and it spares np.take the full hidden copy its default mode="raise" makes with out=
        np.take(self.X, rows, axis=0, out=buffers[0], mode="clip")
        np.take(self.y, rows, axis=0, out=buffers[1], mode="clip")
        return buffers

    def _train_step(self, global_rows):
        """One optimizer step on a global batch; False (and no update) if the ranks agree to stop."""
        model, run = self.model, self.run
        local = run.rows = shard(global_rows, self.comm.rank, self.comm.size)
        xb, yb = self._batch(local)
        # sync="grad": divide by the GLOBAL count, so the ranks' gradients add up to the gradient
        # of the global-batch mean; sync="params": each rank's own mean (it steps on it alone)
        divisor = len(global_rows) if self.sync == "grad" else max(len(local), 1)
        logits = model._forward(xb)                                       # (n, C)
        value, dlogits = self.kernel(logits, yb, divisor)
        model._backward(dlogits)                                          # overwrites model.grads
        if self.sync == "grad":
            self.comm.allreduce_sum(model.grads, "gradients")             # -> global-batch gradient
        if self._agree_on_stop("non_finite" if not math.isfinite(value) else None,
                               "interrupted" if run.interrupted else None):
            return False                                                  # e.g. no update from a NaN step
        if self.sync == "grad" or len(local):                             # local SGD: no data, no step
            self.optimizer.step()
        counts = _correct(self.loss, logits, yb, self._scratch) or (0, 0)
        acc = self._accumulators
        acc[0] += value * divisor                                         # this rank's loss sum
        acc[1] += counts[0]
        acc[2] += counts[1]
        acc[3] += len(local)
        run.step += 1
        run.samples_seen += len(global_rows)
        if self.sync == "params":
            self._unsynced_steps += 1
            self._local_samples += len(local)
            if run.step % self.sync_every == 0:
                self._average_params()
        return True

    @property
    def in_sync(self):
        """True when every rank holds the same parameters (always, with sync="grad")."""
        return self._unsynced_steps == 0

    def _average_params(self):
        """Local SGD: p <- sum_r n_r p_r / sum_r n_r, n_r = samples rank r trained on since the
        last average; one allreduce of [n_r p_r (trainable part), n_r]. A no-op when in sync."""
        if self.in_sync:
            return
        params = self.model.params
        spans = [slice(start, stop) for start, stop in self.model.trainable_spans()]
        buffer = np.concatenate([params[span] for span in spans] + [np.ones(1, params.dtype)])
        buffer *= self._local_samples
        self.comm.allreduce_sum(buffer, "params")
        offset = 0
        for span in spans:
            size = span.stop - span.start
            np.divide(buffer[offset:offset + size], buffer[-1], out=params[span])
            offset += size
        self._unsynced_steps = self._local_samples = 0

    def _check(self):
        run = self.run
        self._average_params()                         # checks see the averaged model (local SGD)
        loss_sum, correct, judged, samples = allreduce_scalars(self.comm, self._accumulators, "metrics")
        self._accumulators = [0.0, 0.0, 0.0, 0.0]
        metrics = {"loss": float(loss_sum / samples) if samples else float("nan")}
        if self.loss != "mse":
            metrics["accuracy"] = float(correct / judged) if judged else float("nan")
        if self.validation is not None:
            val = _evaluate(self.model, *self.validation, self.loss, 4096, self.comm)
            metrics.update({"val_" + key: value for key, value in val.items()})
        metrics["lr"] = self.optimizer.lr
        self._verify_agreement(metrics)
        run.metrics = metrics
        record = {"check": run.check, "epoch": run.epoch, "step": run.step, **metrics,
                  "time": run.elapsed + self._elapsed_now()}
        run.history.records.append(record)
        run.call("on_check")
        run.check += 1
        self._agree_on_stop()
        run.call("on_check_end")

    def _verify_agreement(self, metrics):
        """The monitors on every rank decide on these values, so they must be bit-identical
        everywhere: checked with one tiny allgather rather than trusted."""
        values = np.array([metrics[name] for name in sorted(metrics)], dtype=np.float64)
        seen = self.comm.allgather(values, "metric_check").view(np.uint64)
        if (seen != seen[0]).any():
            error = RuntimeError(f"the ranks computed different metrics at check {self.run.check} "
                                 f"({sorted(metrics)} as bits, one row per rank: {seen.tolist()}); "
                                 f"their decisions could differ, so training stops")
            error.collective = True                            # every rank saw the same table
            raise error

    def _agree_on_stop(self, *local_reasons):
        """Vote on stopping: one small allreduce; every rank gets the same answer.

        Each rank votes for its pending reasons (a callback's request, an interrupt, a
        non-finite loss); the highest-priority reason any rank voted for becomes run.stop_reason.
        """
        run = self.run
        votes = np.zeros(len(STOP_REASONS))
        for reason in (run.stop_requested,) + local_reasons:
            if reason is not None:
                votes[STOP_REASONS.index(reason)] = 1
        votes = self.comm.allreduce_sum(votes, "stop_vote")
        if not votes.any():                                # the usual step: nobody votes to stop
            return False
        run.stop_reason = next(reason for reason, count in zip(STOP_REASONS, votes) if count)
        return True

    def _begin(self, resume):
        self.run.call("on_train_begin")
        if resume:
            if self.checkpoint_path is None:
                raise ValueError("resume=True needs checkpoint=PATH to resume from")
            self.load_state(*ckpt.load_checkpoint(self.checkpoint_path))

    def fit(self, resume, stats_before):
        """Run the loop; ``stats_before`` is comm.stats.snapshot() from before start-up."""
        run = self.run
        self._started = time.perf_counter()
        check_same(self.comm, "the training configuration", self.fingerprint())
        collectively(self.comm, lambda: self._begin(resume))
        self.comm.broadcast(self.model.params, label="initial_state")    # rank 0's state for all
        for array in self.optimizer._buffers().values():
            self.comm.broadcast(array, label="initial_state")
        self.model._move_grads(self.comm.gradient_buffer(self.model.grads))
        self._stats_startup = self.comm.stats.since(stats_before)
        self._stats_loop = self.comm.stats.snapshot()
        with _catch_interrupts(run):
            while run.epoch < self.epochs and run.stop_reason is None:
                order = np.random.default_rng([self.seed, run.epoch]).permutation(len(self.X))
                while run.batch < self.batches_per_epoch and run.stop_reason is None:
                    start = run.batch * self.batch_size
                    if not self._train_step(order[start:start + self.batch_size]):
                        break
                    run.batch += 1
                    run.call("on_step_end")
                    if self.check_every_steps and run.step % self.check_every_steps == 0:
                        self._check()
                if run.batch < self.batches_per_epoch:                  # stopped mid-epoch
                    break
                if not self.check_every_steps:
                    self._check()
                run.call("on_epoch_end")
                run.epoch, run.batch = run.epoch + 1, 0
        run.stop_reason = run.stop_reason or "max_epochs"
        self._finish()
        return run.history

    def _finish(self):
        run, history = self.run, self.run.history
        self._average_params()                         # local SGD ends with one shared model
        history.stop_reason = run.stop_reason
        history.steps = run.step
        history.epochs_run = run.epoch + (run.batch > 0)                  # a partial epoch counts
        history.steps_per_epoch = self.batches_per_epoch
        run.call("on_stop")
        run.call("on_train_end")
        run.elapsed += self._elapsed_now()
        history.samples_per_second = run.samples_seen / run.elapsed if run.elapsed > 0 else None
        monitor = next((cb for cb in run.callbacks if hasattr(cb, "best_epoch")
                        and hasattr(cb, "stopped_epoch")), None)
        if monitor is not None and monitor.best_epoch is not None:
            history.best_check = monitor.best_epoch
            history.best_epoch = history.records[monitor.best_epoch]["epoch"]
        if run.stop_reason in MONITOR_REASONS and history.records:
            history.stopped_check = len(history.records) - 1
            history.stopped_epoch = history.records[-1]["epoch"]
        if run.restored_from is not None:
            history.restored_from = history.records[run.restored_from]["epoch"]
        history.comm_stats = self.comm_stats()

    def comm_stats(self):
        """Collectives of this fit: {"ranks", "steps", "startup", "training", "per_step"}.

        startup and training map a label (gradients, stop_vote, metrics, validation, params,
        initial_state, fingerprint, errors, checkpoint, replica_check) to {"op", "calls",
        "bytes"} with bytes the payload per rank; per_step is the training total / steps.
        With sync="grad" a step costs one "gradients" allreduce of the whole gradient buffer
        plus one "stop_vote" allreduce of len(STOP_REASONS) float64s.
        """
        training = self.comm.stats.since(self._stats_loop)
        steps = max(self.run.step, 1)
        return {"ranks": self.comm.size, "steps": self.run.step, "startup": self._stats_startup,
                "training": training,
                "per_step": {"calls": sum(entry["calls"] for entry in training.values()) / steps,
                             "bytes": sum(entry["bytes"] for entry in training.values()) / steps}}


def fit(model, loss, optimizer, X, y, *, epochs, batch_size, validation_data=None,
        validation_split=0.0, callbacks=(), seed=0, check_every_steps=None, comm="auto",
        sync="grad", sync_every=1, check_replicas=False, checkpoint=None, resume=False):
    """Train ``model`` in place on (X, y) and return its History.

    loss: "cross_entropy", "mse" or "binary_cross_entropy".  optimizer: built on ``model``.
    epochs, batch_size: the GLOBAL batch size, however many ranks share it.
    validation_split: the last fraction of (X, y), taken before shuffling (Keras's rule);
        or validation_data=(X_val, y_val).
    seed: the shuffle of epoch e is default_rng([seed, e]).permutation(n) — independent of the
        weight initialisation, identical on every rank.
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
        (by rank 0; every rank reads it to resume, on any number of ranks).
    resume: continue from ``checkpoint``; in the same environment the result is bit-for-bit
        that of a run never interrupted.

    Start-up is collective: a ValueError/TypeError on any rank (bad input, a checkpoint
    mismatch) or ranks disagreeing on the configuration raise the same error on every rank.
    The returned History's ``comm_stats`` counts the collectives and their bytes.
    """
    comm = resolve_comm(comm)
    stats_before = comm.stats.snapshot()
    trainer = collectively(comm, lambda: Trainer(
        model, loss, optimizer, X, y, epochs=epochs, batch_size=batch_size,
        validation_data=validation_data, validation_split=validation_split, callbacks=callbacks,
        seed=seed, check_every_steps=check_every_steps, comm=comm, sync=sync,
        sync_every=sync_every, check_replicas=check_replicas, checkpoint=checkpoint))
    return trainer.fit(resume, stats_before)
