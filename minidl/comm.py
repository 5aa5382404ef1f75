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
    broadcast_object(obj, root, label)  root's obj on every rank (pickled): what rank 0 alone
                                  read from its disk (a checkpoint, a dataset, a config)
    barrier(label)
    gradient_buffer(grads)        where the model's flat gradient should live for the fastest
                                  allreduce_sum (MPIComm: a shared-memory window on one node)

What the loop does WITH these calls to act as one model on N ranks (sync strategies, the
stop vote, agreement checks) is in minidl/parallel.py.

Arrays must be C-contiguous NumPy arrays: MPI moves their memory as it is, without copies.
Three implementations:

    SerialComm   one process; every collective is the identity and nothing is counted
    SimComm      N virtual ranks in threads of one process (minidl/simulated.py,
                 ``run_simulated``), for tests: collectives time out instead of hanging
    MPIComm      mpi4py, buffer calls only: Allreduce(IN_PLACE), Bcast, Allgather; with every
                 rank on one node, the gradient allreduce reads the other ranks' gradients
                 in a shared-memory window instead (minidl.shared_memory)
"""
import importlib
import pickle

import numpy as np

from . import mpi, shared_memory, watchdog


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
    collective_timeout = None             # seconds; MPIComm's watchdog enforces it

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

    def broadcast_object(self, obj, root=0, label="broadcast_object"):
        self.stats.record("broadcast_object", label, len(pickle.dumps(obj)) if self.rank == root else 0)
        return self._broadcast_object(obj, root, label)

    def barrier(self, label="barrier"):
        self.stats.record("barrier", label, 0)
        self._barrier(label)

    def gradient_buffer(self, grads):
        """Where a model should keep its flat gradient for the fastest allreduce_sum: an array
        with the contents of ``grads`` (``grads`` itself unless a subclass has a better place).
        Collective; fit moves model.grads there once (MLP.use_gradient_buffer)."""
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

    def broadcast_object(self, obj, root=0, label="broadcast_object"):
        return obj

    def barrier(self, label="barrier"):
        pass


# ---------------------------------------------------------------------- MPI
class MPIComm(Communicator):
    """mpi4py's buffer (uppercase) calls on contiguous arrays; pickles only control messages.

    Creating one installs an excepthook that aborts the whole job when any rank dies with an
    uncaught exception (see minidl.mpi.install_abort_hook), and a watchdog that aborts it when
    a collective waits longer than ``collective_timeout`` seconds for a rank that is frozen or
    gone (minidl.watchdog), so a failure never hangs.
    mpi_comm: an mpi4py communicator (default COMM_WORLD).
    """

    def __init__(self, mpi_comm=None, collective_timeout=None):
        super().__init__()
        timeout = watchdog.default_timeout() if collective_timeout is None else \
            watchdog.check_timeout("collective_timeout", collective_timeout)
        with watchdog.starting_mpi(timeout, mpi.launcher_rank()):
            self.MPI = mpi.import_mpi()
        self.mpi_comm = self.MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank, self.size = self.mpi_comm.Get_rank(), self.mpi_comm.Get_size()
        node = self.mpi_comm.Split_type(self.MPI.COMM_TYPE_SHARED)       # the ranks on this node
        self.local_size = node.Get_size()
        node.Free()
        self.shared_buffers = []          # the SharedBuffers handed out by gradient_buffer()
        mpi.install_abort_hook(self.MPI.COMM_WORLD, self.rank, self.size)
        self.watchdog = watchdog.Watchdog(self.rank, self.size, timeout, self.MPI.COMM_WORLD.Abort)

    @property
    def collective_timeout(self):
        """Seconds a collective may wait before the watchdog aborts the job (settable)."""
        return self.watchdog.timeout

    @collective_timeout.setter
    def collective_timeout(self, seconds):
        self.watchdog.timeout = watchdog.check_timeout("collective_timeout", seconds)

    def gradient_buffer(self, grads):
        """With every rank on one node: ``grads`` copied into this rank's part of a shared-memory
        window, which allreduce_sum then reduces by reading the other ranks' parts directly
        (minidl.shared_memory). Otherwise, or with MINIDL_SHARED_MEMORY=0, ``grads`` itself."""
        if any(shared.local is grads for shared in self.shared_buffers):
            return grads                                               # moved there already
        use = self.size > 1 and self.local_size == self.size and shared_memory.enabled()
        if not all(self.allgather_object(use, "shared_memory")):       # every rank agrees
            return grads
        shared = shared_memory.SharedBuffer(self.MPI, self.mpi_comm, grads.size, grads.dtype)
        shared.local[...] = grads
        self.shared_buffers.append(shared)
        return shared.local

    def _watched(self, label, call, *args):
        """``call(*args)``, a blocking MPI call, under the watchdog's eye."""
        self.watchdog.waiting(label, self.stats.by_label[label]["calls"])
        try:
            return call(*args)
        finally:
            self.watchdog.done()

    def _allreduce_sum(self, array, label):
        shared = next((shared for shared in self.shared_buffers if shared.local is array), None)
        if shared is not None:
            self._watched(label, shared.allreduce_sum)
        else:
            self._watched(label, self.mpi_comm.Allreduce, self.MPI.IN_PLACE, array, self.MPI.SUM)

    def _broadcast(self, array, root, label):
        self._watched(label, self.mpi_comm.Bcast, array, root)

    def _allgather(self, array, label):
        gathered = np.empty((self.size,) + array.shape, array.dtype)
        self._watched(label, self.mpi_comm.Allgather, array, gathered)
        return gathered

    def _allgather_object(self, obj, label):
        return self._watched(label, self.mpi_comm.allgather, obj)

    def _broadcast_object(self, obj, root, label):
        return self._watched(label, self.mpi_comm.bcast, obj, root)

    def _barrier(self, label):
        self._watched(label, self.mpi_comm.Barrier)


# ---------------------------------------------------------------------- helpers
_process_comm = None


def default_comm():
    """This process's communicator: MPIComm over COMM_WORLD if an MPI launcher (or srun, for
    a step of several tasks) started the process (then BLAS threads are set to cores / local
    ranks), else SerialComm. Cached.

    A ValueError (a CollectiveError: every process raises it alike, the CLI prints it once)
    when the launcher started N processes but MPI's world holds another number, e.g.
    ``srun -n 2`` with an MPI that does not speak Slurm's PMI: one line with the likely cause
    and the fix (minidl.mpi.start_mpi), before anything is trained or written. MPI_Init runs
    there, under the watchdog's guard (minidl.watchdog.starting_mpi) as in MPIComm.
    """
    global _process_comm
    if _process_comm is None:
        if mpi.launched_by_mpi():
            try:
                with watchdog.starting_mpi(watchdog.default_timeout(), mpi.launcher_rank()):
                    mpi.start_mpi()
            except ValueError as error:
                from .parallel import collective_error      # parallel imports this module
                raise collective_error(ValueError, str(error)) from None
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


# Names that lived here before minidl/parallel.py and minidl/simulated.py took them over;
# kept importable from minidl.comm so that users' scripts keep working.
_MOVED = {name: "parallel" for name in ("shard", "allreduce_scalars", "collectively", "check_same")}
_MOVED.update({name: "simulated" for name in ("SimWorld", "SimComm", "run_simulated", "CollectiveTimeout",
                                               "CollectiveMismatch", "RankAborted")})


def __getattr__(name):
    if name in _MOVED:
        return getattr(importlib.import_module(f"minidl.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'minidl.comm' has no attribute {name!r}")
