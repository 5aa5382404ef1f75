"""Problems shared by test_distributed.py (simulated ranks) and the scripts that test_mpi.py
runs under a real mpiexec, so both check the same runs."""
import numpy as np

from minidl import MLP, SGD, Adam
from minidl.monitor import EarlyStopping
from minidl import fit

SIZES = [5, 8, 3]


def make_data(n, seed=7, features=5, classes=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)), rng.integers(0, classes, n)


def train(comm, X, y, *, optimizer="momentum", **fit_kwargs):
    """A fresh model fitted on (X, y). Rank r initialises with seed 3 + r, so agreeing with the
    one-process run (seed 3) also proves that rank 0's state is broadcast at start-up."""
    model = MLP(SIZES, seed=3 + (comm.rank if comm is not None else 0))
    opt = {"sgd": lambda: SGD(model, lr=0.1), "momentum": lambda: SGD(model, lr=0.1, momentum=0.9),
           "adam": lambda: Adam(model, lr=0.01)}[optimizer]()
    history = fit(model, "cross_entropy", opt, X, y, comm=comm, **fit_kwargs)
    return model, history


def early_stopping_run(comm):
    """Random labels: the validation loss moves by >= 0.1 per epoch, so rounding cannot flip
    an early-stopping decision; the serial run stops on patience after 6 of 40 epochs."""
    X, y = make_data(40)
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model = MLP([5, 16, 3], seed=3 + (comm.rank if comm is not None else 0))
    history = fit(model, "cross_entropy", SGD(model, lr=0.3, momentum=0.9), X, y, epochs=40,
                  batch_size=7, validation_data=make_data(15, seed=8), callbacks=[stopper], comm=comm)
    return model, history


def max_relative_error(model, reference):
    """Max over tensors of max|a - b| / max|b| (the issue's per-tensor metric)."""
    expected = reference.named_parameters()
    return max(float(np.max(np.abs(value - expected[name])) / np.max(np.abs(expected[name])))
               for name, value in model.named_parameters().items())


class RowRecorder:
    """Callback: (epoch, step, this rank's rows) of every step, observed from outside: the
    rows of ``X`` (all distinct) that the model's forward pass of the step received."""

    def __init__(self, X):
        self.index = {row.tobytes(): i for i, row in enumerate(X)}
        self.steps, self.last_input = [], None

    def on_train_begin(self, run):
        forward = run.model.forward_unchecked

        def recording_forward(x):                 # the step's forward, then validation's
            self.last_input = x.copy()
            return forward(x)
        run.model.forward_unchecked = recording_forward

    def on_step_end(self, run):                   # before any check: the step's input is last
        rows = np.array([self.index[row.tobytes()] for row in self.last_input], dtype=np.int64)
        self.steps.append((run.epoch, run.step, rows))
