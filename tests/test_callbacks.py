"""Callbacks: the Callback base class (its hooks are no-ops that fit never binds), LambdaCallback,
ModelCheckpoint (saves on improvement, loadable, rank 0 only, resumable), duck-typed callbacks."""
from types import SimpleNamespace

import numpy as np
import pytest

import minidl
from minidl.callbacks import HOOKS, hook_method
from minidl.loop import Trainer

RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((80, 4)), RNG.integers(0, 3, 80)


def train(callbacks, epochs=4, **kwargs):
    model = minidl.MLP([4, 8, 3], seed=0)
    history = minidl.fit(model, "cross_entropy", minidl.SGD(model, lr=0.2, momentum=0.9), X, Y,
                         epochs=epochs, batch_size=16, validation_split=0.25, callbacks=callbacks, **kwargs)
    return model, history


def trainer(callbacks):
    model = minidl.MLP([4, 3])
    return Trainer(model, "cross_entropy", minidl.SGD(model, lr=0.1), X, Y, epochs=1, batch_size=16,
                   callbacks=callbacks)


def test_the_base_class_hooks_are_no_ops_that_fit_does_not_bind():
    base = minidl.Callback()
    for hook in HOOKS:
        assert getattr(base, hook)(None) is None
        assert hook_method(base, hook) is None

    class OnCheck(minidl.Callback):
        def on_check(self, run):
            pass

    hooks = trainer([base, OnCheck()])._hooks
    assert [hook for hook in HOOKS if hooks[hook]] == ["on_check"]
    assert hooks["on_step_end"] == []                        # nothing to call at each step


def test_duck_typed_callbacks_still_work():
    class Counter:                                           # no base class
        epochs = 0

        def on_epoch_end(self, run):
            self.epochs += 1

    counter = Counter()
    train([counter], epochs=3)
    assert counter.epochs == 3


def test_lambda_callback_calls_its_functions():
    calls = []
    callback = minidl.LambdaCallback(on_train_begin=lambda run: calls.append("begin"),
                                     on_epoch_end=lambda run: calls.append(run.epoch),
                                     on_check=lambda run: calls.append(round(run.metrics["val_loss"], 12)),
                                     on_train_end=lambda run: calls.append("end"))
    assert isinstance(callback, minidl.Callback)
    _, history = train([callback], epochs=2)
    assert calls == ["begin", round(history["val_loss"][0], 12), 0, round(history["val_loss"][1], 12), 1, "end"]
    assert [hook for hook, methods in trainer([callback])._hooks.items() if methods] == [
        "on_train_begin", "on_check", "on_epoch_end", "on_train_end"]


def test_lambda_callback_rejects_unknown_hooks_and_non_functions():
    with pytest.raises(TypeError, match="on_batch_end.*allowed.*on_check_end"):
        minidl.LambdaCallback(on_batch_end=print)
    with pytest.raises(TypeError, match="function of run"):
        minidl.LambdaCallback(on_check=3)


def fake_run(model, value, check, rank=0, name="val_loss"):
    return SimpleNamespace(metrics={name: value}, epoch=check, check=check + 1, model=model,
                           comm=SimpleNamespace(rank=rank))


def test_model_checkpoint_saves_only_on_improvement(tmp_path):
    model = minidl.MLP([4, 3])
    callback = minidl.ModelCheckpoint(tmp_path / "m-{check}.npz")
    callback.on_train_begin(None)
    for check, value in enumerate([3.0, 2.0, 2.0, 2.5, 1.0, float("nan")]):
        model.params[0] = check
        callback.on_check_end(fake_run(model, value, check))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-0.npz", "m-1.npz", "m-4.npz"]
    assert callback.best == 1.0 and minidl.load(tmp_path / "m-4.npz").params[0] == 4
    maximise = minidl.ModelCheckpoint(tmp_path / "acc.npz", monitor="val_accuracy")
    assert maximise.mode == "max"
    for check, value in enumerate([0.5, 0.7, 0.6]):
        model.params[0] = check
        maximise.on_check_end(fake_run(model, value, check, name="val_accuracy"))
    assert minidl.load(tmp_path / "acc.npz").params[0] == 1


def test_model_checkpoint_writes_on_rank_zero_only(tmp_path):
    callback = minidl.ModelCheckpoint(tmp_path / "m.npz", save_best_only=False)
    callback.on_check_end(fake_run(minidl.MLP([4, 3]), 1.0, 0, rank=1))
    assert list(tmp_path.iterdir()) == [] and callback.saved == []


def test_model_checkpoint_in_fit_saves_the_best_weights(tmp_path):
    checkpoint = minidl.ModelCheckpoint(tmp_path / "best.npz", standardization=(np.zeros(4), np.ones(4)))
    model, history = train([checkpoint, minidl.EarlyStopping(patience=100, restore_best_weights=True)], epochs=6)
    best, standardization = minidl.load(tmp_path / "best.npz", with_standardization=True)
    assert best.params.tobytes() == model.params.tobytes()            # the same best check
    assert checkpoint.best == min(history["val_loss"])
    np.testing.assert_array_equal(standardization[1], np.ones(4))
    every = minidl.ModelCheckpoint(tmp_path / "e{epoch}.npz", save_best_only=False)
    assert every.monitor is None                                       # nothing monitored
    model = minidl.MLP([4, 3])
    minidl.fit(model, "cross_entropy", minidl.SGD(model, lr=0.1), X, Y, epochs=2, batch_size=40,
               callbacks=[every])                                    # no validation data needed
    assert sorted(p.name for p in tmp_path.glob("e*.npz")) == ["e0.npz", "e1.npz"]


def test_model_checkpoint_validation():
    with pytest.raises(ValueError, match="monitors 'val_loss'"):
        model = minidl.MLP([4, 3])
        minidl.fit(model, "cross_entropy", minidl.SGD(model, lr=0.1), X, Y, epochs=1, batch_size=16,
                   callbacks=[minidl.ModelCheckpoint("m.npz")])
    with pytest.raises(ValueError, match="epoch.*check"):
        minidl.ModelCheckpoint("m-{step}.npz")
    with pytest.raises(TypeError, match="save_best_only"):
        minidl.ModelCheckpoint("m.npz", save_best_only="yes")
    assert minidl.ModelCheckpoint("m.npz", monitor="loss").settings() == {
        "path": "m.npz", "monitor": "loss", "mode": "min", "min_delta": 0, "save_best_only": True}


def test_resume_keeps_the_best_so_far(tmp_path):
    full = minidl.ModelCheckpoint(tmp_path / "full-{epoch}.npz")
    train([full], epochs=6)
    first = minidl.ModelCheckpoint(tmp_path / "part-{epoch}.npz")
    train([first], epochs=4, checkpoint=tmp_path / "ck.npz")
    resumed = minidl.ModelCheckpoint(tmp_path / "part-{epoch}.npz")
    train([resumed], epochs=6, checkpoint=tmp_path / "ck.npz", resume=True)
    assert resumed.best == full.best
    assert resumed.saved == []          # epochs 4 and 5 do not beat epoch 3's val_loss, saved before
    assert [p.replace("part", "full") for p in first.saved + resumed.saved] == full.saved
    for path in full.saved:
        assert minidl.load(path).params.tobytes() == minidl.load(path.replace("full", "part")).params.tobytes()
