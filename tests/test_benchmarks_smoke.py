"""Smoke test of benchmarks/step.py: it runs and keeps its JSON contract (no timing checks)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("threadpoolctl")

STEP = Path(__file__).resolve().parents[1] / "benchmarks" / "step.py"
CONTRACT = {"dtype", "threads", "batch", "step_ms", "gemm_ms", "ratio"}


def test_step_benchmark_quick_json():
    result = subprocess.run([sys.executable, str(STEP), "--quick", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows, "no output"
    for row in rows:
        assert CONTRACT <= row.keys(), f"missing {CONTRACT - row.keys()} in {row}"
        assert row["dtype"] in ("float32", "float64")
        assert row["threads"] >= 1 and row["batch"] >= 1
        for key in ("step_ms", "gemm_ms", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, f"{key} = {row[key]} in {row}"
    configs = {(row["dtype"], row["threads"], row["batch"]) for row in rows}
    assert len(configs) == len(rows), "a configuration was reported twice"
