"""The data-parallel properties under a real ``mpiexec`` (MPICH runs more ranks than cores).

Each test launches the scripts in tests/mpi_scripts/ in its own mpiexec subprocess with a
timeout, so a failure can never hang the suite; the scripts only measure, and the
assertions are made here on what rank 0 wrote. The same properties are tested on simulated
ranks in test_distributed.py; these runs prove the MPI plumbing.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXACT_TOL, run_in_session

SCRIPTS = Path(__file__).parent / "mpi_scripts"
REPO = Path(__file__).parents[1]
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec found (pip install -e '.[mpi]')"),
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                       reason="mpi4py is not installed (pip install -e '.[mpi]')"),
]


def mpirun(ranks, script, *args, timeout=60, env=None):
    """mpiexec -n ranks python tests/mpi_scripts/script args...; returns (CompletedProcess, seconds)."""
    return mpiexec(ranks, SCRIPTS / script, *args, timeout=timeout, env=env)


def mpiexec(ranks, *python_args, timeout=60, env=None):
    """mpiexec -n ranks python python_args...; returns (CompletedProcess, seconds)."""
    return launch([MPIEXEC, "-n", str(ranks), sys.executable, *map(str, python_args)], timeout, env)


def launch(command, timeout=60, env=None):
    """Run an mpiexec command line (extra environment ``env``); (CompletedProcess, seconds)."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {}))
    return run_in_session(command, timeout, env=env)


def succeeded(process):
    assert process.returncode == 0, f"exit code {process.returncode}\n{process.stderr[-3000:]}"


# MPICH's network module between the ranks of one host (and minidl's shared-memory allreduce
# off): the code path of ranks on different nodes, run where CI has only one.
NETWORK = {"MINIDL_SHARED_MEMORY": "0", "MPIR_CVAR_NOLOCAL": "1"}
PATHS = pytest.mark.parametrize("path", ["shared_memory", "network"])


@PATHS
@pytest.mark.parametrize("ranks", [2, 3])
def test_data_parallel_properties(ranks, path, tmp_path):
    process, _ = mpirun(ranks, "properties.py", tmp_path / "out.json", env=NETWORK if path == "network" else None)
    succeeded(process)
    result = json.loads((tmp_path / "out.json").read_text())
    assert (result["comm"], result["size"]) == ("MPIComm", ranks)       # "auto" found the launcher
    # 1. N ranks == one process, with uneven and empty slices
    assert result["equivalence"] <= EXACT_TOL
    assert result["slice_sizes"][0] == 0
    # 2. bitwise replicas after every step (check_replicas=True ran as well)
    assert result["replicas_identical"] and result["replica_steps"] == 15
    # the gradient allreduce read the other ranks' gradients in shared memory; MPI_Allreduce
    # (MINIDL_SHARED_MEMORY=0) gives the same trajectory, and the shared sum the same bits everywhere
    assert result["shared_memory_used"] == (path == "shared_memory")
    assert result["mpi_allreduce_kept_private_grads"] and result["second_fit_reuses_the_window"]
    assert result["shared_memory_vs_mpi_allreduce"] <= EXACT_TOL
    if path == "shared_memory":
        assert result["shared_sum_error"] <= 1e-15 and result["shared_sum_identical_on_every_rank"]
    # 3. partition with a new order each epoch
    assert result["partition"] == [True, True, True] and result["new_order_each_epoch"]
    # 4. metrics and early stopping
    assert max(result["metrics"].values()) <= EXACT_TOL
    stopping = result["early_stopping"]
    assert stopping["serial"][0] == "patience"
    assert stopping["ranks"] == [stopping["serial"]] * ranks and stopping["error"] <= EXACT_TOL
    # 5. local SGD every step == gradient averaging
    assert result["local_sgd"] <= EXACT_TOL
    # SIGTERM on rank 1 after step 2: every rank stops before step 3
    assert result["interrupt"] == [["interrupted", 2]] * ranks
    # one gradient allreduce per step, counted
    stats = result["comm_stats"]
    assert stats["training"]["gradients"]["calls"] == stats["steps"] == 15


@PATHS
def test_a_failing_rank_ends_the_job_with_its_traceback(path):
    process, seconds = mpirun(2, "failure.py", timeout=30, env=NETWORK if path == "network" else None)
    assert process.returncode != 0
    assert "Traceback (most recent call last)" in process.stderr
    assert "RuntimeError: injected failure on rank 1 at step 3" in process.stderr
    assert "rank 1 of 2 failed; aborting all ranks" in process.stderr


# Long enough that a start-up slowed by a busy machine never trips it before the fault does.
WATCHDOG = {"MINIDL_COLLECTIVE_TIMEOUT": "10"}


@PATHS
@pytest.mark.parametrize("fault, seconds_at_most", [("freeze", 10 + 30), ("kill", 30)])
def test_a_frozen_or_killed_rank_ends_the_job(fault, seconds_at_most, path):
    """Rank 1 stops itself (SIGSTOP: a stuck NFS read, a swapping node) or dies (SIGKILL) after
    step 3: the other rank's collective never completes; the job must end, not hang."""
    env = dict(WATCHDOG, **(NETWORK if path == "network" else {}))
    process, seconds = mpirun(2, "faults.py", fault, timeout=90, env=env)
    assert process.returncode != 0 and seconds <= seconds_at_most, (seconds, process.stderr[-2000:])
    if fault == "freeze":                                # the watchdog says which collective hung
        assert "rank 0 of 2 waited" in process.stderr and "in collective 'gradients'" in process.stderr
        assert "aborting all ranks" in process.stderr


def test_a_rank_that_exits_before_mpi_starts_ends_the_job(tmp_path):
    """A bad flag on one rank only: it exits before MPI_Init, where the others would wait forever."""
    command = [MPIEXEC, "-n", "1", sys.executable, "-m", "minidl", "train", "--output", str(tmp_path / "run"),
               "--epochs", "1", ":", "-n", "1", sys.executable, "-m", "minidl", "train", "--no-such-flag"]
    process, seconds = launch(command, timeout=90, env=WATCHDOG)
    assert process.returncode != 0 and seconds <= 10 + 30, (seconds, process.stderr[-2000:])
    assert "rank 0: MPI did not start within 10 s" in process.stderr    # (rank 1's usage error is
    # not printed: under mpiexec only rank 0 prints usage errors, which normally every rank has)


def test_start_up_errors_are_collective(tmp_path):
    process, _ = mpirun(3, "startup_errors.py", tmp_path)
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(3)]
    assert reports[1] == reports[0] and reports[2] == reports[0]
    assert reports[0]["mismatch"][0] == "ValueError"
    assert "batch_size: rank 0 has 4, rank 1 has 4, rank 2 has 8" in reports[0]["mismatch"][1]
    assert reports[0]["bad_input"] == ["ValueError", "X contains non-finite values (first at index "
                                       "(4, 2)); remove or impute them before training (on rank 2 of 3)"]
    # the final, uncaught error: every rank raised it, so it is printed once and all exit non-zero
    assert process.returncode != 0
    assert process.stderr.count("CollectiveValueError: batch_size must be >= 1, got 0") == 1


@PATHS
def test_a_checkpoint_from_two_ranks_resumes_on_three(tmp_path, path):
    checkpoint, env = tmp_path / "run.npz", NETWORK if path == "network" else None
    process, _ = mpirun(2, "resume.py", "save", checkpoint, env=env)
    succeeded(process)
    process, _ = mpirun(3, "resume.py", "resume", checkpoint, tmp_path / "out.json", env=env)
    succeeded(process)
    result = json.loads((tmp_path / "out.json").read_text())
    assert (result["ranks"], result["epochs"]) == (3, 4)
    assert result["params"] <= EXACT_TOL and result["val_loss"] <= EXACT_TOL
    assert any("different environment" in warning and "'processes': 2" in warning
               for warning in result["warnings"])


def test_scaling_benchmark_keeps_its_json_contract():
    """A tiny run of benchmarks/scaling.py (it launches mpiexec itself); no timing checks."""
    command = [sys.executable, str(REPO / "benchmarks" / "scaling.py"), "--json", "--rounds", "1",
               "--steps", "3", "--warmup", "1", "--dtype", "float32", "--batch", "64", "--momentum", "0",
               "--impl", "minidl"]                 # the PyTorch DDP rows: tests/test_benchmarks_smoke.py
    process = subprocess.run(command, capture_output=True, text=True, timeout=120)
    succeeded(process)
    rows = [json.loads(line) for line in process.stdout.splitlines()]
    assert [(row["ranks"], row["threads"]) for row in rows] == [(1, 1), (1, 2), (2, 1)]
    assert {row["impl"] for row in rows} == {"minidl"}
    assert {row["momentum"] for row in rows} == {0.0}
    for row in rows:
        assert {"dtype", "batch", "ranks", "step_ms", "speedup", "efficiency", "allreduce_share",
                "allreduce_vs_bare"} <= row.keys()
        assert row["step_ms"] > 0 and row["efficiency"] == pytest.approx(
            row["speedup"] / (row["ranks"] * row["threads"]), abs=1e-3)
    assert rows[2]["allreduce_share"] > 0 and rows[2]["allreduce_vs_bare"] > 0
    half = 0.0005                                      # every ratio is rounded to 3 decimals
    for row in rows:                                   # the machine's own ceiling, beside it
        efficiency, ceiling = row["efficiency"], row["gemm_efficiency"]
        assert row["gemm_ms"] > 0 and ceiling > half
        assert (efficiency - half) / (ceiling + half) - half <= row["efficiency_of_ceiling"] \
            <= (efficiency + half) / (ceiling - half) + half
    assert rows[2]["wait_ms"] >= 0
    one, two = rows[0], rows[2]                        # the update inside fit's step, and the bounds
    assert all(row["update_ms"] > 0 for row in rows)
    rest = two["step_ms"] - two["update_ms"] - two["allreduce_ms"]
    if rest > 0:
        assert two["compute_efficiency"] == pytest.approx((one["step_ms"] - one["update_ms"]) / (2 * rest),
                                                          rel=0.01, abs=2e-3)
        assert two["zero1_bound"] == pytest.approx(one["step_ms"] / (2 * (rest + one["update_ms"] / 2)),
                                                   rel=0.01, abs=2e-3)
