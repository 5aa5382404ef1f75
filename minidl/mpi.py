"""The MPI plumbing around MPIComm: the launcher and rank, mpi4py import, abort hook, BLAS threads.

minidl imports mpi4py only when an MPI launcher started the process (or when an MPIComm is
built explicitly), so a single-process user never needs MPI installed.
"""
import os
import sys
import warnings

# (rank variable, size variable) that an MPI launcher sets in every process it starts, and a
# plain shell does not. Hydra's own HYDRA_* variables are deliberately not used: they are user
# settings (HYDRA_HOST_FILE, ...) that may sit in a shell's environment without any launcher.
LAUNCHERS = (
    ("PMI_RANK", "PMI_SIZE"),                           # MPICH/Hydra, Intel MPI
    ("PMIX_RANK", None),                                # PMIx (no size variable): Open MPI 5, Slurm --mpi=pmix
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),   # Open MPI
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),     # MVAPICH
)
LAUNCHER_VARIABLES = tuple(name for pair in LAUNCHERS for name in pair if name is not None)

INSTALL_HINT = 'pip install -e ".[mpi]" (mpi4py plus the mpich wheel), or pip install mpi4py ' \
               "against your cluster's MPI"

_abort_hook_installed = False


def launched_by_mpi(environ=None):
    """The name of the launcher variable found in ``environ`` (os.environ), or None."""
    environ = os.environ if environ is None else environ
    return next((name for name in LAUNCHER_VARIABLES if name in environ), None)


def launcher_rank(environ=None):
    """This process's rank as the MPI launcher set it in ``environ`` (os.environ); 0 without one."""
    environ = os.environ if environ is None else environ
    return next((int(environ[rank]) for rank, _ in LAUNCHERS if rank in environ), 0)


def import_mpi():
    """``mpi4py.MPI``, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        variable = launched_by_mpi()
        started = f"this process was started by an MPI launcher ({variable} is set) but " \
            if variable else ""
        raise ImportError(f"minidl: {started}mpi4py cannot be imported ({error}); install it "
                          f"with {INSTALL_HINT}") from error
    return MPI


def install_abort_hook(mpi_comm, rank, size):
    """Make an uncaught exception on any rank end the whole job: print, then MPI Abort.

    Without this, the other ranks wait forever in their next collective. An error that
    every rank raised together (a minidl.parallel.CollectiveError) is printed by rank 0 only
    and exits normally, since no rank is left waiting. Installed once per process.
    """
    from .parallel import CollectiveError          # parallel imports comm, which imports mpi
    global _abort_hook_installed
    if _abort_hook_installed:
        return
    previous = sys.excepthook

    def abort_on_exception(kind, value, traceback):
        if isinstance(value, CollectiveError):
            if rank == 0:
                previous(kind, value, traceback)
            return
        previous(kind, value, traceback)
        sys.stderr.write(f"minidl: rank {rank} of {size} failed; aborting all ranks "
                         f"(MPI_Abort)\n")
        sys.stderr.flush()
        sys.stdout.flush()
        mpi_comm.Abort(1)

    sys.excepthook = abort_on_exception
    _abort_hook_installed = True


def available_cores():
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads(local_ranks):
    """BLAS threads per rank: the cores of this node divided among its ranks (at least 1).

    If the launcher bound this process to a subset of the cores (its affinity is smaller
    than the machine), that subset is already its share and is used whole.
    """
    cores = available_cores()
    if cores < (os.cpu_count() or cores):
        return cores
    return max(1, cores // local_ranks)


def set_blas_threads(threads=None, comm=None):
    """Limit the BLAS thread pool of this process; returns the thread count set, or None.

    threads: a positive int (the CLI's --threads), or None for the default: the node's cores
    divided by the ranks on this node (``comm.local_size``; 1 rank without a comm). Uses
    threadpoolctl; without it an explicit request raises and the default only warns.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if threads is not None:
            raise ImportError("setting BLAS threads needs threadpoolctl: pip install threadpoolctl") from None
        warnings.warn("threadpoolctl is not installed, so BLAS threads per rank are not set; "
                      "several ranks on one node may oversubscribe its cores "
                      "(pip install threadpoolctl)", RuntimeWarning, stacklevel=2)
        return None
    if threads is None:
        threads = default_threads(1 if comm is None else comm.local_size)
    threadpool_limits(threads, user_api="blas")
    return threads
