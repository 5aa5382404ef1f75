"""The MPI plumbing around MPIComm: the launcher and rank, mpi4py import, abort hook, BLAS threads.

minidl imports mpi4py only when an MPI launcher (or srun, for a step of several tasks) started
the process, or when an MPIComm is built explicitly, so a single-process user never needs MPI
installed. Before training, start_mpi checks that MPI's COMM_WORLD holds every process the
launcher started: N uncoordinated runs writing one run directory are never an outcome.
"""
import os
import sys
import warnings

# (rank variable, size variable, launcher) of each launcher minidl recognises, in the order
# they are consulted: the variables a launcher sets in every process it starts, and a plain
# shell does not. Hydra's own HYDRA_* variables are deliberately not used: they are user
# settings (HYDRA_HOST_FILE, ...) that may sit in a shell's environment without any launcher.
# Any one variable of an MPI launcher's row identifies it. srun's row is last, and counts only
# for a task of a job step (SLURM_STEP_ID set too, see srun_tasks): an sbatch script has
# SLURM_PROCID and SLURM_NTASKS but is no step task, a salloc shell has SLURM_NTASKS only,
# and the processes that mpiexec starts inside an allocation inherit the SLURM_* variables of
# its proxy (one srun task per node) next to their own PMI_RANK and PMI_SIZE, which win.
SRUN = "srun"
SLURM_STEP = "SLURM_STEP_ID"
LAUNCHERS = (
    ("PMI_RANK", "PMI_SIZE", "Hydra/PMI"),                          # MPICH/Hydra, Intel MPI, srun --mpi=pmi2
    ("PMIX_RANK", None, "PMIx"),                                    # Open MPI 5, srun --mpi=pmix: no size
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MVAPICH"),
    ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", SRUN),                 # a task of an srun job step
)
LAUNCHER_VARIABLES = tuple(name for row in LAUNCHERS for name in row[:2] if name is not None) + (SLURM_STEP,)
PMIX_VARIABLES = ("PMIX_RANK", "PMIX_NAMESPACE")

INSTALL_HINT = 'pip install -e ".[mpi]" (mpi4py plus the mpich wheel), or pip install mpi4py ' \
               "against your cluster's MPI"
CLUSTER_DOC = "docs/cluster.md"

_abort_hook_installed = False


def srun_tasks(environ=None):
    """The number of tasks of the srun job step this process is a task of, or None.

    A step task has SLURM_PROCID, SLURM_STEP_ID and SLURM_STEP_NUM_TASKS (srun sets them for
    every task it starts); a batch script or an salloc shell lacks the last two.
    """
    environ = os.environ if environ is None else environ
    rank, size, _ = LAUNCHERS[-1]
    if all(name in environ for name in (rank, SLURM_STEP, size)):
        return int(environ[size])
    return None


def _rows(environ):
    """The LAUNCHERS rows present in ``environ``, in table order (srun's for a step task)."""
    for row in LAUNCHERS:
        rank, size, launcher = row
        if launcher == SRUN:
            if srun_tasks(environ) is not None:
                yield row
        elif rank in environ or (size is not None and size in environ):
            yield row


def launched_by_mpi(environ=None):
    """The name of the launcher variable found in ``environ`` (os.environ), or None.

    srun counts for a step of more than one task (its SLURM_PROCID): a one-task step, like
    ``srun python train.py``, is a plain single process that needs no MPI.
    """
    environ = os.environ if environ is None else environ
    for rank, size, launcher in _rows(environ):
        if launcher == SRUN:
            if srun_tasks(environ) > 1:
                return rank
        else:
            return rank if rank in environ else size
    return None


def launcher_rank(environ=None):
    """This process's rank as the launcher set it in ``environ`` (os.environ); 0 without one.

    Under srun, SLURM_PROCID: so that every task of ``srun -n N minidl ...`` can tell whether
    it is the one that prints, even when MPI cannot see the others.
    """
    environ = os.environ if environ is None else environ
    return next((int(environ[rank]) for rank, _, _ in _rows(environ) if rank in environ), 0)


def expected_world_size(environ=None):
    """(launcher, N): the number of processes that the launcher in ``environ`` (os.environ)
    started together, which MPI's COMM_WORLD must have; None when no launcher says.

    The first LAUNCHERS row with its size variable set decides (PMIx sets none, so under
    ``srun --mpi=pmix`` srun's own count does); it is named "srun" when it is the srun step's
    count too (``srun --mpi=pmi2`` sets PMI_SIZE as well).
    """
    environ = os.environ if environ is None else environ
    for rank, size, launcher in _rows(environ):
        if size is not None and size in environ:
            tasks = int(environ[size])
            return (SRUN if srun_tasks(environ) == tasks else launcher), tasks
    return None


def _started(launcher, tasks):
    if launcher == SRUN:
        return f"srun started {tasks} tasks"
    return f"the launcher ({launcher}) started {tasks} processes"


def _library_name(MPI):
    """The first line of the MPI library's version, shortened: "MPICH 5.0.2", "Open MPI v4.1.4"."""
    first = MPI.Get_library_version().strip().split("\n")[0].split(",")[0]
    return " ".join(first.replace(" Version:", " ").split())


def _fix(launcher):
    if launcher == SRUN:
        return ("run `srun --mpi=pmi2` (or --mpi=pmix with an MPI built for PMIx), or mpiexec inside "
                f"the allocation, or mpi4py built against the cluster's MPI ({CLUSTER_DOC})")
    return ("start the processes with the mpiexec of the MPI that mpi4py uses, or use mpi4py built "
            f"against this launcher's MPI ({CLUSTER_DOC})")


def world_size_mismatch(launcher, tasks, world, library):
    """The one-line explanation of a launcher that started ``tasks`` processes whose MPI
    (``library``) sees a COMM_WORLD of ``world``: what likely happened, and the fix."""
    if world == 1:
        seen = f"MPI sees a world of 1 in each: mpi4py's MPI ({library}) did not get the wire-up of "
        seen += ("these tasks from Slurm (srun --mpi=none, or a plugin it does not speak)" if launcher == SRUN
                 else "this launcher, so every process runs alone")
    else:
        seen = f"MPI sees a world of {world}: mpi4py's MPI ({library}) does not match the launcher"
    return f"{_started(launcher, tasks)} but {seen}; {_fix(launcher)}"


def _pmix_unsupported(library):
    """True for an MPICH built without PMIx: it aborts in MPI_Init when a PMIx launcher started it."""
    return library.startswith("MPICH") and "pmix" not in library.lower()


def _import_mpi_uninitialized():
    """mpi4py.MPI imported but not initialized (its automatic finalization at exit kept), or
    None when it is imported already or set not to initialize itself."""
    if "mpi4py.MPI" in sys.modules:
        return None
    try:
        import mpi4py
    except ImportError:
        return None                                     # import_mpi says how to install it
    rc = mpi4py.rc
    if not rc.initialize:
        return None
    saved = rc.initialize, rc.finalize
    rc.initialize, rc.finalize = False, (True if rc.finalize is None else rc.finalize)
    try:
        from mpi4py import MPI                          # rc takes effect at this import
    finally:
        rc.initialize, rc.finalize = saved
    return MPI


def _initialize(MPI):
    """MPI_Init as importing mpi4py.MPI would have done it (mpi4py.rc.threads, thread_level)."""
    import mpi4py
    if mpi4py.rc.threads:
        MPI.Init_thread(getattr(MPI, f"THREAD_{mpi4py.rc.thread_level.upper()}"))
    else:
        MPI.Init()


def start_mpi(environ=None):
    """``mpi4py.MPI``, initialized, once it is clear that its COMM_WORLD holds every process
    the launcher in ``environ`` (os.environ) started; else a ValueError of one line naming the
    likely cause and the fix (see expected_world_size and world_size_mismatch).

    Under a PMIx launcher (``srun --mpi=pmix``, Open MPI's mpirun) an MPICH built without PMIx
    (the mpich wheel) would abort inside MPI_Init, so its version is asked before MPI starts.
    ImportError when mpi4py is missing (import_mpi).
    """
    environ = os.environ if environ is None else environ
    expected = expected_world_size(environ)
    MPI = _import_mpi_uninitialized() if any(name in environ for name in PMIX_VARIABLES) else None
    if MPI is not None:
        library = _library_name(MPI)
        if _pmix_unsupported(MPI.Get_library_version()):
            launcher, tasks = expected or ("PMIx", None)
            started = _started(launcher, tasks) if tasks else "a PMIx launcher started this process"
            raise ValueError(f"{started} with PMIx, which mpi4py's MPI ({library}, built without PMIx) "
                             f"cannot use; {_fix(launcher)}")
        if not MPI.Is_initialized():
            _initialize(MPI)
    MPI = import_mpi()
    if expected is not None and expected[1] != MPI.COMM_WORLD.Get_size():
        raise ValueError(world_size_mismatch(*expected, MPI.COMM_WORLD.Get_size(), _library_name(MPI)))
    return MPI


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
        if comm is None or comm.rank == 0:                   # said once, not by every rank
            warnings.warn("threadpoolctl is not installed, so BLAS threads per rank are not set; "
                          "several ranks on one node may oversubscribe its cores "
                          "(pip install threadpoolctl)", RuntimeWarning, stacklevel=2)
        return None
    if threads is None:
        threads = default_threads(1 if comm is None else comm.local_size)
    threadpool_limits(threads, user_api="blas")
    return threads
