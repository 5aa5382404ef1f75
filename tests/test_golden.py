"""Golden files: the stored reference still matches minidl, NumPy alone can read and verify it,
writer -> reader round trips, and version mismatches and pickled data are refused."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from conftest import EXACT_TOL, TORCH_TOL, assert_close
from minidl.golden import FORMAT_VERSION, GoldenFileError, check_golden, read_golden, write_golden

REFERENCE_DIR = pathlib.Path(__file__).parent / "reference"
REFERENCE = REFERENCE_DIR / "golden_v1.npz"
TRAJECTORY_TOL = 1e-10


def load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", REFERENCE_DIR / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rewrite(source, target, **changes):
    """Copy the .npz ``source`` to ``target`` with entries replaced (None deletes one)."""
    with np.load(source, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    entries.update(changes)
    np.savez(target, **{name: value for name, value in entries.items() if value is not None})
    return target


# ----------------------------------------------------------------- the stored reference
def test_reference_file_still_matches_minidl():
    report = check_golden(REFERENCE)
    report.assert_ok()
    steps = [row for row in report.rows if row.name.startswith("step")]
    assert len(steps) == 4 and all(row.tolerance == TRAJECTORY_TOL for row in steps)
    assert all(row.error <= EXACT_TOL for row in report.rows if row not in steps)
    assert REFERENCE.stat().st_size < 16_000                            # a small file


def test_reference_file_loads_and_checks_with_numpy_alone():
    """What a user without minidl does: np.load, then their own forward pass."""
    golden = np.load(REFERENCE, allow_pickle=False)
    config = json.loads(str(golden["config"]))
    assert int(golden["format_version"]) == 1 and "param/<name>" in str(golden["readme"])
    assert config["activation"] == ["tanh", "leaky_relu"] and config["negative_slope"][1] == 0.2
    x = golden["inputs"]
    h1 = np.tanh(x @ golden["param/0.weight"].T + golden["param/0.bias"])
    a2 = h1 @ golden["param/2.weight"].T + golden["param/2.bias"]
    h2 = np.where(a2 > 0, a2, 0.2 * a2)
    z = h2 @ golden["param/4.weight"].T + golden["param/4.bias"]
    assert_close(z, golden["logits"], EXACT_TOL, "logits")
    labels = golden["labels"]
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    assert_close(-log_p[np.arange(len(labels)), labels].mean(), golden["loss"], EXACT_TOL, "loss")
    dz = (np.exp(log_p) - np.eye(3)[labels]) / len(labels)
    assert_close(dz.T @ h2, golden["grad/4.weight"], EXACT_TOL, "grad/4.weight")
    assert golden["trajectory/0.weight"].shape == (4, 5, 3)


def test_reference_script_reproduces_the_reference(tmp_path):
    written = load_make_golden().main(tmp_path / "golden.npz")
    stored = read_golden(REFERENCE)
    assert written.config == stored.config and written.optimizer == stored.optimizer
    for name in ("inputs", "labels"):                                   # seeded: bit for bit
        assert np.array_equal(getattr(written, name), getattr(stored, name)), name
    assert all(np.array_equal(written.params[k], stored.params[k]) for k in stored.params)
    assert_close(written.loss, stored.loss, EXACT_TOL, "loss")


def test_reference_file_matches_torch():
    """The use case: someone's framework (here PyTorch, float64) checked against the file."""
    torch = pytest.importorskip("torch")
    golden = read_golden(REFERENCE)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4),
                              torch.nn.LeakyReLU(0.2), torch.nn.Linear(4, 3)).double()
    net.load_state_dict({name: torch.from_numpy(value) for name, value in golden.params.items()})
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(golden.inputs)),
                                             torch.from_numpy(golden.labels))
    loss.backward()
    assert_close(loss.item(), golden.loss, TORCH_TOL, "loss")
    for name, parameter in net.named_parameters():
        assert_close(parameter.grad.numpy(), golden.grads[name], TORCH_TOL, name)


# ----------------------------------------------------------------- writer and reader
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "binary_cross_entropy"])
@pytest.mark.parametrize("steps", [0, 3])
def test_write_read_round_trip(loss, steps, tmp_path):
    path = tmp_path / "golden.npz"
    optimizer = ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}) if steps else None
    written = write_golden(path, sizes=[4, 6, 2], activation="sigmoid", loss=loss, seed=5,
                           batch=7, trajectory_steps=steps, optimizer=optimizer)
    read = read_golden(path)
    assert read.format_version == FORMAT_VERSION and read.loss_function == loss
    assert read.config == written.config and read.optimizer == written.optimizer
    for name in ("inputs", "labels", "logits"):
        assert np.array_equal(getattr(read, name), getattr(written, name)), name
    for group in ("params", "grads") + (("trajectory",) if steps else ()):
        assert list(getattr(read, group)) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        assert all(np.array_equal(getattr(read, group)[k], getattr(written, group)[k])
                   for k in getattr(written, group))
    assert read.loss == written.loss and read.steps == steps
    assert read.inputs.shape == (7, 4) and read.logits.shape == (7, 2)
    assert read.labels.shape == ((7,) if loss == "cross_entropy" else (7, 2))
    if steps:
        assert read.optimizer["hyperparameters"]["nesterov"] is True
        assert read.trajectory["0.weight"].shape == (3, 6, 4)
    else:
        assert read.trajectory is None and read.optimizer is None
    check_golden(path).assert_ok()


def test_default_trajectory_optimizer_and_writer_errors(tmp_path):
    golden = write_golden(tmp_path / "g.npz", sizes=[2, 3, 2], trajectory_steps=2)
    assert golden.optimizer == {"type": "sgd", "hyperparameters": {
        "lr": 0.1, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}}
    with pytest.raises(ValueError, match="only used with trajectory_steps > 0"):
        write_golden(tmp_path / "h.npz", sizes=[2, 2], optimizer="adam")
    with pytest.raises(ValueError, match="batch must be >= 1"):
        write_golden(tmp_path / "h.npz", sizes=[2, 2], batch=0)
    with pytest.raises(ValueError, match="unknown loss"):
        write_golden(tmp_path / "h.npz", sizes=[2, 2], loss="hinge")
    assert not (tmp_path / "h.npz").exists()


def test_check_golden_fails_on_a_changed_answer(tmp_path):
    with np.load(REFERENCE, allow_pickle=False) as archive:
        grad = archive["grad/2.weight"].copy()
    grad[1, 3] *= 1 + 1e-9
    report = check_golden(rewrite(REFERENCE, tmp_path / "changed.npz", **{"grad/2.weight": grad}))
    assert [row.name for row in report.failures] == ["2.weight"]
    assert report["2.weight"].where == "[1, 3]"
    with pytest.raises(AssertionError, match="FAILED: 1 of"):
        report.assert_ok()


# ----------------------------------------------------------------- refused files
def test_version_mismatch_is_a_clear_error(tmp_path):
    path = rewrite(REFERENCE, tmp_path / "v2.npz", format_version=np.array(2, np.int64))
    with pytest.raises(GoldenFileError, match="format version 2, but this minidl .* reads format "
                                              "version 1: regenerate"):
        read_golden(path)
    with pytest.raises(GoldenFileError, match="format version none"):
        read_golden(rewrite(REFERENCE, tmp_path / "none.npz", format_version=None))


class PlantFile:
    """Unpickling this would create a file: the proof that a golden file is never unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def test_pickled_object_arrays_are_refused_unread(tmp_path):
    marker = tmp_path / "unpickled"
    evil = np.array([PlantFile(marker)], dtype=object)
    path = rewrite(REFERENCE, tmp_path / "evil.npz", labels=evil)
    with pytest.raises(GoldenFileError, match="'labels' is an object array .* refused unread"):
        read_golden(path)
    assert not marker.exists()


def test_other_files_are_refused(tmp_path):
    with pytest.raises(GoldenFileError, match="not a minidl golden file"):
        read_golden(rewrite(REFERENCE, tmp_path / "nameless.npz", format=None))
    with pytest.raises(GoldenFileError, match="not a minidl golden file"):
        read_golden(rewrite(REFERENCE, tmp_path / "other.npz", format=np.array("something-else")))
    with pytest.raises(GoldenFileError, match=r"incomplete: missing \['logits'\]"):
        read_golden(rewrite(REFERENCE, tmp_path / "partial.npz", logits=None))
    with pytest.raises(GoldenFileError, match="'config' is not valid JSON"):
        read_golden(rewrite(REFERENCE, tmp_path / "json.npz", config=np.array("{oops")))
    with pytest.raises(GoldenFileError, match="'optimizer' must hold exactly"):
        read_golden(rewrite(REFERENCE, tmp_path / "opt.npz", optimizer=np.array('{"lr": 1}')))
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(GoldenFileError, match="not a readable .npz"):
        read_golden(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(GoldenFileError, match="single array"):
        read_golden(tmp_path / "single.npy")
    with pytest.raises(FileNotFoundError):
        read_golden(tmp_path / "missing.npz")
