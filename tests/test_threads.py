"""--threads auto: minidl.threads chooses BLAS threads by timing a scratch copy of the model."""
import types

import numpy as np
import pytest

from minidl import MLP
from minidl import threads as threads_module
from minidl.config import UsageError, merge_config
from minidl.threads import auto_threads, choose_threads, describe, thread_count

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture
def restore_blas_threads():
    """Put the BLAS thread count back as it was after the test."""
    before = {pool["prefix"]: pool["num_threads"] for pool in threadpoolctl.threadpool_info()
              if pool["user_api"] == "blas"}
    yield
    for pool in threadpoolctl.threadpool_info():
        if pool["user_api"] == "blas":
            threadpoolctl.threadpool_limits(before[pool["prefix"]], user_api="blas")


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("AUTO", "auto"), ("2", 2), (1, 1), (3.0, 3)])
def test_thread_count_accepts_auto_or_a_positive_count(value, expected):
    assert thread_count(value) == expected


@pytest.mark.parametrize("value", ["0", 0, -1, "two", 1.5, True, ""])
def test_thread_count_refuses_anything_else(value):
    with pytest.raises((TypeError, ValueError)):
        thread_count(value)


def test_the_option_defaults_to_auto_and_a_bad_value_is_a_usage_error():
    assert merge_config()["threads"] == "auto"
    assert merge_config(("command line", {"threads": "2"}))["threads"] == 2
    with pytest.raises(UsageError, match="threads"):
        merge_config(("command line", {"threads": "0"}))


def test_choosing_changes_neither_the_model_nor_any_random_stream(restore_blas_threads):
    model = MLP([20, 16, 3], dtype="float64", seed=0)
    params, grads = model.params.copy(), model.grads.copy()
    state = np.random.get_state()[1].copy()
    chosen, seconds = choose_threads(model, 8, 2, budget=0.02)
    assert chosen in (1, 2) and 1 in seconds and set(seconds) <= {1, 2}
    assert np.array_equal(model.params, params) and np.array_equal(model.grads, grads)
    assert np.array_equal(np.random.get_state()[1], state)


def test_one_core_per_process_needs_no_measurement(restore_blas_threads):
    model = MLP([20, 16, 3], seed=0)
    assert choose_threads(model, 8, 1) == (1, {})
    threads, seconds = auto_threads(model, 32, max_threads=1)
    assert (threads, seconds) == (1, {})
    assert "nothing to measure" in describe(threads, seconds)


def test_fewer_threads_win_unless_more_are_clearly_faster(monkeypatch, restore_blas_threads):
    """The choice rule, with the clock replaced by a table of pass times per thread count."""
    model = MLP([20, 16, 3], seed=0)

    def choose_with(times):
        controller = threads_module._controller()

        def fake_perf_counter(state={"t": 0.0}):
            threads = controller.select(user_api="blas").info()[0]["num_threads"]
            state["t"] += times[threads]                         # a pass: the 2nd of 2 readings
            return state["t"]

        monkeypatch.setattr(threads_module, "time", types.SimpleNamespace(perf_counter=fake_perf_counter))
        try:
            return choose_threads(model, 8, len(times), budget=0.5)
        finally:
            monkeypatch.undo()

    assert choose_with({1: 1.0, 2: 0.95})[0] == 1              # 5 % faster: within the margin
    assert choose_with({1: 1.0, 2: 0.80})[0] == 2              # 20 % faster: chosen
    assert choose_with({1: 1.0, 2: 5.0})[0] == 1               # a busy machine: 2 threads wait
    chosen, seconds = choose_with({1: 1.0, 2: 0.8})
    assert seconds[1] == pytest.approx(1.0) and seconds[2] == pytest.approx(0.8)


def test_auto_threads_sets_the_count_it_chose(restore_blas_threads):
    model = MLP([20, 16, 3], seed=0)
    threads, seconds = auto_threads(model, 16, max_threads=2)
    from threadpoolctl import threadpool_info
    assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} == {threads}
    assert f"auto: {threads}" in describe(threads, seconds)


def test_minidl_train_records_the_count_auto_chose(tmp_path):
    """`minidl train` (auto by default) says what it chose with --verbose and writes it to config.toml,
    so --config or --resume reruns with the same threads; a number is kept as given."""
    import subprocess
    import sys
    from minidl import rundir
    base = [sys.executable, "-m", "minidl", "train", "--dataset", "xor", "--epochs", "2", "--quiet", "--no-plot"]
    done = subprocess.run(base + ["--output", str(tmp_path / "auto"), "--verbose"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    chosen = rundir.read_toml(str(tmp_path / "auto" / rundir.CONFIG))["threads"]
    assert isinstance(chosen, int) and chosen >= 1
    assert f"BLAS threads: auto: {chosen}" in done.stdout
    done = subprocess.run(base + ["--output", str(tmp_path / "one"), "--threads", "1"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rundir.read_toml(str(tmp_path / "one" / rundir.CONFIG))["threads"] == 1
