"""Checks that this machine can do a run before any work: the output folder is writable and
its disk holds a checkpoint, the model and data fit in memory. Each failure is a ResourceError
(a ValueError: one line and exit code 2 at the command line) that says what to change."""
import itertools
import os
import shutil
import tempfile

from .validation import check_path


class ResourceError(ValueError):
    """The machine cannot do what was asked: not enough memory or disk, or a place that cannot
    be written. Found at start-up, before any work."""


def _ancestors(path):
    """``path`` made absolute, then its parent, its parent's parent, ... up to the root."""
    path = os.path.abspath(path)
    while True:
        yield path
        if os.path.dirname(path) == path:
            return
        path = os.path.dirname(path)


def _nearest_existing(path):
    """The nearest of ``path`` and its ancestors that exists (the root, at worst)."""
    return next(part for part in _ancestors(path) if os.path.exists(part))


def file_in_the_way(path):
    """The file that stands where a folder of ``path`` must be (``a/b/c`` with ``a`` a file:
    ``a``), or None."""
    part = _nearest_existing(path)
    return part if os.path.isfile(part) else None


def check_writable_directory(path, what):
    """Raise ResourceError unless files can be created in the folder ``path`` (made if missing):
    a read-only place, a missing permission or a file where a folder belongs is found before
    any work, not at the first checkpoint. Folders made only to find out are removed again."""
    missing = list(itertools.takewhile(lambda part: not os.path.exists(part), _ancestors(path)))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        blocking = file_in_the_way(path)
        reason = f"{blocking} is a file, not a folder" if blocking else error.strerror
        raise ResourceError(f"{what} {path}: cannot write there ({reason}); choose another folder") from None
    finally:
        for folder in missing:                    # innermost first; all empty
            if os.path.isdir(folder):
                os.rmdir(folder)


def check_writable_file(path, what, example="checkpoint.npz"):
    """``path`` as a str, after checking that a file can be written there atomically: a path
    (TypeError otherwise), not a folder, in a folder that can be made and written."""
    path = check_path(what, path)
    if os.path.isdir(path):
        raise ResourceError(f"{what} {path} is a folder: give a file path, e.g. "
                            f"{os.path.join(path, example)}")
    check_writable_directory(os.path.dirname(path) or ".", f"{what}'s folder")
    return path


def check_free_space(output, model):
    """Raise ResourceError when the disk of ``output`` cannot hold even the first checkpoint (the
    parameters, the optimizer's buffers and the best weights: about 4 copies of the model),
    instead of failing with ENOSPC after an epoch of work. A disk that fills up later is
    reported then, with the last good checkpoint intact (exit code 3)."""
    needed = 4 * model.params.nbytes
    free = shutil.disk_usage(_nearest_existing(output)).free
    if free < needed:
        raise ResourceError(f"--output {output}: {free / 2**20:.3g} MiB free on its disk, a checkpoint needs "
                            f"about {needed / 2**20:.3g} MiB: free space or choose another folder")


def available_memory():
    """Bytes of memory available to a new allocation (Linux: MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(what, nbytes, fix):
    """Raise ResourceError before allocating when ``what`` needs more than the memory available,
    instead of a MemoryError (or the kernel's OOM killer) later."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ResourceError(f"{what} needs about {nbytes / 2**30:.3g} GiB, this machine has "
                            f"{available / 2**30:.3g} GiB available: {fix}")


def model_bytes(sizes, dtype, batch_size):
    """Memory of training an MLP of ``sizes``: parameters, gradients, optimizer state and best
    weights (5 copies at most), and the activations of a batch (3 arrays per layer)."""
    itemsize = 4 if dtype == "float32" else 8
    parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    return itemsize * (5 * parameters + 3 * batch_size * sum(sizes))
