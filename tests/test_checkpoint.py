"""Checkpoint files: round trip, atomic writes, and refusal of truncated, mismatched, tampered
and pickled files with a CheckpointError (a ValueError) — never a KeyError, never code execution."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from minidl import MLP, SGD
import minidl
from minidl import checkpoint as ckpt
from minidl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidl.data import make_blobs
from minidl import fit

X, Y = make_blobs(60, classes=3, seed=0)


def trained_checkpoint(path, epochs=2):
    model = MLP([2, 8, 3], seed=0)
    fit(model, "cross_entropy", SGD(model, lr=0.1, momentum=0.9), X, Y, epochs=epochs,
        batch_size=10, checkpoint=path)
    return model


@pytest.fixture
def saved(tmp_path):
    """A real checkpoint written by fit: (path, arrays, meta)."""
    path = tmp_path / "ckpt.npz"
    trained_checkpoint(path)
    arrays, meta = load_checkpoint(path)
    return path, arrays, meta


def resume_from(path, epochs=3):
    model = MLP([2, 8, 3], seed=0)
    return fit(model, "cross_entropy", SGD(model, lr=0.1, momentum=0.9), X, Y, epochs=epochs,
               batch_size=10, checkpoint=path, resume=True)


class Marker:
    """Unpickling this object creates a file: the proof that pickled code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plausible_envelope(meta=None):
    body = json.dumps(meta or {"model": {"sizes": [2, 8, 3]}}, sort_keys=True)
    return np.array(json.dumps({"format": ckpt.FORMAT, "version": ckpt.FORMAT_VERSION,
                                "meta": body, "sha256": "0" * 64}))


# ------------------------------------------------------------------------ round trip
def test_round_trip_keeps_every_array_bit_for_bit_and_the_metadata(tmp_path, rng):
    arrays = {"params": rng.standard_normal(7), "opt/m": rng.standard_normal((2, 3)).astype(np.float32),
              "counts": np.arange(4)}
    meta = {"epoch": 3, "nested": {"x": [1, 2.5, None]}, "name": "é"}
    save_checkpoint(tmp_path / "a.npz", arrays, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "a.npz")
    assert loaded_meta == meta
    assert sorted(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array), name


def test_fit_checkpoint_holds_the_live_parameters_and_optimizer_state(tmp_path):
    model = trained_checkpoint(tmp_path / "c.npz")
    arrays, meta = load_checkpoint(tmp_path / "c.npz")
    assert np.array_equal(arrays["params"], model.params)
    assert arrays["optimizer/momentum_buffer"].shape == model.params.shape
    assert meta["counters"] == {"epoch": 2, "batch": 0, "step": 2 * 6, "check": 2}   # after 2 epochs
    assert meta["model"]["sizes"] == [2, 8, 3]
    assert meta["environment"]["processes"] == 1 and meta["environment"]["numpy"] == np.__version__


def test_save_refuses_object_arrays_and_the_reserved_name(tmp_path):
    with pytest.raises(ValueError, match="object dtype or reserved"):
        save_checkpoint(tmp_path / "a.npz", {"x": np.array([{}, 1], dtype=object)}, {})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a.npz", {ckpt.META_KEY: np.zeros(2)}, {})
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------ malformed files
def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.npz")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, 0.9, -1])
def test_truncated_file_is_refused(saved, tmp_path, keep):
    path = saved[0]
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    (tmp_path / "cut.npz").write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a minidl checkpoint"):
        load_checkpoint(tmp_path / "cut.npz")


def test_garbage_and_plain_npz_are_refused(tmp_path):
    (tmp_path / "text.npz").write_text("hello, I am not a zip file\n")
    with pytest.raises(CheckpointError, match="not a readable checkpoint|refused"):
        load_checkpoint(tmp_path / "text.npz")
    np.savez(tmp_path / "plain.npz", params=np.zeros(3))
    with pytest.raises(CheckpointError, match="no __meta__"):
        load_checkpoint(tmp_path / "plain.npz")


@pytest.mark.parametrize("envelope, match", [
    ("not json at all", "malformed header"),
    (json.dumps({"format": "something-else", "version": 1, "meta": "{}", "sha256": ""}), "format"),
    (json.dumps({"format": ckpt.FORMAT, "version": 99, "meta": "{}", "sha256": ""}), "version 99"),
    (json.dumps({"format": ckpt.FORMAT, "version": ckpt.FORMAT_VERSION}), "malformed header"),
    (json.dumps([1, 2]), "malformed header|not a minidl checkpoint"),
])
def test_bad_headers_are_refused(tmp_path, envelope, match):
    np.savez(tmp_path / "bad.npz", params=np.zeros(3), **{ckpt.META_KEY: np.array(envelope)})
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "bad.npz")


def test_object_array_with_a_plausible_header_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = Marker(marker)
    np.savez(tmp_path / "evil.npz", params=np.zeros(51), evil=payload, **{ckpt.META_KEY: plausible_envelope()})
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.npz")
    with pytest.raises(ValueError):
        minidl.load(str(tmp_path / "evil.npz"))
    with pytest.raises(CheckpointError):
        resume_from(tmp_path / "evil.npz")
    assert not marker.exists()
    # the payload is real: unpickling it does run code (so the assertion above can fail)
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as archive:
        archive["evil"]
    assert marker.exists()


def test_object_metadata_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    meta = np.empty((), dtype=object)
    meta[()] = Marker(marker)
    np.savez(tmp_path / "evil.npz", params=np.zeros(51), **{ckpt.META_KEY: meta})
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.npz")
    assert not marker.exists()


def test_a_raw_pickle_named_npz_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.npz").write_bytes(pickle.dumps({"params": Marker(marker)}))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.npz")
    with pytest.raises(CheckpointError):
        resume_from(tmp_path / "evil.npz")
    assert not marker.exists()


def rewrite(path, arrays, envelope):
    """Write an npz by hand, keeping the ORIGINAL header (so the digest no longer matches)."""
    with open(path, "wb") as handle:
        np.savez(handle, **arrays, **{ckpt.META_KEY: envelope})


def test_tampered_array_fails_the_integrity_check(saved, tmp_path):
    path, arrays, _ = saved
    with np.load(path, allow_pickle=False) as archive:
        envelope = archive[ckpt.META_KEY]
    arrays = dict(arrays)
    arrays["params"] = arrays["params"].copy()
    arrays["params"][3] = np.nextafter(arrays["params"][3], np.inf)        # one ulp
    rewrite(tmp_path / "t.npz", arrays, envelope)
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(tmp_path / "t.npz")


def test_tampered_metadata_fails_the_integrity_check(saved, tmp_path):
    path, arrays, _ = saved
    with np.load(path, allow_pickle=False) as archive:
        envelope = json.loads(str(archive[ckpt.META_KEY]))
    meta = json.loads(envelope["meta"])
    meta["counters"]["epoch"] += 1
    envelope["meta"] = json.dumps(meta, sort_keys=True)
    rewrite(tmp_path / "t.npz", arrays, np.array(json.dumps(envelope)))
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(tmp_path / "t.npz")


def test_dropping_or_adding_an_array_fails_the_integrity_check(saved, tmp_path):
    path, arrays, _ = saved
    with np.load(path, allow_pickle=False) as archive:
        envelope = archive[ckpt.META_KEY]
    rewrite(tmp_path / "drop.npz", {"params": arrays["params"]}, envelope)
    rewrite(tmp_path / "add.npz", dict(arrays, extra=np.zeros(2)), envelope)
    for name in ("drop.npz", "add.npz"):
        with pytest.raises(CheckpointError, match="integrity check"):
            load_checkpoint(tmp_path / name)


def test_flipped_bytes_anywhere_in_the_data_are_refused(saved, tmp_path):
    path = saved[0]
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("params.npy")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200   # inside the data
    data[offset] ^= 0x01
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt|integrity"):
        load_checkpoint(tmp_path / "flip.npz")


# ------------------------------------------------------------------------ wrong layout
def relayout(saved, tmp_path, change):
    """A checkpoint with a VALID digest but a layout fit cannot use."""
    _, arrays, meta = saved
    arrays, meta = dict(arrays), json.loads(json.dumps(meta))
    change(arrays, meta)
    path = tmp_path / "layout.npz"
    save_checkpoint(path, arrays, meta)
    return path


LAYOUTS = {
    "missing_params": lambda a, m: a.pop("params"),
    "short_params": lambda a, m: a.update(params=a["params"][:-1]),
    "2d_params": lambda a, m: a.update(params=a["params"].reshape(1, -1)),
    "nan_params": lambda a, m: a.update(params=np.where(np.arange(a["params"].size) == 3, np.nan, a["params"])),
    "missing_optimizer_state": lambda a, m: a.pop("optimizer/momentum_buffer"),
    "missing_counters": lambda a, m: m.pop("counters"),
    "missing_model": lambda a, m: m.pop("model"),
}


@pytest.mark.parametrize("change", ["missing_params", "short_params", "2d_params", "nan_params"])
def test_load_model_refuses_a_checkpoint_with_bad_parameters(saved, tmp_path, change):
    path = relayout(saved, tmp_path, LAYOUTS[change])
    with pytest.raises(CheckpointError, match="params"):
        minidl.load(str(path))


def test_load_model_refuses_a_checkpoint_without_a_model_description(saved, tmp_path):
    path = relayout(saved, tmp_path, LAYOUTS["missing_model"])
    with pytest.raises(CheckpointError, match="model"):
        minidl.load(str(path))


@pytest.mark.parametrize("change", sorted(set(LAYOUTS) - {"2d_params"}))
def test_resume_refuses_a_wrong_layout_with_a_checkpoint_error(saved, tmp_path, change):
    path = relayout(saved, tmp_path, LAYOUTS[change])
    with pytest.raises(CheckpointError):
        resume_from(path)


def test_resume_refuses_a_checkpoint_for_another_model(saved, tmp_path):
    path = relayout(saved, tmp_path, lambda a, m: m["model"].update(sizes=[2, 9, 3]))
    with pytest.raises(CheckpointError, match=r"checkpoint is for model \[2, 9, 3\]"):
        resume_from(path)


# ------------------------------------------------------------------------ atomic writes
def test_atomic_write_leaves_no_temporary_file(tmp_path):
    for epochs in (1, 2):
        trained_checkpoint(tmp_path / "c.npz", epochs)
    assert os.listdir(tmp_path) == ["c.npz"]


def test_interrupted_write_keeps_the_old_checkpoint(saved, tmp_path, monkeypatch):
    path, arrays, meta = saved
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"params": np.zeros(3)}, {"other": True})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta and np.array_equal(loaded["params"], arrays["params"])


def test_failure_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "f.txt"
    ckpt.atomic_write(path, lambda handle: handle.write(b"old"))

    def half_then_fail(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    mask = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "c.npz", {"params": np.zeros(2)}, {})
        ckpt.atomic_write(tmp_path / "t.txt", lambda handle: handle.write(b"x"))
    finally:
        os.umask(mask)
    for name in ("c.npz", "t.txt"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o640, name
