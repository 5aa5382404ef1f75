"""Smoke test of benchmarks/peers.py: its --quick run keeps the JSON contract (no timing checks).

PyTorch and scikit-learn are optional: a contender that is not installed is skipped by the
benchmark itself, so only minidl's rows are required.
"""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("threadpoolctl")

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
CONTRACT = {"impl", "dtype", "threads", "batch", "step_ms", "epoch_s"}


def test_peers_benchmark_quick_json():
    result = subprocess.run([sys.executable, str(PEERS), "--quick", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    for row in rows:
        assert CONTRACT <= row.keys(), f"missing {CONTRACT - row.keys()} in {row}"
        assert row["impl"] in ("minidl", "torch", "sklearn")
        assert row["dtype"] in ("float32", "float64")
        assert row["threads"] >= 1 and row["batch"] >= 1
        for key in ("step_ms", "epoch_s"):
            assert row[key] is None or (math.isfinite(row[key]) and row[key] > 0), f"{key} in {row}"
    expected = {"minidl"} | {impl for impl in ("torch", "sklearn") if importlib.util.find_spec(impl)}
    synthetic = [row for row in rows if row.get("benchmark") != "digits"]
    assert {row["impl"] for row in synthetic} == expected
    for impl in expected:
        assert any(row["impl"] == impl and row["epoch_s"] for row in synthetic), f"no epoch for {impl}"
    assert all(row["step_ms"] for row in synthetic if row["impl"] in ("minidl", "torch"))
    digits = [row for row in rows if row.get("benchmark") == "digits"]
    if importlib.util.find_spec("sklearn"):
        assert {row["impl"] for row in digits} == {"minidl", "sklearn"}
        assert all(0 < row["test_accuracy"] <= 1 and row["seconds_to_stop"] > 0 for row in digits)
    else:
        assert not digits
