"""Checkpoints: ONE .npz file, written atomically, loaded with allow_pickle=False.

Layout: every array under its own name, plus ``__meta__``, a 0-d unicode array holding a JSON
document (format version, counters, configuration, scalar state, environment) and a SHA-256
digest of every array and of the JSON itself, so a truncated, mismatched or tampered file is
refused with a clear error — and, being loaded without pickle, can never execute code.

Writing goes to a temporary file in the same directory, is fsync'ed, then renamed over the
target: a crash leaves either the old checkpoint or the new one, never half of one.
"""
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "minidl-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, tampered or mismatched."""


def _digest(arrays, meta_json):
    sha = hashlib.sha256(meta_json.encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        sha.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file next to ``path``, fsync, rename over path."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)             # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)      # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` (name -> ndarray) and ``meta`` (JSON-able dict) to ``path`` atomically."""
    arrays = {name: np.asarray(array) for name, array in arrays.items()}
    for name, array in arrays.items():
        if array.dtype.hasobject or name == META_KEY:
            raise ValueError(f"checkpoint array {name!r} cannot be stored (object dtype or reserved name)")
    body = json.dumps(meta, sort_keys=True)
    envelope = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "meta": body,
                           "sha256": _digest(arrays, body)})
    atomic_write(path, lambda handle: np.savez(handle, **arrays, **{META_KEY: np.array(envelope)}))


def load_checkpoint(path):
    """Return (arrays, meta) from a checkpoint written by save_checkpoint, or raise CheckpointError."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {error}") from None
    except ValueError as error:       # e.g. "Object arrays cannot be loaded when allow_pickle=False"
        raise CheckpointError(f"{path} holds data minidl never writes and was refused: {error}") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"{path} is not a minidl checkpoint (no {META_KEY} entry)")
    try:
        envelope = json.loads(str(arrays.pop(META_KEY)))
        body = envelope["meta"]
        if envelope.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a minidl checkpoint (format {envelope.get('format')!r})")
        if envelope.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path} has checkpoint format version {envelope.get('version')}, "
                                  f"this minidl reads version {FORMAT_VERSION}")
        expected = envelope["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} has a malformed header: {error}") from None
    if _digest(arrays, body) != expected:
        raise CheckpointError(f"{path} failed its integrity check (SHA-256 mismatch): the file was "
                              f"modified or damaged after it was written")
    return arrays, json.loads(body)


def split_state(prefix, state):
    """Split a state dict into (arrays named prefix/key, JSON-able scalars)."""
    arrays, scalars = {}, {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}/{key}"] = value
        else:
            scalars[key] = value
    return arrays, scalars


def merge_state(prefix, scalars, arrays):
    """Inverse of split_state: the scalars plus every array stored under prefix/."""
    state = dict(scalars)
    head = prefix + "/"
    state.update({name[len(head):]: array for name, array in arrays.items() if name.startswith(head)})
    return state
