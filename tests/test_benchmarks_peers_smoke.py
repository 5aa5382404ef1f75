"""Smoke test of benchmarks/peers.py: its --quick run keeps the JSON contract (no timing checks).

PyTorch and scikit-learn are optional: a contender that is not installed is skipped by the
benchmark itself, so only minidl's rows are required.
"""
import importlib.util
import math

import pytest

from conftest import benchmark_rows

pytest.importorskip("threadpoolctl")

CONTRACT = {"impl", "dtype", "threads", "batch", "step_ms", "epoch_s"}


def test_peers_benchmark_quick_json():
    rows = benchmark_rows("peers.py", CONTRACT, timeout=300)
    for row in rows:
        assert row["impl"] in ("minidl", "torch", "sklearn")
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
    # measurement discipline: every synthetic line carries the foreign_cores guard, every ratio its range
    for row in synthetic:
        assert row["foreign_cores"] >= 0 and len(row["foreign_cores_per_round"]) == row["rounds"]
        for key in [key for key in row if key.startswith("minidl_over_") or key.endswith("_over_minidl_epoch")
                    or key == "ratio_to_gemm"]:
            if key.endswith(("_min", "_max")) or row[key] is None:
                continue
            assert row[key + "_min"] <= row[key] <= row[key + "_max"], key
