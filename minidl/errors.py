"""The error policy of the `minidl` command: which exit code a failure gets, and its one line.

Every failure of a command ends with one line on stderr (`minidl: error: ...`) and one of
EXIT_CODES, never a traceback (MINIDL_DEBUG=1 shows it): bad arguments, data and files
(ValueError, TypeError, an OSError of a path the user gave, MemoryError from sizes asked for)
exit 2; the system failing during a run (a full disk, an I/O error) exits 3.
"""
import errno

from .preflight import file_in_the_way
from .watchdog import EXIT_TIMEOUT

EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_SYSTEM = 3
EXIT_INTERRUPTED = 130
EXIT_CODES = {              # code -> meaning, as `minidl --help` and README.md list them
    0: "success",
    EXIT_CHECK_FAILED: "a check failed: gradcheck's tolerance or golden check's comparison",
    EXIT_USAGE: "bad input: an argument, a data or model file (missing, damaged, of the wrong kind) "
                "or a path that cannot be used (read-only, a file where a folder belongs); nothing "
                "was trained",
    EXIT_SYSTEM: "the system failed during the run (disk full, I/O error): files written before "
                 "stay intact, the message says what to do",
    EXIT_TIMEOUT: "a collective waited longer than --collective-timeout (MPI); every rank stopped",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM); the state is saved, --resume continues",
}
SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}   # not the user's path: the machine's
REPORTED = (ValueError, TypeError, OSError, MemoryError)               # what becomes one line


def exit_code_and_line(error):
    """(exit code, one-line message) for an error of REPORTED."""
    if isinstance(error, OSError):
        return (EXIT_SYSTEM if error.errno in SYSTEM_ERRNOS else EXIT_USAGE), describe_os_error(error)
    if isinstance(error, MemoryError):
        return EXIT_USAGE, f"out of memory ({error or 'an allocation failed'}): ask for smaller sizes"
    return EXIT_USAGE, str(error)


def describe_os_error(error):
    """One line for an OSError: the path, the reason, and for a full disk what to do (the
    error's notes, e.g. the train command's word on its checkpoint, replace the generic advice)."""
    where = error.filename if error.filename is not None else "a file"
    if error.filename2 is not None:
        where = f"{where} -> {error.filename2}"
    reason = error.strerror or str(error)
    blocking = error.filename and error.errno in (errno.EEXIST, errno.ENOTDIR) and file_in_the_way(error.filename)
    if blocking:
        reason = f"{blocking} is a file where a folder is needed"
    notes = getattr(error, "__notes__", None) or (
        ["files written before are intact; free space and try again"] if error.errno in SYSTEM_ERRNOS else [])
    return "; ".join([f"{where}: {reason}"] + notes)
