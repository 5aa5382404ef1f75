"""Inference and persistence: predict_proba / predict_classes, model.save and minidl.load,
model.summary, and the `minidl predict` command (end to end, and its errors)."""
import json

import numpy as np
import pytest

import minidl
from conftest import EXACT_TOL
from minidl.data import load_dataset
from test_cli import assert_usage_error, cli

RNG = np.random.default_rng(0)


def softmax_closed_form(z):
    exp = np.exp(z - z.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------- probabilities and classes
def test_softmax_probabilities_sum_to_one_and_match_the_closed_form():
    model = minidl.MLP([4, 8, 3], activation="tanh", seed=1)
    X = RNG.standard_normal((7, 4))
    proba = model.predict_proba(X)
    assert proba.shape == (7, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(proba, softmax_closed_form(model.predict(X)), rtol=1e-14, atol=0)
    np.testing.assert_array_equal(model.predict_classes(X), model.predict(X).argmax(axis=1))


def test_sigmoid_for_one_output_and_binary_cross_entropy():
    model = minidl.MLP([4, 5, 1], seed=2)
    X = RNG.standard_normal((6, 4))
    logits = model.predict(X)
    np.testing.assert_allclose(model.predict_proba(X), 1 / (1 + np.exp(-logits)), rtol=1e-14)
    np.testing.assert_array_equal(model.predict_classes(X), (logits[:, 0] > 0).astype(int))
    multi = minidl.MLP([4, 3], seed=3)                        # multi-label: one sigmoid per output
    proba = multi.predict_proba(X, loss="binary_cross_entropy")
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-multi.predict(X))), rtol=1e-14)
    assert multi.predict_classes(X, loss="bce").shape == (6, 3)


def test_large_logits_and_a_batch_of_one_stay_finite():
    model = minidl.MLP([2, 3], seed=0)
    model.params[:] = 0
    model.dense_layers[0].W[:] = [[1000.0, 0], [-1000.0, 0], [0, 1000.0]]
    proba = model.predict_proba(np.array([[1.0, 0.0]]))
    assert proba.shape == (1, 3) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba, [[1.0, 0.0, 0.0]], atol=1e-300)
    binary = minidl.MLP([1, 1], seed=0)
    binary.params[:] = [1.0, 0.0]
    np.testing.assert_array_equal(binary.predict_proba(np.array([[-800.0], [800.0]]))[:, 0], [0.0, 1.0])


def test_float32_probabilities_keep_the_dtype():
    model = minidl.MLP([4, 6, 3], dtype="float32")
    proba = model.predict_proba(RNG.standard_normal((5, 4)))
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_mse_and_mismatched_losses_raise():
    model = minidl.MLP([4, 1])
    X = np.zeros((2, 4))
    with pytest.raises(ValueError, match="mse outputs values"):
        model.predict_proba(X, loss="mse")
    with pytest.raises(ValueError, match="mse outputs values"):
        model.predict_classes(X, loss="mse")
    with pytest.raises(ValueError, match="at least 2 outputs"):
        model.predict_proba(X, loss="cross_entropy")
    with pytest.raises(ValueError, match="unknown loss"):
        model.predict_proba(X, loss="hinge")


def test_probabilities_match_torch():
    torch = pytest.importorskip("torch")
    model = minidl.MLP([4, 8, 3], seed=4)
    X = RNG.standard_normal((9, 4)) * 30
    logits = torch.from_numpy(model.predict(X))
    np.testing.assert_allclose(model.predict_proba(X), torch.softmax(logits, dim=1).numpy(),
                               rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(model.predict_proba(X, loss="binary_cross_entropy"),
                               torch.sigmoid(logits).numpy(), rtol=1e-12, atol=1e-300)


# ----------------------------------------------------------------- save and load
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip_is_bitwise(tmp_path, dtype):
    model = minidl.MLP([5, 7, 4, 3], activation=["leaky_relu", "tanh"], negative_slope=[0.2, 0.01],
                       dtype=dtype, seed=5)
    model.freeze(1)
    mean, std = RNG.standard_normal(5), RNG.random(5) + 0.5
    model.save(tmp_path / "m.npz", standardization=(mean, std))
    loaded, (mean2, std2) = minidl.load(tmp_path / "m.npz", with_standardization=True)
    assert loaded.config() == model.config() and loaded.params.dtype == model.params.dtype
    assert loaded.params.tobytes() == model.params.tobytes()
    assert [d.trainable for d in loaded.dense_layers] == [True, False, True]
    np.testing.assert_array_equal(mean2, mean)
    np.testing.assert_array_equal(std2, std)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:     # NumPy alone reads it
        np.testing.assert_array_equal(archive["2.weight"], model.state_dict()["2.weight"])
        assert json.loads(str(archive["__model__"]))["config"]["sizes"] == [5, 7, 4, 3]
    assert minidl.load(tmp_path / "m.npz", with_standardization=False).params.tobytes() == model.params.tobytes()


def test_save_leaves_no_temporary_files(tmp_path):
    minidl.MLP([2, 2]).save(tmp_path / "m.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    assert minidl.load(tmp_path / "m.npz", with_standardization=True)[1] is None


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    np.savez(path, **arrays)


def _set_header(arrays, **fields):
    header = json.loads(str(arrays["__model__"]))
    header.update(fields)
    arrays["__model__"] = np.array(json.dumps(header))


@pytest.mark.parametrize("change, message", [
    (lambda a: a.__setitem__("0.weight", a["0.weight"][:, :1]), "shape"),
    (lambda a: a["0.bias"].__setitem__(0, np.nan), "non-finite"),
    (lambda a: a.pop("2.bias"), "2.bias"),
    (lambda a: a.__setitem__("__model__", np.array("{not json")), "not a valid minidl model file"),
    (lambda a: _set_header(a, version=99), "version"),
    (lambda a: _set_header(a, format="other"), "format"),
    (lambda a: _set_header(a, trainable=[True]), "trainable"),
    (lambda a: a.__setitem__("standardization/mean", np.zeros(2)), "standardization mean"),
])
def test_damaged_model_files_raise_naming_the_file(tmp_path, change, message):
    path = tmp_path / "m.npz"
    model = minidl.MLP([3, 4, 2])
    model.save(path, standardization=(np.zeros(3), np.ones(3)))
    _rewrite(path, change)
    with pytest.raises(ValueError, match=message) as error:
        minidl.load(path)
    assert str(path) in str(error.value)


def test_missing_truncated_and_foreign_files_raise(tmp_path):
    with pytest.raises(ValueError, match="no model at"):
        minidl.load(tmp_path / "none.npz")
    path = tmp_path / "m.npz"
    minidl.MLP([3, 2]).save(path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="not a readable"):
        minidl.load(path)
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="config.toml"):
        minidl.load(tmp_path / "foreign.npz")
    np.savez(tmp_path / "object.npz", x=np.array([{"pickled": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable"):
        minidl.load(tmp_path / "object.npz")
    with pytest.raises(ValueError, match="standardization"):
        minidl.MLP([3, 2]).save(path, standardization=(np.zeros(3), np.zeros(3)))


# ----------------------------------------------------------------- summary
def test_summary_table():
    model = minidl.MLP([4, 8, 3], activation="tanh")
    model.freeze(0)
    lines = model.summary().splitlines()
    assert lines[0].startswith("Model: MLP(sizes=[4, 8, 3]")
    assert lines[1].split() == ["Layer", "Output", "shape", "Params", "Trainable"]
    assert [line.split() for line in lines[3:6]] == [
        ["0", "Dense(4", "->", "8)", "(None,", "8)", "40", "no"],
        ["1", "Tanh", "(None,", "8)", "0", "-"],
        ["2", "Dense(8", "->", "3)", "(None,", "3)", "27", "yes"]]
    assert lines[-3:] == ["Total params: 67", "Trainable params: 27", "Non-trainable params: 40"]


# ----------------------------------------------------------------- a run, and `minidl predict`
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("predict") / "run"
    code, _, err = cli("train", "--dataset", "blobs", "--epochs", 2, "--output", output, "--quiet", "--no-plot")
    assert code == 0, err
    return output


def raw_test_inputs(run_dir):
    """The run's test inputs before standardisation, and the model's classes for them."""
    data = load_dataset("blobs")
    fitted = json.loads((run_dir / "data.json").read_text())["standardization"]
    raw = data.X_test * np.array(fitted["std"]) + np.array(fitted["mean"])
    return raw, minidl.load(run_dir).predict_classes(data.X_test)


def test_load_reads_a_run_directory_and_its_final_npz(run_dir):
    model, (mean, std) = minidl.load(run_dir, with_standardization=True)
    assert model.params.tobytes() == minidl.load(run_dir / "final.npz").params.tobytes()
    assert mean.shape == std.shape == (2,)
    assert minidl.load(run_dir / "checkpoint.npz").sizes == model.sizes


@pytest.mark.parametrize("kind", ["npy", "npz", "npz-X", "csv", "csv-header"])
def test_predict_classes_from_every_input_format(run_dir, tmp_path, kind):
    raw, expected = raw_test_inputs(run_dir)
    path = tmp_path / f"inputs.{kind[:3]}"
    if kind == "npy":
        np.save(path, raw)
    elif kind == "npz":
        np.savez(path, raw)
    elif kind == "npz-X":
        np.savez(path, X=raw, y=np.zeros(len(raw)))
    else:
        np.savetxt(path, raw, delimiter=",", header="a,b" if kind == "csv-header" else "", comments="")
    code, out, err = cli("predict", run_dir, "--input", path)
    assert code == 0, err
    np.testing.assert_array_equal([int(line) for line in out.splitlines()], expected)


def test_predict_probabilities_to_npy_and_csv(run_dir, tmp_path):
    raw, expected = raw_test_inputs(run_dir)
    np.save(tmp_path / "x.npy", raw)
    assert cli("predict", run_dir, "--input", tmp_path / "x.npy", "--proba", "--output", tmp_path / "p.npy")[0] == 0
    proba = np.load(tmp_path / "p.npy")
    assert proba.shape == (len(raw), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=EXACT_TOL)
    np.testing.assert_array_equal(proba.argmax(axis=1), expected)
    assert cli("predict", run_dir, "--input", tmp_path / "x.npy", "--proba", "--output", tmp_path / "p.csv")[0] == 0
    np.testing.assert_allclose(np.loadtxt(tmp_path / "p.csv", delimiter=","), proba, rtol=1e-8)
    assert cli("predict", run_dir, "--input", tmp_path / "x.npy", "--output", tmp_path / "c.csv")[0] == 0
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "c.csv", dtype=int), expected)


def test_predict_with_a_saved_model_file(run_dir, tmp_path):
    raw, expected = raw_test_inputs(run_dir)
    model, standardization = minidl.load(run_dir, with_standardization=True)
    model.save(tmp_path / "model.npz", standardization=standardization)
    np.save(tmp_path / "x.npy", raw)
    code, out, _ = cli("predict", tmp_path / "model.npz", "--input", tmp_path / "x.npy")
    assert code == 0
    np.testing.assert_array_equal([int(line) for line in out.splitlines()], expected)


def test_predict_errors_are_one_line(run_dir, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((3, 5)))
    (tmp_path / "x.txt").write_text("1,2\n")
    (tmp_path / "text.csv").write_text("a,b\n1,oops\n")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(tmp_path / "ok.npy", np.zeros((2, 2)))
    assert_usage_error(cli("predict", run_dir, "--input", tmp_path / "wide.npy"), "the model takes 2 features")
    assert_usage_error(cli("predict", run_dir, "--input", tmp_path / "missing.npy"), "no input file")
    assert_usage_error(cli("predict", run_dir, "--input", tmp_path / "x.txt"), ".npy, .npz or .csv")
    assert_usage_error(cli("predict", run_dir, "--input", tmp_path / "text.csv"), "cannot read")
    assert_usage_error(cli("predict", run_dir, "--input", tmp_path / "two.npz"), "name the inputs X")
    assert_usage_error(cli("predict", run_dir, "--input", tmp_path / "broken.npy"), "cannot read")
    assert_usage_error(cli("predict", tmp_path / "nowhere", "--input", tmp_path / "ok.npy"), "no model at")
    assert_usage_error(cli("predict", run_dir, "--input", tmp_path / "ok.npy", "--output", tmp_path / "o.txt"),
                       ".npy or .csv")
