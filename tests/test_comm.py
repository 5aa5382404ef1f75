"""Communicators: the simulated ranks' collectives and safety nets, collective errors,
launcher detection, BLAS threads. (fit's distributed properties: test_distributed.py.)"""
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

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
        run_simulated(2, rank, timeout=300)
    assert time.perf_counter() - started < 60       # at once, not at the timeout (loose: a busy machine)


def test_a_rank_that_skips_a_collective_is_detected_when_it_returns():
    def rank(comm):
        if comm.rank == 0:
            comm.allreduce_sum(np.zeros(2))

    started = time.perf_counter()
    with pytest.raises(CollectiveMismatch, match="returned while ranks"):
        run_simulated(3, rank, timeout=300)
    assert time.perf_counter() - started < 60       # at once, not at the timeout (loose: a busy machine)


def test_a_collective_that_a_rank_never_reaches_times_out():
    def rank(comm):
        if comm.rank == 1:
            time.sleep(1.0)                                  # busy elsewhere, past the timeout
        comm.barrier()

    started = time.perf_counter()
    with pytest.raises(CollectiveTimeout, match="timed out after 0.2 s"):
        run_simulated(2, rank, timeout=0.2)
    assert time.perf_counter() - started < 60


def test_the_first_exception_stops_the_other_ranks_and_is_reraised():
    def rank(comm):
        if comm.rank == 2:
            raise KeyError("boom on rank 2")
        comm.allreduce_sum(np.zeros(1))                      # would wait forever for rank 2
        comm.allreduce_sum(np.zeros(1))

    started = time.perf_counter()
    with pytest.raises(KeyError, match="boom on rank 2"):
        run_simulated(3, rank, timeout=300)
    assert time.perf_counter() - started < 60       # at once, not at the timeout (loose: a busy machine)


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


# ------------------------------------------------------------------ launch detection (Slurm too)
# What the launchers set, as measured under Slurm 22.05 and MPICH's Hydra (docs/cluster.md).
SRUN_TASK = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_STEPID": "0",
             "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1"}
SRUN_PMI2 = dict(SRUN_TASK, PMI_RANK="1", PMI_SIZE="2", PMI_FD="13", PMI_JOBID="7.0")
SRUN_PMIX = dict(SRUN_TASK, PMIX_RANK="1", PMIX_NAMESPACE="slurm.pmix.7.0")
SBATCH_SCRIPT = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_NPROCS": "2",
                 "SLURM_LOCALID": "0"}
SALLOC_SHELL = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_NPROCS": "2"}
ONE_TASK_STEP = dict(SRUN_TASK, SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_STEP_NUM_TASKS="1")
# mpiexec inside an allocation: Hydra starts its proxy as a one-task srun step
MPIEXEC_IN_ALLOCATION = dict(ONE_TASK_STEP, PMI_RANK="1", PMI_SIZE="2", PMI_FD="6")


@pytest.mark.parametrize("environ, launcher, rank, expected", [
    ({}, None, 0, None),
    ({"PMI_RANK": "1", "PMI_SIZE": "3"}, "PMI_RANK", 1, ("Hydra/PMI", 3)),
    ({"PMI_SIZE": "3"}, "PMI_SIZE", 0, ("Hydra/PMI", 3)),
    ({"PMIX_RANK": "2"}, "PMIX_RANK", 2, None),                               # PMIx sets no size
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"}, "OMPI_COMM_WORLD_RANK", 3, ("Open MPI", 4)),
    ({"MV2_COMM_WORLD_RANK": "1", "MV2_COMM_WORLD_SIZE": "5"}, "MV2_COMM_WORLD_RANK", 1, ("MVAPICH", 5)),
    (SRUN_TASK, "SLURM_PROCID", 1, ("srun", 2)),                              # srun --mpi=none
    (SRUN_PMI2, "PMI_RANK", 1, ("srun", 2)),
    (SRUN_PMIX, "PMIX_RANK", 1, ("srun", 2)),
    (SBATCH_SCRIPT, None, 0, None),                                           # not a step task
    (SALLOC_SHELL, None, 0, None),
    (ONE_TASK_STEP, None, 0, ("srun", 1)),                                    # srun python x.py: serial
    (MPIEXEC_IN_ALLOCATION, "PMI_RANK", 1, ("Hydra/PMI", 2)),
])
def test_launch_detection_under_each_launcher(environ, launcher, rank, expected):
    assert mpi.launched_by_mpi(environ) == launcher
    assert mpi.launcher_rank(environ) == rank
    assert mpi.expected_world_size(environ) == expected


def test_every_launcher_variable_is_in_the_table():
    for row in mpi.LAUNCHERS:
        assert len(row) == 3 and row[0] in mpi.LAUNCHER_VARIABLES
    recognised_before_slurm = {"PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                               "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"}
    for name in recognised_before_slurm:                          # each alone still identifies its launcher
        assert mpi.launched_by_mpi({name: "1"}) == name
    assert recognised_before_slurm | {"SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID"} <= \
        set(mpi.LAUNCHER_VARIABLES)


def test_launcher_rank_reads_os_environ_for_the_cli(monkeypatch):
    for name in mpi.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in SRUN_TASK.items():
        monkeypatch.setenv(name, value)
    assert (mpi.launched_by_mpi(), mpi.launcher_rank(), mpi.expected_world_size()) == ("SLURM_PROCID", 1, ("srun", 2))
    from minidl import cli
    assert cli.launcher_rank is mpi.launcher_rank


class FakeMPI:
    """What start_mpi asks of mpi4py.MPI: the library version and COMM_WORLD's size."""

    def __init__(self, size, library="MPICH Version:      5.0.2\nMPICH Release date: ...\n"):
        self.library, self.initialized = library, True
        self.COMM_WORLD = type("World", (), {"Get_size": lambda _: size})()

    def Get_library_version(self):
        return self.library

    def Is_initialized(self):
        return self.initialized


def fake_launch(monkeypatch, environ, world):
    """os.environ as ``environ`` sets it (no other launcher variables) and an MPI of ``world`` ranks."""
    for name in mpi.LAUNCHER_VARIABLES + mpi.PMIX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(mpi, "import_mpi", lambda: world)
    monkeypatch.setattr(mpi, "_import_mpi_uninitialized", lambda: world)
    monkeypatch.setattr(comm_module, "_process_comm", None)


@pytest.mark.parametrize("environ", [SRUN_TASK, SRUN_PMI2])
def test_srun_tasks_that_mpi_sees_alone_stop_with_one_line(monkeypatch, environ):
    fake_launch(monkeypatch, environ, FakeMPI(1))
    with pytest.raises(ValueError) as raised:
        comm_module.default_comm()
    assert isinstance(raised.value, CollectiveError)       # every task raises it: the CLI prints it once
    message = str(raised.value)
    assert message.startswith("srun started 2 tasks but MPI sees a world of 1 in each: mpi4py's MPI "
                              "(MPICH 5.0.2) did not get the wire-up")
    assert "`srun --mpi=pmi2`" in message and "mpiexec inside the allocation" in message
    assert message.endswith("mpi4py built against the cluster's MPI (docs/cluster.md)") and "\n" not in message
    assert comm_module._process_comm is None


def test_a_pmix_launch_of_an_mpich_without_pmix_stops_before_mpi_init(monkeypatch):
    world = FakeMPI(2)
    world.initialized = False                   # MPI_Init would abort inside MPICH: never called
    fake_launch(monkeypatch, SRUN_PMIX, world)
    with pytest.raises(ValueError, match=r"^srun started 2 tasks with PMIx, which mpi4py's MPI \(MPICH 5\.0\.2, "
                                         r"built without PMIx\) cannot use; run `srun --mpi=pmi2`"):
        comm_module.default_comm()
    # an MPI built with PMIx (or Open MPI) goes on to start
    world.library = "MPICH Version: 4.2.0\nMPICH configure: --with-pmix=/usr\n"
    world.initialized = True
    assert mpi.start_mpi(SRUN_PMIX) is world


@pytest.mark.parametrize("environ, world, start", [
    ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4"}, 1,
     "the launcher (Open MPI) started 4 processes but MPI sees a world of 1 in each"),
    (SRUN_TASK, 3, "srun started 2 tasks but MPI sees a world of 3: mpi4py's MPI (MPICH 5.0.2) does not match"),
])
def test_other_world_size_mismatches(monkeypatch, environ, world, start):
    fake_launch(monkeypatch, environ, FakeMPI(world))
    with pytest.raises(ValueError, match=re.escape(start)):
        mpi.start_mpi(environ)


@pytest.mark.parametrize("environ", [{"PMI_RANK": "0", "PMI_SIZE": "2"}, SRUN_PMI2, MPIEXEC_IN_ALLOCATION])
def test_a_world_of_the_launched_size_starts(monkeypatch, environ):
    world = FakeMPI(2)
    fake_launch(monkeypatch, environ, world)
    assert mpi.start_mpi(environ) is world


def test_no_launcher_or_a_one_task_step_is_serial_without_mpi(monkeypatch):
    for environ in ({}, SBATCH_SCRIPT, SALLOC_SHELL, ONE_TASK_STEP):
        fake_launch(monkeypatch, environ, None)
        monkeypatch.setitem(sys.modules, "mpi4py", None)          # not even imported
        assert isinstance(comm_module.default_comm(), SerialComm)


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="mpi4py is not installed")
def test_train_in_a_faked_srun_step_with_a_world_of_one_exits_2_with_one_line(tmp_path):
    """Both tasks of `srun -n 2 minidl train` without a PMI that MPI speaks (srun --mpi=none):
    each is a world of 1 (an MPICH singleton). Both exit 2, task 0 alone prints, nothing is written."""
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("SLURM_", "PMI", "OMPI_", "MV2_"))}
    environment["PYTHONPATH"] = f"{Path(__file__).parents[1]}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    tasks = [subprocess.Popen([sys.executable, "-m", "minidl", "train", "--dataset", "xor", "--epochs", "1",
                               "--output", str(tmp_path / "run")], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**environment, **SRUN_TASK, "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task)})
             for task in (0, 1)]
    results = [task.communicate(timeout=120) for task in tasks]
    assert [task.returncode for task in tasks] == [2, 2]
    (out0, err0), (out1, err1) = results
    assert out0 == out1 == err1 == ""
    assert len(err0.splitlines()) == 1 and err0.startswith("minidl: error: srun started 2 tasks but MPI sees a world "
                                                           "of 1 in each: mpi4py's MPI (MPICH"), err0
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="mpi4py is not installed")
def test_mpi_imported_uninitialized_starts_as_mpi4py_would():
    """The path of a PMIx launch whose MPI can use it: version asked first, then MPI_Init."""
    code = ("from minidl import mpi\n"
            "MPI = mpi._import_mpi_uninitialized()\n"
            "assert not MPI.Is_initialized() and MPI.Get_library_version()\n"
            "mpi._initialize(MPI)\n"
            "import mpi4py\n"
            "assert mpi4py.rc.initialize is True and mpi4py.rc.finalize is None   # restored\n"
            "print(MPI.Is_initialized(), MPI.Query_thread() == MPI.THREAD_MULTIPLE, MPI.COMM_WORLD.Get_size())\n")
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("SLURM_", "PMI", "OMPI_", "MV2_"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environment)
    assert (done.returncode, done.stdout, done.stderr) == (0, "True True 1\n", "")
