"""Run under mpiexec by test_mpi.py: the data-parallel properties with a real MPIComm.

    mpiexec -n N python properties.py OUT.json

Every rank also computes the one-process reference itself. Nothing is asserted here (a
failed assert on one rank would leave the others waiting): rank 0 writes the measurements
to OUT.json and the test asserts on them. An exception on any rank aborts the job.
"""
import hashlib
import json
import os
import signal
import sys

import numpy as np

from common import RowRecorder, early_stopping_run, make_data, max_relative_error, train
from minidl import SGD, shared_memory
from minidl.comm import default_comm
from minidl import fit


class ParamsEveryStep:
    """Callback: a hash of the parameters after every step."""

    def __init__(self):
        self.digests = []

    def on_step_end(self, run):
        self.digests.append(hashlib.sha256(run.model.params.tobytes()).hexdigest())


class TerminateRankOne:
    """Callback: rank 1 sends itself SIGTERM after step 2, as a scheduler would."""

    def on_step_end(self, run):
        if run.comm.rank == 1 and run.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def main(out):
    comm = default_comm()                        # "auto": an MPIComm, since mpiexec started us
    results = {"comm": type(comm).__name__, "size": comm.size}

    # 1-3: 37 samples in global batches of 9: uneven slices, and empty ones in the last batch
    X, y = make_data(37)
    validation = make_data(11, seed=8)
    kwargs = dict(epochs=3, batch_size=9, validation_data=validation)
    serial, serial_history = train(None, X, y, **kwargs)
    rows, params = RowRecorder(X), ParamsEveryStep()
    model, history = train(comm, X, y, callbacks=[rows, params], check_replicas=True, **kwargs)
    results["equivalence"] = max_relative_error(model, serial)
    results["slice_sizes"] = sorted({len(r) for _, _, r in rows.steps})
    digests = comm.allgather_object(params.digests)
    results["replica_steps"] = len(digests[0])
    results["replicas_identical"] = all(d == digests[0] for d in digests)
    # per_rank[r][s] = (epoch, rows) of rank r at step s; a global batch is the ranks' rows in order
    per_rank = comm.allgather_object([(epoch, r.tolist()) for epoch, _, r in rows.steps])
    orders = {epoch: [] for epoch in range(3)}
    for steps in zip(*per_rank):
        for epoch, rows_of_rank in steps:
            orders[epoch] += rows_of_rank
    results["partition"] = [sorted(order) == list(range(len(X))) for order in orders.values()]
    results["new_order_each_epoch"] = orders[0] != orders[1] and orders[1] != orders[2]
    results["metrics"] = {key: max(abs(a - b) / abs(b) for a, b in zip(history[key], serial_history[key]))
                          for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
    results["comm_stats"] = history.comm_stats

    # the gradient allreduce through the shared-memory window (every rank on one node) ...
    results["shared_memory_used"] = any(np.shares_memory(shared.local, model.grads)
                                        for shared in comm.shared_buffers)
    switch = os.environ.get(shared_memory.ENVIRONMENT_SWITCH)
    os.environ[shared_memory.ENVIRONMENT_SWITCH] = "0"                  # ... and through MPI_Allreduce
    through_mpi, _ = train(comm, X, y, **kwargs)
    if switch is None:
        del os.environ[shared_memory.ENVIRONMENT_SWITCH]
    else:
        os.environ[shared_memory.ENVIRONMENT_SWITCH] = switch
    results["shared_memory_vs_mpi_allreduce"] = max_relative_error(model, through_mpi)
    results["mpi_allreduce_kept_private_grads"] = not any(np.shares_memory(shared.local, through_mpi.grads)
                                                          for shared in comm.shared_buffers)
    windows = len(comm.shared_buffers)
    again = fit(model, "cross_entropy", SGD(model, lr=0.1), X, y, epochs=1, batch_size=9,
                comm=comm, check_replicas=True)                    # the same model, trained again
    results["second_fit_reuses_the_window"] = len(comm.shared_buffers) == windows and again.steps == 5
    if shared_memory.enabled():                  # (MPICH's network path cannot share memory)
        shared = shared_memory.SharedBuffer(comm.MPI, comm.mpi_comm, 1001, np.float64)   # odd chunk sizes
        values = np.random.default_rng(comm.rank).normal(size=1001)
        shared.local[...] = values
        shared.allreduce_sum()
        expected = comm.mpi_comm.allreduce(values)                      # pickled sum, a reference
        results["shared_sum_error"] = float(np.abs(shared.local - expected).max() / np.abs(expected).max())
        digests = comm.allgather_object(hashlib.sha256(shared.local.tobytes()).hexdigest())
        results["shared_sum_identical_on_every_rank"] = len(set(digests)) == 1

    # 4: early stopping agreed by every rank, as in the serial run
    serial, expected = early_stopping_run(None)
    model, history = early_stopping_run(comm)
    results["early_stopping"] = {
        "serial": [expected.stop_reason, expected.stopped_epoch, expected.best_epoch],
        "ranks": comm.allgather_object([history.stop_reason, history.stopped_epoch, history.best_epoch]),
        "error": max_relative_error(model, serial)}

    # 5: local SGD, plain SGD, every step, B divisible by N  ==  gradient averaging
    X, y = make_data(36)
    batch = 6 if comm.size in (1, 2, 3, 6) else comm.size
    grad, _ = train(comm, X, y, optimizer="sgd", epochs=2, batch_size=batch)
    local, _ = train(comm, X, y, optimizer="sgd", epochs=2, batch_size=batch, sync="params",
                     sync_every=1, check_replicas=True)
    results["local_sgd"] = max_relative_error(local, grad)

    # SIGTERM on one rank: every rank stops at the next step
    _, history = train(comm, X, y, epochs=3, batch_size=batch, callbacks=[TerminateRankOne()])
    results["interrupt"] = comm.allgather_object([history.stop_reason, history.steps])

    if comm.rank == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1])
