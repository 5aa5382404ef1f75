"""Running on many ranks: what the training loop does so that N ranks act as one.

The loop (minidl/loop.py) never asks "am I distributed?". It hands its communicator to the
pieces below, and with one process (SerialComm) every collective is the identity:

    GradientAveraging, LocalSGD   the two sync strategies: which rows a rank takes, what
                                  happens to its gradient (and the step's stop vote), after
                                  a step, before a check
    agree_on_stop                 the stop vote: every rank takes the same stop decision
    check_agreement               the metrics every monitor decides on are bit-identical
    fingerprint, check_same       every rank runs the same configuration on the same data
    collectively, CollectiveError start-up errors raised on every rank alike, so none waits
    on_rank_zero, from_rank_zero_if_missing   files only rank 0 sees (no shared filesystem)
    rounding_environment          what, besides the data, decides the rounding of a run
    ReplicaCheck, FailureInjection callbacks: a debugging aid and a testing aid

Every function here is collective: all ranks call it, in the same order.
"""
import hashlib

import numpy as np

from .comm import SerialComm
from .validation import check_non_negative_int, check_positive_int

SYNC_MODES = ("grad", "params")


# ---------------------------------------------------------------------- errors on every rank
class CollectiveError(Exception):
    """Marks an error that every rank raised together: report it once, nobody waits.

    Such an error is also an instance of its ordinary type (``collective_error(ValueError,
    ...)`` is a ValueError), so callers catch it as before; the CLI prints it on rank 0 only
    and the MPI abort hook lets the ranks exit instead of aborting the job.
    """


_COLLECTIVE_TYPES = {}            # ordinary type -> its collective subtype, made once


def collective_error(kind, message):
    """An exception of type ``kind`` (ValueError, RuntimeError, ...) that is also a
    CollectiveError: ``Collective<kind>``, a subclass of both."""
    if kind not in _COLLECTIVE_TYPES:
        _COLLECTIVE_TYPES[kind] = type(f"Collective{kind.__name__}", (kind, CollectiveError),
                                       {"__module__": __name__})
    return _COLLECTIVE_TYPES[kind](message)


def collectively(comm, action):
    """Run ``action()`` on every rank; a ValueError/TypeError on any rank is raised on ALL.

    The error raised is the one of the lowest failing rank, with the same type and message
    on every rank (the message names that rank when not all ranks failed alike), and it is
    a CollectiveError: every rank raised it, nobody waits. With one process (SerialComm)
    there is nobody to tell: ``action()`` runs as it is and its errors pass unchanged.
    """
    if isinstance(comm, SerialComm):
        return action()
    try:
        result, mine = action(), None
    except CollectiveError:
        raise                                      # every rank raised it already
    except (ValueError, TypeError) as error:
        result, mine = None, error
    reports = comm.allgather_object(None if mine is None else (type(mine), str(mine)), "errors")
    failed = [rank for rank, report in enumerate(reports) if report is not None]
    if not failed:
        return result
    kind, message = reports[failed[0]]
    if len(failed) < comm.size or any(reports[rank] != reports[failed[0]] for rank in failed):
        message = f"{message} (on rank {failed[0]} of {comm.size})"
    raise collective_error(kind, message) from mine


def on_rank_zero(comm, read, label):
    """``read()`` on rank 0 alone, its result broadcast to every rank: for what only rank 0
    needs to see (a checkpoint, --init-from weights, the run directory; no shared filesystem).
    Its ValueError/TypeError is raised on every rank."""
    return comm.broadcast_object(collectively(comm, lambda: read() if comm.rank == 0 else None), 0, label)


def from_rank_zero_if_missing(comm, load, label):
    """``load()`` on every rank (e.g. a dataset from local files); a rank where it fails with
    an OSError or ValueError gets rank 0's result instead, so only rank 0 must see the files.
    Rank 0's failure is raised on every rank."""
    try:
        mine, failure = load(), None
    except (OSError, ValueError) as error:
        mine, failure = None, error
    missing = comm.allgather_object(failure is not None, label)
    if not any(missing):
        return mine

    def rank_zero_has_it():
        if comm.rank == 0 and failure is not None:
            raise failure if isinstance(failure, ValueError) else ValueError(str(failure))
    collectively(comm, rank_zero_has_it)
    theirs = comm.broadcast_object(mine if comm.rank == 0 else None, 0, label)
    return theirs if failure is not None else mine


def check_same(comm, what, fingerprint):
    """Raise the same ValueError on every rank unless all ranks pass an equal ``fingerprint``.

    fingerprint: a small dict of JSON-like values; the message lists the keys that differ.
    """
    prints = comm.allgather_object(fingerprint, "fingerprint")
    differing = sorted({key for other in prints for key in set(other) | set(prints[0])
                        if other.get(key) != prints[0].get(key)})
    if differing:
        details = "; ".join(f"{key}: " + ", ".join(f"rank {rank} has {other.get(key)!r}"
                                                     for rank, other in enumerate(prints))
                            for key in differing)
        raise collective_error(ValueError, f"the ranks disagree on {what} ({details}); every rank "
                                           f"must run the same program with the same arguments and data")


# ---------------------------------------------------------------------- who takes which rows
def shard(rows, rank, size):
    """This rank's contiguous share of ``rows``: sizes differ by at most one, and may be 0."""
    start, stop = len(rows) * rank // size, len(rows) * (rank + 1) // size
    return rows[start:stop]


def allreduce_scalars(comm, values, label="scalars"):
    """Sum a short list of floats over ranks, in float64; returns a numpy array."""
    return comm.allreduce_sum(np.array(values, dtype=np.float64), label)


# ---------------------------------------------------------------------- sync strategies
class GradientAveraging:
    """sync="grad": one allreduce per step of the gradient, with the stop vote riding at its
    end, so N ranks follow the 1-process trajectory of the same global batch up to rounding
    (docs/data_parallel.md).

    Each rank divides its loss by the GLOBAL batch size; the ranks' gradients then add up to
    the gradient of the global-batch mean, and every rank applies that same update, also a
    rank whose share of the batch was empty.
    """

    in_sync = True                        # every rank always holds the same parameters

    def __init__(self, comm, model, stop_reasons):
        self.comm, self.model, self.stop_reasons = comm, model, stop_reasons
        self.fused = self.votes = None

    def start(self):
        """Make the gradient buffer one element per stop reason longer, in the place where the
        communicator sums fastest (Communicator.gradient_buffer): model.grads is its head and
        the vote its tail, so that one collective per step carries both. Collective."""
        grads, size = self.model.grads, self.model.num_parameters
        fused = grads.base                                    # kept from an earlier fit?
        if not (isinstance(fused, np.ndarray) and fused.shape == (size + len(self.stop_reasons),)
                and fused.dtype == grads.dtype and fused.ctypes.data == grads.ctypes.data):
            fused = np.concatenate([grads, np.zeros(len(self.stop_reasons), grads.dtype)])
        self.fused = self.comm.gradient_buffer(fused)
        self.model.use_gradient_buffer(self.fused[:size])
        self.votes = self.fused[size:]

    def share(self, global_rows):
        """(this rank's rows, the divisor of its loss)."""
        return shard(global_rows, self.comm.rank, self.comm.size), len(global_rows)

    def reduce(self, rows, votes):
        """Sum the gradients and the stop votes over ranks in one allreduce.

        Returns (the agreed stop reason or None, whether this rank takes the optimizer step).
        """
        self.votes[...] = ballot(self.stop_reasons, votes)
        self.comm.allreduce_sum(self.fused, "gradients")    # -> the global-batch gradient
        return verdict(self.stop_reasons, self.votes), True

    def after_step(self, step, rows):
        """Nothing: the ranks are still in sync."""

    def synchronize(self):
        """Nothing to do before a check or at the end."""


class LocalSGD:
    """sync="params": each rank steps alone on the mean loss of its own share (its own
    optimizer state), and the ranks average their parameters, weighted by the samples each
    trained on, every ``every`` steps, before every check and at the end.
    """

    def __init__(self, comm, model, stop_reasons, every):
        self.comm, self.model, self.stop_reasons, self.every = comm, model, stop_reasons, every
        self.unsynced_steps = self.local_samples = 0          # since the last average

    @property
    def in_sync(self):
        return self.unsynced_steps == 0

    def start(self):
        """Nothing: the gradients stay on their rank."""

    def share(self, global_rows):
        rows = shard(global_rows, self.comm.rank, self.comm.size)
        return rows, max(len(rows), 1)

    def reduce(self, rows, votes):
        """No gradient to sum, only the stop vote; a rank without rows takes no step."""
        return agree_on_stop(self.comm, self.stop_reasons, votes), len(rows) > 0

    def after_step(self, step, rows):
        self.unsynced_steps += 1
        self.local_samples += len(rows)
        if step % self.every == 0:
            self.synchronize()

    def synchronize(self):
        """p <- sum_r n_r p_r / sum_r n_r, n_r = samples rank r trained on since the last
        average: one allreduce of [n_r p_r (trainable part), n_r]. A no-op when in sync."""
        if self.in_sync:
            return
        params = self.model.params
        spans = [slice(start, stop) for start, stop in self.model.trainable_spans()]
        buffer = np.concatenate([params[span] for span in spans] + [np.ones(1, params.dtype)])
        buffer *= self.local_samples
        self.comm.allreduce_sum(buffer, "params")
        offset = 0
        for span in spans:
            size = span.stop - span.start
            np.divide(buffer[offset:offset + size], buffer[-1], out=params[span])
            offset += size
        self.unsynced_steps = self.local_samples = 0


def sync_strategy(sync, sync_every, comm, model, stop_reasons):
    """The strategy object for fit's ``sync`` and ``sync_every`` arguments; ``stop_reasons``
    are the reasons of the stop vote, in priority order."""
    if sync not in SYNC_MODES:
        raise ValueError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
    every = check_positive_int("sync_every", sync_every)
    if sync == "grad":
        if every != 1:
            raise ValueError(f"sync_every={sync_every} has no effect with sync='grad' (gradients "
                             f"are averaged at every step); use sync='params' for local SGD")
        return GradientAveraging(comm, model, stop_reasons)
    return LocalSGD(comm, model, stop_reasons, every)


# ---------------------------------------------------------------------- agreeing
def ballot(stop_reasons, votes):
    """This rank's ballot: 1 for each of ``stop_reasons`` it votes for (None votes are none)."""
    ballot = np.zeros(len(stop_reasons))
    for reason in votes:
        if reason is not None:
            ballot[stop_reasons.index(reason)] = 1
    return ballot


def verdict(stop_reasons, ballots):
    """The first of ``stop_reasons`` (they are in priority order) that the summed ``ballots``
    give a vote, or None: the usual step, where nobody votes to stop."""
    if not ballots.any():
        return None
    return next(reason for reason, count in zip(stop_reasons, ballots) if count)


def agree_on_stop(comm, stop_reasons, votes):
    """The stop vote on its own: one small allreduce; returns the agreed reason, or None.

    ``votes`` are this rank's pending reasons: a callback's request, an interrupt, a
    non-finite loss. Every rank gets the same answer. (With sync="grad", a step's vote
    travels in the gradient allreduce instead: GradientAveraging.reduce.)
    """
    return verdict(stop_reasons, comm.allreduce_sum(ballot(stop_reasons, votes), "stop_vote"))


def check_agreement(comm, metrics, check):
    """Raise on every rank unless every rank computed bit-identical ``metrics``.

    The monitors on every rank decide on these values, so they are checked with one tiny
    allgather rather than trusted.
    """
    values = np.array([metrics[name] for name in sorted(metrics)], dtype=np.float64)
    seen = comm.allgather(values, "metric_check").view(np.uint64)
    if (seen != seen[0]).any():
        raise collective_error(RuntimeError, f"the ranks computed different metrics at check {check} "
                                             f"({sorted(metrics)} as bits, one row per rank: "
                                             f"{seen.tolist()}); their decisions could differ, so "
                                             f"training stops")


def fingerprint(fit_config, model, optimizer, callbacks, data_checksums):
    """What all ranks must agree on before training; compared by ``check_same``.

    Callbacks enter by type and, when they have a ``settings()`` method (EarlyStopping,
    ReduceLROnPlateau, FailureInjection), by their settings. The model's init seed is left
    out on purpose: every rank starts from rank 0's broadcast weights. The data enter as
    their CRC-32 checksums (``Trainer.data_checksums``, the ones checkpoints keep).
    """
    architecture = model.config()
    del architecture["seed"]
    return {**fit_config, "model": architecture, "num_parameters": model.num_parameters,
            "trainable": model.trainable,
            "optimizer": [type(optimizer).__name__, optimizer.hyperparameters()],
            "callbacks": [type(callback).__name__ for callback in callbacks],
            **{f"callbacks[{index}].{name}": value for index, callback in enumerate(callbacks)
               if hasattr(callback, "settings") for name, value in callback.settings().items()},
            "data_crc32": data_checksums}


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


# ---------------------------------------------------------------------- callbacks
class ReplicaCheck:
    """Callback, a debugging aid (fit's ``check_replicas=True``): after every step at which
    the ranks should hold identical parameters, allgather a hash of them and raise
    RuntimeError on every rank if any differs (with sync="params": after each average).
    """

    def on_step_end(self, run):
        if not run.sync.in_sync:
            return
        digest = np.frombuffer(hashlib.blake2b(run.model.params, digest_size=8).digest(), np.uint64)
        digests = run.comm.allgather(digest.copy(), "replica_check")[:, 0]
        if (digests != digests[0]).any():
            groups = {}
            for rank, value in enumerate(digests):
                groups.setdefault(int(value), []).append(rank)
            raise collective_error(RuntimeError, f"replicas diverged after step {run.step}: the ranks "
                                                 f"hold {len(groups)} different parameter vectors "
                                                 f"(rank groups {sorted(groups.values())})")


class FailureInjection:
    """Callback, a testing aid: raise RuntimeError on ``rank`` once optimizer step ``step``
    (counted from 1) has finished — to prove that a failing rank ends the whole job.
    The CLI exposes it as ``--fail-on-rank R --fail-at-step S``.
    """

    def __init__(self, rank, step):
        self.rank = check_non_negative_int("rank", rank)
        self.step = check_positive_int("step", step)

    def settings(self):
        return {"rank": self.rank, "step": self.step}

    def on_train_begin(self, run):
        if self.rank >= run.comm.size:
            raise ValueError(f"FailureInjection: rank {self.rank} does not exist in a run of "
                             f"{run.comm.size} rank(s)")

    def on_step_end(self, run):
        if run.comm.rank == self.rank and run.step == self.step:
            raise RuntimeError(f"injected failure on rank {self.rank} at step {self.step} "
                               f"(FailureInjection, a testing aid)")
