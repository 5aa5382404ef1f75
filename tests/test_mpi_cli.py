"""`mpiexec -n N minidl train ...`: the same command and flags as one process.

Each test runs its own mpiexec subprocess with a timeout (see test_mpi.mpiexec).
"""
import json
import sys

import numpy as np
import pytest

from conftest import EXACT_TOL, assert_close
from minidl.cli import main
from test_mpi import MPIEXEC, NETWORK, PATHS, launch, mpiexec, pytestmark  # noqa: F401  (the same skips and marker)

FLAGS = ["train", "--dataset", "blobs", "--epochs", "4", "--batch-size", "20", "--quiet", "--no-plot"]


@PATHS
@pytest.mark.parametrize("ranks", [2, 3])
def test_n_rank_final_npz_equals_the_one_process_run(ranks, path, tmp_path):
    process, _ = mpiexec(ranks, "-m", "minidl", *FLAGS, "--output", tmp_path / "parallel", "--check-replicas",
                         timeout=120, env=NETWORK if path == "network" else None)   # bit-identical every step
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.count("minidl: stopped") == 1                  # rank 0 alone prints
    training = json.loads((tmp_path / "parallel" / "summary.json").read_text())["comm_stats"]["training"]
    assert training["replica_check"]["calls"] == training["gradients"]["calls"]   # checked every step
    assert main([*FLAGS, "--output", str(tmp_path / "serial")]) == 0
    with np.load(tmp_path / "parallel" / "final.npz") as parallel, np.load(tmp_path / "serial" / "final.npz") as serial:
        assert parallel.files == serial.files
        for name in serial.files:
            assert_close(parallel[name], serial[name], EXACT_TOL, name)


def test_bad_flags_fail_collectively_with_one_message(tmp_path):
    process, _ = mpiexec(3, "-m", "minidl", *FLAGS, "--output", tmp_path / "run", "--batch-size", "0")
    assert process.returncode == 2
    assert process.stderr.count("minidl: error: --batch-size must be >= 1") == 1
    assert "Traceback" not in process.stderr
    unknown, _ = mpiexec(2, "-m", "minidl", "train", "--no-such-flag")
    assert unknown.returncode == 2 and unknown.stderr.count("unrecognized arguments") == 1


def test_a_failing_rank_aborts_the_job_with_its_traceback(tmp_path):
    process, seconds = mpiexec(2, "-m", "minidl", *FLAGS, "--output", tmp_path / "run",
                               "--fail-on-rank", "1", "--fail-at-step", "3", timeout=60)
    assert process.returncode != 0 and seconds < 30
    assert "Traceback" in process.stderr and "injected failure on rank 1 at step 3" in process.stderr
    assert not (tmp_path / "run" / "final.npz").exists()


@PATHS
def test_resume_with_the_checkpoint_on_rank_0_only(tmp_path, path):
    """No shared filesystem: rank 1 is given a run directory that does not exist. Rank 0 alone
    reads the run's config and checkpoint and broadcasts them; the resumed run continues the
    trajectory of one never interrupted, and rank 1 writes nothing anywhere."""
    env = NETWORK if path == "network" else {}
    flags = ["train", "--dataset", "blobs", "--batch-size", "20", "--quiet", "--no-plot", "--patience", "50"]
    first, _ = mpiexec(2, "-m", "minidl", *flags, "--epochs", "3", "--output", tmp_path / "run", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    python = [sys.executable, "-m", "minidl", *flags, "--epochs", "6", "--resume"]
    command = [MPIEXEC, "-n", "1", *python, "--output", str(tmp_path / "run"),
               ":", "-n", "1", *python, "--output", str(tmp_path / "elsewhere")]
    resumed, _ = launch(command, timeout=120, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "elsewhere").exists()
    whole, _ = mpiexec(2, "-m", "minidl", *flags, "--epochs", "6", "--output", tmp_path / "whole", env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    with np.load(tmp_path / "run" / "final.npz") as resumed_run, np.load(tmp_path / "whole" / "final.npz") as never:
        for name in never.files:
            assert_close(resumed_run[name], never[name], EXACT_TOL, name)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [record["epoch"] for record in history["records"]] == list(range(6))
