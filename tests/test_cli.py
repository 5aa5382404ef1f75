"""The `minidl` command: run directories, config precedence, refusing a non-empty --output,
resume (also after SIGKILL), fine-tuning, evaluate / plot / gradcheck, and every error path
ending in exit code 2 with one line and no traceback.

Most tests call minidl.cli.main in-process (fast); a few run the real command in a subprocess."""
import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EXACT_TOL, FakeTTY, assert_close, kill_after_checks
import minidl
from minidl import checkpoint as ckpt
from minidl import rundir
from minidl.cli import main
from minidl.data import load_dataset
from minidl.checkpoint import read_history_csv
from minidl.loop import evaluate

SCRIPTS = Path(__file__).parent / "scripts"
PNG = b"\x89PNG\r\n\x1a\n"
STATE_KEYS = ["0.weight", "0.bias", "2.weight", "2.bias"]


def cli(*argv):
    """(exit code, stdout, stderr) of `minidl ARGV` run in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in argv])
        except SystemExit as exit_:          # argparse: --help, usage errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def assert_usage_error(result, *fragments):
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minidl: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def read_npz(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def same_npz(a, b):
    a, b = read_npz(a), read_npz(b)
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A small real run on digits with the default options: 3 epochs, 64-32-10."""
    output = tmp_path_factory.mktemp("runs") / "digits"
    result = cli("train", "--dataset", "digits", "--epochs", 3, "--hidden", 32, "--output", output, "--quiet")
    assert result[0] == 0, result
    return output, result


@pytest.fixture(scope="module")
def blobs_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "blobs"
    result = cli("train", "--dataset", "blobs", "--epochs", 2, "--hidden", 8, "--output", output, "--quiet")
    assert result[0] == 0, result
    return output


# ------------------------------------------------------------------------ the run directory
def test_run_directory_holds_every_output(digits_run):
    output, (code, out, err) = digits_run
    assert sorted(os.listdir(output)) == sorted(rundir.OUTPUTS)
    assert out.startswith("minidl: stopped: max_epochs at epoch 3 of 3") and "test loss" in out
    assert err == ""                                            # --quiet: no bar, no per-check lines
    assert (output / "curves.png").read_bytes()[:8] == PNG


def test_summary_json_holds_the_documented_keys(digits_run):
    output = digits_run[0]
    summary = json.loads((output / "summary.json").read_text())
    history = json.loads((output / "history.json").read_text())
    assert summary["stop_reason"] == "max_epochs" and summary["stopped_epoch"] is None
    assert summary["epochs_run"] == 3 and summary["best_epoch"] in (0, 1, 2)
    assert summary["best_epoch"] == history["best_epoch"]
    assert isinstance(summary["test_loss"], float) and summary["test_accuracy"] >= 0.9
    assert summary["restored_from"] == summary["best_epoch"]    # restore_best_weights is the default


def test_final_npz_is_the_restored_model_under_state_dict_keys(digits_run):
    output = digits_run[0]
    state = read_npz(output / "final.npz")                      # NumPy alone
    assert list(state) == STATE_KEYS
    assert [state[key].shape for key in STATE_KEYS] == [(32, 64), (32,), (10, 32), (10,)]
    model = minidl.load(str(output))
    history = json.loads((output / "history.json").read_text())
    best = history["records"][history["best_check"]]
    dataset = load_dataset("digits", seed=0)
    assert_close(evaluate(model, dataset.X_val, dataset.y_val)["loss"], best["val_loss"], EXACT_TOL, "val_loss")
    summary = json.loads((output / "summary.json").read_text())
    assert_close(evaluate(model, dataset.X_test, dataset.y_test)["loss"], summary["test_loss"], EXACT_TOL, "test")


def test_checkpoint_history_data_and_config_files_read_back(digits_run):
    output = digits_run[0]
    arrays, meta = ckpt.load_checkpoint(output / "checkpoint.npz")
    assert meta["model"]["sizes"] == [64, 32, 10] and arrays["params"].size == 64 * 32 + 32 + 32 * 10 + 10
    history = json.loads((output / "history.json").read_text())
    assert [record["epoch"] for record in history["records"]] == [0, 1, 2]
    rows = read_history_csv(output / "history.csv")
    assert [row["val_loss"] for row in rows] == [record["val_loss"] for record in history["records"]]
    data = json.loads((output / "data.json").read_text())
    assert data["name"] == "digits" and data["n_train"] + data["n_val"] + data["n_test"] == 1797
    assert data["standardized"] and len(data["standardization"]["mean"]) == 64
    config = rundir.read_toml(output / "config.toml")
    assert config["dataset"] == "digits" and config["epochs"] == 3 and config["hidden"] == [32]
    assert config["patience"] == 10 and config["restore_best_weights"] is True and config["seed"] == 0


# ------------------------------------------------------------------------ --output rules
def test_a_non_empty_output_is_refused_unless_overwrite(tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    result = cli("train", "--dataset", "blobs", "--epochs", 1, "--output", output)
    assert_usage_error(result, "is not empty", "--resume", "--overwrite")
    assert os.listdir(output) == ["notes.txt"]
    assert cli("train", "--dataset", "blobs", "--epochs", 1, "--output", output, "--overwrite", "--quiet")[0] == 0
    assert (output / "notes.txt").read_text() == "mine"               # only minidl's files are replaced
    assert (output / "final.npz").exists()


def test_overwrite_replaces_a_previous_run(tmp_path, blobs_run):
    output = tmp_path / "run"
    assert cli("train", "--dataset", "blobs", "--epochs", 2, "--hidden", 8, "--output", output, "--quiet",
               "--no-plot")[0] == 0
    assert cli("train", "--dataset", "blobs", "--epochs", 2, "--hidden", 8, "--seed", 1, "--output", output,
               "--overwrite", "--quiet", "--no-plot")[0] == 0
    assert rundir.read_toml(output / "config.toml")["seed"] == 1
    assert not same_npz(output / "final.npz", blobs_run / "final.npz")


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_usage_error(cli("train", "--dataset", "blobs", "--output", tmp_path / "file"), "not a directory")


def test_resume_and_overwrite_together_are_refused(tmp_path):
    code, _, err = cli("train", "--output", tmp_path, "--resume", "--overwrite")
    assert code == 2 and "not allowed with" in err


# ------------------------------------------------------------------------ config precedence
def test_config_precedence_defaults_then_toml_then_flags(tmp_path):
    (tmp_path / "c.toml").write_text('dataset = "blobs"\nepochs = 2\nlr = 0.2\nhidden = [8, 4]\n'
                                     'patience = 4\noptimizer = "sgd"\nnesterov = true\n')
    code, _, err = cli("train", "--config", tmp_path / "c.toml", "--lr", 0.3, "--patience", 5,
                       "--output", tmp_path / "run", "--quiet")
    assert code == 0, err
    config = rundir.read_toml(tmp_path / "run" / "config.toml")
    assert config["dataset"] == "blobs" and config["epochs"] == 2 and config["hidden"] == [8, 4]   # TOML
    assert config["lr"] == 0.3 and config["patience"] == 5                                         # flags
    assert config["nesterov"] is True and config["momentum"] == 0.9 and config["batch_size"] == 32  # TOML, defaults
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [record["lr"] for record in history["records"]] == [0.3, 0.3]        # the flag really was used
    assert read_npz(tmp_path / "run" / "final.npz")["2.weight"].shape == (4, 8)


def test_the_resolved_config_reproduces_the_run(tmp_path):
    first = tmp_path / "a"
    assert cli("train", "--dataset", "blobs", "--epochs", 2, "--hidden", 6, "--lr", 0.1, "--seed", 3,
               "--output", first, "--quiet", "--no-plot")[0] == 0
    assert cli("train", "--config", first / "config.toml", "--output", tmp_path / "b", "--quiet", "--no-plot")[0] == 0
    assert same_npz(first / "final.npz", tmp_path / "b" / "final.npz")


# ------------------------------------------------------------------------ resume
def test_resume_continues_to_a_larger_epoch_count_exactly(tmp_path):
    flags = ("train", "--dataset", "blobs", "--hidden", 8, "--patience", 50, "--quiet", "--no-plot")
    assert cli(*flags, "--epochs", 4, "--output", tmp_path / "full")[0] == 0
    assert cli(*flags, "--epochs", 2, "--output", tmp_path / "part")[0] == 0
    assert cli(*flags, "--epochs", 4, "--output", tmp_path / "part", "--resume")[0] == 0
    assert same_npz(tmp_path / "full" / "final.npz", tmp_path / "part" / "final.npz")
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["epochs_run"] == 4 and summary["stop_reason"] == "max_epochs"


def test_resume_of_a_finished_run_changes_nothing(tmp_path, blobs_run):
    output = tmp_path / "run"
    flags = ("train", "--dataset", "blobs", "--epochs", 2, "--hidden", 8, "--output", output, "--quiet", "--no-plot")
    assert cli(*flags)[0] == 0
    assert cli(*flags, "--resume")[0] == 0
    assert same_npz(output / "final.npz", blobs_run / "final.npz")


@pytest.mark.parametrize("flag, value, key", [("--lr", 0.3, "lr"), ("--hidden", "8,8", "hidden"),
                                              ("--seed", 5, "seed"), ("--batch-size", 16, "batch_size")])
def test_resume_with_different_flags_names_the_key(tmp_path, flag, value, key):
    base = ("train", "--dataset", "blobs", "--epochs", 1, "--output", tmp_path / "run", "--quiet", "--no-plot")
    assert cli(*base, "--hidden", 8)[0] == 0
    before = read_npz(tmp_path / "run" / "final.npz")
    hidden = () if flag == "--hidden" else ("--hidden", 8)
    assert_usage_error(cli(*base, *hidden, flag, value, "--resume"), "cannot resume with different settings", f"{key}:")
    after = read_npz(tmp_path / "run" / "final.npz")
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_resume_without_flags_uses_the_saved_config(tmp_path):
    assert cli("train", "--dataset", "blobs", "--epochs", 2, "--hidden", 8, "--lr", 0.2,
               "--output", tmp_path / "run", "--quiet", "--no-plot")[0] == 0
    code, out, err = cli("train", "--output", tmp_path / "run", "--resume", "--quiet", "--no-plot")
    assert code == 0, err
    assert rundir.read_toml(tmp_path / "run" / "config.toml")["dataset"] == "blobs"


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_final_npz(tmp_path):
    flags = ["train", "--dataset", "digits", "--epochs", 6, "--patience", 3, "--hidden", 32, "--quiet"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(SCRIPTS / "slow_cli.py"), "1.0", *map(str, flags),
                                "--output", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        checkpoint = killed / "checkpoint.npz"
        kill_after_checks(process, checkpoint, checks=2, timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stderr.close()
    assert not (killed / "final.npz").exists() and not (killed / "summary.json").exists()
    meta = ckpt.load_checkpoint(checkpoint)[1]
    assert meta["stop_reason"] is None and meta["counters"]["epoch"] < 6
    done = subprocess.run([sys.executable, "-m", "minidl", *map(str, flags), "--output", str(killed), "--resume"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert cli(*flags, "--output", tmp_path / "straight")[0] == 0
    assert same_npz(killed / "final.npz", tmp_path / "straight" / "final.npz")
    resumed = json.loads((killed / "summary.json").read_text())
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
    for key in ("stop_reason", "best_epoch", "stopped_epoch", "epochs_run", "test_loss", "test_accuracy"):
        assert resumed[key] == straight[key], key


# ------------------------------------------------------------------------ error paths
ERRORS = {
    "unknown_dataset": (["train", "--dataset", "cifar"], ["dataset must be one of", "'cifar'"]),
    "unknown_dataset_in_toml": (["train", "--config", "{dir}/dataset.toml"], ["dataset.toml", "'cifar'"]),
    "bad_hidden": (["train", "--dataset", "blobs", "--hidden", "x,y"], ["hidden"]),
    "zero_hidden": (["train", "--dataset", "blobs", "--hidden", "0"], ["--hidden must be >= 1"]),
    "bad_toml": (["train", "--config", "{dir}/bad.toml"], ["not valid TOML"]),
    "unknown_toml_key": (["train", "--config", "{dir}/unknown.toml"], ["unknown option(s) colour"]),
    "wrong_type_in_toml": (["train", "--config", "{dir}/type.toml"], ["epochs = 'two'"]),
    "missing_toml": (["train", "--config", "{dir}/missing.toml"], ["cannot read config file"]),
    "negative_lr": (["train", "--dataset", "blobs", "--lr", "-0.1"], ["lr must be >= 0"]),
    "nan_lr": (["train", "--dataset", "blobs", "--lr", "nan"], ["lr = nan"]),
    "zero_epochs": (["train", "--dataset", "blobs", "--epochs", "0"], ["--epochs must be >= 1"]),
    "zero_batch_size": (["train", "--dataset", "blobs", "--batch-size", "0"], ["--batch-size must be >= 1"]),
    "zero_collective_timeout": (["train", "--dataset", "blobs", "--collective-timeout", "0"],
                                ["--collective-timeout must be a positive number of seconds"]),
    "fractions": (["train", "--dataset", "blobs", "--val-fraction", "0.6", "--test-fraction", "0.5"],
                  ["leaves no training data"]),
    "resume_missing_dir": (["train", "--resume", "--output", "{dir}/nothere"], ["nothing to resume"]),
    "init_from_missing": (["train", "--dataset", "blobs", "--init-from", "{dir}/none.npz"], ["no model at"]),
    "freeze_out_of_range": (["train", "--dataset", "blobs", "--freeze", "5"], ["--freeze", "out of range"]),
    "mnist_missing": (["train", "--dataset", "mnist", "--data-dir", "{dir}"], ["train-images-idx3-ubyte", "{dir}"]),
    "evaluate_missing": (["evaluate", "{dir}/nothere"], ["no model at"]),
    "plot_missing": (["plot", "{dir}/nothere.json"], ["no history file"]),
    "plot_not_history": (["plot", "{dir}/bad.json"], ["not a minidl history file"]),
    "gradcheck_bad_sizes": (["gradcheck", "--sizes", "a,b"], ["--sizes"]),
    "gradcheck_bad_activation": (["gradcheck", "--activation", "swish"], ["unknown activation"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_every_error_is_one_line_and_exit_code_2(tmp_path, case):
    (tmp_path / "dataset.toml").write_text('dataset = "cifar"\n')
    (tmp_path / "bad.toml").write_text("epochs = [1,\n")
    (tmp_path / "unknown.toml").write_text('dataset = "blobs"\ncolour = "red"\n')
    (tmp_path / "type.toml").write_text('epochs = "two"\n')
    (tmp_path / "bad.json").write_text('{"not": "a history"}')
    argv, fragments = ERRORS[case]
    argv = [arg.format(dir=tmp_path) for arg in argv]
    if argv[0] == "train" and "--output" not in argv:
        argv += ["--output", str(tmp_path / "out")]
    assert_usage_error(cli(*argv), *(fragment.format(dir=tmp_path) for fragment in fragments))


def test_evaluate_on_a_mismatched_dataset(digits_run):
    assert_usage_error(cli("evaluate", digits_run[0], "--dataset", "blobs"), "the model maps 64 -> 10", "2 -> 3")


def test_init_from_a_model_with_other_inputs_or_outputs(tmp_path, blobs_run, digits_run):
    assert_usage_error(cli("train", "--dataset", "digits", "--init-from", blobs_run, "--output", tmp_path / "a"),
                       "takes 2 inputs", "64 features")
    assert_usage_error(cli("train", "--dataset", "digits-parity", "--init-from", digits_run[0],
                           "--output", tmp_path / "b"), "10 outputs", "--new-head")


def test_missing_matplotlib_names_the_extra(tmp_path, blobs_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert_usage_error(cli("plot", blobs_run / "history.json", "-o", tmp_path / "x.png"), ".[plot]")
    code, out, err = cli("train", "--dataset", "blobs", "--epochs", 1, "--output", tmp_path / "run", "--quiet")
    assert code == 0 and ".[plot]" in err and "Traceback" not in err
    assert (tmp_path / "run" / "final.npz").exists() and not (tmp_path / "run" / "curves.png").exists()


def test_missing_scikit_learn_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert_usage_error(cli("train", "--dataset", "digits", "--output", tmp_path / "run"), ".[data]")


def test_a_real_process_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "minidl", "train", "--dataset", "blobs", "--hidden", "x",
                           "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "hidden" in done.stderr


# ------------------------------------------------------------------------ other commands
def test_evaluate_json_matches_the_summary(digits_run):
    output = digits_run[0]
    code, out, err = cli("evaluate", output, "--json")
    assert code == 0, err
    result = json.loads(out)
    summary = json.loads((output / "summary.json").read_text())
    assert result["dataset"] == "digits" and result["split"] == "test" and result["samples"] > 300
    assert_close(result["loss"], summary["test_loss"], EXACT_TOL, "test loss")
    assert result["accuracy"] == summary["test_accuracy"]
    code, out, _ = cli("evaluate", output / "checkpoint.npz", "--split", "val", "--json")   # the live state
    history = json.loads((output / "history.json").read_text())
    assert code == 0
    assert_close(json.loads(out)["loss"], history["records"][-1]["val_loss"], EXACT_TOL, "live val_loss")


def test_evaluate_reads_a_model_file_written_by_model_save(digits_run, tmp_path):
    """Every command that takes a model reads what minidl.load reads, model.save's files too."""
    path = tmp_path / "model.npz"
    minidl.load(str(digits_run[0])).save(str(path))
    code, out, err = cli("evaluate", path, "--json")
    assert code == 0, err
    summary = json.loads((digits_run[0] / "summary.json").read_text())
    assert_close(json.loads(out)["loss"], summary["test_loss"], EXACT_TOL, "test loss")


def test_evaluate_plain_text(digits_run):
    code, out, _ = cli("evaluate", digits_run[0] / "final.npz", "--split", "train")
    assert code == 0 and out.startswith("digits train (") and "accuracy" in out


def test_plot_writes_a_png(tmp_path, blobs_run):
    code, out, err = cli("plot", blobs_run / "history.json", "-o", tmp_path / "x.png")
    assert code == 0, err
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG and "x.png" in out
    assert cli("plot", blobs_run / "history.csv", "-o", tmp_path / "y.png")[0] == 0
    assert (tmp_path / "y.png").read_bytes()[:8] == PNG


def test_plot_never_overwrites_the_runs_own_curves_unless_told(tmp_path, blobs_run):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("history.json", "history.csv", "summary.json", "curves.png"):
        (run / name).write_bytes((blobs_run / name).read_bytes())
    before = (run / "curves.png").read_bytes()
    for target in (run, run / "history.json", run / "history.csv"):
        assert_usage_error(cli("plot", target), "curves.png exists", "-o FILE", "--overwrite")
    assert (run / "curves.png").read_bytes() == before
    code, out, err = cli("plot", run, "-o", tmp_path / "other.png")
    assert code == 0 and (tmp_path / "other.png").read_bytes()[:8] == PNG, err
    assert cli("plot", run, "-o", tmp_path / "other.png")[0] == 0          # -o names the file: replaced
    code, out, err = cli("plot", run / "history.json", "--overwrite")
    assert code == 0 and out.strip() == f"wrote {run / 'curves.png'}", err
    assert (run / "curves.png").read_bytes()[:8] == PNG
    (run / "curves.png").unlink()
    assert cli("plot", run)[0] == 0 and (run / "curves.png").exists()       # none yet: written beside it


def test_plot_titles_the_figure_with_the_run_and_its_stop(tmp_path, blobs_run, monkeypatch):
    import minidl.plot
    seen = {}
    original = minidl.plot.plot_history
    monkeypatch.setattr(minidl.plot, "plot_history",
                        lambda *a, **k: seen.setdefault("fig", original(*a, **k)[0].figure))
    assert cli("plot", blobs_run, "-o", tmp_path / "x.png")[0] == 0
    assert seen["fig"].get_suptitle() == "blobs: stopped by max_epochs at epoch 2"


@pytest.mark.parametrize("content", ['{"records": [{"epoch": 0}]}', '{"records": 3}', "[1, 2]", "{not json",
                                     '{"records": [{"epoch": 0, "loss": "low"}]}'])
def test_plot_of_a_malformed_history_is_one_line(tmp_path, content):
    (tmp_path / "history.json").write_text(content)
    assert_usage_error(cli("plot", tmp_path), "not a minidl history file")
    assert not (tmp_path / "curves.png").exists()


def test_plot_of_a_malformed_csv_is_one_line(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss\n0,low\n")
    assert_usage_error(cli("plot", tmp_path / "history.csv"), "not a minidl history file")


def test_gradcheck_prints_a_table_and_passes():
    code, out, err = cli("gradcheck", "--sizes", "3,5,2", "--activation", "tanh")
    assert code == 0, err
    assert "0.weight" in out and "2.bias" in out and out.rstrip().endswith(": ok")


def test_gradcheck_fails_with_exit_1_on_an_impossible_tolerance():
    code, out, _ = cli("gradcheck", "--sizes", "3,5,2", "--tolerance", "1e-300")
    assert code == 1 and "FAILED" in out


def test_train_help_lists_the_defaults():
    code, out, _ = cli("train", "--help")
    assert code == 0
    text = " ".join(out.split())
    for fragment in ("--dataset", "(default: digits)", "--epochs", "(default: 200)", "--patience",
                     "(default: 10)", "--batch-size", "(default: 32)", "--restore-best-weights",
                     "--init-from", "--freeze", "--new-head", "--resume", "--overwrite"):
        assert fragment in text, fragment


def test_the_installed_command_runs(tmp_path):
    script = Path(sys.executable).with_name("minidl")          # the console script beside python
    command = [str(script)] if script.exists() else [sys.executable, "-m", "minidl"]
    done = subprocess.run([*command, "gradcheck", "--sizes", "2,3,2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.rstrip().endswith(": ok"), done.stderr


# ------------------------------------------------------------------------ fine-tuning
def test_fine_tune_with_a_new_head_keeps_the_frozen_layer(tmp_path, digits_run):
    pretrained = read_npz(digits_run[0] / "final.npz")
    code, out, err = cli("train", "--init-from", digits_run[0], "--freeze", 0, "--new-head",
                         "--dataset", "digits-parity", "--epochs", 2, "--output", tmp_path / "ft", "--quiet")
    assert code == 0, err
    tuned = read_npz(tmp_path / "ft" / "final.npz")
    assert np.array_equal(tuned["0.weight"], pretrained["0.weight"])
    assert np.array_equal(tuned["0.bias"], pretrained["0.bias"])
    assert tuned["2.weight"].shape == (2, 32) and tuned["2.bias"].shape == (2,)
    config = rundir.read_toml(tmp_path / "ft" / "config.toml")
    assert config["hidden"] == [32] and config["freeze"] == [0] and config["new_head"] is True
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.8
    code, out, _ = cli("evaluate", tmp_path / "ft", "--json")
    assert code == 0 and json.loads(out)["dataset"] == "digits-parity"


def test_fine_tune_from_a_checkpoint_file(tmp_path, digits_run):
    live = ckpt.load_checkpoint(digits_run[0] / "checkpoint.npz")[0]["params"]
    code, _, err = cli("train", "--init-from", digits_run[0] / "checkpoint.npz", "--freeze", 0, "--new-head",
                       "--dataset", "digits-parity", "--epochs", 1, "--output", tmp_path / "ft", "--quiet", "--no-plot")
    assert code == 0, err
    tuned = read_npz(tmp_path / "ft" / "final.npz")
    assert np.array_equal(tuned["0.weight"].ravel(), live[:32 * 64])


# ------------------------------------------------------------------------ progress reporting
@pytest.mark.parametrize("stream_type, enabled, verbose, bar, lines", [
    (io.StringIO, True, False, False, 0),          # not a TTY: no bar
    (io.StringIO, True, True, False, 2),           # --verbose: a line per check
    (FakeTTY, True, False, True, 0),
    (FakeTTY, False, True, False, 0),              # --quiet (or not rank 0): nothing at all
])
def test_progress_bar_shows_only_on_a_tty_and_lines_only_when_verbose(stream_type, enabled, verbose, bar, lines):
    from minidl import MLP, SGD
    from minidl.data import make_blobs
    from minidl.progress import ProgressBar
    from minidl import fit
    X, y = make_blobs(40, seed=0)
    model = MLP([2, 4, 3])
    stream = stream_type()
    progress = ProgressBar(5, 2, enabled=enabled, verbose=verbose, stream=stream)
    fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=2, batch_size=8, validation_split=0.2,
        callbacks=[progress])
    text = stream.getvalue()
    assert ("epoch 1/2" in text) == bar and ("epoch 2/2" in text) == bar
    check_lines = [line for line in text.splitlines() if line.startswith("epoch ") and "val_loss" in line]
    assert len(check_lines) == lines
    if lines:
        assert check_lines[0].split()[:4] == ["epoch", "1", "step", "4"] and "lr 0.1" in check_lines[0]


def test_verbose_train_prints_a_line_per_check(tmp_path):
    code, out, err = cli("train", "--dataset", "blobs", "--epochs", 3, "--output", tmp_path / "run",
                         "--verbose", "--no-plot")
    assert code == 0
    assert len([line for line in err.splitlines() if line.startswith("epoch ")]) == 3
    assert "samples/s" in out and "run directory" in out


def test_train_on_a_terminal_draws_one_bar_per_epoch_counting_to_n_of_n(tmp_path, monkeypatch, opened_bars):
    import re
    stream = FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    code = main(["train", "--dataset", "blobs", "--epochs", "2", "--output", str(tmp_path / "run"), "--no-plot"])
    assert code == 0
    assert opened_bars == ["epoch 1/2", "epoch 2/2"]            # the CLI's bar, not a second one of fit's
    text = stream.getvalue()
    assert not re.search(r": \d+step \[", text)                 # never a count past the total
    counts = re.findall(r"epoch (\d)/2:[^\r\n]*?\| *(\d+)/(\d+) \[", text)
    for epoch in ("1", "2"):
        last = [(int(n), int(total)) for e, n, total in counts if e == epoch][-1]
        assert last[0] == last[1], (epoch, last)


# ------------------------------------------------------------------------ --help, --version, the summary line
def test_version_prints_the_package_version():
    import minidl
    code, out, err = cli("--version")
    assert code == 0 and out.strip() == f"minidl {minidl.__version__}"


def test_train_help_lists_the_choices_of_every_option_that_has_them():
    from minidl.config import TRAIN_OPTIONS
    code, out, _ = cli("train", "--help")
    assert code == 0
    flat = " ".join(out.split())
    with_choices = [option for option in TRAIN_OPTIONS if option.choices]
    assert {option.key for option in with_choices} >= {"dataset", "optimizer", "init", "sync", "dtype"}
    for option in with_choices:
        assert f"one of: {', '.join(option.choices)}" in flat, option.key


def test_the_summary_line_counts_epochs_from_1(tmp_path):
    import re
    output = tmp_path / "run"
    code, out, err = cli("train", "--dataset", "blobs", "--epochs", 30, "--patience", 2, "--hidden", 8,
                         "--output", output, "--quiet", "--no-plot")
    assert code == 0, err
    summary = json.loads((output / "summary.json").read_text())
    assert summary["stop_reason"] == "patience", summary       # JSON: 0-based indices, as before
    match = re.match(r"minidl: stopped: patience at epoch (\d+) of 30 \| best val_loss \S+ at epoch (\d+) "
                     r"\| restored weights from epoch (\d+) \|", out)
    assert match, out
    stopped, best, restored = map(int, match.groups())
    assert stopped == summary["stopped_epoch"] + 1 == summary["epochs_run"]
    assert best == summary["best_epoch"] + 1 and restored == summary["restored_from"] + 1
    assert stopped == best + 2                                  # patience 2: two checks after the best


@pytest.mark.parametrize("arrays, match", [
    ({}, "does not hold MLP parameters"),
    ({"a": np.zeros(3)}, "does not hold MLP parameters"),
    ({"0.weight": np.zeros(3)}, "does not hold MLP parameters"),
    ({"x.weight": np.zeros((2, 2))}, "does not hold MLP parameters"),
    ({"0.weight": np.zeros((4, 2)), "0.bias": np.zeros(4), "2.weight": np.zeros((3, 5)), "2.bias": np.zeros(3)},
     "shape"),
])
def test_evaluate_refuses_an_npz_that_is_not_a_model(tmp_path, arrays, match):
    (tmp_path / "config.toml").write_text('dataset = "blobs"\n')
    np.savez(tmp_path / "final.npz", **arrays)
    assert_usage_error(cli("evaluate", tmp_path / "final.npz"), match)
    assert_usage_error(cli("train", "--dataset", "blobs", "--init-from", tmp_path, "--output", tmp_path / "run"),
                       match)


def test_evaluate_refuses_a_pickle_and_a_bare_npz_without_config(tmp_path):
    (tmp_path / "model.npz").write_bytes(b"\x80\x04not really a pickle")
    assert_usage_error(cli("evaluate", tmp_path / "model.npz"), "not a readable .npz")
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "final.npz", **{"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(3)})
    assert_usage_error(cli("evaluate", tmp_path / "d"), "config.toml", "missing")


@pytest.mark.parametrize("bad", [("--monitor", "val_f1"), ("--freeze", "7"), ("--epochs", "0")])
def test_a_run_refused_at_start_leaves_nothing_behind(tmp_path, bad):
    output = tmp_path / "run"
    assert_usage_error(cli("train", "--dataset", "blobs", *bad, "--output", output))
    assert not output.exists() or os.listdir(output) == []
    code, _, err = cli("train", "--dataset", "blobs", "--epochs", 1, "--output", output, "--quiet", "--no-plot")
    assert code == 0, err                                     # no --overwrite needed after a refusal


@pytest.mark.slow
def test_the_xor_example_config_stops_on_patience_with_high_accuracy(tmp_path):
    example = Path(__file__).parent.parent / "examples" / "xor.toml"
    code, out, err = cli("train", "--config", example, "--output", tmp_path / "xor", "--quiet", "--no-plot")
    assert code == 0, err
    summary = json.loads((tmp_path / "xor" / "summary.json").read_text())
    history = json.loads((tmp_path / "xor" / "history.json").read_text())
    assert summary["stop_reason"] == "patience" and summary["stopped_epoch"] < 499
    assert summary["stopped_epoch"] - summary["best_epoch"] == 20
    assert history["records"][history["best_check"]]["val_accuracy"] >= 0.95
    assert summary["test_accuracy"] >= 0.95


def test_golden_write_then_check_round_trips_and_a_damaged_file_fails(tmp_path, capsys):
    path = tmp_path / "golden.npz"
    assert main(["golden", "write", str(path), "--sizes", "3,5,2", "--activation", "tanh", "--loss", "mse",
                 "--trajectory-steps", "2", "--optimizer", "adam", "--optimizer-args", '{"lr": 0.01}']) == 0
    assert main(["golden", "check", str(path)]) == 0
    assert "ok" in capsys.readouterr().out
    with np.load(path, allow_pickle=False) as archive:                  # NumPy alone reads it
        entries = {name: archive[name] for name in archive.files}
    entries["loss"] = entries["loss"] + 1e-6                            # someone else's wrong loss
    np.savez(path, **entries)
    assert main(["golden", "check", str(path)]) == 1
    assert main(["golden", "check", str(tmp_path / "missing.npz")]) == 2
    assert main(["golden", "write", str(path), "--optimizer-args", "{not json"]) == 2


# ------------------------------------------------------------------------ learning-rate schedules
def _schedule_config(**values):
    from minidl.config import merge_config
    return merge_config(("test", values))


@pytest.mark.parametrize("values, expected", [
    (dict(), None),
    (dict(lr_schedule="step", lr_step_size=3, lr_gamma=0.5), ("StepLR", {"step_size": 3, "gamma": 0.5})),
    (dict(lr_schedule="exponential", lr_gamma=0.9), ("ExponentialLR", {"gamma": 0.9})),
    (dict(lr_schedule="cosine", epochs=12, lr_eta_min=1e-4), ("CosineAnnealingLR", {"T_max": 12, "eta_min": 1e-4})),
    (dict(lr_schedule="cosine", lr_t_max=7), ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.0})),
    (dict(lr_warmup_epochs=4), ("LinearLR", {"start_factor": 0.1, "end_factor": 1.0, "total_iters": 4})),
])
def test_lr_schedule_options_build_torchs_schedules(values, expected):
    from minidl.config import build_callbacks
    from minidl import SGD, MLP
    config = _schedule_config(early_stopping=False, **values)
    callbacks = build_callbacks(config, SGD(MLP([2, 3]), lr=0.1))
    if expected is None:
        assert callbacks == []
        return
    (schedule,) = callbacks
    settings = schedule.settings()
    assert (type(schedule).__name__, {k: v for k, v in settings.items() if k != "interval"}) == expected


def test_lr_warmup_then_cosine_is_a_sequential_lr_over_the_remaining_epochs():
    from minidl.config import build_callbacks
    from minidl import SGD, MLP
    config = _schedule_config(early_stopping=False, lr_schedule="cosine", epochs=20, lr_warmup_epochs=5)
    (schedule,) = build_callbacks(config, SGD(MLP([2, 3]), lr=0.1))
    assert schedule.settings() == {"interval": "epoch", "milestones": [5], "schedulers": [
        ["LinearLR", {"interval": "epoch", "start_factor": 0.1, "end_factor": 1.0, "total_iters": 5}],
        ["CosineAnnealingLR", {"interval": "epoch", "T_max": 15, "eta_min": 0.0}]]}
    assert config["lr_t_max"] == 15                           # written to config.toml: resumes keep it


@pytest.mark.parametrize("values, fragment", [
    (dict(lr_schedule="step", lr_step_size=0), "step_size"),
    (dict(lr_schedule="cosine", epochs=3, lr_warmup_epochs=3), "T_max"),
    (dict(lr_warmup_epochs=-1), "lr.warmup.epochs"),
    (dict(lr_warmup_epochs=2, lr_warmup_start_factor=0.0), "start_factor"),
])
def test_bad_lr_schedule_options_are_usage_errors_naming_them(values, fragment):
    from minidl.config import UsageError, build_callbacks
    from minidl import SGD, MLP
    with pytest.raises(UsageError, match=fragment):
        build_callbacks(_schedule_config(**values), SGD(MLP([2, 3]), lr=0.1))


def test_an_unknown_lr_schedule_is_a_usage_error(tmp_path):
    assert_usage_error(cli("train", "--lr-schedule", "cyclic", "--output", tmp_path / "r"), "--lr-schedule")


def test_lr_schedule_flags_train_and_resume_exactly(tmp_path):
    flags = ("train", "--dataset", "blobs", "--hidden", 8, "--patience", 50, "--quiet", "--no-plot",
             "--lr-schedule", "cosine", "--lr-t-max", 4, "--lr-warmup-epochs", 1)
    assert cli(*flags, "--epochs", 5, "--output", tmp_path / "full")[0] == 0
    assert cli(*flags, "--epochs", 2, "--output", tmp_path / "part")[0] == 0
    assert cli(*flags, "--epochs", 5, "--output", tmp_path / "part", "--resume")[0] == 0
    assert same_npz(tmp_path / "full" / "final.npz", tmp_path / "part" / "final.npz")
    lrs = [record["lr"] for record in json.loads((tmp_path / "full" / "history.json").read_text())["records"]]
    expected = [0.005] + [0.025 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]   # sgd lr 0.05
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
