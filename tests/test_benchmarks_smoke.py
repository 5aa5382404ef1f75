"""Smoke tests of benchmarks/step.py and epoch.py: they run and keep their JSON contracts (no timing checks)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
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


SCALING = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"


def run_scaling(*options):
    """benchmarks/scaling.py with these options, in a subprocess."""
    return subprocess.run([sys.executable, str(SCALING), *options], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def scaling():
    """benchmarks/scaling.py as a module (for its cost model), sys.path as it was."""
    import importlib.util
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("benchmarks_scaling", SCALING)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def allreduce_times(sizes, times_us):
    """--cost-model-worker's measurement for these message sizes (bytes) and times (us)."""
    return {"points": [{"bytes": size, "us": time} for size, time in zip(sizes, times_us)], "foreign_cores": 0.0}


LARGE = [2 ** 19, 2 ** 20, 2 ** 21, 2 ** 23, 2 ** 25]          # bytes: the fitted regime


def test_the_cost_model_recovers_an_exact_line(scaling):
    alpha, beta = 12.5, 0.25e-3                                # us, us per byte (4 GB/s)
    fit = scaling.fit_cost_model(allreduce_times([8] + LARGE, [3.0] + [2 * alpha + beta * b for b in LARGE]))
    assert fit["alpha_us"] == pytest.approx(alpha, rel=1e-9)
    assert fit["beta_ns_per_byte"] == pytest.approx(1e3 * beta, rel=1e-9)
    assert fit["bandwidth_GB_s"] == pytest.approx(4.0) and fit["bandwidth_gbps"] == pytest.approx(32.0)
    assert fit["relative_rms"] < 1e-9 and fit["r_squared"] == pytest.approx(1.0)
    assert fit["refused"] is None and fit["clamped"] == [] and fit["small_message_us"] == 3.0


def test_a_negative_latency_is_clamped_to_zero(scaling):
    """The loaded machine's case: a line whose intercept is negative (alpha = -319 us)."""
    times = [2 * -319.0 + 1.1e-3 * b for b in LARGE]
    times[0] = 20.0                                            # still a positive time
    fit = scaling.fit_cost_model(allreduce_times(LARGE, times))
    assert fit["unconstrained_alpha_us"] < 0 and fit["clamped"] == ["alpha"]
    assert fit["alpha_us"] == 0.0 and fit["beta_ns_per_byte"] > 0
    assert all(point["model_us"] >= 0 for point in fit["points"])
    # the clamped fit is the best line through the origin in relative error: no alpha >= 0, beta
    # on a grid around it does better
    def error(alpha, beta):
        return sum(((2 * alpha + beta * b - t) / t) ** 2 for b, t in zip(LARGE, times))
    best = error(0.0, fit["beta_ns_per_byte"] * 1e-3)
    for alpha in (0.0, 0.5, 5.0, 50.0):
        for scale in (0.9, 0.99, 1.0, 1.01, 1.1):
            assert error(alpha, scale * fit["beta_ns_per_byte"] * 1e-3) >= best - 1e-12


def test_nonnegative_least_squares_matches_scipy(scaling, rng):
    optimize = pytest.importorskip("scipy.optimize")
    for _ in range(200):
        design, values = rng.normal(size=(6, 2)), rng.normal(size=6)
        ours = scaling.nonnegative_least_squares(design, values)
        theirs = optimize.nnls(design, values)[0]
        assert ours.min() >= 0
        assert np.linalg.norm(design @ ours - values) == pytest.approx(np.linalg.norm(design @ theirs - values),
                                                                       rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("times, reason", [
    ([900.0, 100.0, 1200.0, 80.0, 1500.0], "RMS"),            # no line goes through these
    ([500.0, 400.0, 300.0, 200.0, 100.0], "beta = 0"),        # time falls with the size
    ([100.0, 200.0], "no residual"),                          # 2 points: any line fits
])
def test_a_fit_that_does_not_explain_the_data_is_refused(scaling, times, reason):
    fit = scaling.fit_cost_model(allreduce_times(LARGE[:len(times)], times))
    assert fit["refused"] and reason in fit["refused"]
    assert fit["alpha_us"] >= 0 and fit["beta_ns_per_byte"] >= 0


PREDICT_CONTRACT = {"ranks", "step_ms", "compute_ms", "allreduce_ms", "update_ms", "efficiency", "network",
                    "latency_us", "bandwidth_gbps", "sizes", "dtype", "batch", "zero1_step_ms",
                    "zero1_efficiency", "zero1_pays_from"}


@pytest.mark.parametrize("network, sizes", [("ib100", "784,256,256,10"), ("10gbe", "784,4096,4096,10")])
def test_predict_prints_one_json_object_per_rank_count(network, sizes):
    """--predict with the 1-rank figures given: no timing, so the values are exact."""
    result = run_scaling("--predict", "--json", "--network", network, "--sizes", sizes, "--compute-ms", "8",
                         "--update-ms", "0.4")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["ranks"] for row in rows] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    for row in rows:
        assert PREDICT_CONTRACT <= row.keys(), f"missing {PREDICT_CONTRACT - row.keys()}"
        assert (row["network"], row["dtype"], row["batch"], row["figures"]) == (network, "float32", 512, "given")
        assert row["sizes"] == [int(size) for size in sizes.split(",")]
        assert row["update_ms"] == 0.4 and row["compute_ms"] == pytest.approx(8 / row["ranks"])
        assert row["step_ms"] == pytest.approx(row["compute_ms"] + row["allreduce_ms"] + row["update_ms"])
        assert 0 < row["efficiency"] <= row["zero1_efficiency"] <= 1
        assert row["zero1_step_ms"] <= row["step_ms"]
    assert rows[0]["allreduce_ms"] == 0 and rows[0]["efficiency"] == 1
    for fewer, more in zip(rows, rows[1:]):                   # the model's shape, whatever the figures
        assert more["allreduce_ms"] > fewer["allreduce_ms"] and more["efficiency"] < fewer["efficiency"]
    gains = [row["ranks"] for row in rows if row["zero1_step_ms"] <= row["step_ms"] / 1.1]
    assert rows[0]["zero1_pays_from"] == (gains[0] if gains else None)


def test_predict_refuses_a_bad_figure_with_a_usage_error():
    for bad in (["--latency-us", "-1"], ["--bandwidth-gbps", "nan"], ["--sizes", "784"],
                ["--dtype", "float32", "float64"]):
        result = run_scaling("--predict", "--compute-ms", "1", "--update-ms", "1", *bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (bad, result.stderr)


def _mpiexec():
    import os
    import shutil
    return shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.skipif(_mpiexec() is None, reason="needs mpiexec")
def test_scaling_runs_minidl_and_torch_ddp_in_the_same_rounds():
    """A tiny interleaved run: every line says its impl, minidl's 2-rank line compares its
    efficiency with torch_ddp's of the same rounds; spreads and the foreign_cores guard are there."""
    import importlib.util
    has_torch = importlib.util.find_spec("torch") is not None
    process = subprocess.run([sys.executable, str(SCALING), "--json", "--rounds", "2", "--steps", "3", "--warmup", "1",
                              "--dtype", "float32", "--batch", "16", "--sizes", "32,16,4"],
                             capture_output=True, text=True, timeout=180)
    assert process.returncode == 0, process.stderr
    rows = [json.loads(line) for line in process.stdout.splitlines()]
    expected = [("minidl", 1, 1), ("minidl", 1, 2), ("minidl", 2, 1)]
    if has_torch:
        expected += [("torch_ddp", 1, 1), ("torch_ddp", 2, 1)]
    else:
        assert "torch is not installed: the torch_ddp peer is skipped" in process.stderr
    assert [(row["impl"], row["ranks"], row["threads"]) for row in rows] == expected
    for row in rows:
        assert row["rounds"] == 2 and row["foreign_cores"] >= 0 and row["sizes"] == [32, 16, 4]
        assert row["efficiency_min"] <= row["efficiency_max"] and row["step_ms"] > 0
    if has_torch:
        minidl = rows[2]
        assert minidl["vs_torch_ddp_min"] <= minidl["vs_torch_ddp"] <= minidl["vs_torch_ddp_max"]
        assert rows[4]["efficiency"] == pytest.approx(rows[3]["step_ms"] / rows[4]["step_ms"] / 2, abs=2e-3)


def test_scaling_skips_torch_ddp_with_a_note_when_torch_is_absent(scaling, monkeypatch, capsys):
    real = scaling.importlib.util.find_spec
    monkeypatch.setattr(scaling.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    monkeypatch.setattr(scaling, "launch", lambda *a, **k: pytest.fail("nothing should run"))
    scaling.main(["--impl", "torch_ddp", "--json"])
    captured = capsys.readouterr()
    assert "torch is not installed: the torch_ddp peer is skipped" in captured.err and captured.out == ""
