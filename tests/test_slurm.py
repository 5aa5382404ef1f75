"""`minidl train` under a real Slurm: srun with each MPI plugin it has, and mpiexec in an allocation.

CI starts a one-node Slurm on localhost first (.ci/slurm.sh); without `sinfo`/`srun`, or with
the node not up, these tests skip and say why. Every job runs in its own subprocess with a
timeout and is cancelled if it outlives it, so nothing can hang. Each run is compared with the
one-process run of the same flags (final.npz to EXACT_TOL per tensor), or must end with the
one-line error of minidl.mpi.start_mpi (exit 2, nothing written): never N uncoordinated runs.
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EXACT_TOL, assert_close, run_in_session
from minidl.cli import main

REPO = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
SRUN, SINFO, SALLOC = (shutil.which(name) for name in ("srun", "sinfo", "salloc"))
MPIEXEC = shutil.which("mpiexec", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
TIMEOUT = 120
FLAGS = ["train", "--dataset", "xor", "--epochs", "3", "--batch-size", "16", "--quiet", "--no-plot"]
ERROR = re.compile(r"^minidl: error: srun started 2 tasks (but MPI sees a world of 1 in each|with PMIx, which)"
                   r".*\(docs/cluster\.md\)$", re.M)


def run(command, timeout=TIMEOUT, **kwargs):
    """Run ``command`` in its own session; kill the session (and what it started) after ``timeout``."""
    return run_in_session(command, timeout, **kwargs)[0]


def slurm_unavailable():
    """Why Slurm cannot run jobs here, or None."""
    if SRUN is None or SINFO is None or SALLOC is None:
        return "no Slurm here (srun, sinfo or salloc not on PATH; CI starts one with .ci/slurm.sh)"
    try:
        states = subprocess.run([SINFO, "--noheader", "--responding", "--format=%t"], capture_output=True,
                                text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (is slurmctld running?)"
    up = [state for state in states.stdout.split() if state.rstrip("*~#") in ("idle", "mix", "alloc", "comp")]
    if states.returncode != 0 or not up:
        return f"no Slurm node is up (sinfo: {(states.stdout + states.stderr).strip() or 'no nodes'})"
    return None


def mpi_plugins():
    """The values of srun --mpi on this cluster (`srun --mpi=list`), e.g. none, pmi2, pmix, pmix_v4."""
    if SRUN is None:
        return []
    listing = subprocess.run([SRUN, "--mpi=list"], capture_output=True, text=True, timeout=20)
    text = listing.stdout + listing.stderr
    names = re.findall(r"^\s+(\w+)\s*$", text, re.M)
    versions = re.search(r"versions available:\s*(.*)$", text, re.M)
    names += versions.group(1).replace(",", " ").split() if versions else []
    return sorted(set(names))


REASON = slurm_unavailable()
pytestmark = [
    pytest.mark.mpi,
    pytest.mark.slow,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                       reason="mpi4py is not installed (pip install -e '.[mpi]')"),
]
PLUGINS = mpi_plugins() if REASON is None else []


def environment():
    """This environment for a job, with minidl importable, and no launcher's variables of our own."""
    from minidl.mpi import LAUNCHER_VARIABLES, PMIX_VARIABLES
    env = {name: value for name, value in os.environ.items()
           if name not in LAUNCHER_VARIABLES + PMIX_VARIABLES and not name.startswith(("SLURM_", "PMI"))}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def cancel_jobs(name):
    subprocess.run(["scancel", "--name", name], capture_output=True, timeout=20)


def assert_same_as_one_process(output, tmp_path):
    assert main([*FLAGS, "--output", str(tmp_path / "serial")]) == 0
    with np.load(output / "final.npz") as parallel, np.load(tmp_path / "serial" / "final.npz") as serial:
        assert parallel.files == serial.files
        for name in serial.files:
            assert_close(parallel[name], serial[name], EXACT_TOL, name)


@pytest.mark.parametrize("plugin", PLUGINS or [pytest.param("none", marks=pytest.mark.skip(
    reason=REASON or "srun --mpi=list printed no plugin"))])
def test_srun_trains_as_one_run_or_stops_with_the_launch_error(plugin, tmp_path, capsys):
    """srun -n 2 --mpi=<plugin> minidl train: exactly one of (a) the 2 tasks are one MPI world
    and final.npz is the one-process run's, or (b) exit 2 with the one-line launch error on
    task 0 only and no run directory."""
    name = f"minidl-test-{os.getpid()}"
    output = tmp_path / "run"
    command = [SRUN, "-n", "2", f"--mpi={plugin}", f"--job-name={name}", "--time=5",
               sys.executable, "-m", "minidl", *FLAGS, "--output", str(output)]
    try:
        job = run(command, cwd=tmp_path, env=environment())
    finally:
        cancel_jobs(name)
    errors = ERROR.findall(job.stderr)
    trained = job.returncode == 0
    stopped = job.returncode == 2 and len(errors) == 1 and job.stderr.count("minidl: error:") == 1
    outcome = "trained as one 2-rank run" if trained else "the launch error, exit 2" if stopped else "neither"
    with capsys.disabled():                           # in CI's log, with or without -s
        print(f"\n[slurm] srun -n 2 --mpi={plugin} minidl train: {outcome}", end=" ")
    print(job.stderr.strip())                         # shown if the test fails
    assert trained != stopped, f"exit code {job.returncode}, neither or both outcomes:\n{job.stdout}\n{job.stderr}"
    if trained:
        assert job.stdout.count("minidl: stopped") == 1                  # task 0 alone prints
        assert_same_as_one_process(output, tmp_path)
    else:
        assert "Traceback" not in job.stderr and not output.exists()


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install -e '.[mpi]')")
def test_mpiexec_inside_an_allocation_trains_as_one_run(tmp_path, capsys):
    """salloc -n 2 mpiexec -n 2 minidl train: Hydra starts its proxy with srun, the ranks get
    PMI_RANK/PMI_SIZE (and the proxy's one-task SLURM_* variables, which must not confuse minidl)."""
    name = f"minidl-test-{os.getpid()}"
    output = tmp_path / "run"
    command = [SALLOC, "-n", "2", f"--job-name={name}", "--time=5", MPIEXEC, "-n", "2",
               sys.executable, "-m", "minidl", *FLAGS, "--output", str(output)]
    try:
        job = run(command, cwd=tmp_path, env=environment())
    finally:
        cancel_jobs(name)
    assert job.returncode == 0, job.stderr[-3000:]
    assert job.stdout.count("minidl: stopped") == 1
    assert_same_as_one_process(output, tmp_path)
    with capsys.disabled():
        print("\n[slurm] salloc -n 2 mpiexec -n 2 minidl train: trained as one 2-rank run", end=" ")
