"""Smoke test of benchmarks/step.py: it runs and keeps its JSON contract (no timing checks)."""
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
