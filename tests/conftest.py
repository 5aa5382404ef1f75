"""Shared test configuration: tolerances, the error metric, hypothesis profiles, fixtures."""
import io
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from minidl.gradcheck import relative_error

# Named tolerances, all for the metric max|a - b| / max(tiny, max|b|) per tensor.
FD_TOL = 1e-6            # central differences in float64 against backprop
EXACT_TOL = 1e-12        # two float64 computations of the same quantity
FLOAT32_TOL = 1e-4       # float32 against float64
TORCH_TOL = 1e-12        # minidl against PyTorch in float64

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def run_in_session(command, timeout, **popen_kwargs):
    """Run ``command`` in a session of its own: (CompletedProcess, seconds). Still running after
    ``timeout`` seconds, it is killed with everything it started and the test fails: a hang is
    a failure, never a stuck suite."""
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **popen_kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"`{' '.join(map(str, command))}` still ran after {timeout} s (a hang)\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), time.perf_counter() - started


class FakeTTY(io.StringIO):
    """A stream that says it is a terminal, so that tqdm draws its bar into it."""

    def isatty(self):
        return True


@pytest.fixture
def opened_bars(monkeypatch):
    """The descriptions of the tqdm bars opened, in order."""
    import tqdm
    opened = []

    class CountingBar(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            opened.append(kwargs["desc"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm, "tqdm", CountingBar)
    return opened


def assert_close(actual, expected, tol, what=""):
    """Assert relative_error(actual, expected) <= tol, with the error in the message."""
    error = relative_error(actual, expected)
    assert error <= tol, f"{what}: relative error {error:.3e} > {tol:.0e}"


def benchmark_rows(script, contract, timeout, extra=()):
    """Run ``benchmarks/<script> --quick --json [extra]``; its JSON rows, each checked for the contract keys."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    result = subprocess.run([sys.executable, str(path), "--quick", "--json", *extra], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows, "no output"
    for row in rows:
        assert contract <= row.keys(), f"missing {contract - row.keys()} in {row}"
        assert row["dtype"] in ("float32", "float64")
        assert row["threads"] >= 1 and row["batch"] >= 1
    return rows


def kill_after_checks(process, checkpoint, checks=2, timeout=90):
    """SIGKILL the running ``process`` once ``checkpoint`` records at least ``checks`` checks."""
    from minidl.checkpoint import load_checkpoint
    deadline, seen = time.monotonic() + timeout, 0
    while seen < checks:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"no checkpoint with {checks} checks within {timeout} s"
        if checkpoint.exists():
            seen = load_checkpoint(checkpoint)[1]["counters"]["check"]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
