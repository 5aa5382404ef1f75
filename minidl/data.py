"""Datasets, seeded stratified splits and standardisation.

    xor            jittered points around the four corners of the unit square (binary)
    spirals, blobs seeded synthetic 2-D classification problems
    digits         scikit-learn's 8x8 handwritten digits (1,797 real images, 10 classes)
    digits-parity  the same images labelled even (0) / odd (1), split exactly like digits
    mnist, fashion-mnist   28x28 images from the standard IDX files (gzipped or not) or an
                   .npz (x_train, y_train, x_test, y_test), read from --data-dir or downloaded
                   once into a cache and checked against the published checksums

``load_dataset`` returns train / validation / test splits, standardised with statistics
fitted on the training split only, plus an ``info`` dict that records what was used.
"""
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from .files import IDX_DTYPES, atomic_write, read_npz  # noqa: F401 (IDX_DTYPES: still minidl.data's)
from .files import read_idx as _read_idx
from .validation import (check_class_labels, check_finite, check_non_negative_int, check_positive_int, check_real,
                         numeric_array)


class DataError(ValueError):
    """A dataset that cannot be loaded, with what to do about it."""


@dataclass
class Dataset:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int
    loss: str
    info: dict = field(default_factory=dict)

    @property
    def n_features(self):
        return self.X_train.shape[1]

    def split(self, name):
        """(X, y) of the split called train, val or test."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        return getattr(self, f"X_{name}"), getattr(self, f"y_{name}")


# ---------------------------------------------------------------------------- synthetic
def make_xor(n_points=400, noise=0.15, seed=0):
    """XOR: label 1 where exactly one coordinate is 1. n_points=4 gives the classic 4 corners."""
    n_points = check_positive_int("n_points", n_points, minimum=4)
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1, 0])
    if n_points == 4:
        return corners.copy(), labels.copy()
    rng = np.random.default_rng(seed)
    which = np.arange(n_points) % 4                        # balanced corners
    X = corners[which] + rng.normal(0.0, noise, (n_points, 2))
    return X, labels[which]


def make_spirals(n_points=600, classes=3, noise=0.2, seed=0):
    """Interleaved spiral arms, one per class (the CS231n toy problem)."""
    rng = np.random.default_rng(seed)
    per_class = n_points // classes
    X, y = [], []
    for label in range(classes):
        radius = np.linspace(0.0, 1.0, per_class)
        angle = np.linspace(label * 4.0, (label + 1) * 4.0, per_class) + rng.normal(0, noise, per_class)
        X.append(np.c_[radius * np.sin(angle), radius * np.cos(angle)])
        y.append(np.full(per_class, label))
    return np.concatenate(X), np.concatenate(y)


def make_blobs(n_points=600, classes=3, features=2, spread=1.0, seed=0):
    """Gaussian blobs around class centres drawn uniformly from [-5, 5]^features."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5, 5, (classes, features))
    y = np.arange(n_points) % classes
    return centres[y] + rng.normal(0, spread, (n_points, features)), y


def load_digits_arrays():
    """(X (1797, 64), y (1797,)) from scikit-learn, which ships the data."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError('the digits dataset needs scikit-learn: pip install -e ".[data]"') from None
    digits = load_digits()
    return digits.data.astype(np.float64), digits.target.astype(np.int64)


# ---------------------------------------------------------------------------- IDX / npz
def read_idx(path):
    """The array in an IDX file (optionally gzipped), with files.read_idx's checks: DataError."""
    return _read_idx(path, error=DataError)


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# Published checksums of the gzipped files: SHA-256 for MNIST; the Fashion-MNIST authors publish MD5.
SOURCES = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "sha256", (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", "md5", (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
}


def default_cache(name):
    root = os.environ.get("MINIDL_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "minidl")
    return os.path.join(root, name)


def _download(url, path, algorithm, expected):
    """Fetch url to path (atomically, with a progress bar) and verify its checksum.

    The download goes to a temporary file of its own (files.atomic_write: several processes of
    one job may fetch into the same cache at once, none ever writes another's file, and one
    killed mid-download leaves a temporary the next write removes), is checked, then renamed
    over ``path``, so a reader finds the whole verified file or none.
    """
    from tqdm import tqdm

    def fetch(out):
        digest = hashlib.new(algorithm)
        with urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(path)) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != expected:
            raise DataError(f"{url} downloaded, but its {algorithm} checksum is wrong; not using it")

    try:
        atomic_write(path, fetch)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise DataError(f"could not download {url} ({error})") from None


def _find_local(directory, name):
    """Paths of the four IDX files (gz or raw) or of NAME.npz in directory, or None."""
    npz = os.path.join(directory, f"{name}.npz")
    if os.path.exists(npz):
        return npz
    found = []
    for stem in MNIST_FILES:
        candidates = [os.path.join(directory, stem + suffix) for suffix in (".gz", "")]
        existing = [path for path in candidates if os.path.exists(path)]
        if not existing:
            return None
        found.append(existing[0])
    return found


def load_image_dataset(name, data_dir=None, download=True):
    """((X_train, y_train), (X_test, y_test)) for mnist or fashion-mnist, pixels scaled to [0, 1]."""
    directory = data_dir or default_cache(name)
    local = _find_local(directory, name) if os.path.isdir(directory) else None
    if local is None and download and data_dir is None:
        base, algorithm, digests = SOURCES[name]
        os.makedirs(directory, exist_ok=True)
        try:
            for stem, expected in zip(MNIST_FILES, digests):
                path = os.path.join(directory, stem + ".gz")
                if not os.path.exists(path):
                    _download(base + stem + ".gz", path, algorithm, expected)
        except DataError as error:
            raise DataError(f"{error}. Without network access, put {', '.join(f + '.gz' for f in MNIST_FILES)} "
                            f"(or {name}.npz with x_train, y_train, x_test, y_test) into {directory} "
                            f"or pass --data-dir DIR") from None
        local = _find_local(directory, name)
    if local is None:
        raise DataError(f"{name} files not found in {directory}: put {', '.join(MNIST_FILES)} "
                        f"(each optionally .gz) or {name}.npz there")
    if isinstance(local, str):
        found = read_npz(local, f"{name} .npz", error=DataError)
        missing = [key for key in NPZ_KEYS if key not in found]
        if missing:
            raise DataError(f"{local}: not a usable {name} .npz: it lacks {missing}; it needs "
                            f"{', '.join(NPZ_KEYS)}")
        arrays, sources = [found[key] for key in NPZ_KEYS], [f"{local} ({key})" for key in NPZ_KEYS]
    else:
        arrays, sources = [read_idx(path) for path in local], local
    y_train = _check_split(name, "train", arrays[0], arrays[1], sources[0], sources[1])
    y_test = _check_split(name, "test", arrays[2], arrays[3], sources[2], sources[3])
    if arrays[2].shape[1:] != arrays[0].shape[1:]:
        size = lambda images: "x".join(map(str, images.shape[1:]))
        raise DataError(f"{name}: the test images ({sources[2]}) are {size(arrays[2])}, the training images "
                        f"({sources[0]}) {size(arrays[0])}: both must have one size ({name} images are 28x28)")
    flat = lambda images: images.reshape(len(images), -1).astype(np.float64) / 255.0
    return (flat(arrays[0]), y_train), (flat(arrays[2]), y_test)


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_CLASSES = 10                     # mnist and fashion-mnist both label their images 0..9


def _check_split(name, split, images, labels, image_file, label_file):
    """The labels (N,) as int64 of one split, checked with its images: images at least 2-D
    with one label each, real and finite pixels, labels integral in 0..9."""
    if images.ndim < 2 or labels.ndim != 1:
        raise DataError(f"{name} {split}: images must be at least 2-D and labels 1-D, got shapes "
                        f"{images.shape} ({image_file}) and {labels.shape} ({label_file}) (files swapped or "
                        f"corrupt?)")
    if len(images) != len(labels):
        raise DataError(f"{name} {split}: {len(images)} images but {len(labels)} labels ({image_file}, "
                        f"{label_file})")
    pixels, classes = f"{name} {split} images ({image_file})", f"{name} {split} labels ({label_file})"
    try:
        check_finite(pixels, numeric_array(pixels, images), "fix or replace the file")
    except (TypeError, ValueError) as error:
        raise DataError(str(error)) from None
    try:
        return check_class_labels(classes, labels, len(labels), IMAGE_CLASSES)
    except (TypeError, ValueError) as error:
        raise DataError(f"{error} ({name} has {IMAGE_CLASSES} classes, labelled 0..{IMAGE_CLASSES - 1})") from None


# ---------------------------------------------------------------------------- splits
def stratified_split(labels, fractions, seed):
    """Index arrays, one per fraction (the rest goes last), each class split in proportion.

    Equal labels for every sample (e.g. ``np.zeros(n)``) give a plain seeded shuffle. Every
    part gets at least one sample or a DataError says which fraction is impossible.
    """
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts = [[] for _ in range(len(fractions) + 1)]
    for group in groups:
        group = rng.permutation(group)
        cuts = np.round(np.cumsum(fractions) * len(group)).astype(int)
        for part, chunk in zip(parts, np.split(group, cuts)):
            part.append(chunk)
    parts = [np.sort(np.concatenate(part)) for part in parts]
    for part, fraction in zip(parts, list(fractions) + [None]):
        if len(part) == 0:
            what = f"fraction {fraction}" if fraction is not None else "the training remainder"
            raise DataError(f"splitting {n} samples leaves {what} empty: choose fractions that give "
                            f"every split at least one sample")
    return parts


def standardize(train, *others):
    """(mean, std) fitted on train; returns standardised copies. Constant features get std 1."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return mean, std, [(array - mean) / std for array in (train,) + others]


def load_dataset(name="digits", *, seed=0, val_fraction=0.2, test_fraction=0.2, data_dir=None,
                 download=True, xor_points=400, standardize_inputs=True):
    """Train / validation / test splits of a named dataset, standardised on the training split."""
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {DATASETS}")
    seed = check_non_negative_int("seed", seed)
    if name == "xor":
        xor_points = check_positive_int("xor_points", xor_points, minimum=4)
    val_fraction = check_real("val_fraction", val_fraction, 0.0, 1.0, False, False)
    test_fraction = check_real("test_fraction", test_fraction, 0.0, 1.0, False, False)
    if val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
                        f"training data; keep the sum below 1")
    loss, stratify_by = "cross_entropy", None
    if name == "xor":
        X, y = make_xor(xor_points, seed=seed)
        loss = "binary_cross_entropy"
    elif name == "spirals":
        X, y = make_spirals(seed=seed)
    elif name == "blobs":
        X, y = make_blobs(seed=seed)
    elif name in ("digits", "digits-parity"):
        X, digit = load_digits_arrays()
        y, stratify_by = (digit % 2 if name == "digits-parity" else digit), digit
    else:                                                  # SOURCES: mnist, fashion-mnist
        (X, y), (X_test, y_test) = load_image_dataset(name, data_dir, download)
        val, train = stratified_split(y, [val_fraction], seed)
        return _finish(name, X[train], y[train], X[val], y[val], X_test, y_test, loss,
                       standardize_inputs, {"seed": seed, "val_fraction": val_fraction,
                                            "test": "official test set"})
    if name == "xor" and xor_points == 4:                  # the classic problem: all four everywhere
        return _finish(name, X, y, X, y, X, y, loss, False, {"xor_points": 4})
    test, val, train = stratified_split(y if stratify_by is None else stratify_by,
                                        [test_fraction, val_fraction], seed)
    return _finish(name, X[train], y[train], X[val], y[val], X[test], y[test], loss, standardize_inputs,
                   {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction})


def _finish(name, X_train, y_train, X_val, y_val, X_test, y_test, loss, standardize_inputs, info):
    info = dict(info, name=name, n_train=len(X_train), n_val=len(X_val), n_test=len(X_test),
                standardized=bool(standardize_inputs))
    if standardize_inputs:
        mean, std, (X_train, X_val, X_test) = standardize(X_train, X_val, X_test)
        info["standardization"] = {"mean": mean.tolist(), "std": std.tolist()}
    if loss == "binary_cross_entropy":
        y_train, y_val, y_test = (labels.reshape(-1, 1).astype(np.float64)
                                  for labels in (y_train, y_val, y_test))
        n_outputs = 1
    else:
        n_outputs = int(max(y_train.max(), y_val.max(), y_test.max())) + 1
    return Dataset(name, X_train, y_train, X_val, y_val, X_test, y_test, n_outputs, loss, info)


DATASETS = ("digits", "digits-parity", "xor", "spirals", "blobs", "mnist", "fashion-mnist")
