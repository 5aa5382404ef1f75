"""The names minidl.train held before the loop was split into loop.py (fit, evaluate),
callbacks.py (Run), checkpoint.py (History, Checkpoint) and parallel.py (ReplicaCheck,
FailureInjection); kept importable from here so that users' scripts keep working."""
from .callbacks import STOP_REASONS, TRAINER_REASONS, Run
from .checkpoint import Checkpoint, History, read_history_csv
from .loop import Trainer, evaluate, fit, split_validation
from .parallel import SYNC_MODES, FailureInjection, ReplicaCheck, rounding_environment

__all__ = ["Checkpoint", "History", "read_history_csv", "STOP_REASONS", "TRAINER_REASONS", "Run",
           "Trainer", "evaluate", "fit", "split_validation", "SYNC_MODES", "FailureInjection",
           "ReplicaCheck", "rounding_environment"]
