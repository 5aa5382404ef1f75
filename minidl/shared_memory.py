"""The gradient allreduce of ranks that share a node, through an MPI-3 shared-memory window.

When every rank runs on one node, MPIComm keeps the model's flat gradient in memory that all
ranks can read (``MPI.Win.Allocate_shared``), and the allreduce becomes two passes of plain
NumPy over it, with no message buffers in between:

    1. reduce-scatter: rank c adds chunk c of every other rank's buffer into chunk c of its
       own (chunk c = elements [P*c//N, P*(c+1)//N)), its own first, then the others in rank
       order, so the result never depends on timing;
    2. allgather: every rank copies the other ranks' finished chunks into its own buffer.

Each chunk is summed once, by one rank, and copied to the others, so every rank ends with
the same bits. A fence (``MPI_Win_sync``, the memory barrier of MPI's shared-memory model,
around a Barrier) separates the phases and ends the call, so no rank writes its buffer while
another still reads it. Measured in benchmarks/scaling.py against MPI_Allreduce of the same
buffer; set MINIDL_SHARED_MEMORY=0 to use MPI_Allreduce instead.
"""
import os

import numpy as np

ENVIRONMENT_SWITCH = "MINIDL_SHARED_MEMORY"


def enabled(environ=None):
    """False when the user set MINIDL_SHARED_MEMORY=0 (to measure or avoid this path)."""
    environ = os.environ if environ is None else environ
    return environ.get(ENVIRONMENT_SWITCH, "1").strip() != "0"


class SharedBuffer:
    """One (P,) array of ``dtype`` per rank of ``node_comm``, all in one shared window.

    ``local`` is this rank's array (the one to compute into); ``allreduce_sum()`` replaces it,
    on every rank, with the sum of all ranks' arrays. Creating one is collective: all ranks
    of ``node_comm`` (which must share memory) create it together, with the same P and dtype.
    The window lives as long as the process (MPI frees it at finalize), as ``local`` may be
    kept as a model's gradient buffer.
    """

    def __init__(self, MPI, node_comm, size, dtype):
        dtype = np.dtype(dtype)
        self.comm, self.rank = node_comm, node_comm.Get_rank()
        info = MPI.Info.Create()
        info.Set("alloc_shared_noncontig", "true")         # each rank's part starts on its own page
        try:
            self.window = MPI.Win.Allocate_shared(size * dtype.itemsize, dtype.itemsize, info,
                                                  comm=node_comm)
        except MPI.Exception as error:                     # e.g. a small /dev/shm in a container
            raise RuntimeError(f"minidl could not allocate {size * dtype.itemsize:,} bytes per rank "
                               f"of shared memory for the gradient allreduce ({error}); set "
                               f"{ENVIRONMENT_SWITCH}=0 to use MPI_Allreduce instead") from error
        finally:
            info.Free()
        self.arrays = []                                   # every rank's (P,) array, by rank
        for rank in range(node_comm.Get_size()):
            memory, _ = self.window.Shared_query(rank)
            self.arrays.append(np.ndarray(buffer=memory, dtype=dtype, shape=(size,)))
        self.local = self.arrays[self.rank]
        ranks = len(self.arrays)
        self.chunks = [slice(size * c // ranks, size * (c + 1) // ranks) for c in range(ranks)]
        self.window.Lock_all()                             # one access epoch for the window's life

    def _fence(self):
        """What any rank wrote before the fence is what every rank reads after it."""
        self.window.Sync()
        self.comm.Barrier()
        self.window.Sync()

    def allreduce_sum(self):
        own = self.chunks[self.rank]
        self._fence()                                      # every rank's gradient is written
        total = self.local[own]                            # (P/N,) view: summed in place
        for rank, array in enumerate(self.arrays):
            if rank != self.rank:
                total += array[own]
        self._fence()                                      # every chunk is summed
        for rank, chunk in enumerate(self.chunks):
            if rank != self.rank:
                self.local[chunk] = self.arrays[rank][chunk]
        self._fence()                                      # every copy is done: buffers are free
