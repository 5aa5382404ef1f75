"""Communicators: the simulated ranks' collectives and safety nets, collective errors,
launcher detection, BLAS threads. (fit's distributed properties: test_distributed.py.)"""
import sys
import time

import numpy as np
import pytest

import minidl.comm as comm_module
from minidl import MLP, SGD, mpi, shared_memory
from minidl import fit
from minidl.comm import CommStats, SerialComm, resolve_comm
from minidl.parallel import CollectiveError, check_same, collectively
from minidl.simulated import CollectiveMismatch, CollectiveTimeout, run_simulated


# ------------------------------------------------------------------ simulated collectives
def test_simulated_collectives():
    def rank(comm):
        summed = comm.allreduce_sum(np.full(3, 0.1 * (comm.rank + 1)), "sum")
        rooted = comm.broadcast(np.full(2, float(comm.rank)), root=2)
        gathered = comm.allgather(np.array([comm.rank, 10 * comm.rank]))
        objects = comm.allgather_object({"rank": comm.rank})
        comm.barrier()
        return summed, rooted, gathered, objects, comm.stats.by_label

    results = run_simulated(4, rank)
    expected_sum = ((0.1 + 0.2) + 0.3) + 0.4                   # in rank order, so deterministic
    for summed, rooted, gathered, objects, stats in results:
        assert np.array_equal(summed, np.full(3, expected_sum))
        assert np.array_equal(rooted, [2.0, 2.0])
        assert np.array_equal(gathered, [[0, 0], [1, 10], [2, 20], [3, 30]])
        assert objects == [{"rank": r} for r in range(4)]
        assert stats["sum"] == {"op": "allreduce", "calls": 1, "bytes": 24}
        assert stats["broadcast"] == {"op": "broadcast", "calls": 1, "bytes": 16}
        assert stats["barrier"]["calls"] == 1


def test_results_are_private_copies():
    def rank(comm):
        gathered = comm.allgather(np.zeros(2))
        gathered[comm.rank] = comm.rank + 1                  # must not leak into other ranks
        comm.barrier()
        return gathered

    for gathered in run_simulated(3, rank):
        assert np.count_nonzero(gathered) == 2


@pytest.mark.parametrize("rank_one_call", [
    lambda comm: comm.broadcast(np.zeros(3)),
    lambda comm: comm.allreduce_sum(np.zeros(4)),
    lambda comm: comm.allreduce_sum(np.zeros(3, np.float32)),
    lambda comm: comm.allreduce_sum(np.zeros(3), "other purpose"),
])
def test_ranks_calling_different_collectives_raise_at_once(rank_one_call):
    def rank(comm):
        if comm.rank == 1:
            return rank_one_call(comm)
        return comm.allreduce_sum(np.zeros(3))

    started = time.perf_counter()
    with pytest.raises(CollectiveMismatch, match="ranks called different collectives"):
        run_simulated(2, rank, timeout=30)
    assert time.perf_counter() - started < 5


def test_a_rank_that_skips_a_collective_is_detected_when_it_returns():
    def rank(comm):
        if comm.rank == 0:
            comm.allreduce_sum(np.zeros(2))

    started = time.perf_counter()
    with pytest.raises(CollectiveMismatch, match="returned while ranks"):
        run_simulated(3, rank, timeout=30)
    assert time.perf_counter() - started < 5


def test_a_collective_that_a_rank_never_reaches_times_out():
    def rank(comm):
        if comm.rank == 1:
            time.sleep(1.0)                                  # busy elsewhere, past the timeout
        comm.barrier()

    started = time.perf_counter()
    with pytest.raises(CollectiveTimeout, match="timed out after 0.2 s"):
        run_simulated(2, rank, timeout=0.2)
    assert time.perf_counter() - started < 5


def test_the_first_exception_stops_the_other_ranks_and_is_reraised():
    def rank(comm):
        if comm.rank == 2:
            raise KeyError("boom on rank 2")
        comm.allreduce_sum(np.zeros(1))                      # would wait forever for rank 2
        comm.allreduce_sum(np.zeros(1))

    started = time.perf_counter()
    with pytest.raises(KeyError, match="boom on rank 2"):
        run_simulated(3, rank, timeout=30)
    assert time.perf_counter() - started < 5


def test_run_simulated_checks_its_size():
    with pytest.raises(ValueError, match="positive number of ranks"):
        run_simulated(0, lambda comm: None)


def test_collectives_need_contiguous_arrays():
    def rank(comm):
        comm.allreduce_sum(np.zeros((4, 4))[:, 0])

    with pytest.raises(TypeError, match="C-contiguous NumPy array"):
        run_simulated(2, rank)


def test_serial_comm_is_the_identity_and_counts_nothing():
    comm = SerialComm()
    array = np.arange(3.0)
    assert comm.allreduce_sum(array) is array and comm.broadcast(array) is array
    assert np.array_equal(comm.allgather(array), [[0.0, 1.0, 2.0]])
    assert comm.allgather_object("x") == ["x"]
    comm.barrier()
    assert (comm.rank, comm.size, comm.local_size, comm.stats.by_label) == (0, 1, 1, {})
    assert comm.gradient_buffer(array) is array                       # the gradient stays put


def test_simulated_ranks_keep_their_gradient_buffers():
    """Only MPIComm on one node moves gradients (to shared memory; tests/test_mpi.py)."""
    results = run_simulated(2, lambda comm: comm.gradient_buffer(grads := np.zeros(3)) is grads)
    assert results == [True, True]


def test_a_failed_shared_memory_window_says_how_to_do_without():
    """Allocate_shared fails where shared memory is short (a container's small /dev/shm):
    the error names the switch that falls back to MPI_Allreduce."""
    class FakeMPI:
        class Exception(Exception):
            pass

        class Info:
            freed = False

            @classmethod
            def Create(cls):
                return cls()

            def Set(self, key, value):
                pass

            def Free(self):
                FakeMPI.Info.freed = True

        class Win:
            @staticmethod
            def Allocate_shared(*args, **kwargs):
                raise FakeMPI.Exception("MPI_ERR_NO_MEM")

    class NodeComm:
        def Get_rank(self):
            return 0

    with pytest.raises(RuntimeError, match="MINIDL_SHARED_MEMORY=0 to use MPI_Allreduce") as error:
        shared_memory.SharedBuffer(FakeMPI, NodeComm(), 1000, np.float32)
    assert "4,000 bytes per rank" in str(error.value) and "MPI_ERR_NO_MEM" in str(error.value)
    assert FakeMPI.Info.freed


@pytest.mark.parametrize("value, expected", [(None, True), ("1", True), ("yes", True),
                                             ("0", False), (" 0 ", False)])
def test_the_shared_memory_switch(value, expected):
    environ = {} if value is None else {shared_memory.ENVIRONMENT_SWITCH: value}
    assert shared_memory.enabled(environ) is expected


def test_stats_since_a_snapshot():
    stats = CommStats()
    stats.record("allreduce", "gradients", 80)
    before = stats.snapshot()
    stats.record("allreduce", "gradients", 80)
    stats.record("barrier", "checkpoint", 0)
    assert stats.since(before) == {"gradients": {"op": "allreduce", "calls": 1, "bytes": 80},
                                   "checkpoint": {"op": "barrier", "calls": 1, "bytes": 0}}


# ------------------------------------------------------------------ collective errors
def ordinary_type(error):
    """ValueError for a CollectiveValueError, and so on."""
    return type(error).__bases__[0] if isinstance(error, CollectiveError) else type(error)


def outcomes(size, fn):
    """[("ok", result) or (exception type, message, collective flag)] per rank."""
    def rank(comm):
        try:
            return "ok", fn(comm)
        except (ValueError, TypeError) as error:
            return ordinary_type(error), str(error), isinstance(error, CollectiveError)
    return run_simulated(size, rank)


def test_an_error_on_one_rank_is_raised_on_every_rank():
    def action(rank):
        if rank == 1:
            raise TypeError("bad thing")
        return rank

    assert outcomes(3, lambda comm: collectively(comm, lambda: action(comm.rank))) == \
        [(TypeError, "bad thing (on rank 1 of 3)", True)] * 3


def test_the_lowest_failing_rank_wins():
    def action(rank):
        raise ValueError(f"rank {rank} is unhappy")

    assert outcomes(3, lambda comm: collectively(comm, lambda: action(comm.rank))) == \
        [(ValueError, "rank 0 is unhappy (on rank 0 of 3)", True)] * 3


def test_an_error_every_rank_raised_keeps_its_message():
    def action():
        raise ValueError("batch_size must be >= 1, got 0")

    assert outcomes(2, lambda comm: collectively(comm, action)) == \
        [(ValueError, "batch_size must be >= 1, got 0", True)] * 2


def test_collectively_returns_the_result_and_lets_other_errors_through():
    assert outcomes(2, lambda comm: collectively(comm, lambda: comm.rank * 2)) == [("ok", 0), ("ok", 2)]
    with pytest.raises(ZeroDivisionError):
        collectively(SerialComm(), lambda: 1 / 0)


def test_a_serial_error_is_raised_unchanged():
    error = ValueError("plain")

    def action():
        raise error

    with pytest.raises(ValueError) as info:
        collectively(SerialComm(), action)
    assert info.value is error


def test_check_same_lists_what_differs():
    def fingerprint(comm):
        check_same(comm, "the plan", {"batch": 4, "seed": comm.rank % 2, "lr": 0.1})
        return "agreed"

    assert outcomes(3, fingerprint) == [(ValueError, (
        "the ranks disagree on the plan (seed: rank 0 has 0, rank 1 has 1, rank 2 has 0); every "
        "rank must run the same program with the same arguments and data"), True)] * 3
    assert outcomes(2, lambda comm: check_same(comm, "x", {"a": 1})) == [("ok", None)] * 2


# ------------------------------------------------------------------ choosing the communicator
@pytest.mark.parametrize("environ, expected", [
    ({}, None), ({"HOME": "/root", "HYDRA_HOST_FILE": "hosts"}, None),
    ({"PMI_RANK": "0", "PMI_SIZE": "2"}, "PMI_RANK"), ({"PMIX_RANK": "1"}, "PMIX_RANK"),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "OMPI_COMM_WORLD_SIZE"),
])
def test_launcher_detection(environ, expected):
    assert mpi.launched_by_mpi(environ) == expected


def test_auto_is_serial_without_a_launcher(monkeypatch):
    for name in mpi.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(comm_module, "_process_comm", None)
    assert isinstance(resolve_comm("auto"), SerialComm)
    assert isinstance(resolve_comm(None), SerialComm)


def test_auto_under_a_launcher_without_mpi4py_fails_loudly(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setattr(comm_module, "_process_comm", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # makes `import mpi4py` fail
    model = MLP([2, 2])
    with pytest.raises(ImportError, match=r'PMI_RANK is set.*pip install -e "\.\[mpi\]"'):
        fit(model, "mse", SGD(model), np.zeros((4, 2)), np.zeros((4, 2)), epochs=1, batch_size=2)


def test_resolve_comm_rejects_other_objects():
    with pytest.raises(TypeError, match="comm must be 'auto', None or a minidl.comm.Communicator"):
        resolve_comm("mpi")


# ------------------------------------------------------------------ BLAS threads
def test_default_threads_divide_the_cores(monkeypatch):
    monkeypatch.setattr(mpi, "available_cores", lambda: 8)
    monkeypatch.setattr(mpi.os, "cpu_count", lambda: 8)
    assert [mpi.default_threads(ranks) for ranks in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setattr(mpi, "available_cores", lambda: 2)        # bound to 2 of 8 cores
    assert mpi.default_threads(4) == 2


def test_set_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    original = threadpoolctl.threadpool_info()
    try:
        assert mpi.set_blas_threads(1) == 1
        assert {pool["num_threads"] for pool in threadpoolctl.threadpool_info()
                if pool["user_api"] == "blas"} == {1}
    finally:
        for pool in original:
            threadpoolctl.threadpool_limits(pool["num_threads"], user_api=pool["user_api"])
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            mpi.set_blas_threads(bad)


def test_blas_threads_without_threadpoolctl(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    with pytest.raises(ImportError, match="pip install threadpoolctl"):
        mpi.set_blas_threads(2)
    with pytest.warns(RuntimeWarning, match="oversubscribe"):
        assert mpi.set_blas_threads() is None
