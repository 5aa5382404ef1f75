"""Simulated ranks: N virtual ranks in threads of one process, for tests and teaching.

``run_simulated(n, fn)`` runs ``fn(comm)`` on n virtual ranks whose ``SimComm`` behaves
like an MPI communicator, so every distributed property of fit (N ranks equal one process,
resume on another number of ranks, collective start-up errors) is testable without MPI.
Unlike MPI, it never hangs: a collective that not every rank reaches times out, ranks
calling different collectives fail at once, and the first exception of any rank stops
the others.
"""
import pickle
import threading

import numpy as np

from .comm import Communicator


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

    def _broadcast_object(self, obj, root, label):
        return self.world.exchange(self.rank, ("allgather_object", label), pickle.dumps(obj))[root]

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
