"""Datasets: synthetic generators, digits, stratified splits, standardisation on the training
split only, and the IDX / npz readers on small files made here (never the network)."""
import gzip
import hashlib
import io
import os
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from minidl import data
from minidl.data import (DATASETS, IDX_DTYPES, MNIST_FILES, DataError, load_dataset, make_blobs,
                         make_spirals, make_xor, read_idx, standardize, stratified_split)

CORNERS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any attempt to download fails the test; the cache points into tmp_path."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to use the network: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "cache"))


def idx_bytes(array, code=0x08, shape=None):
    """An IDX file: 0 0 dtype ndim, big-endian int32 sizes, big-endian data."""
    array = np.asarray(array)
    shape = array.shape if shape is None else shape
    header = bytes([0, 0, code, len(shape)]) + np.array(shape, ">i4").tobytes()
    return header + array.astype(IDX_DTYPES[code]).tobytes()


def write(path, payload, gz=False):
    path = str(path) + (".gz" if gz else "")
    with (gzip.open if gz else open)(path, "wb") as handle:
        handle.write(payload)
    return path


def fake_mnist(n_train=30, n_test=9, classes=3, side=4, seed=0):
    """Images whose first pixel is the image's index, so rows can be traced through a split."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_train + n_test, side, side), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n_train + n_test)
    labels = (np.arange(n_train + n_test) % classes).astype(np.uint8)
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def write_mnist_dir(directory, gz=False, **kwargs):
    os.makedirs(directory, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = fake_mnist(**kwargs)
    for stem, array in zip(MNIST_FILES, (x_train, y_train, x_test, y_test)):
        write(os.path.join(directory, stem), idx_bytes(array), gz)
    return (x_train, y_train), (x_test, y_test)


# ------------------------------------------------------------------------ synthetic data
def test_xor_classic_is_the_four_corners_everywhere():
    X, y = make_xor(4)
    assert np.array_equal(X, CORNERS) and np.array_equal(y, [0, 1, 1, 0])
    dataset = load_dataset("xor", xor_points=4)
    for split in ("train", "val", "test"):
        X_split, y_split = dataset.split(split)
        assert np.array_equal(X_split, CORNERS) and np.array_equal(y_split, [[0.0], [1.0], [1.0], [0.0]])
    assert dataset.loss == "binary_cross_entropy" and dataset.n_outputs == 1


def test_xor_jittered_points_sit_around_their_corner_with_the_xor_label():
    X, y = make_xor(400, noise=0.15, seed=3)
    assert X.shape == (400, 2) and np.array_equal(np.bincount(y), [200, 200])
    corner = np.arange(400) % 4
    assert np.array_equal(y, [0, 1, 1, 0] * 100)
    offset = X - CORNERS[corner]
    assert np.abs(offset).max() < 5 * 0.15 and 0.1 < offset.std() < 0.2
    assert np.array_equal(X, make_xor(400, noise=0.15, seed=3)[0])
    assert not np.array_equal(X, make_xor(400, noise=0.15, seed=4)[0])
    with pytest.raises(ValueError, match="n_points"):
        make_xor(3)


def test_spirals_and_blobs_are_seeded_and_shaped():
    X, y = make_spirals(300, classes=3, seed=1)
    assert X.shape == (300, 2) and np.array_equal(np.bincount(y), [100, 100, 100])
    assert np.abs(np.hypot(X[:, 0], X[:, 1])).max() <= 1.0 + 1e-12
    assert np.array_equal(X, make_spirals(300, classes=3, seed=1)[0])
    X, y = make_blobs(90, classes=3, features=4, spread=0.1, seed=2)
    assert X.shape == (90, 4) and np.array_equal(np.bincount(y), [30, 30, 30])
    centres = np.array([X[y == c].mean(axis=0) for c in range(3)])
    assert np.abs(X - centres[y]).max() < 1.0                      # tight blobs around their centre
    assert not np.array_equal(X, make_blobs(90, classes=3, features=4, spread=0.1, seed=3)[0])


@pytest.mark.parametrize("name, n, n_features, n_outputs, loss", [
    ("xor", 400, 2, 1, "binary_cross_entropy"), ("spirals", 600, 2, 3, "cross_entropy"),
    ("blobs", 600, 2, 3, "cross_entropy"), ("digits", 1797, 64, 10, "cross_entropy"),
    ("digits-parity", 1797, 64, 2, "cross_entropy")])
def test_every_local_dataset_loads_with_three_splits(name, n, n_features, n_outputs, loss):
    dataset = load_dataset(name, seed=1)
    assert (dataset.name, dataset.n_features, dataset.n_outputs, dataset.loss) == (name, n_features, n_outputs, loss)
    sizes = [len(dataset.split(split)[0]) for split in ("train", "val", "test")]
    assert [dataset.info[key] for key in ("n_train", "n_val", "n_test")] == sizes
    assert sum(sizes) == n and abs(sizes[1] - 0.2 * n) <= 5 and abs(sizes[2] - 0.2 * n) <= 5   # rounding per class
    for split in ("train", "val", "test"):
        X, y = dataset.split(split)
        assert X.dtype == np.float64 and len(X) == len(y) and X.shape[1] == n_features


def test_digits_is_the_real_scikit_learn_data():
    X, y = data.load_digits_arrays()
    assert X.shape == (1797, 64) and np.array_equal(np.unique(y), np.arange(10))
    assert X.min() == 0 and X.max() == 16


def test_digits_parity_uses_exactly_the_digits_split():
    digits = load_dataset("digits", seed=4)
    parity = load_dataset("digits-parity", seed=4)
    for split in ("train", "val", "test"):
        X_d, y_d = digits.split(split)
        X_p, y_p = parity.split(split)
        assert np.array_equal(X_d, X_p)
        assert np.array_equal(y_p, y_d % 2)
    assert parity.info["standardization"] == digits.info["standardization"]


def test_split_depends_on_the_seed():
    a, b, c = (load_dataset("digits", seed=seed) for seed in (0, 0, 1))
    assert np.array_equal(a.X_val, b.X_val) and not np.array_equal(a.X_val, c.X_val)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*digits"):
        load_dataset("cifar")
    assert set(DATASETS) >= {"digits", "digits-parity", "xor", "spirals", "blobs", "mnist", "fashion-mnist"}


def test_dataset_split_rejects_unknown_names():
    with pytest.raises(ValueError, match="train, val or test"):
        load_dataset("blobs").split("validation")


# ------------------------------------------------------------------------ splits
def test_stratified_split_keeps_each_class_in_proportion():
    labels = np.repeat(np.arange(4), [50, 30, 101, 7])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    test, val, train = stratified_split(labels, [0.2, 0.3], seed=5)
    assert np.array_equal(np.sort(np.concatenate([test, val, train])), np.arange(len(labels)))
    for label, count in zip(range(4), [50, 30, 101, 7]):
        n_test = np.count_nonzero(labels[test] == label)
        n_val = np.count_nonzero(labels[val] == label)
        assert n_test == round(0.2 * count)
        assert n_val == round(0.5 * count) - round(0.2 * count)
        assert n_test + n_val + np.count_nonzero(labels[train] == label) == count


def test_stratified_split_via_load_dataset_matches_class_proportions():
    _, digit = data.load_digits_arrays()
    dataset = load_dataset("digits", seed=0, val_fraction=0.25, test_fraction=0.15)
    counts = np.bincount(digit)
    assert np.abs(np.bincount(dataset.y_test, minlength=10) - 0.15 * counts).max() <= 1
    assert np.abs(np.bincount(dataset.y_val, minlength=10) - 0.25 * counts).max() <= 1


def test_equal_labels_give_a_plain_seeded_shuffle():
    parts = stratified_split(np.zeros(10), [0.3], seed=1)
    assert [len(part) for part in parts] == [3, 7]
    assert np.array_equal(parts[0], stratified_split([0] * 10, [0.3], seed=1)[0])
    assert any(not np.array_equal(parts[0], stratified_split(np.zeros(10), [0.3], seed=s)[0]) for s in (2, 3))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(val_fraction=0.5, test_fraction=0.5), DataError, "no training data"),
    (dict(val_fraction=0.7, test_fraction=0.4), DataError, "no training data"),
    (dict(val_fraction=0.0), ValueError, "val_fraction"),
    (dict(test_fraction=1.0), ValueError, "test_fraction"),
    (dict(val_fraction=-0.1), ValueError, "val_fraction"),
    (dict(test_fraction=0.01), DataError, "empty"),                 # 0.01 of 200 per class rounds to 2
])
def test_impossible_fractions_are_rejected(kwargs, error, match):
    name = "xor" if kwargs.get("test_fraction") == 0.01 else "digits"
    points = dict(xor_points=8) if name == "xor" else {}
    with pytest.raises(error, match=match):
        load_dataset(name, **points, **kwargs)


def test_a_fraction_that_leaves_a_split_empty_names_it():
    with pytest.raises(DataError, match="fraction 0.05"):
        stratified_split(np.array([0, 0, 0, 1, 1, 1]), [0.05], seed=0)
    with pytest.raises(DataError, match="training remainder"):
        stratified_split(np.array([0, 0, 1, 1]), [0.5, 0.5], seed=0)


# ------------------------------------------------------------------------ standardisation
def test_standardisation_is_fitted_on_the_training_split_only():
    raw = load_dataset("digits", seed=2, standardize_inputs=False)
    scaled = load_dataset("digits", seed=2)
    mean, std = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    constant = std == 0
    assert constant.any()                                      # digits has blank border pixels
    assert np.abs(scaled.X_train.mean(axis=0)).max() < 1e-12
    assert np.allclose(scaled.X_train.std(axis=0)[~constant], 1.0, rtol=0, atol=1e-12)
    assert np.array_equal(scaled.X_train[:, constant], np.zeros((len(raw.X_train), constant.sum())))
    safe = np.where(constant, 1.0, std)
    for split in ("val", "test"):
        assert np.array_equal(scaled.split(split)[0], (raw.split(split)[0] - mean) / safe)
    assert np.abs(scaled.X_val.mean(axis=0)).max() > 0.01     # not re-centred on its own statistics
    recorded = scaled.info["standardization"]
    assert np.array_equal(recorded["mean"], mean) and np.array_equal(recorded["std"], safe)
    assert scaled.info["standardized"] and not raw.info["standardized"]


def test_standardize_helper_leaves_its_inputs_alone(rng):
    train, other = rng.standard_normal((20, 3)) * 5 + 2, rng.standard_normal((4, 3))
    copies = train.copy(), other.copy()
    mean, std, (train_s, other_s) = standardize(train, other)
    assert np.array_equal(train, copies[0]) and np.array_equal(other, copies[1])
    assert np.array_equal(other_s, (other - mean) / std)


# ------------------------------------------------------------------------ IDX reader
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_images_and_labels(tmp_path, gz, rng):
    images = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    image_array = read_idx(write(tmp_path / "images", idx_bytes(images), gz))
    label_array = read_idx(write(tmp_path / "labels", idx_bytes(labels), gz))
    assert image_array.shape == (5, 3, 4) and image_array.dtype == np.uint8
    assert label_array.shape == (5,) and np.array_equal(label_array, labels)
    assert np.array_equal(image_array, images)


@pytest.mark.parametrize("code", sorted(IDX_DTYPES))
def test_read_idx_every_data_type_in_native_byte_order(tmp_path, code, rng):
    values = rng.integers(-100, 100, (3, 2)) if code != 0x08 else rng.integers(0, 255, (3, 2))
    if code in (0x0D, 0x0E):
        values = values / 7.0
    array = read_idx(write(tmp_path / "x", idx_bytes(values, code)))
    expected = values.astype(IDX_DTYPES[code])
    assert array.dtype == expected.dtype.newbyteorder("=") and array.dtype.isnative
    assert np.array_equal(array, expected)


CORRUPT = {
    "empty": (b"", "bad magic"),
    "bad_magic": (b"\x01\x00\x08\x01" + np.array([2], ">i4").tobytes() + b"\x01\x02", "bad magic"),
    "unknown_type": (b"\x00\x00\x07\x01" + np.array([2], ">i4").tobytes() + b"\x01\x02", "bad magic"),
    "zero_dims": (b"\x00\x00\x08\x00", "truncated IDX header"),
    "truncated_header": (b"\x00\x00\x08\x03" + np.array([2, 2], ">i4").tobytes(), "truncated IDX header"),
    "truncated_data": (idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))[:-1], "header promises"),
    "extra_data": (idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4)) + b"\x00", "header promises"),
    "negative_size": (idx_bytes(np.zeros(4, np.uint8), shape=(-2, -2)), "negative size"),
    "huge_size": (idx_bytes(np.zeros(1, np.uint8), shape=(2**31 - 1,) * 3), "header promises"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_refuses_corrupt_files(tmp_path, case, gz):
    payload, match = CORRUPT[case]
    path = write(tmp_path / "bad", payload, gz)
    with pytest.raises(DataError, match=match) as error:
        read_idx(path)
    assert "bad" in str(error.value)                       # the message names the file


@pytest.mark.parametrize("payload", [b"this is not gzip data", None])
def test_read_idx_refuses_broken_gzip(tmp_path, payload):
    if payload is None:                                     # a gzip stream cut short
        payload = gzip.compress(idx_bytes(np.arange(600, dtype=np.uint8).reshape(20, 30)))[:-20]
    path = tmp_path / "bad.gz"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="cannot read"):
        read_idx(str(path))


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(str(tmp_path / "missing"))


# ------------------------------------------------------------------------ mnist from local files
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_from_a_directory_of_idx_files(tmp_path, gz, name):
    (x_train, y_train), (x_test, y_test) = write_mnist_dir(tmp_path / "d", gz=gz)
    dataset = load_dataset(name, data_dir=str(tmp_path / "d"), val_fraction=0.2, standardize_inputs=False)
    assert dataset.n_features == 16 and dataset.n_outputs == 3 and dataset.loss == "cross_entropy"
    assert (len(dataset.X_train), len(dataset.X_val), len(dataset.X_test)) == (24, 6, 9)
    assert np.array_equal(np.bincount(dataset.y_val), [2, 2, 2])           # stratified
    assert np.array_equal(dataset.X_test, x_test.reshape(9, -1) / 255.0)   # the official test set
    assert np.array_equal(dataset.y_test, y_test)
    for split in ("train", "val"):
        X, y = dataset.split(split)
        index = np.round(X[:, 0] * 255).astype(int)                        # first pixel = image index
        assert np.array_equal(X, x_train[index].reshape(len(X), -1) / 255.0)
        assert np.array_equal(y, y_train[index])
    assert sorted(np.round(np.r_[dataset.X_train[:, 0], dataset.X_val[:, 0]] * 255)) == list(range(30))
    assert dataset.info["test"] == "official test set"


def test_mnist_standardised_on_its_training_split(tmp_path):
    write_mnist_dir(tmp_path / "d")
    dataset = load_dataset("mnist", data_dir=str(tmp_path / "d"))
    assert np.abs(dataset.X_train.mean(axis=0)).max() < 1e-12
    assert np.abs(dataset.X_test.mean(axis=0)).max() > 1e-3


def test_mnist_from_an_npz(tmp_path):
    (x_train, y_train), (x_test, y_test) = fake_mnist()
    os.makedirs(tmp_path / "d")
    np.savez(tmp_path / "d" / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    dataset = load_dataset("mnist", data_dir=str(tmp_path / "d"), standardize_inputs=False)
    assert (len(dataset.X_train) + len(dataset.X_val), len(dataset.X_test)) == (30, 9)
    assert np.array_equal(dataset.X_test, x_test.reshape(9, -1) / 255.0)


@pytest.mark.parametrize("arrays, match", [
    (dict(x_train=np.zeros((3, 2, 2)), y_train=np.zeros(3)), "x_test"),
    (dict(x_train=np.zeros((3, 2, 2)), y_train=np.zeros(2), x_test=np.zeros((1, 2, 2)), y_test=np.zeros(1)),
     "3 images but 2 labels"),
    (dict(x_train=np.zeros((3, 2, 2)), y_train=np.zeros((3, 2, 2)), x_test=np.zeros((1, 2, 2)),
          y_test=np.zeros(1)), "labels 1-D"),
    (dict(x_train=np.zeros(3), y_train=np.zeros(3), x_test=np.zeros((1, 2, 2)), y_test=np.zeros(1)),
     "at least 2-D"),
    (dict(x_train=np.array([None, 1], dtype=object), y_train=np.zeros(2), x_test=np.zeros((1, 2, 2)),
          y_test=np.zeros(1)), "not a readable mnist .npz: entry .x_train. is an object array"),
])
def test_bad_npz_is_a_data_error(tmp_path, arrays, match):
    os.makedirs(tmp_path / "d")
    np.savez(tmp_path / "d" / "mnist.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset("mnist", data_dir=str(tmp_path / "d"))


def test_swapped_idx_files_are_a_data_error(tmp_path):
    write_mnist_dir(tmp_path / "d")
    images, labels = (str(tmp_path / "d" / stem) for stem in MNIST_FILES[2:])
    os.rename(images, images + ".tmp")
    os.rename(labels, images)
    os.rename(images + ".tmp", labels)
    with pytest.raises(DataError, match="mnist test: images must be at least 2-D and labels 1-D"):
        load_dataset("mnist", data_dir=str(tmp_path / "d"))


def test_a_corrupt_idx_file_in_the_directory_is_a_data_error(tmp_path):
    write_mnist_dir(tmp_path / "d", gz=True)
    path = tmp_path / "d" / (MNIST_FILES[0] + ".gz")
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=MNIST_FILES[0]):
        load_dataset("mnist", data_dir=str(tmp_path / "d"))


@pytest.mark.parametrize("present", [0, 3])
def test_missing_files_in_data_dir_name_the_files_and_the_directory(tmp_path, present):
    write_mnist_dir(tmp_path / "d")
    for stem in MNIST_FILES[present:]:
        os.unlink(tmp_path / "d" / stem)
    with pytest.raises(DataError) as error:
        load_dataset("mnist", data_dir=str(tmp_path / "d"))
    message = str(error.value)
    assert str(tmp_path / "d") in message and "mnist.npz" in message
    assert all(stem in message for stem in MNIST_FILES)


def test_missing_directory_with_download_false_names_the_cache(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("fashion-mnist", download=False)
    message = str(error.value)
    assert str(tmp_path / "cache" / "fashion-mnist") in message
    assert all(stem in message for stem in MNIST_FILES)
    assert not (tmp_path / "cache").exists()


def test_data_dir_given_never_downloads(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", data_dir=str(tmp_path / "empty"), download=True)


# ------------------------------------------------------------------------ download (faked)
class FakeResponse(io.BytesIO):
    def __init__(self, payload):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_offline_download_explains_which_files_to_put_where(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as error:
        load_dataset("mnist")
    message = str(error.value)
    cache = tmp_path / "cache" / "mnist"
    assert "no network here" in message and "Without network access" in message
    assert str(cache) in message and "--data-dir" in message
    assert all(stem + ".gz" in message for stem in MNIST_FILES)
    assert os.listdir(cache) == []                               # no partial file left behind


def test_download_checks_the_checksum_and_caches(tmp_path, monkeypatch):
    (x_train, y_train), (x_test, y_test) = fake_mnist()
    payloads = {stem + ".gz": gzip.compress(idx_bytes(array))
                for stem, array in zip(MNIST_FILES, (x_train, y_train, x_test, y_test))}
    digests = tuple(hashlib.sha256(payloads[stem + ".gz"]).hexdigest() for stem in MNIST_FILES)
    monkeypatch.setitem(data.SOURCES, "mnist", ("https://example.invalid/mnist/", "sha256", digests))
    fetched = []

    def serve(url, timeout=None):
        fetched.append(url)
        return FakeResponse(payloads[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    dataset = load_dataset("mnist", standardize_inputs=False)
    assert len(fetched) == 4 and np.array_equal(dataset.y_test, y_test)
    cache = tmp_path / "cache" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(payloads)
    load_dataset("mnist")                                         # second time: from the cache
    assert len(fetched) == 4


def test_processes_downloading_into_one_cache_at_once_do_not_collide(tmp_path, monkeypatch):
    """Every rank of a job on one node fetches into the same cache at the same moment: each
    writes a temporary file of its own and renames it, so all succeed with the whole file."""
    payload = os.urandom(1 << 18)
    both_started = threading.Barrier(2, timeout=30)

    class SlowResponse(FakeResponse):
        def read(self, size=-1):                 # interleave the two downloads chunk by chunk
            time.sleep(0.001)
            return super().read(min(size, 1 << 12))

    def serve(url, timeout=None):
        both_started.wait()
        return SlowResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    errors = []

    def fetch():
        try:
            data._download("https://example.invalid/x.gz", str(path), "sha256", hashlib.sha256(payload).hexdigest())
        except Exception as error:               # reported below
            errors.append(error)
    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and path.read_bytes() == payload
    assert os.listdir(tmp_path) == [path.name]                   # no temporary file left


def test_download_with_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(data.SOURCES, "mnist", ("https://example.invalid/", "sha256", ("0" * 64,) * 4))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: FakeResponse(b"evil bytes"))
    with pytest.raises(DataError, match="checksum is wrong"):
        load_dataset("mnist")
    assert os.listdir(tmp_path / "cache" / "mnist") == []
