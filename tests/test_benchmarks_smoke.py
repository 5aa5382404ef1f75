"""Smoke tests of benchmarks/step.py and epoch.py: they run and keep their JSON contracts (no timing checks)."""
import math

import pytest

from conftest import benchmark_rows

pytest.importorskip("threadpoolctl")

CONTRACT = {"dtype", "threads", "batch", "step_ms", "gemm_ms", "ratio"}


def test_step_benchmark_quick_json():
    rows = benchmark_rows("step.py", CONTRACT, timeout=120)
    for row in rows:
        for key in ("step_ms", "gemm_ms", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, f"{key} = {row[key]} in {row}"
    configs = {(row["dtype"], row["threads"], row["batch"]) for row in rows}
    assert len(configs) == len(rows), "a configuration was reported twice"
    assert {row["momentum"] for row in rows} == {0.9}


def test_step_benchmark_measures_the_momentum_it_is_given():
    rows = benchmark_rows("step.py", CONTRACT, timeout=120, extra=("--momentum", "0", "--threads", "1",
                                                                   "--dtype", "float32"))
    assert [(row["dtype"], row["threads"], row["momentum"]) for row in rows] == [("float32", 1, 0.0)]


EPOCH_CONTRACT = {"dtype", "threads", "batch", "epoch_s", "gemm_epoch_s", "ratio", "peak_rss_mb",
                  "step_alloc_bytes", "step_alloc_bytes_small_ufunc_buffer"}


def test_epoch_benchmark_quick_json():
    rows = benchmark_rows("epoch.py", EPOCH_CONTRACT, timeout=120, extra=("--dtype", "float32", "--momentum", "0"))
    (row,) = rows
    assert (row["dtype"], row["threads"], row["momentum"]) == ("float32", 1, 0.0)
    for key in ("epoch_s", "gemm_epoch_s", "ratio", "peak_rss_mb"):
        assert math.isfinite(row[key]) and row[key] > 0, f"{key} = {row[key]} in {row}"
    assert row["peak_rss_mb"] >= row["data_mb"], "the peak RSS cannot be below the data it holds"
    # what a step allocates, by phase: the optimizer's update allocates no array of its own
    assert row["where"]["update (optimizer.step)"]["bytes"] < 1024
    assert row["step_alloc_bytes_small_ufunc_buffer"] <= row["step_alloc_bytes"]


@pytest.mark.parametrize("script", ["step.py", "epoch.py", "scaling.py", "peers.py"])
@pytest.mark.parametrize("value", ["-0.5", "nan", "abc"])
def test_benchmarks_reject_a_bad_momentum_with_a_usage_error(script, value):
    import subprocess
    import sys
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    result = subprocess.run([sys.executable, str(path), "--momentum", value], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "momentum must be a finite number >= 0" in result.stderr and "Traceback" not in result.stderr
