"""Persistence of training: the checkpoint file, the training state in it, History on disk.

    save_checkpoint / load_checkpoint   the file format (below)
    training_state / load_training_state  everything a resume needs, to and from that format
    Checkpoint                          the callback that saves it at every check and at the end
    History                             the records of a run, with its JSON and CSV files

The file: ONE .npz, written atomically, loaded with allow_pickle=False.

Layout: every array under its own name, plus ``__meta__``, a 0-d unicode array holding a JSON
document (format version, counters, configuration, scalar state, environment) and a SHA-256
digest of every array and of the JSON itself, so a truncated, damaged or mismatched file is
refused with a clear error — and, being loaded without pickle, can never execute code. The
digest detects damage, not tampering: anyone can recompute it, so it is no signature. What
makes an edited file harmless is the value checks of load_training_state (shapes, finite
parameters and buffers, counts >= 0, the data's checksums), not the digest.

Writing goes to a temporary file in the same directory, is fsync'ed, then renamed over the
target: a crash leaves either the old checkpoint or the new one, never half of one.
"""
import csv
import hashlib
import json
import warnings

import numpy as np

from .files import atomic_write, read_npz
from .monitor import STOP_REASONS as MONITOR_REASONS
from .parallel import allreduce_scalars, rounding_environment
from .validation import check_layer_flags, check_non_negative_int, check_real, check_state_array

FORMAT = "minidl-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, tampered or mismatched."""


def _digest(arrays, meta_json):
    sha = hashlib.sha256(meta_json.encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        sha.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` (name -> ndarray) and ``meta`` (JSON-able dict) to ``path`` atomically."""
    arrays = {name: np.asarray(array) for name, array in arrays.items()}
    for name, array in arrays.items():
        if array.dtype.hasobject or name == META_KEY:
            raise ValueError(f"checkpoint array {name!r} cannot be stored (object dtype or reserved name)")
    body = json.dumps(meta, sort_keys=True)
    envelope = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "meta": body,
                           "sha256": _digest(arrays, body)})
    atomic_write(path, lambda handle: np.savez(handle, **arrays, **{META_KEY: np.array(envelope)}))


def load_checkpoint(path):
    """Return (arrays, meta) from a checkpoint written by save_checkpoint, or raise CheckpointError
    naming the file: missing, damaged (files.read_npz's checks), foreign or tampered with."""
    return checkpoint_contents(path, read_npz(path, "checkpoint", error=CheckpointError))


def checkpoint_contents(path, arrays):
    """(arrays, meta) of a checkpoint whose arrays were read from ``path``: its envelope and
    SHA-256 digest checked, the envelope removed from ``arrays``."""
    arrays = dict(arrays)
    if META_KEY not in arrays:
        raise CheckpointError(f"{path} is not a minidl checkpoint (no {META_KEY} entry)")
    try:
        envelope = json.loads(str(arrays.pop(META_KEY)))
        body = envelope["meta"]
        if envelope.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a minidl checkpoint (format {envelope.get('format')!r})")
        if envelope.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path} has checkpoint format version {envelope.get('version')}, "
                                  f"this minidl reads version {FORMAT_VERSION}")
        expected, meta = envelope["sha256"], json.loads(body)
        if not isinstance(meta, dict):
            raise TypeError(f"its meta is a JSON {type(meta).__name__}, not an object")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path} has a malformed header: {error}") from None
    if _digest(arrays, body) != expected:
        raise CheckpointError(f"{path} failed its integrity check (SHA-256 mismatch): the file was "
                              f"modified or damaged after it was written")
    return arrays, meta


def split_state(prefix, state):
    """Split a state dict into (arrays named prefix/key, JSON-able scalars)."""
    arrays, scalars = {}, {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}/{key}"] = value
        else:
            scalars[key] = value
    return arrays, scalars


def merge_state(prefix, scalars, arrays):
    """Inverse of split_state: the scalars plus every array stored under prefix/."""
    state = dict(scalars)
    head = prefix + "/"
    state.update({name[len(head):]: array for name, array in arrays.items() if name.startswith(head)})
    return state


# ---------------------------------------------------------------------- the training state
def training_state(trainer):
    """(arrays, meta) describing everything a resume needs. Collective: every rank calls it.

    The loss/accuracy sums of the current check are reduced over ranks, so rank 0's file
    holds the global sums and can be resumed on any number of ranks.
    """
    run = trainer.run
    sums = allreduce_scalars(trainer.comm, trainer.sums, "checkpoint")
    arrays = {"params": trainer.model.params}
    optimizer_arrays, optimizer_scalars = split_state("optimizer", trainer.optimizer.state_dict())
    arrays.update(optimizer_arrays)
    callback_states = []
    for index, callback in enumerate(run.callbacks):
        if callable(getattr(callback, "state_dict", None)):
            callback_arrays, callback_scalars = split_state(f"callback{index}", callback.state_dict())
            arrays.update(callback_arrays)
            callback_states.append({"index": index, "type": type(callback).__name__,
                                    "state": callback_scalars})
    meta = {"model": trainer.model.config(),
            "trainable": trainer.model.trainable,
            "optimizer": optimizer_scalars, "callbacks": callback_states,
            "counters": {"epoch": run.epoch, "batch": run.batch, "step": run.step, "check": run.check},
            "accumulators": sums.tolist(), "samples_seen": run.samples_seen,
            "history": run.history.to_dict(), "fit": trainer.config, "epochs": trainer.epochs,
            "elapsed": run.elapsed + trainer.elapsed_now(), "stop_reason": run.stop_reason,
            "environment": rounding_environment(trainer.comm), "data": trainer.data_checksums}
    return arrays, meta


STATE_KEYS = ("model", "fit", "environment", "trainable", "optimizer", "callbacks", "counters",
              "accumulators", "samples_seen", "history", "elapsed", "stop_reason")


def load_training_state(trainer, arrays, meta):
    """Continue ``trainer`` from a checkpoint's state; a file that does not hold a complete
    state of this run raises CheckpointError naming what is missing or mismatched, and then
    the model, the optimizer, minidl's callbacks and the counters are as they were.

    "data" (the data's CRC-32 checksums) is absent from checkpoints written before it was
    added; those resume without the check (the format version did not change: an old file
    stays readable)."""
    missing = [key for key in STATE_KEYS if key not in meta] + ([] if "params" in arrays else ["params"])
    if missing:
        raise CheckpointError(f"checkpoint lacks {missing}: not a complete minidl training state")
    try:
        assign = _check_training_state(trainer, arrays, meta)
    except CheckpointError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as error:      # wrong types in the JSON
        raise CheckpointError(f"checkpoint state does not fit this run: {error}") from None
    assign()


def _check_training_state(trainer, arrays, meta):
    """Validate a checkpoint's state against this run and return the function that assigns
    it. Nothing changes here, except the states of callbacks that have only their own
    load_state_dict (yours, maybe): those are loaded here, after minidl's parts were checked."""
    from .callbacks import STOP_REASONS            # here: minidl/callbacks.py imports this module

    run, model = trainer.run, trainer.model
    mine, theirs = model.config(), meta["model"]
    if (mine["sizes"], mine["activation"], mine["dtype"]) != (theirs["sizes"], theirs["activation"], theirs["dtype"]):
        raise CheckpointError(f"checkpoint is for model {theirs['sizes']} {theirs['activation']} "
                              f"{theirs['dtype']}, not {mine['sizes']} {mine['activation']} {mine['dtype']}")
    for key, value in trainer.config.items():
        if meta["fit"].get(key) != value:
            raise CheckpointError(f"checkpoint was made with {key}={meta['fit'].get(key)!r}, this run has "
                                  f"{key}={value!r}: resume with the same settings")
    saved = meta.get("data")                                    # None in older checkpoints
    for part, arrays_named in (("training", "X, y"), ("validation", "validation data")):
        if saved is not None and (not isinstance(saved, dict) or saved.get(part) != trainer.data_checksums[part]):
            raise CheckpointError(f"checkpoint was made with other {part} data ({arrays_named}: the "
                                  f"CRC-32 checksums differ, though the sizes agree): resume with the "
                                  f"data the run started with, or start a new run without resume")
    trainable = meta["trainable"]
    try:
        if not isinstance(trainable, list):
            raise ValueError(f"checkpoint 'trainable' must be a list, got {trainable!r}")
        check_layer_flags("checkpoint 'trainable'", trainable, len(model.trainable))
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    params = check_state_array("checkpoint params", arrays["params"], model.params.shape, model.dtype)
    # (component, its values checked by _load_check): _load_assign, the second half of its
    # load_state_dict, assigns them once everything is checked
    checked = [(trainer.optimizer, trainer.optimizer._load_check(merge_state("optimizer", meta["optimizer"], arrays)))]
    own_loads = []                                               # callbacks without _load_check
    for entry in meta["callbacks"]:
        callback = run.callbacks[entry["index"]] if entry["index"] < len(run.callbacks) else None
        if type(callback).__name__ != entry["type"]:
            raise CheckpointError(f"checkpoint holds state for callback {entry['type']} at position "
                                  f"{entry['index']}; pass the same callbacks to resume")
        state = merge_state(f"callback{entry['index']}", entry["state"], arrays)
        if hasattr(callback, "_load_check"):
            checked.append((callback, callback._load_check(state)))
        else:
            own_loads.append((callback, state))
    counters = {key: check_non_negative_int(f"checkpoint counters {key!r}", meta["counters"][key])
                for key in ("epoch", "batch", "step", "check")}
    if counters["batch"] > trainer.batches_per_epoch:
        raise CheckpointError(f"checkpoint counters 'batch'={counters['batch']} exceeds the "
                              f"{trainer.batches_per_epoch} batches of an epoch")
    accumulators = check_state_array("checkpoint 'accumulators'", meta["accumulators"], (4,), np.float64)
    samples_seen = check_non_negative_int("checkpoint 'samples_seen'", meta["samples_seen"])
    elapsed = check_real("checkpoint 'elapsed'", meta["elapsed"], minimum=0.0)
    if meta["stop_reason"] is not None and meta["stop_reason"] not in STOP_REASONS:
        raise CheckpointError(f"checkpoint 'stop_reason' must be None or one of {STOP_REASONS}, "
                              f"got {meta['stop_reason']!r}")
    history = History.from_dict(meta["history"])
    if meta["environment"] != rounding_environment(trainer.comm) and trainer.comm.rank == 0:   # said once
        warnings.warn(f"resuming in a different environment ({meta['environment']} -> "
                      f"{rounding_environment(trainer.comm)}): results may differ by rounding",
                      RuntimeWarning, stacklevel=4)
    for callback, state in own_loads:
        callback.load_state_dict(state)

    def assign():
        model.trainable = trainable
        model.params[...] = params
        for component, values in checked:                        # the optimizer, then callbacks in order
            component._load_assign(values)
        run.epoch, run.batch, run.step, run.check = (counters[key] for key in ("epoch", "batch", "step", "check"))
        if run.batch >= trainer.batches_per_epoch:               # saved at an epoch's end
            run.epoch, run.batch = run.epoch + 1, 0
        # the saved sums are global: rank 0 carries them on, the other ranks start from zero
        trainer.sums = accumulators.tolist() if trainer.comm.rank == 0 else [0.0] * 4
        run.samples_seen, run.history, run.elapsed = samples_seen, history, elapsed
        # a run its monitor or a callback stopped is over; one that reached max_epochs or was
        # interrupted continues (with more epochs, or from where it was interrupted)
        finished = meta["stop_reason"] in MONITOR_REASONS + ("external",)
        run.stop_reason = meta["stop_reason"] if finished else None
    return assign


class Checkpoint:
    """Callback: save everything a resume needs to ``path`` at every check and when training ends.

    Only rank 0 writes (atomically); all ranks then meet at a barrier. The state saved when
    training ends is the LIVE state, before any best-weights restore, so a resume continues
    the real trajectory.
    """

    def __init__(self, path):
        self.path = str(path)

    def save(self, run):
        arrays, meta = run.training_state()                     # collective: every rank calls it
        if run.comm.rank == 0:
            save_checkpoint(self.path, arrays, meta)
        run.comm.barrier("checkpoint")

    def on_check_end(self, run):
        self.save(run)

    def on_stop(self, run):
        self.save(run)


# ---------------------------------------------------------------------- History
class History:
    """One record per check: check, epoch, step, loss, [accuracy], [val_loss, val_accuracy], lr, time.

    ``history["val_loss"]`` lists a metric over checks (like Keras's history.history).
    The end of training is described by stop_reason, best_epoch and stopped_epoch (0-based
    epoch indices; None when no monitor decided), best_check and stopped_check (the same
    moments as indices into ``records``), restored_from (an epoch index), epochs_run and steps.
    comm_stats: the collectives of the run (see minidl.loop.Trainer.comm_stats).
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
        atomic_write(path, lambda handle: handle.write(text.encode()))

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
        atomic_write(path, write)


def read_history_csv(path):
    """Records from History.to_csv, values as floats (ints where integral)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: (float(value) if value != "" else None) for key, value in row.items()} for row in rows]
