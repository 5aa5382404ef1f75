"""Communicators: what the one training loop calls to work across ranks.

``fit()`` never asks "am I distributed?": it calls these methods, and ``SerialComm`` makes
them no-ops. Every method is collective: all ranks call it, in the same order, with arrays
of the same shape and dtype. ``label`` names the purpose of a call (``"gradients"``,
``"stop_vote"``, ...) for the communication accounting in ``comm.stats``.

    rank, size, local_size        this rank, the number of ranks, the ranks on this node
    allreduce_sum(array, label)   in place: array <- sum over ranks; returns array
    broadcast(array, root, label) in place: array <- root's array; returns array
    allgather(array, label)       a new (size, *array.shape) array of every rank's array
    allgather_object(obj, label)  [every rank's obj]: small control messages only (pickled)
    barrier(label)
    gradient_buffer(grads)        where the model's flat gradient should live for the fastest
                                  allreduce_sum (MPIComm: a shared-memory window on one node)

Arrays must be C-contiguous NumPy arrays: MPI moves their memory as it is, without copies.
Three implementations:

    SerialComm   one process; every collective is the identity and nothing is counted
    SimComm      N virtual ranks in threads of one process (``run_simulated``), for tests:
                 collectives time out, a call sequence that differs across ranks raises,
                 and the first exception of any rank aborts the others
    MPIComm      mpi4py, buffer calls only: Allreduce(IN_PLACE), Bcast, Allgather; with every
                 rank on one node, the gradient allreduce reads the other ranks' gradients
                 in a shared-memory window instead (minidl.shared_memory)
"""
import pickle
import threading

import numpy as np

from . import mpi, shared_memory


class CommStats:
    """Collectives and bytes by label: {label: {"op", "calls", "bytes"}}.

    ``bytes`` is the payload each rank contributes (the buffer size, or the pickled size of
    a control message), not the traffic on the wire: a ring allreduce of P bytes sends and
    receives about 2 P (N-1)/N bytes per rank.
    """

    def __init__(self):
        self.by_label = {}

    def record(self, op, label, nbytes):
        entry = self.by_label.setdefault(label, {"op": op, "calls": 0, "bytes": 0})
        entry["calls"] += 1
        entry["bytes"] += int(nbytes)

    def snapshot(self):
        return {label: dict(entry) for label, entry in self.by_label.items()}

    def since(self, snapshot):
        """What was recorded after ``snapshot()`` returned ``snapshot``."""
        changes = {}
        for label, entry in self.by_label.items():
            before = snapshot.get(label, {"calls": 0, "bytes": 0})
            if entry["calls"] > before["calls"]:
                changes[label] = {"op": entry["op"], "calls": entry["calls"] - before["calls"],
                                  "bytes": entry["bytes"] - before["bytes"]}
        return changes


def _check_buffer(array):
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise TypeError(f"collectives need a C-contiguous NumPy array, got {type(array).__name__} "
                        f"{getattr(array, 'shape', '')}")
    return array


class Communicator:
    """The interface; subclasses implement the underscored methods for a size > 1 world.

    The public methods check buffers and count every call in ``self.stats``.
    """

    rank = 0
    size = 1
    local_size = 1

    def __init__(self):
        self.stats = CommStats()

    def allreduce_sum(self, array, label="allreduce"):
        self.stats.record("allreduce", label, _check_buffer(array).nbytes)
        self._allreduce_sum(array, label)
        return array

    def broadcast(self, array, root=0, label="broadcast"):
        self.stats.record("broadcast", label, _check_buffer(array).nbytes)
        self._broadcast(array, root, label)
        return array

    def allgather(self, array, label="allgather"):
        self.stats.record("allgather", label, _check_buffer(array).nbytes)
        return self._allgather(array, label)

    def allgather_object(self, obj, label="allgather_object"):
        self.stats.record("allgather_object", label, len(pickle.dumps(obj)))
        return self._allgather_object(obj, label)

    def barrier(self, label="barrier"):
        self.stats.record("barrier", label, 0)
        self._barrier(label)

    def gradient_buffer(self, grads):
        """Where a model should keep its flat gradient for the fastest allreduce_sum: an array
        with the contents of ``grads`` (``grads`` itself unless a subclass has a better place).
        Collective; fit moves model.grads there once (MLP._move_grads)."""
        return grads


class SerialComm(Communicator):
    """One process: every collective is the identity, and none is counted."""

    def allreduce_sum(self, array, label="allreduce"):
        return array

    def broadcast(self, array, root=0, label="broadcast"):
        return array

    def allgather(self, array, label="allgather"):
        return _check_buffer(array)[np.newaxis].copy()

    def allgather_object(self, obj, label="allgather_object"):
        return [obj]

    def barrier(self, label="barrier"):
        pass


# ---------------------------------------------------------------------- simulated ranks
class CollectiveTimeout(RuntimeError):
    """A simulated collective waited longer than the world's timeout: some rank never came."""


class CollectiveMismatch(RuntimeError):
    """Simulated ranks called different collectives (operation, label, shape or dtype)."""


class RankAborted(RuntimeError):
    """This virtual rank was stopped because another one raised."""


class SimWorld:
    """The shared state of N virtual ranks: one slot per rank and two barriers per call.

    A collective: every rank deposits (descriptor, copy of its data) in its slot and waits;
    the last to arrive combines the slots once (the barrier's action), so all ranks read
    the very same result (bitwise replicas); a second barrier keeps the result until every
    rank has copied it. Sums are taken in rank order, so they are deterministic.
    """

    def __init__(self, size, timeout):
        self.size, self.timeout = size, timeout
        self.slots = [None] * size
        self.failure = None                       # (rank, exception) of the first rank to raise
        self.finished = set()                     # ranks whose function has returned
        self._pending = 0                         # ranks waiting in the current collective
        self._lock = threading.Lock()
        self._result = self._error = None
        self._arrive = threading.Barrier(size, action=self._combine, timeout=timeout)
        self._leave = threading.Barrier(size, timeout=timeout)

    def _combine(self):
        self._pending = 0
        descriptors = [slot[0] for slot in self.slots]
        if any(descriptor != descriptors[0] for descriptor in descriptors):
            calls = "; ".join(f"rank {rank}: {descriptor}" for rank, descriptor in enumerate(descriptors))
            self._result, self._error = None, f"ranks called different collectives: {calls}"
            return
        op, payloads = descriptors[0][0], [slot[1] for slot in self.slots]
        self._error = None
        if op == "allreduce":
            total = payloads[0].copy()
            for payload in payloads[1:]:
                total += payload
            self._result = total
        elif op == "broadcast":
            self._result = payloads[descriptors[0][-1]]
        elif op == "allgather":
            self._result = np.stack(payloads)
        elif op == "allgather_object":
            self._result = [pickle.loads(payload) for payload in payloads]
        else:
            self._result = None

    def _wait(self, barrier, rank, descriptor):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            if self.failure is not None:
                failed, error = self.failure
                raise RankAborted(f"virtual rank {rank} stopped in {descriptor}: rank {failed} "
                                  f"raised {type(error).__name__}: {error}") from None
            waiting = [r for r, slot in enumerate(self.slots) if slot is not None]
            raise CollectiveTimeout(f"virtual rank {rank}: collective {descriptor} timed out after "
                                    f"{self.timeout} s; ranks arrived: {waiting} of {self.size}") from None

    def exchange(self, rank, descriptor, payload):
        """Deposit this rank's part of a collective, wait for all, return the combined result."""
        with self._lock:
            if self.finished:
                error = CollectiveMismatch(f"virtual rank {rank} called collective {descriptor}, but "
                                           f"rank(s) {sorted(self.finished)} already returned")
                self._abort(rank, error)
                raise error
            self.slots[rank] = (descriptor, payload)
            self._pending += 1
        self._wait(self._arrive, rank, descriptor)
        result, error = self._result, self._error
        if error is not None:
            raise CollectiveMismatch(error)
        if isinstance(result, np.ndarray):
            result = result.copy()
        self.slots[rank] = None
        self._wait(self._leave, rank, descriptor)
        return result

    def _abort(self, rank, error):
        if self.failure is None:
            self.failure = (rank, error)
        self._arrive.abort()
        self._leave.abort()

    def abort(self, rank, error):
        """Record the first failure and release every rank waiting in a collective."""
        with self._lock:
            self._abort(rank, error)

    def finish(self, rank):
        """Rank returned from its function: anyone waiting in a collective waits in vain."""
        with self._lock:
            self.finished.add(rank)
            if self._pending:
                waiting = [r for r, slot in enumerate(self.slots) if slot is not None]
                self._abort(rank, CollectiveMismatch(
                    f"virtual rank {rank} returned while ranks {waiting} wait in a collective"))


class SimComm(Communicator):
    """Virtual rank ``rank`` of a SimWorld; create them with ``run_simulated``."""

    def __init__(self, world, rank):
        super().__init__()
        self.world, self.rank, self.size = world, rank, world.size
        self.local_size = world.size

    def _array_call(self, op, label, array, *extra):
        """Exchange a copy of ``array``; the descriptor must match on every rank."""
        descriptor = (op, label, array.shape, array.dtype.str) + extra
        return self.world.exchange(self.rank, descriptor, array.copy())

    def _allreduce_sum(self, array, label):
        array[...] = self._array_call("allreduce", label, array)

    def _broadcast(self, array, root, label):
        array[...] = self._array_call("broadcast", label, array, root)

    def _allgather(self, array, label):
        return self._array_call("allgather", label, array)

    def _allgather_object(self, obj, label):
        return self.world.exchange(self.rank, ("allgather_object", label), pickle.dumps(obj))

    def _barrier(self, label):
        self.world.exchange(self.rank, ("barrier", label), None)


def run_simulated(size, fn, *, timeout=20.0):
    """Run ``fn(comm)`` on ``size`` virtual ranks (threads); return [rank 0's result, ...].

    A collective that not every rank reaches within ``timeout`` seconds raises
    CollectiveTimeout; ranks calling different collectives raise CollectiveMismatch. The
    first exception raised on any rank stops the others (RankAborted) and is re-raised here.
    NumPy releases the GIL in its kernels, so the ranks really do run concurrently.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive number of ranks, got {size!r}")
    world = SimWorld(size, timeout)
    results = [None] * size

    def main(rank):
        try:
            results[rank] = fn(SimComm(world, rank))
        except BaseException as error:                     # re-raised below, in the caller
            world.abort(rank, error)
        else:
            world.finish(rank)

    threads = [threading.Thread(target=main, args=(rank,), name=f"virtual-rank-{rank}", daemon=True)
               for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if world.failure is not None:
        raise world.failure[1]
    return results


# ---------------------------------------------------------------------- MPI
class MPIComm(Communicator):
    """mpi4py's buffer (uppercase) calls on contiguous arrays; pickles only control messages.

    Creating one installs an excepthook that aborts the whole job when any rank dies with an
    uncaught exception (see minidl.mpi.install_abort_hook), so a failure never hangs.
    mpi_comm: an mpi4py communicator (default COMM_WORLD).
    """

    def __init__(self, mpi_comm=None):
        super().__init__()
        self.MPI = mpi.import_mpi()
        self.mpi_comm = self.MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank, self.size = self.mpi_comm.Get_rank(), self.mpi_comm.Get_size()
        node = self.mpi_comm.Split_type(self.MPI.COMM_TYPE_SHARED)       # the ranks on this node
        self.local_size = node.Get_size()
        node.Free()
        self._shared = []                 # SharedBuffers handed out by gradient_buffer()
        mpi.install_abort_hook(self.MPI.COMM_WORLD, self.rank, self.size)

    def gradient_buffer(self, grads):
        """With every rank on one node: ``grads`` copied into this rank's part of a shared-memory
        window, which allreduce_sum then reduces by reading the other ranks' parts directly
        (minidl.shared_memory). Otherwise, or with MINIDL_SHARED_MEMORY=0, ``grads`` itself."""
        if any(shared.local is grads for shared in self._shared):
            return grads                                               # moved there already
        use = self.size > 1 and self.local_size == self.size and shared_memory.enabled()
        if not all(self.allgather_object(use, "shared_memory")):       # every rank agrees
            return grads
        shared = shared_memory.SharedBuffer(self.MPI, self.mpi_comm, grads.size, grads.dtype)
        shared.local[...] = grads
        self._shared.append(shared)
        return shared.local

    def _allreduce_sum(self, array, label):
        shared = next((shared for shared in self._shared if shared.local is array), None)
        if shared is not None:
            shared.allreduce_sum()
        else:
            self.mpi_comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def _broadcast(self, array, root, label):
        self.mpi_comm.Bcast(array, root=root)

    def _allgather(self, array, label):
        gathered = np.empty((self.size,) + array.shape, array.dtype)
        self.mpi_comm.Allgather(array, gathered)
        return gathered

    def _allgather_object(self, obj, label):
        return self.mpi_comm.allgather(obj)

    def _barrier(self, label):
        self.mpi_comm.Barrier()


# ---------------------------------------------------------------------- helpers
_process_comm = None


def default_comm():
    """This process's communicator: MPIComm over COMM_WORLD if an MPI launcher started the
    process (then BLAS threads are set to cores / local ranks), else SerialComm. Cached."""
    global _process_comm
    if _process_comm is None:
        if mpi.launched_by_mpi():
            _process_comm = MPIComm()
            mpi.set_blas_threads(None, _process_comm)
        else:
            _process_comm = SerialComm()
    return _process_comm


def resolve_comm(comm):
    """The communicator ``fit`` uses: "auto" (default_comm()), None (serial) or a Communicator."""
    if isinstance(comm, str) and comm == "auto":
        return default_comm()
    if comm is None:
        return SerialComm()
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be 'auto', None or a minidl.comm.Communicator (SerialComm, "
                        f"MPIComm, SimComm), got {type(comm).__name__}")
    return comm


def shard(rows, rank, size):
    """This rank's contiguous share of ``rows``: sizes differ by at most one, and may be 0."""
    start, stop = len(rows) * rank // size, len(rows) * (rank + 1) // size
    return rows[start:stop]


def allreduce_scalars(comm, values, label="scalars"):
    """Sum a short list of floats over ranks, in float64; returns a numpy array."""
    buffer = np.array(values, dtype=np.float64)
    return comm.allreduce_sum(buffer, label)


def collectively(comm, action):
    """Run ``action()`` on every rank; a ValueError/TypeError on any rank is raised on ALL.

    The error raised is the one of the lowest failing rank, with the same type and message
    on every rank (the message names that rank when not all ranks failed alike). Errors
    raised this way carry ``collective = True``: every rank raised it, nobody waits.
    """
    try:
        result, mine = action(), None
    except (ValueError, TypeError) as error:
        result, mine = None, error
    reports = comm.allgather_object(None if mine is None else (type(mine), str(mine)), "errors")
    failed = [rank for rank, report in enumerate(reports) if report is not None]
    if not failed:
        return result
    kind, message = reports[failed[0]]
    if len(failed) < comm.size or any(reports[rank] != reports[failed[0]] for rank in failed):
        message = f"{message} (on rank {failed[0]} of {comm.size})"
    if mine is not None and str(mine) == message:
        mine.collective = True
        raise mine
    error = kind(message)
    error.collective = True
    raise error from mine


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
        error = ValueError(f"the ranks disagree on {what} ({details}); every rank must run the "
                           f"same program with the same arguments and data")
        error.collective = True
        raise error

