"""Data-parallel properties of fit(), on N virtual ranks (minidl.comm.run_simulated).

The same properties are checked under a real ``mpiexec`` in test_mpi.py. Every distributed
run gives each rank a DIFFERENT model init seed: agreeing with the one-process run then also
proves that rank 0's parameters and optimizer state are broadcast at start-up.
"""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EXACT_TOL, assert_close
from minidl import MLP, EarlyStopping, ReduceLROnPlateau, evaluate, loss_and_grads
from minidl.callbacks import STOP_REASONS
from minidl.comm import SerialComm
from minidl.parallel import CollectiveError, FailureInjection
from minidl.simulated import SimComm, run_simulated
from mpi_scripts.common import SIZES, RowRecorder, early_stopping_run, make_data, train


def assert_same_parameters(actual, expected, tol=EXACT_TOL):
    """Per tensor, max|a - b| / max|b| <= tol."""
    reference = expected.named_parameters()
    for name, value in actual.named_parameters().items():
        assert_close(value, reference[name], tol, name)


def assert_bitwise_replicas(models):
    for rank, model in enumerate(models):
        assert np.array_equal(model.params, models[0].params), f"rank {rank} differs from rank 0"


def uneven_batch(size, k, r):
    """A global batch of size*k + r rows, r in 1..size-1: never divisible when size > 1."""
    return size * k + (1 + r % (size - 1) if size > 1 else r)


# ------------------------------------------------------------------ 1. N ranks == one process
@settings(max_examples=25)
@given(size=st.integers(1, 5), k=st.integers(0, 3), r=st.integers(1, 4), n=st.integers(5, 23),
       optimizer=st.sampled_from(["sgd", "momentum", "adam"]))
def test_n_ranks_follow_the_one_process_trajectory(size, k, r, n, optimizer):
    batch = uneven_batch(size, k, r)
    X, y = make_data(max(n, size))
    serial, _ = train(None, X, y, optimizer=optimizer, epochs=2, batch_size=batch)
    models = [model for model, _ in run_simulated(size, lambda comm: train(
        comm, X, y, optimizer=optimizer, epochs=2, batch_size=batch, check_replicas=True))]
    assert_same_parameters(models[0], serial)
    assert_bitwise_replicas(models)


def test_uneven_and_empty_slices_give_the_global_gradient():
    """37 samples, global batch 9 on 3 ranks: slices 3/3/3 and, in the last batch of 1 row,
    0/0/1 -- two ranks contribute nothing and still step with the global gradient."""
    X, y = make_data(37)
    serial, _ = train(None, X, y, epochs=3, batch_size=9)

    def rank(comm):
        recorder = RowRecorder(X)
        model, _ = train(comm, X, y, epochs=3, batch_size=9, callbacks=[recorder])
        return model, sorted({len(rows) for _, _, rows in recorder.steps})

    results = run_simulated(3, rank)
    assert [lengths for _, lengths in results] == [[0, 3], [0, 3], [1, 3]]
    assert_same_parameters(results[0][0], serial)
    assert_bitwise_replicas([model for model, _ in results])


def test_a_step_with_uneven_slices_matches_the_full_batch_gradient():
    """One plain-SGD step from the same start: p1 = p0 - lr * (full-batch gradient)."""
    X, y = make_data(7)
    start = MLP(SIZES, seed=3)
    _, grads = loss_and_grads(start, X, y)
    expected = start.copy()
    expected.params -= 0.1 * np.concatenate([g.ravel() for g in grads.values()])
    models = [model for model, _ in run_simulated(3, lambda comm: train(
        comm, X, y, optimizer="sgd", epochs=1, batch_size=7))]      # slices of 2, 2, 3 rows
    assert_same_parameters(models[0], expected)


# ------------------------------------------------------------------ 2. replica consistency
def test_replicas_are_bitwise_identical_after_every_step():
    X, y = make_data(23)

    class Digests:
        def __init__(self):
            self.params = []

        def on_step_end(self, run):
            self.params.append(run.model.params.copy())

    def rank(comm):
        digests = Digests()
        train(comm, X, y, optimizer="adam", epochs=2, batch_size=5, callbacks=[digests])
        return digests.params

    per_rank = run_simulated(4, rank)
    assert len(per_rank[0]) == 10
    for step, params in enumerate(zip(*per_rank)):
        for rank, array in enumerate(params):
            assert np.array_equal(array, params[0]), f"step {step + 1}: rank {rank} differs"


def test_check_replicas_raises_when_a_rank_drifts():
    X, y = make_data(20)

    class Drift:
        def on_step_end(self, run):
            if run.comm.rank == 1 and run.step == 2:
                run.model.params[0] += 1e-9

    with pytest.raises(RuntimeError, match="replicas diverged after step 2"):
        run_simulated(3, lambda comm: train(comm, X, y, epochs=1, batch_size=5,
                                            callbacks=[Drift()], check_replicas=True))


# ------------------------------------------------------------------ 3. partition of each epoch
@settings(max_examples=20)
@given(size=st.integers(1, 5), k=st.integers(0, 3), r=st.integers(1, 4), n=st.integers(5, 30))
def test_each_epoch_the_ranks_partition_the_training_set(size, k, r, n):
    batch, n = uneven_batch(size, k, r), max(n, size)
    X, y = make_data(n)

    def rank(comm):
        recorder = RowRecorder(X)
        train(comm, X, y, epochs=3, batch_size=batch, callbacks=[recorder])
        return recorder.steps

    per_rank = run_simulated(size, rank)
    serial = RowRecorder(X)
    train(None, X, y, epochs=3, batch_size=batch, callbacks=[serial])
    orders = []
    for epoch in range(3):
        global_batches = [np.concatenate([steps[i][2] for steps in per_rank])
                          for i in range(len(per_rank[0])) if per_rank[0][i][0] == epoch]
        order = np.concatenate(global_batches)
        assert np.array_equal(np.sort(order), np.arange(n)), f"epoch {epoch} is not a partition"
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    # the global batches do not depend on the number of ranks
    assert np.array_equal(np.concatenate(orders), np.concatenate([rows for _, _, rows in serial.steps]))


# ------------------------------------------------------------------ 4. metrics and early stopping
@settings(max_examples=15)
@given(size=st.integers(2, 5), n_val=st.integers(5, 17))
def test_distributed_metrics_equal_the_serial_ones(size, n_val):
    X, y = make_data(31)
    validation = make_data(n_val, seed=8)
    kwargs = dict(epochs=2, batch_size=6, validation_data=validation, check_every_steps=2)
    serial, serial_history = train(None, X, y, **kwargs)
    results = run_simulated(size, lambda comm: (train(comm, X, y, **kwargs)[1],
                                                evaluate(serial.copy(), *validation, comm=comm)))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        for history, _ in results:
            assert_close(history[key], serial_history[key], EXACT_TOL, key)
    for _, metrics in results:
        assert_close(metrics["loss"], evaluate(serial, *validation)["loss"], EXACT_TOL, "evaluate")


def test_all_ranks_stop_like_the_serial_run():
    serial, expected = early_stopping_run(None)
    assert expected.stop_reason == "patience" and expected.epochs_run < 40
    assert np.min(np.abs(np.diff(expected["val_loss"]))) > 1e-3           # clearly separated
    for size in (2, 3, 5):
        results = run_simulated(size, early_stopping_run)
        for model, history in results:
            assert (history.stop_reason, history.stopped_epoch, history.best_epoch,
                    history.restored_from) == (expected.stop_reason, expected.stopped_epoch,
                                               expected.best_epoch, expected.restored_from)
            assert_same_parameters(model, serial)
        assert_bitwise_replicas([model for model, _ in results])


def test_an_interrupt_on_one_rank_stops_every_rank_at_the_next_step():
    X, y = make_data(30)

    class InterruptRankOne:
        def on_step_end(self, run):
            if run.comm.rank == 1 and run.step == 2:
                run.interrupted = True               # what the SIGINT/SIGTERM handler does

    results = run_simulated(3, lambda comm: train(comm, X, y, epochs=3, batch_size=4,
                                                  callbacks=[InterruptRankOne()]))
    assert [(history.stop_reason, history.steps) for _, history in results] == [("interrupted", 2)] * 3
    assert_bitwise_replicas([model for model, _ in results])


def test_a_stop_requested_on_one_rank_is_agreed_by_all():
    X, y = make_data(30)

    class StopOnRankZero:
        def on_check(self, run):
            if run.comm.rank == 0 and run.check == 1:
                run.request_stop()

    results = run_simulated(2, lambda comm: train(comm, X, y, epochs=5, batch_size=4,
                                                  callbacks=[StopOnRankZero()]))
    assert [(history.stop_reason, history.epochs_run) for _, history in results] == [("external", 2)] * 2


# ------------------------------------------------------------------ 5. local SGD
@settings(max_examples=20)
@given(size=st.integers(1, 5), per_rank=st.integers(1, 3), batches=st.integers(1, 4))
def test_local_sgd_every_step_equals_gradient_averaging(size, per_rank, batches):
    batch = size * per_rank
    X, y = make_data(batch * batches)
    kwargs = dict(optimizer="sgd", epochs=2, batch_size=batch)
    grad = run_simulated(size, lambda comm: train(comm, X, y, **kwargs)[0])
    local = run_simulated(size, lambda comm: train(comm, X, y, sync="params", sync_every=1,
                                                   check_replicas=True, **kwargs)[0])
    assert_same_parameters(local[0], grad[0])
    assert_bitwise_replicas(local)


def local_sgd_reference(X, y, size, batch, sync_every, epochs, lr=0.1):
    """Local SGD written out: each rank steps on its slice's mean loss, and the parameters are
    averaged weighted by samples every sync_every steps and at the end. Plain SGD."""
    start = MLP(SIZES, seed=3)
    replicas = [start.params.copy() for _ in range(size)]
    counts = np.zeros(size)
    step = 0
    for epoch in range(epochs):
        order = np.random.default_rng([0, epoch]).permutation(len(X))
        for first in range(0, len(X), batch):
            rows = order[first:first + batch]
            for rank in range(size):
                mine = rows[len(rows) * rank // size:len(rows) * (rank + 1) // size]
                if len(mine):                                   # no data, no step
                    model = start.copy()
                    model.params[...] = replicas[rank]
                    _, grads = loss_and_grads(model, X[mine], y[mine])
                    replicas[rank] -= lr * np.concatenate([g.ravel() for g in grads.values()])
                counts[rank] += len(mine)
            step += 1
            if step % sync_every == 0 or first + batch >= len(X):      # period, or epoch-end check
                average = sum(c * p for c, p in zip(counts, replicas)) / counts.sum()
                replicas = [average.copy() for _ in range(size)]
                counts[:] = 0
    return replicas[0]


@pytest.mark.parametrize("size, batch, n, sync_every", [(2, 5, 23, 3), (3, 4, 9, 2), (3, 7, 22, 5)])
def test_local_sgd_matches_a_hand_written_reference(size, batch, n, sync_every):
    """Uneven slices (weights differ), empty slices (3 ranks, a last batch of 1) and periods
    that do not divide the epoch. No validation data, so the only checks are at epoch ends,
    where the loop also averages: the reference averages there too when a period is pending."""
    X, y = make_data(n)
    models = run_simulated(size, lambda comm: train(
        comm, X, y, optimizer="sgd", epochs=2, batch_size=batch, sync="params",
        sync_every=sync_every)[0])
    assert_close(models[0].params, local_sgd_reference(X, y, size, batch, sync_every, 2),
                 EXACT_TOL, "local SGD")
    assert_bitwise_replicas(models)


# ------------------------------------------------------------------ 6. failures
def test_a_failing_rank_ends_every_rank_promptly():
    X, y = make_data(40)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="injected failure on rank 1 at step 3"):
        run_simulated(3, lambda comm: train(comm, X, y, epochs=5, batch_size=4,
                                            callbacks=[FailureInjection(rank=1, step=3)]), timeout=300)
    assert time.perf_counter() - started < 60       # at once, not at the timeout (loose: a busy machine)


def ordinary_type(error):
    """ValueError for a CollectiveValueError, and so on."""
    return type(error).__bases__[0] if isinstance(error, CollectiveError) else type(error)


def rank_errors(size, fn):
    """Run fn on every rank expecting ValueError/TypeError; return [(type, message)] by rank."""
    def rank(comm):
        with pytest.raises((ValueError, TypeError)) as info:
            fn(comm)
        return ordinary_type(info.value), str(info.value)
    return run_simulated(size, rank)


def test_mismatched_configuration_fails_on_every_rank_with_one_message():
    X, y = make_data(30)
    errors = rank_errors(3, lambda comm: train(comm, X, y, epochs=2,
                                               batch_size=8 if comm.rank == 2 else 4))
    assert len(set(errors)) == 1
    kind, message = errors[0]
    assert kind is ValueError
    assert "disagree on the training configuration" in message
    assert "batch_size: rank 0 has 4, rank 1 has 4, rank 2 has 8" in message


@pytest.mark.parametrize("make_callback, setting", [
    (lambda rank: EarlyStopping(patience=3 + rank), "callbacks[0].patience: rank 0 has 3, rank 1 has 4"),
    (lambda rank: EarlyStopping(min_delta=0.01 * rank), "callbacks[0].min_delta: rank 0 has 0.0, rank 1 has 0.01"),
    (lambda rank: ReduceLROnPlateau(factor=0.5 if rank else 0.1), "callbacks[0].factor: rank 0 has 0.1, rank 1 has 0.5"),
    (lambda rank: FailureInjection(rank=0, step=5 + rank), "callbacks[0].step: rank 0 has 5, rank 1 has 6")])
def test_ranks_given_different_callback_settings_fail_at_start_up(make_callback, setting):
    """Callbacks are compared by their settings, not only their types."""
    X, y = make_data(30)
    errors = rank_errors(2, lambda comm: train(comm, X, y, epochs=2, batch_size=4,
                                               validation_data=make_data(6, seed=8),
                                               callbacks=[make_callback(comm.rank)]))
    assert len(set(errors)) == 1
    kind, message = errors[0]
    assert kind is ValueError and message.startswith(f"the ranks disagree on the training configuration ({setting});")


def test_different_data_on_one_rank_fails_at_start_up():
    X, y = make_data(30)

    def rank(comm):
        labels = y.copy()
        labels[0] = (labels[0] + comm.rank) % 3
        train(comm, X, labels, epochs=1, batch_size=4)

    errors = rank_errors(2, rank)
    assert errors[0] == errors[1] and "data_crc32" in errors[0][1]


def with_nan(X, y):
    X = X.copy()
    X[4, 2] = np.nan
    return X, y


def with_text_labels(X, y):
    return X, y.astype(str)


@pytest.mark.parametrize("kind, corrupt", [(ValueError, with_nan), (TypeError, with_text_labels)])
def test_bad_input_on_one_rank_raises_the_same_error_on_every_rank(kind, corrupt):
    X, y = make_data(30)
    errors = rank_errors(3, lambda comm: train(comm, *(corrupt(X, y) if comm.rank == 1 else (X, y)),
                                               epochs=1, batch_size=4))
    assert len(set(errors)) == 1
    assert errors[0][0] is kind and errors[0][1].endswith("(on rank 1 of 3)")


def test_injection_on_a_missing_rank_is_refused_by_every_rank():
    X, y = make_data(30)
    errors = rank_errors(2, lambda comm: train(comm, X, y, epochs=1, batch_size=4,
                                               callbacks=[FailureInjection(rank=2, step=1)]))
    assert errors == [(ValueError, "FailureInjection: rank 2 does not exist in a run of 2 rank(s)")] * 2


# ------------------------------------------------------------------ 7. resume on another N
def test_a_checkpoint_from_two_ranks_resumes_on_three(tmp_path):
    """Interrupted mid-epoch on 2 ranks (so the loss sums of the open epoch are in the file),
    resumed on 3: the same trajectory and the same epoch losses as one uninterrupted process."""
    X, y = make_data(31)
    validation = make_data(9, seed=8)
    path = tmp_path / "run.npz"
    kwargs = dict(epochs=3, batch_size=5, validation_data=validation, checkpoint=path)

    class Interrupt:
        def on_step_end(self, run):
            if run.step == 9:
                run.interrupted = True

    first = run_simulated(2, lambda comm: train(comm, X, y, callbacks=[Interrupt()], **kwargs))
    assert first[0][1].stop_reason == "interrupted" and first[0][1].steps == 9
    with pytest.warns(RuntimeWarning, match="different environment"):
        resumed = run_simulated(3, lambda comm: train(comm, X, y, resume=True, **kwargs))
    serial, expected = train(None, X, y, epochs=3, batch_size=5, validation_data=validation)
    assert_same_parameters(resumed[0][0], serial)
    for key in ("loss", "accuracy", "val_loss"):
        assert_close(resumed[0][1][key], expected[key], EXACT_TOL, key)


# ------------------------------------------------------------------ communication accounting
def test_one_collective_per_step_carries_the_gradient_and_the_stop_vote():
    X, y = make_data(30)
    validation = make_data(6, seed=8)
    results = run_simulated(3, lambda comm: train(comm, X, y, epochs=2, batch_size=7,
                                                  validation_data=validation))
    model, history = results[0]
    stats = history.comm_stats
    steps, checks = history.steps, len(history)
    assert (stats["ranks"], stats["steps"]) == (3, 10)
    vote = len(STOP_REASONS) * model.params.itemsize                  # the ballot at the buffer's end
    assert stats["training"]["gradients"] == {"op": "allreduce", "calls": steps,
                                              "bytes": steps * (model.params.nbytes + vote)}
    assert stats["training"]["stop_vote"]["calls"] == checks          # a check's vote only
    per_check = sum(entry["calls"] for label, entry in stats["training"].items() if label != "gradients")
    assert per_check == 4 * checks               # metrics, validation, metric check, vote
    assert stats["training"]["metrics"]["calls"] == stats["training"]["validation"]["calls"] == checks
    assert stats["startup"]["initial_state"]["calls"] == 2            # params and momentum
    assert stats["per_step"]["bytes"] > model.params.nbytes


def test_local_sgd_counts_parameter_averages_instead_of_gradients():
    X, y = make_data(30)
    results = run_simulated(2, lambda comm: train(comm, X, y, epochs=2, batch_size=6,
                                                  sync="params", sync_every=2))
    training = results[0][1].comm_stats["training"]
    assert "gradients" not in training
    assert training["params"]["calls"] == 6          # after steps 2, 4, the check after 5; 6, 8, 10


def test_one_process_counts_no_collectives():
    X, y = make_data(12)
    _, history = train(SerialComm(), X, y, epochs=1, batch_size=4)
    assert history.comm_stats == {"ranks": 1, "steps": 3, "startup": {}, "training": {},
                                  "per_step": {"calls": 0.0, "bytes": 0.0}}


def test_sync_arguments_are_checked():
    X, y = make_data(12)
    with pytest.raises(ValueError, match="sync must be one of"):
        train(None, X, y, epochs=1, batch_size=4, sync="weights")
    with pytest.raises(ValueError, match="sync_every=3 has no effect with sync='grad'"):
        train(None, X, y, epochs=1, batch_size=4, sync_every=3)


def test_ranks_that_see_different_metrics_refuse_to_go_on():
    """The monitors decide on the reduced metrics; the trainer verifies they agree bitwise."""
    X, y = make_data(20)

    class SkewedValidation(SimComm):
        """A faulty network: rank 1 receives the reduced validation loss slightly off."""

        def _allreduce_sum(self, array, label):
            super()._allreduce_sum(array, label)
            if label == "validation" and self.rank == 1:
                array[0] *= 1 + 1e-12

    with pytest.raises(RuntimeError, match="the ranks computed different metrics at check 0"):
        run_simulated(2, lambda comm: train(SkewedValidation(comm.world, comm.rank), X, y, epochs=2,
                                            batch_size=5, validation_data=make_data(6, seed=8)))
