"""One safe reader for every file minidl loads (minidl/files.py), and atomic writes that clean
up after a killed writer. Every damaged file is built here, in tmp_path: truncated, flipped,
of the wrong kind, pickled, or declaring sizes it does not hold; each must give a ValueError
naming the file and what was expected, before any large allocation."""
import gzip
import io
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import minidl
from minidl import files, rundir
from minidl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidl.cli import main
from minidl.data import DataError, load_dataset, read_idx
from minidl.files import FileError, atomic_write, read_npy, read_npz
from minidl.golden import GoldenFileError, read_golden, write_golden

SMALL_PEAK = 32 * 2 ** 20          # bytes: what reading any damaged file here may allocate at most


def cli(*argv):
    """(exit code, stderr) of `minidl ARGV` run in-process, stdout discarded."""
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


def cli_subprocess(*argv, timeout=120):
    """(exit code, stderr) of `python -m minidl ARGV` in a fresh process."""
    result = subprocess.run([sys.executable, "-m", "minidl", *map(str, argv)], capture_output=True, text=True,
                            timeout=timeout, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    return result.returncode, result.stderr


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 2, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def peak_bytes(function, *args, **kwargs):
    """(exception raised by function(*args, **kwargs), the peak traced allocation while it ran)."""
    tracemalloc.start()
    try:
        function(*args, **kwargs)
    except Exception as error:            # the test asserts what it was
        raised = error
    else:
        raised = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run directory of `minidl train` (blobs, 2 epochs)."""
    output = tmp_path_factory.mktemp("files") / "run"
    code, err = cli("train", "--dataset", "blobs", "--epochs", 2, "--output", output, "--quiet", "--no-plot")
    assert code == 0, err
    return output


def copy_run(run, target, **replace):
    """A copy of the run directory's small files, with some replaced by the given bytes."""
    target.mkdir()
    for name in (rundir.CONFIG, rundir.DATA, rundir.FINAL, rundir.CHECKPOINT):
        (target / name).write_bytes(replace.get(name.replace(".", "_"), (run / name).read_bytes()))
    return target


def npy_bytes(array):
    handle = io.BytesIO()
    np.save(handle, array, allow_pickle=True)
    return handle.getvalue()


def npz_with_member(path, name, payload, compress=zipfile.ZIP_STORED):
    """An .npz holding one member ``name``.npy whose bytes are ``payload`` (any header, any data)."""
    with zipfile.ZipFile(path, "w", compress) as archive:
        archive.writestr(name + ".npy", payload)
    return path


def npy_header(shape, dtype="<f8"):
    """The bytes of an .npy header declaring ``shape`` of ``dtype``, as np.save writes it."""
    handle = io.BytesIO()
    np.lib.format.write_array_header_1_0(handle, {"descr": dtype, "fortran_order": False, "shape": shape})
    return handle.getvalue()


# ------------------------------------------------------------------------ the reader on its own
CUTS = [0, 10, 100, 0.3, 0.5, 0.9, -22, -1]


@pytest.mark.parametrize("cut", CUTS)
def test_truncated_npz_names_the_file_and_says_truncated(tmp_path, cut):
    np.savez(tmp_path / "whole.npz", a=np.arange(1000.0), b=np.array("text"))
    data = (tmp_path / "whole.npz").read_bytes()
    cut = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    (tmp_path / "cut.npz").write_bytes(data[:cut])
    with pytest.raises(FileError, match="truncated or corrupt") as error:
        read_npz(tmp_path / "cut.npz", "test file")
    assert "cut.npz" in str(error.value) and "test file" in str(error.value)


@pytest.mark.parametrize("compressed", [False, True])
def test_every_flipped_byte_is_refused_or_harmless(tmp_path, compressed):
    """Flip each byte of a small .npz in turn: the reader returns the same arrays (a flip in
    a field nobody reads) or raises FileError naming the file, never anything else."""
    arrays = {"w": np.arange(12.0).reshape(3, 4), "n": np.arange(5)}
    (np.savez_compressed if compressed else np.savez)(tmp_path / "good.npz", **arrays)
    data = bytearray((tmp_path / "good.npz").read_bytes())
    path = tmp_path / "flipped.npz"
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            read = read_npz(path, "test file")
        except FileError as error:
            assert "flipped.npz" in str(error), error
        else:
            assert sorted(read) == sorted(arrays), position
            assert all(np.array_equal(read[name], arrays[name]) for name in arrays), position


def test_a_flipped_data_byte_fails_the_crc(tmp_path):
    np.savez(tmp_path / "a.npz", a=np.arange(100.0))
    data = bytearray((tmp_path / "a.npz").read_bytes())
    data[400] ^= 0x01                                      # inside the stored array's data
    (tmp_path / "a.npz").write_bytes(bytes(data))
    with pytest.raises(FileError, match="a.npz: not a readable test file .*CRC"):
        read_npz(tmp_path / "a.npz", "test file")


def test_missing_file_directory_npy_and_text_are_named(tmp_path):
    with pytest.raises(FileError, match="no test file at .*none.npz"):
        read_npz(tmp_path / "none.npz", "test file")
    with pytest.raises(FileError, match="is a directory, not a test file"):
        read_npz(tmp_path, "test file")
    (tmp_path / "x.npz").write_bytes(npy_bytes(np.zeros(3)))
    with pytest.raises(FileError, match=r"x.npz: not a readable test file: it holds a single array \(an .npy"):
        read_npz(tmp_path / "x.npz", "test file")
    (tmp_path / "t.npz").write_text("hello, I am not a zip file\n")
    with pytest.raises(FileError, match="t.npz: not a readable test file .*not a zip file"):
        read_npz(tmp_path / "t.npz", "test file")
    np.savez(tmp_path / "z.npz", a=np.zeros(2))
    with pytest.raises(FileError, match=r"z.npz: not a readable input: it is an .npz archive .* single"):
        read_npy(tmp_path / "z.npz", "input")


class Marker:
    """Unpickling this creates a file: proof that pickled data were (not) executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickled_object_arrays_are_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = Marker(marker)
    npz_with_member(tmp_path / "evil.npz", "evil", npy_bytes(payload))
    with pytest.raises(FileError, match="evil.npz: .*'evil' is an object array .*refused unread"):
        read_npz(tmp_path / "evil.npz", "test file")
    (tmp_path / "evil.npy").write_bytes(npy_bytes(payload))
    with pytest.raises(FileError, match="evil.npy: .*object array"):
        read_npy(tmp_path / "evil.npy", "test file")
    assert not marker.exists()


@pytest.mark.parametrize("array", [np.array([b"bytes"]), np.zeros(2, dtype=[("a", "<f8")]),
                                   np.array(["2020-01-01"], dtype="datetime64[D]")])
def test_non_numeric_entries_are_refused(tmp_path, array):
    np.savez(tmp_path / "odd.npz", x=array)
    dtype = re.escape(str(array.dtype))
    with pytest.raises(FileError, match=f"odd.npz: not a readable test file: entry 'x' holds {dtype}.*numbers"):
        read_npz(tmp_path / "odd.npz", "test file")


def test_a_member_that_is_not_an_array_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "m.npz", "w") as archive:
        archive.writestr("notes.txt", b"hello")
    with pytest.raises(FileError, match="m.npz: .*member 'notes.txt' is not an array"):
        read_npz(tmp_path / "m.npz", "test file")


@pytest.mark.parametrize("shape, match", [((2 ** 40,), "limit"), ((2 ** 28,), "limit"),
                                          ((1000,), "declares shape .* but holds 80 bytes"),
                                          ((2,), "declares shape .* but holds 80 bytes")])
def test_a_header_declaring_more_than_the_file_holds_allocates_nothing(tmp_path, shape, match):
    """The 'zip bomb' member: its .npy header promises a huge array; ten floats follow."""
    payload = npy_header(shape) + np.arange(10.0).tobytes()
    for compress in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        npz_with_member(tmp_path / "bomb.npz", "w", payload, compress)
        error, peak = peak_bytes(read_npz, tmp_path / "bomb.npz", "test file", max_bytes=2 ** 30)
        assert isinstance(error, FileError) and "bomb.npz" in str(error), error
        assert re.search(match, str(error)), error
        assert peak < SMALL_PEAK, peak
    (tmp_path / "bomb.npy").write_bytes(payload)
    error, peak = peak_bytes(read_npy, tmp_path / "bomb.npy", "test file", max_bytes=2 ** 30)
    assert isinstance(error, FileError) and "bomb.npy" in str(error) and peak < SMALL_PEAK, (error, peak)


def test_declared_uncompressed_size_is_capped_before_inflating(tmp_path):
    """8 MB of zeros compress to a few KB: with an 8 MB cap nothing is inflated."""
    np.savez_compressed(tmp_path / "zeros.npz", a=np.zeros(2 ** 20), b=np.zeros(2 ** 20))
    assert (tmp_path / "zeros.npz").stat().st_size < 100_000
    error, peak = peak_bytes(read_npz, tmp_path / "zeros.npz", "test file", max_bytes=2 ** 23)
    assert isinstance(error, FileError), error
    assert "zeros.npz" in str(error) and "declare 16,777," in str(error) and "limit of 8,388,608" in str(error)
    assert peak < 2 ** 20, peak
    assert read_npz(tmp_path / "zeros.npz", "test file")["a"].shape == (2 ** 20,)


def test_arrays_read_back_exactly_as_numpy_loads_them(tmp_path):
    arrays = {"f": np.arange(6.0).reshape(2, 3), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              "big": np.arange(5, dtype=">i4"), "text": np.array("{}"), "empty": np.zeros((0, 3)),
              "c": np.array([1 + 2j]), "scalar": np.float32(2.5), "long": np.arange(300_000.0)}
    np.savez_compressed(tmp_path / "a.npz", **arrays)
    read = read_npz(tmp_path / "a.npz", "test file")
    with np.load(tmp_path / "a.npz") as expected:
        for name in arrays:
            assert read[name].dtype == expected[name].dtype and read[name].shape == expected[name].shape
            assert np.array_equal(read[name], expected[name]) and read[name].flags.writeable
    assert read["fortran"].flags.f_contiguous


# ------------------------------------------------------------------------ IDX
def idx_header(code, shape):
    return bytes([0, 0, code, len(shape)]) + np.array(shape, ">i4").tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_header_promising_2_to_the_30_labels_allocates_nothing(tmp_path, gz):
    payload = idx_header(0x0C, (2 ** 30,)) + np.arange(10, dtype=">i4").tobytes()
    path = tmp_path / ("labels.gz" if gz else "labels")
    path.write_bytes(gzip.compress(payload) if gz else payload)
    error, peak = peak_bytes(read_idx, str(path))
    assert isinstance(error, DataError) and "labels" in str(error) and "header promises" in str(error), error
    assert peak < SMALL_PEAK, peak


def test_a_corrupt_gzip_idx_is_a_data_error_naming_the_file(tmp_path):
    data = bytearray(gzip.compress(idx_header(0x08, (50, 20)) + bytes(range(250)) * 4))
    for position in range(12, len(data) - 8, 3):          # flips in the deflate stream
        flipped = bytearray(data)
        flipped[position] ^= 0x55
        (tmp_path / "images.gz").write_bytes(bytes(flipped))
        try:
            read_idx(str(tmp_path / "images.gz"))
        except DataError as error:
            assert "images.gz" in str(error)


# ------------------------------------------------------------------------ image datasets
def write_idx_dir(directory, x_train, y_train, x_test, y_test, label_code=0x08):
    directory.mkdir()
    for stem, array, code in zip(minidl.data.MNIST_FILES, (x_train, y_train, x_test, y_test),
                                 (0x08, label_code, 0x08, label_code)):
        (directory / stem).write_bytes(idx_header(code, array.shape)
                                       + array.astype(files.IDX_DTYPES[code]).tobytes())
    return str(directory)


def images(n, side=4):
    return np.random.default_rng(0).integers(0, 256, (n, side, side), dtype=np.uint8)


def test_an_idx_label_255_is_refused_not_a_256_class_model(tmp_path):
    labels = np.arange(20) % 10
    labels[3] = 255
    directory = write_idx_dir(tmp_path / "d", images(20), labels, images(5), np.arange(5))
    with pytest.raises(DataError, match=r"mnist train labels .*train-labels-idx1-ubyte.* \[0, 9\].*255.*0\.\.9"):
        load_dataset("mnist", data_dir=directory)


def test_an_idx_label_of_2_to_the_30_is_refused_before_any_model(tmp_path):
    labels = np.arange(20) % 10
    labels[0] = 2 ** 30
    directory = write_idx_dir(tmp_path / "d", images(20), labels, images(5), np.arange(5), label_code=0x0C)
    error, peak = peak_bytes(load_dataset, "mnist", data_dir=directory)
    assert isinstance(error, DataError) and "1073741824" in str(error) and "train-labels" in str(error), error
    assert peak < SMALL_PEAK, peak


def test_idx_test_images_of_another_size_name_both_files(tmp_path):
    directory = write_idx_dir(tmp_path / "d", images(20, 28), np.arange(20) % 10, images(5, 27), np.arange(5))
    with pytest.raises(DataError, match=r"test images \(.*t10k-images-idx3-ubyte\) are 27x27, the training "
                                        r"images \(.*train-images-idx3-ubyte\) 28x28"):
        load_dataset("mnist", data_dir=directory)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.update(y_train=a["y_train"] + 0.5), r"y_train.*integral class indices.*0\.5"),
    (lambda a: a.update(x_train=a["x_train"] + 1j), r"x_train.*must hold real numbers, got dtype complex"),
    (lambda a: a.update(x_test=np.where(a["x_test"] > 100, np.nan, a["x_test"])), r"x_test.*non-finite"),
    (lambda a: a.update(y_test=a["y_test"] - 1), r"y_test.*\[0, 9\].*-1"),
    (lambda a: a.update(y_train=a["y_train"].astype(np.float64)), None),          # integral floats are fine
])
def test_labels_and_pixels_of_an_npz_are_checked(tmp_path, change, match):
    arrays = {"x_train": images(50).astype(np.float64), "y_train": np.arange(50) % 10,
              "x_test": images(5).astype(np.float64), "y_test": np.arange(5)}
    change(arrays)
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "mnist.npz", **arrays)
    if match is None:
        assert load_dataset("mnist", data_dir=str(tmp_path / "d")).n_outputs == 10
        return
    with pytest.raises(DataError, match=match) as error:
        load_dataset("mnist", data_dir=str(tmp_path / "d"))
    assert "mnist.npz" in str(error.value)


@pytest.mark.parametrize("cut", [0, 100, 0.5, -1])
def test_a_truncated_mnist_npz_is_a_data_error(tmp_path, cut):
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "mnist.npz"
    np.savez(path, x_train=images(20), y_train=np.arange(20) % 10, x_test=images(5), y_test=np.arange(5))
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut) if isinstance(cut, float) else cut % len(data)])
    with pytest.raises(DataError, match="mnist.npz: not a readable mnist .npz"):
        load_dataset("mnist", data_dir=str(tmp_path / "d"))


# ------------------------------------------------------------------------ models from files
def huge_checkpoint(path, sizes):
    """A checkpoint with a VALID digest whose model description names ``sizes``."""
    save_checkpoint(path, {"params": np.zeros(51)}, {"model": {"sizes": sizes, "activation": "relu"}})
    return path


@pytest.mark.parametrize("sizes, match", [([64, 200000, 200000, 10], "limit"), ([2, 9, 3], "params"),
                                          ([2, 0, 3], "positive integers"), ("[2, 3]", "positive integers")])
def test_a_checkpoint_is_checked_against_its_arrays_before_any_model(tmp_path, sizes, match):
    path = huge_checkpoint(tmp_path / "ckpt.npz", sizes)
    error, peak = peak_bytes(minidl.load, str(path))
    assert isinstance(error, CheckpointError) and "ckpt.npz" in str(error), error
    assert match in str(error) and peak < SMALL_PEAK, (error, peak)


def test_a_model_file_and_a_golden_file_are_checked_before_any_model(tmp_path):
    path = tmp_path / "m.npz"
    minidl.MLP([3, 4, 2]).save(path)
    arrays = read_npz(path)
    header = json.loads(str(arrays["__model__"]))
    header["config"]["sizes"] = [3, 100000, 100000, 2]
    arrays["__model__"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    error, peak = peak_bytes(minidl.load, path)
    assert isinstance(error, FileError) and "m.npz" in str(error) and "limit" in str(error), error
    assert peak < SMALL_PEAK, peak
    write_golden(tmp_path / "g.npz", sizes=[3, 4, 2])
    entries = read_npz(tmp_path / "g.npz")
    entries["config"] = np.array(json.dumps(dict(json.loads(str(entries["config"])), sizes=[3, 5, 2])))
    np.savez(tmp_path / "g.npz", **entries)
    with pytest.raises(GoldenFileError, match=r"g.npz: 'param/0.weight' is missing|'0.weight' has shape"):
        read_golden(tmp_path / "g.npz")


@pytest.mark.parametrize("name", ["final", "checkpoint"])
@pytest.mark.parametrize("cut", CUTS)
def test_every_loader_refuses_a_truncated_run_file_naming_it(run, tmp_path, name, cut):
    data = (run / f"{name}.npz").read_bytes()
    cut = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    damaged = copy_run(run, tmp_path / "damaged", **{f"{name}_npz": data[:cut]})
    for load in (minidl.load,):
        with pytest.raises(ValueError, match=f"{name}.npz: not a readable"):
            load(str(damaged / f"{name}.npz"))
    if name == "checkpoint":
        with pytest.raises(CheckpointError, match="checkpoint.npz: not a readable checkpoint"):
            load_checkpoint(damaged / "checkpoint.npz")


def test_an_npy_where_final_npz_belongs(run, tmp_path):
    damaged = copy_run(run, tmp_path / "damaged", final_npz=npy_bytes(np.zeros(3)))
    with pytest.raises(FileError, match=r"final.npz: not a readable .npz model: it holds a single array"):
        minidl.load(str(damaged))


@pytest.mark.parametrize("damage", ["truncated_final", "truncated_checkpoint", "npy_final", "huge_checkpoint"])
def test_evaluate_and_init_from_a_damaged_run_exit_2_in_one_line(run, tmp_path, damage):
    final, checkpoint = (run / "final.npz").read_bytes(), (run / "checkpoint.npz").read_bytes()
    replace = {"truncated_final": {"final_npz": final[:len(final) // 2]},
               "truncated_checkpoint": {"checkpoint_npz": checkpoint[:-30]},
               "npy_final": {"final_npz": npy_bytes(np.zeros(3))},
               "huge_checkpoint": {}}[damage]
    damaged = copy_run(run, tmp_path / "damaged", **replace)
    if damage == "huge_checkpoint":
        huge_checkpoint(damaged / "checkpoint.npz", [2, 200000, 200000, 3])
    target = damaged / ("final.npz" if "final" in damage else "checkpoint.npz")
    code, err = cli_subprocess("evaluate", target)
    assert_one_line_error(code, err, target.name)
    code, err = cli("train", "--dataset", "blobs", "--epochs", 1, "--init-from", target,
                    "--output", tmp_path / "tuned", "--quiet", "--no-plot")
    assert_one_line_error(code, err, target.name)


def test_predict_inputs_are_read_safely(run, tmp_path):
    np.savez(tmp_path / "complex.npz", X=np.zeros((2, 2)) + 1j)
    code, err = cli("predict", run, "--input", tmp_path / "complex.npz")
    assert_one_line_error(code, err, "complex.npz", "expected numbers")
    (tmp_path / "x.npy").write_bytes(npy_header((2 ** 40, 2)) + b"\x00" * 32)
    code, err = cli("predict", run, "--input", tmp_path / "x.npy")
    assert_one_line_error(code, err, "x.npy", "limit")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    code, err = cli("predict", run, "--input", tmp_path / "ragged.csv")
    assert_one_line_error(code, err, "ragged.csv", "not a numeric .csv")


# ------------------------------------------------------------------------ stale temporaries
def temporary(directory, host, pid, target="final.npz", age=0.0):
    path = directory / f".tmp-{host}-{pid}-abcd_123-{target}"
    path.write_bytes(b"half a file")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_write_removes_the_temporaries_of_dead_writers_only(tmp_path):
    host = files._host()
    dead = [temporary(tmp_path, host, dead_pid()), temporary(tmp_path, host, dead_pid(), "checkpoint.npz"),
            temporary(tmp_path, "otherhost", 12345, age=2 * files.STALE_SECONDS)]
    alive = [temporary(tmp_path, host, os.getpid()), temporary(tmp_path, "otherhost", 54321)]
    others = [tmp_path / ".tmp-notours", tmp_path / ".tmp-abcd_123final.npz", tmp_path / "final.npz.tmp-1-x"]
    for path in others:
        path.write_bytes(b"not ours")
    atomic_write(tmp_path / "summary.json", lambda handle: handle.write(b"{}"))
    assert not any(path.exists() for path in dead)
    assert all(path.exists() for path in alive + others)
    assert (tmp_path / "summary.json").read_bytes() == b"{}"


def test_a_write_removes_temporaries_of_the_old_naming_once_a_day_old(tmp_path):
    """Before the pid was in the name, a killed writer's `.tmp-<8 characters><name>` had no
    writer to ask: it goes when older than STALE_SECONDS, a fresh one stays."""
    old, fresh = tmp_path / ".tmp-k2j_x9qacheckpoint.npz", tmp_path / ".tmp-a1b2c3d4final.npz"
    for path in (old, fresh):
        path.write_bytes(b"half a checkpoint")
    stale = time.time() - 2 * files.STALE_SECONDS
    os.utime(old, (stale, stale))
    atomic_write(tmp_path / "summary.json", lambda handle: handle.write(b"{}"))
    assert not old.exists() and fresh.exists()


def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_write_removes(tmp_path):
    script = ("import sys, time\nfrom minidl.files import atomic_write\n"
              "def slow(handle):\n"
              "    handle.write(b'half'); handle.flush(); print('writing', flush=True); time.sleep(60)\n"
              "atomic_write(sys.argv[1], slow)\n")
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "final.npz")], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stdout.close()
    left = [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]
    assert len(left) == 1 and left[0].endswith("-final.npz") and str(process.pid) in left[0]
    atomic_write(tmp_path / "final.npz", lambda handle: handle.write(b"whole"))
    assert os.listdir(tmp_path) == ["final.npz"]
