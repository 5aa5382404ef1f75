"""Every class of bad input and OS failure, through the real `minidl` command: one table.

Each case runs `python -m minidl ...` in a subprocess (as a user would, imports and all) and
asserts the exit code of EXIT_CODES, at most two lines on stderr, no "Traceback", and a phrase
of the one-line message. Read-only places and a full disk are real: a tmpfs mounted read-only
or with a tiny size, in a private mount namespace of the test (`unshare`), so no root is
needed where the machine allows user namespaces; elsewhere those cases skip and say why.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from conftest import run_in_session

pytestmark = pytest.mark.timeout(600)

QUICK = ["--dataset", "xor", "--xor-points", "40", "--epochs", "2", "--quiet", "--no-plot"]
DIGITS_QUICK = ["--epochs", "5", "--quiet", "--no-plot"]


def minidl(*args, cwd, mount=None, timeout=180):
    """Run `python -m minidl args` in ``cwd``; with ``mount`` = (folder, tmpfs options), inside a
    private mount namespace where a tmpfs with those options is mounted on ``folder`` first."""
    command = [sys.executable, "-m", "minidl", *map(str, args)]
    if mount is not None:
        folder, options = mount
        script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
        command = ["unshare", "-rm", "sh", "-c", script, "sh", options, str(folder), *command]
    done, _ = run_in_session(command, timeout, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return done


def _why_no_private_mounts():
    """None when this machine lets a test mount a tmpfs in a private namespace (`unshare -rm`,
    root or user namespaces), else why not: the read-only and full-disk cases need it."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                              capture_output=True, text=True)
    return None if done.returncode == 0 else f"no private tmpfs mounts here: {done.stderr.strip()}"


WHY_NO_MOUNTS = _why_no_private_mounts()
needs_mounts = pytest.mark.skipif(WHY_NO_MOUNTS is not None, reason=str(WHY_NO_MOUNTS))


def assert_one_line(done, code, phrase):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, f"exit {done.returncode}, expected {code}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) <= 2, f"{len(lines)} lines on stderr:\n{done.stderr[-2000:]}"
    assert phrase.lower() in done.stderr.lower(), f"{phrase!r} not in {done.stderr!r}"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run (xor, 2 epochs) whose files the damage cases copy and break."""
    root = tmp_path_factory.mktemp("cli_errors")
    done = minidl("train", *QUICK, "--output", root / "run", cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "run"


def truncated(source, destination, fraction=0.5):
    data = source.read_bytes()
    destination.write_bytes(data[: int(len(data) * fraction)])
    return destination


def damaged_run(run_dir, tmp_path, name, damage):
    """A copy of the run with its file ``name`` damaged by ``damage(path)``."""
    copy = tmp_path / "damaged"
    shutil.copytree(run_dir, copy)
    damage(copy / name)
    return copy


def _truncate(path):
    truncated(path, path)


def _npy_instead(path):
    path.unlink()
    with open(path, "wb") as handle:
        np.save(handle, np.ones(3))


def _garbage(path):
    path.write_bytes(b"\x00\xff" * 500)


DAMAGE = {"truncated": _truncate, "an .npy": _npy_instead, "garbage": _garbage}


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("name", ["final.npz", "checkpoint.npz"])
def test_evaluate_of_a_damaged_file_is_one_line(run_dir, tmp_path, name, how):
    copy = damaged_run(run_dir, tmp_path, name, DAMAGE[how])
    done = minidl("evaluate", copy / name, cwd=tmp_path)
    assert_one_line(done, 2, name)


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_init_from_a_damaged_run_is_one_line(run_dir, tmp_path, how):
    copy = damaged_run(run_dir, tmp_path, "final.npz", DAMAGE[how])
    done = minidl("train", *QUICK, "--output", tmp_path / "new", "--init-from", copy / "final.npz", cwd=tmp_path)
    assert_one_line(done, 2, "final.npz")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_resume_from_a_damaged_checkpoint_is_one_line(run_dir, tmp_path, how):
    copy = damaged_run(run_dir, tmp_path, "checkpoint.npz", DAMAGE[how])
    done = minidl("train", *QUICK, "--output", copy, "--resume", cwd=tmp_path)
    assert_one_line(done, 2, "checkpoint.npz")


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# (case, arguments (a function of tmp_path), exit code, phrase of the message)
CASES = [
    ("flag out of range", lambda t: ["train", "--epochs", "0"], 2, "epochs must be >= 1"),
    ("negative data seed", lambda t: ["train", "--data-seed", "-1"], 2, "--data-seed must be >= 0"),
    ("not a number", lambda t: ["train", "--lr", "abc"], 2, "invalid float value"),
    ("nan learning rate", lambda t: ["train", "--lr", "nan"], 2, "lr"),
    ("unknown dataset", lambda t: ["train", "--dataset", "nope"], 2, "must be one of"),
    ("hidden not ints", lambda t: ["train", "--hidden", "12,x"], 2, "hidden"),
    ("hidden too big for memory", lambda t: ["train", "--hidden", "300000000"], 2, "GiB"),
    ("xor points too many for memory", lambda t: ["train", "--dataset", "xor", "--xor-points", str(10**11)], 2, "GiB"),
    ("inactive option invalid", lambda t: ["train", "--beta1", "2"], 2, "not in use"),
    ("inactive plateau option invalid", lambda t: ["train", "--lr-factor", "3"], 2, "not in use"),
    ("output under a file", lambda t: ["train", "--output", _write(t, "afile", "x") / "run"], 2, "cannot write"),
    ("output is a file", lambda t: ["train", "--output", _write(t, "afile", "x")], 2, "not a directory"),
    ("config not UTF-8", lambda t: ["train", "--config", _write(t, "c.toml", b"lr = 0.1\n\xff\xfe = 3\n")], 2, "c.toml"),
    ("config not TOML", lambda t: ["train", "--config", _write(t, "c.toml", "lr = = 3")], 2, "c.toml"),
    ("config unknown key", lambda t: ["train", "--config", _write(t, "c.toml", "learning_rate = 3")], 2, "unknown option"),
    ("config missing", lambda t: ["train", "--config", t / "none.toml"], 2, "none.toml"),
    ("resume nothing", lambda t: ["train", "--output", t / "none", "--resume"], 2, "nothing to resume"),
    ("gradcheck nan tolerance", lambda t: ["gradcheck", "--tolerance", "nan"], 2, "tolerance"),
    ("gradcheck negative tolerance", lambda t: ["gradcheck", "--tolerance", "-1"], 2, "tolerance"),
    ("gradcheck bad sizes", lambda t: ["gradcheck", "--sizes", "abc"], 2, "--sizes"),
    ("golden bad sizes", lambda t: ["golden", "write", t / "g.npz", "--sizes", "abc"], 2, "--sizes"),
    ("golden under a file", lambda t: ["golden", "write", _write(t, "afile", "x") / "g.npz"], 2, "is a file"),
    ("golden check garbage", lambda t: ["golden", "check", _write(t, "g.npz", b"garbage")], 2, "g.npz"),
    ("plot of no history", lambda t: ["plot", t], 2, "no history"),
    ("plot of malformed json", lambda t: ["plot", _write(t, "history.json", "{")], 2, "history.json"),
    ("plot of a number", lambda t: ["plot", _write(t, "history.json", "5")], 2, "history.json"),
    ("plot of records without epochs", lambda t: ["plot", _write(t, "history.json", json.dumps(
        {"records": [{"loss": 1.0}]}))], 2, "epoch"),
    ("plot of non-integer epochs", lambda t: ["plot", _write(t, "history.json", json.dumps(
        {"records": [{"epoch": 0.5, "loss": 1.0}]}))], 2, "whole number"),
    ("plot of wrong facts", lambda t: ["plot", _write(t, "history.json", json.dumps(
        {"records": [{"epoch": 0, "loss": 1.0}], "best_check": [1]}))], 2, "best_check"),
    ("plot of a bad csv", lambda t: ["plot", _write(t, "history.csv", "epoch,loss\n0,abc\n")], 2, "history.csv"),
    ("plot -o under a file", lambda t: ["plot", _write(t, "history.json", json.dumps(
        {"records": [{"epoch": 0, "loss": 1.0}]})), "-o", _write(t, "afile", "x") / "c.png"], 2, "is a file"),
    ("predict with no model", lambda t: ["predict", t / "none", "--input", t / "x.npy"], 2, "none"),
    ("evaluate of a folder with no model", lambda t: ["evaluate", t], 2, "final.npz"),
    ("evaluate of a missing file", lambda t: ["evaluate", t / "final.npz"], 2, "final.npz"),
]


@pytest.mark.parametrize("case, arguments, code, phrase", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line(tmp_path, case, arguments, code, phrase):
    done = minidl(*arguments(tmp_path), cwd=tmp_path)
    assert_one_line(done, code, phrase)


@needs_mounts
@pytest.mark.parametrize("command", [["train", *QUICK, "--output", "{ro}/run"],
                                     ["plot", "{history}", "-o", "{ro}/c.png"],
                                     ["golden", "write", "{ro}/g.npz"]],
                         ids=["train", "plot", "golden"])
def test_a_read_only_place_is_one_line(run_dir, tmp_path, command):
    place = tmp_path / "ro"
    place.mkdir()
    arguments = [part.format(ro=place, history=run_dir / "history.json") for part in command]
    done = minidl(*arguments, cwd=tmp_path, mount=(place, "ro,size=64k"))
    assert_one_line(done, 2, "read-only file system")


@needs_mounts
def test_a_disk_too_full_for_one_checkpoint_is_refused_at_start_up(tmp_path):
    place = tmp_path / "tiny"
    place.mkdir()
    done = minidl("train", *DIGITS_QUICK, "--output", place / "run", cwd=tmp_path, mount=(place, "size=64k"))
    assert_one_line(done, 2, "a checkpoint needs")


@needs_mounts
def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_says_so(tmp_path):
    """The digits run's checkpoint (~240 kB) fits once in a 400 kB tmpfs, not twice: the second
    checkpoint's write fails with ENOSPC after an epoch of work. Exit 3, one line naming the
    intact checkpoint and the resume command, the checkpoint loads, no temp file is left."""
    place = tmp_path / "small"
    place.mkdir()
    script = ("import sys; from minidl.cli import main; code = main(sys.argv[1:]); "
              "from minidl.checkpoint import load_checkpoint; import os; "
              "run = sys.argv[sys.argv.index('--output') + 1]; "
              "load_checkpoint(os.path.join(run, 'checkpoint.npz')); "
              "print('left:', sorted(os.listdir(run)), file=sys.stdout); sys.exit(code)")
    command = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=400k tmpfs "$1" && shift && exec "$@"', "sh",
               str(place), sys.executable, "-c", script, "train", *DIGITS_QUICK, "--output", str(place / "run")]
    done, _ = run_in_session(command, 300, cwd=tmp_path)
    assert_one_line(done, 3, "checkpoint.npz: no space left on device")
    assert "checkpoint.npz is intact" in done.stderr and "--resume" in done.stderr
    left = done.stdout.split("left:")[1]
    assert ".tmp-" not in left and "checkpoint.npz" in left


def test_readme_and_help_list_every_exit_code():
    import re
    from pathlib import Path
    from minidl.cli import EXIT_CODES, build_parser
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    listed = {int(code) for code in re.findall(r"^\| (\d+) \| ", readme, re.MULTILINE)}
    assert listed == set(EXIT_CODES)
    help_text = build_parser().format_help()
    assert all(f"  {code} " in help_text for code in EXIT_CODES)
