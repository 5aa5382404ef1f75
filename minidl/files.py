"""Reading and writing minidl's files safely: every file minidl loads or writes goes through here.

    atomic_write(path, write)         a file appears whole or not at all; stale temporaries go
    read_npz(path, what)              {name: array} of an .npz, each entry checked before it is read
    read_npy(path, what)              the array of an .npy, the same checks
    read_idx(path)                    the array of an IDX file (optionally gzipped), the same checks
    mlp_shapes(path, sizes)           the state_dict shapes an MLP of these widths needs, capped
    check_shapes(path, expected, found)  a file's arrays against those shapes, before a model is built

A reader raises ``error`` (a ValueError subclass the caller chooses: CheckpointError, DataError,
GoldenFileError, UsageError; FileError by default) with a message naming the file and what was
expected, for: a missing file or a directory; an .npy where an .npz belongs and the reverse;
anything else that is not a zip archive; a truncated or corrupt archive or gzip stream (a bad
CRC included); pickled (object) arrays, refused unread; non-numeric arrays; an array whose
header declares more bytes than the file holds or than ``max_bytes`` (MAX_BYTES by default).
Nothing is allocated from a size the file declares before that size has been checked against
the file and the cap: a 7.8 MB zip that inflates to 7 GiB, or an IDX header promising 2**30
items, is refused after reading its headers.

Temporary files: atomic_write writes ``.tmp-<host>-<pid>-<random>-<name>`` next to ``name``,
then renames it over ``name``. A writer killed on the spot (SIGKILL, power loss) leaves its
temporary behind; the next atomic_write into that folder removes every temporary of this
naming whose writer is gone: written on this host by a process id that no longer exists, or
older than STALE_SECONDS (a writer on another host sharing the folder, or a reused pid).
A live writer's temporary is never touched, nor any file of another naming; temporaries of
minidl versions before this naming (``.tmp-<8 random characters><name>``, no pid to ask) go
once older than STALE_SECONDS. Removal is
best effort: a temporary that cannot be removed does not stop the write.
"""
import gzip
import math
import os
import re
import socket
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

MAX_BYTES = 2 ** 31              # 2 GiB per file, uncompressed: MNIST as uint8 is 55 MB
MAX_PARAMETERS = 2 ** 28         # 268 million parameters: MAX_BYTES in float64
STALE_SECONDS = 24 * 3600        # no atomic write of minidl's takes a day
CHUNK = 1 << 20                  # bytes read at a time: no second copy of a large array
NUMBERS, NUMBERS_OR_TEXT = "biufc", "biufcU"       # dtype kinds an entry may have
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)


class FileError(ValueError):
    """A file minidl cannot use: missing, damaged, foreign, or larger than it can be."""


# ---------------------------------------------------------------------- writing
def _host():
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


_TEMPORARY = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[a-z0-9_]+-.+")
_LEGACY_TEMPORARY = re.compile(r"\.tmp-[a-z0-9_]{8}[^-].*")   # before the pid in the name: no writer to ask


def _writer_gone(match, age):
    """Whether the writer of a temporary (its name parsed by _TEMPORARY) can no longer finish it."""
    if age > STALE_SECONDS:
        return True
    if match["host"] != _host():
        return False                                    # cannot look at another host's processes
    try:
        os.kill(int(match["pid"]), 0)                   # signal 0: only asks whether the pid exists
    except (ProcessLookupError, OverflowError):         # no such process (or no such pid at all)
        return True
    except PermissionError:                             # another user's live process
        return False
    return False


def remove_stale_temporaries(directory):
    """Remove the temporaries of atomic_write's naming in ``directory`` whose writer is gone."""
    now = time.time()
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            legacy = match is None and _LEGACY_TEMPORARY.fullmatch(entry.name)
            if not (match or legacy) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
                if age > STALE_SECONDS if legacy else _writer_gone(match, age):
                    os.unlink(entry.path)
            except OSError:           # best effort: gone already, or not ours to remove (sticky /tmp)
                pass


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file next to ``path``, fsync, rename over path.

    Stale temporaries of earlier writers that were killed are removed first (module docstring).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{_host()}-{os.getpid()}-", suffix="-" + os.path.basename(path),
                               dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)             # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None and error.filename is None:   # write() names no file
            error.filename = path
        raise
    dir_fd = os.open(directory, os.O_RDONLY)      # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------------- reading
def _check_path(path, what, error):
    """Raise ``error`` unless ``path`` is an existing file (not a directory)."""
    if os.path.isdir(path):
        raise error(f"{path} is a directory, not a {what}")
    if not os.path.exists(path):
        raise error(f"no {what} at {path}")


@dataclass(frozen=True)
class _Source:
    """A file being read: where it is, what it should be, the error to raise, the limits."""
    path: str
    what: str
    error: type
    max_bytes: int
    kinds: str

    def refuse(self, detail, damaged=True):
        """The error naming the file: damaged (truncated or corrupt), or foreign (damaged=False)."""
        cause = " (truncated or corrupt?)" if damaged else ""
        return self.error(f"{self.path}: not a readable {self.what}{cause}: {detail}")


def _read_into(stream, array):
    """Fill the 1-D ``array`` from ``stream``, CHUNK bytes at a time; the number of bytes read."""
    view = memoryview(array.view(np.uint8)) if array.nbytes else memoryview(b"")
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled:filled + CHUNK])
        if not count:
            break
        filled += count
    return filled


def _npy_header(stream, entry, source):
    """(shape, fortran_order, dtype) from the .npy header at the stream's position, checked:
    no object (pickled) data, a dtype of one of source.kinds. The stream is left at the data."""
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(stream)
    except ValueError as detail:                 # bad magic, unknown version, malformed header
        raise source.refuse(f"{entry} has no valid .npy header ({detail})") from None
    if dtype.hasobject:
        raise source.refuse(f"{entry} is an object array (pickled Python objects), which minidl never "
                            f"writes; refused unread", damaged=False)
    if dtype.kind not in source.kinds:
        raise source.refuse(f"{entry} holds {dtype} data; expected numbers", damaged=False)
    return shape, fortran, dtype


def _read_array(stream, size, entry, source):
    """The .npy array of ``size`` bytes at ``stream``: its header is checked (_npy_header), then
    shape × itemsize against source.max_bytes and against the bytes that follow the header;
    only then is the array allocated and read."""
    shape, fortran, dtype = _npy_header(stream, entry, source)
    count = math.prod(shape)
    nbytes, holds = count * dtype.itemsize, size - stream.tell()           # Python ints: no overflow
    if nbytes > source.max_bytes:
        raise source.refuse(f"{entry} declares shape {shape} of {dtype}, {nbytes:,} bytes: more than "
                            f"minidl's limit of {source.max_bytes:,} (a damaged or hostile file?)", damaged=False)
    if nbytes != holds:
        raise source.refuse(f"{entry} declares shape {shape} of {dtype} ({nbytes:,} bytes) but holds "
                            f"{holds:,} bytes")
    array = np.empty(count, dtype)
    if _read_into(stream, array) != nbytes or stream.read(1):       # the read at the end checks a CRC
        raise source.refuse(f"{entry} does not hold the {nbytes:,} bytes it declares")
    return array.reshape(shape, order="F" if fortran else "C")


def read_npz(path, what="npz file", *, error=FileError, max_bytes=MAX_BYTES, kinds=NUMBERS_OR_TEXT):
    """{name: array} of the .npz archive at ``path``, read without pickle (like np.load).

    ``what`` names the file in messages ("checkpoint", ".npz golden file"). Checked, each before
    anything is read from it: a file, not missing, not a directory, not an .npy; a zip archive
    of .npy entries whose declared uncompressed sizes total at most ``max_bytes``; every entry's
    header (no object arrays, a dtype of ``kinds``: numbers or text), its shape × itemsize
    against its size and max_bytes; every entry's CRC. Otherwise ``error`` naming the file.
    """
    source = _Source(os.fspath(path), what, error, max_bytes, kinds)
    _check_path(source.path, what, error)
    try:
        with open(source.path, "rb") as handle:
            if handle.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
                raise source.refuse("it holds a single array (an .npy file); expected an .npz archive of "
                                    "named arrays (np.savez)", damaged=False)
            handle.seek(0)
            with zipfile.ZipFile(handle) as archive:
                _check_entry_count(handle, len(archive.infolist()), source)
                return {name: _read_member(archive, info, name, source)
                        for name, info in _npz_members(archive, source)}
    except _UNREADABLE as detail:
        raise source.refuse(detail) from None


def _check_entry_count(handle, listed, source):
    """Compare the entries zipfile found with the count in the archive's end record (its last
    22 bytes when, as np.savez writes it, the archive has no comment): a damaged directory
    entry can hide the entries after it from zipfile, silently."""
    handle.seek(-22, os.SEEK_END)
    end = handle.read(22)
    counted = int.from_bytes(end[10:12], "little")
    if end[:4] == b"PK\x05\x06" and end[20:22] == b"\0\0" and counted not in (listed, 0xFFFF):
        raise source.refuse(f"its directory lists {listed} entries, its end record {counted}")


def _npz_members(archive, source):
    """[(name, ZipInfo)] of an .npz archive, after checking that every member is an .npy and
    that their declared uncompressed sizes total at most max_bytes (nothing inflated yet)."""
    infos = archive.infolist()
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise source.refuse(f"member {info.filename!r} is not an array (.npy); expected only arrays, "
                                f"as np.savez writes", damaged=False)
    total = sum(info.file_size for info in infos)
    if total > source.max_bytes:
        raise source.refuse(f"its entries declare {total:,} bytes uncompressed, more than minidl's limit "
                            f"of {source.max_bytes:,} (a damaged or hostile file?)", damaged=False)
    return [(info.filename[:-len(".npy")], info) for info in infos]


def _read_member(archive, info, name, source):
    with archive.open(info) as stream:
        return _read_array(stream, info.file_size, f"entry {name!r}", source)


def read_npy(path, what="npy file", *, error=FileError, max_bytes=MAX_BYTES, kinds=NUMBERS):
    """The array of the .npy file at ``path``, read without pickle, with read_npz's checks
    (an .npz archive given here is named as such)."""
    source = _Source(os.fspath(path), what, error, max_bytes, kinds)
    _check_path(source.path, what, error)
    try:
        with open(source.path, "rb") as handle:
            if zipfile.is_zipfile(handle):
                raise source.refuse("it is an .npz archive of named arrays; expected a single array (an "
                                    ".npy file, np.save)", damaged=False)
            handle.seek(0)
            return _read_array(handle, os.fstat(handle.fileno()).st_size, "the array", source)
    except _UNREADABLE as detail:
        raise source.refuse(detail) from None


def read_idx(path, *, error=FileError, max_bytes=MAX_BYTES):
    """The array in an IDX file, gzipped if its name ends in .gz: bytes 0 0 dtype ndim, ndim
    big-endian int32 sizes, the data. Checked before the data are allocated: the magic number,
    the header, the size it promises against max_bytes and the file's size (for gzip, the
    stream must end exactly there). The array comes back in native byte order."""
    path = os.fspath(path)
    gzipped = path.endswith(".gz")
    try:
        with (gzip.open if gzipped else open)(path, "rb") as stream:
            dtype, shape = _idx_header(stream, path, error)
            promised = 4 + 4 * len(shape) + math.prod(shape) * dtype.itemsize      # Python ints
            if promised > max_bytes:
                raise error(f"{path}: its IDX header promises {promised:,} bytes (shape {shape}), more than "
                            f"minidl's limit of {max_bytes:,} (corrupt file?)")
            if not gzipped:
                _check_idx_size(path, os.fstat(stream.fileno()).st_size, promised, error)
            array = np.empty(math.prod(shape), dtype)
            read = promised - array.nbytes + _read_into(stream, array)
            _check_idx_size(path, read + len(stream.read(1)), promised, error)
    except _UNREADABLE as detail:
        raise error(f"{path}: cannot read ({detail}); delete it and fetch it again") from None
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _idx_header(stream, path, error):
    """(dtype, shape) of an IDX header, checked: magic number, at least one size, none negative."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES:
        raise error(f"{path}: not an IDX file (bad magic number {magic.hex()})")
    sizes = stream.read(4 * magic[3])
    if magic[3] == 0 or len(sizes) < 4 * magic[3]:
        raise error(f"{path}: truncated IDX header")
    shape = tuple(int(size) for size in np.frombuffer(sizes, ">i4"))
    if min(shape) < 0:
        raise error(f"{path}: corrupt IDX header (negative size in shape {shape})")
    return np.dtype(IDX_DTYPES[magic[2]]), shape


def _check_idx_size(path, size, promised, error):
    if size != promised:
        raise error(f"{path}: IDX data has {size} bytes, its header promises {promised} (truncated or "
                    f"corrupt file)")


# ---------------------------------------------------------------------- a model from a file
def parameter_count(shapes):
    """The number of parameters in {name: shape}."""
    return sum(math.prod(shape) for shape in shapes.values())


def mlp_shapes(path, sizes, *, error=FileError, max_parameters=MAX_PARAMETERS):
    """{state_dict name: shape} of an MLP with the layer widths ``sizes`` a file states, after
    checking them: at least two positive integers, at most max_parameters parameters. Called
    before any model is built from a file, so a file cannot make minidl allocate at will."""
    if not isinstance(sizes, (list, tuple)) or len(sizes) < 2 or not all(
            isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in sizes):
        raise error(f"{path}: the layer sizes must be a list of at least two positive integers, "
                    f"got {sizes!r}")
    shapes = {}
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{2 * index}.weight"], shapes[f"{2 * index}.bias"] = (fan_out, fan_in), (fan_out,)
    if parameter_count(shapes) > max_parameters:
        raise error(f"{path}: the layer sizes {list(sizes)} make {parameter_count(shapes):,} parameters, "
                    f"more than minidl's limit of {max_parameters:,} (a damaged file?)")
    return shapes


def check_shapes(path, expected, found, *, error=FileError):
    """Check that ``found`` (name -> array, from the file) holds a real-number array of every
    ``expected`` shape (name -> shape); the message names the file and the first difference."""
    for name, shape in expected.items():
        if name not in found:
            raise error(f"{path}: {name!r} is missing; its layer sizes need {name} of shape {shape}")
        if found[name].dtype.kind not in "biuf":
            raise error(f"{path}: {name!r} holds {found[name].dtype} data; expected real numbers")
        if found[name].shape != tuple(shape):
            raise error(f"{path}: {name!r} has shape {found[name].shape}, its layer sizes need {tuple(shape)}")
