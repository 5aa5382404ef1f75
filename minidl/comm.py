"""Communicators: what the one training loop calls to work across ranks.

``fit()`` never asks "am I distributed?": it calls these methods, and ``SerialComm`` makes
them no-ops. Every method is collective: all ranks call it, in the same order.

    rank, size                 this rank and the number of ranks
    allreduce_sum(array)       in place: array <- sum over ranks (contiguous float arrays)
    broadcast(array, root)     in place: array <- root's array
    barrier()
"""
import numpy as np


class SerialComm:
    """One process: every collective is the identity."""

    rank = 0
    size = 1

    def allreduce_sum(self, array):
        return array

    def broadcast(self, array, root=0):
        return array

    def barrier(self):
        pass


def shard(rows, rank, size):
    """This rank's contiguous share of ``rows``: sizes differ by at most one, and may be 0."""
    start, stop = len(rows) * rank // size, len(rows) * (rank + 1) // size
    return rows[start:stop]


def resolve_comm(comm):
    """The communicator ``fit`` uses: "auto" (serial here), or any object with the methods above."""
    if comm is None or comm == "auto":
        return SerialComm()
    for method in ("allreduce_sum", "broadcast", "barrier"):
        if not callable(getattr(comm, method, None)):
            raise TypeError(f"comm must be 'auto' or a communicator with a {method}() method, "
                            f"got {type(comm).__name__}")
    return comm


def allreduce_scalars(comm, values):
    """Sum a short list of floats over ranks, in float64; returns a numpy array."""
    buffer = np.array(values, dtype=np.float64)
    return comm.allreduce_sum(buffer)
