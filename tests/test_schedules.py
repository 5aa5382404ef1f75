"""Learning-rate schedules: closed forms (always), PyTorch bit for bit (when torch is installed),
the fit hooks, ReduceLROnPlateau composition, state_dict validation and exact resume."""
import math
import warnings
from importlib.util import find_spec

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import (MLP, SGD, Adam, CosineAnnealingLR, ExponentialLR, LinearLR, ReduceLROnPlateau,
                    SequentialLR, StepLR, fit)
from minidl import checkpoint as ckpt
from minidl.data import make_blobs

HAVE_TORCH = find_spec("torch") is not None
CLOSE = 1e-12            # recursion against the closed form, relative, over the steps tested
TORCH_MATCH = 1e-15      # minidl against torch, relative (measured: 0, bit for bit)


def optimizer(lr=0.1):
    return SGD(MLP([2, 3], seed=0), lr=lr)


def rates(schedule, steps):
    """[lr after construction, after step 1, ..., after step ``steps``]."""
    lrs = [schedule.optimizer.lr]
    for _ in range(steps):
        schedule.step()
        lrs.append(schedule.optimizer.lr)
    return lrs


def relative(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# ------------------------------------------------------------------ closed forms
@settings(max_examples=60, deadline=None)
@given(lr=st.floats(1e-4, 1.0), step_size=st.integers(1, 20), gamma=st.floats(0.05, 1.0))
def test_step_lr_is_base_lr_times_gamma_to_the_number_of_completed_periods(lr, step_size, gamma):
    schedule = StepLR(optimizer(lr), step_size, gamma)
    for e, value in enumerate(rates(schedule, 120)):
        assert relative(value, lr * gamma ** (e // step_size)) <= CLOSE


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(1e-4, 1.0), gamma=st.floats(0.9, 1.0))
def test_exponential_lr_is_base_lr_times_gamma_to_the_epoch(lr, gamma):
    for e, value in enumerate(rates(ExponentialLR(optimizer(lr), gamma), 120)):
        assert relative(value, lr * gamma ** e) <= CLOSE


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(1e-3, 1.0), t_max=st.integers(1, 60), eta_fraction=st.floats(0.0, 0.5))
def test_cosine_annealing_recursion_follows_the_closed_form(lr, t_max, eta_fraction):
    eta_min = lr * eta_fraction
    schedule = CosineAnnealingLR(optimizer(lr), t_max, eta_min)
    for e, value in enumerate(rates(schedule, 3 * t_max)):       # past T_max: the rate climbs back
        expected = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2
        assert abs(value - expected) <= CLOSE * lr


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(1e-4, 1.0), start=st.floats(0.01, 1.0), end=st.floats(0.0, 1.0), total=st.integers(1, 40))
def test_linear_lr_recursion_follows_the_closed_form(lr, start, end, total):
    schedule = LinearLR(optimizer(lr), start, end, total)
    for e, value in enumerate(rates(schedule, total + 20)):
        expected = lr * (start + (end - start) * min(total, e) / total)
        assert abs(value - expected) <= CLOSE * lr


def test_edge_cases_gamma_one_t_max_one_eta_min_base_total_iters_zero_step_size_one():
    assert rates(StepLR(optimizer(), 3, gamma=1.0), 10) == [0.1] * 11
    assert rates(ExponentialLR(optimizer(), 1.0), 10) == [0.1] * 11
    assert rates(StepLR(optimizer(), 1, 0.5), 3) == [0.1, 0.05, 0.025, 0.0125]
    assert rates(CosineAnnealingLR(optimizer(), 1), 4) == [0.1, 0.0, 0.1, 0.0, 0.1]    # period 2
    assert rates(CosineAnnealingLR(optimizer(), 5, eta_min=0.1), 12) == [0.1] * 13
    assert rates(LinearLR(optimizer(), 0.5, 1.0, total_iters=0), 5) == [0.05] * 6     # torch: held
    assert rates(LinearLR(optimizer(), 1.0, 1.0), 7) == [0.1] * 8
    decay = rates(LinearLR(optimizer(1.0), 0.27496423914101836, 0.0, 4), 6)    # torch ends at -1.5e-17
    assert min(decay) == decay[-1] == 0.0


def test_defaults_are_torchs():
    assert (StepLR(optimizer(), 5).gamma, CosineAnnealingLR(optimizer(), 5).eta_min) == (0.1, 0.0)
    linear = LinearLR(optimizer())
    assert (linear.start_factor, linear.end_factor, linear.total_iters) == (1.0 / 3, 1.0, 5)


def test_sequential_lr_warms_up_then_anneals():
    opt = optimizer(0.1)
    warmup = LinearLR(opt, 0.1, 1.0, total_iters=4)
    cosine = CosineAnnealingLR(opt, 10)
    schedule = SequentialLR(opt, [warmup, cosine], milestones=[4])
    lrs = rates(schedule, 14)
    for e in range(5):
        assert relative(lrs[e], 0.1 * (0.1 + 0.9 * min(e, 4) / 4)) <= CLOSE
    for e in range(4, 15):
        assert abs(lrs[e] - 0.05 * (1 + math.cos(math.pi * (e - 4) / 10))) <= CLOSE * 0.1
    assert schedule.base_lr == warmup.base_lr == cosine.base_lr == 0.1


# ------------------------------------------------------------------ against PyTorch
def torch_pair(build, steps=300, lr=0.1, change_lr_at=None):
    """Worst relative difference of minidl's and torch's rates, with ``build(module, optimizer)``
    building the same schedule from either library; change_lr_at: (step, factor) multiplies
    the lr from outside (as ReduceLROnPlateau does) in both."""
    import torch
    mine = optimizer(lr)
    my_schedule = build(__import__("minidl"), mine)
    parameter = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    theirs = torch.optim.SGD([parameter], lr=lr)
    their_schedule = build(torch.optim.lr_scheduler, theirs)
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(steps + 1):
            worst = max(worst, relative(mine.lr, theirs.param_groups[0]["lr"]))
            if change_lr_at and step == change_lr_at[0]:
                mine.lr *= change_lr_at[1]
                theirs.param_groups[0]["lr"] *= change_lr_at[1]
            theirs.step()
            their_schedule.step()
            my_schedule.step()
    return worst


TORCH_CASES = {
    "step": lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
    "step_size_1": lambda m, o: m.StepLR(o, 1, gamma=0.99),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.97),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=37, eta_min=1e-3),
    "cosine_t_max_1": lambda m, o: m.CosineAnnealingLR(o, T_max=1),
    "cosine_long": lambda m, o: m.CosineAnnealingLR(o, T_max=300),
    "linear": lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=25),
    "linear_decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=200),
    "linear_defaults": lambda m, o: m.LinearLR(o),
    "linear_total_iters_0": lambda m, o: m.LinearLR(o, 0.5, 1.0, total_iters=0),
    "sequential": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.1, total_iters=10),
                                                  m.CosineAnnealingLR(o, 90, 1e-4), m.StepLR(o, 5)], [10, 100]),
    "sequential_exponential": lambda m, o: m.SequentialLR(o, [m.ExponentialLR(o, 0.9),
                                                              m.LinearLR(o, 0.5, 0.1, 30)], [40]),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
@pytest.mark.parametrize("interference", [None, (50, 0.5)], ids=["alone", "lr_halved_at_50"])
@pytest.mark.torch
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_every_rate_matches_torch_over_300_steps(case, interference):
    assert torch_pair(TORCH_CASES[case], change_lr_at=interference) <= TORCH_MATCH


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize("build, error, name", [
    (lambda o: StepLR(o, 0), ValueError, "step_size"),
    (lambda o: StepLR(o, 2.5), TypeError, "step_size"),
    (lambda o: StepLR(o, 2, gamma=-0.1), ValueError, "gamma"),
    (lambda o: ExponentialLR(o, float("nan")), ValueError, "gamma"),
    (lambda o: ExponentialLR(o, "0.9"), TypeError, "gamma"),
    (lambda o: CosineAnnealingLR(o, 0), ValueError, "T_max"),
    (lambda o: CosineAnnealingLR(o, 10, eta_min=-1.0), ValueError, "eta_min"),
    (lambda o: LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
    (lambda o: LinearLR(o, start_factor=1.5), ValueError, "start_factor"),
    (lambda o: LinearLR(o, end_factor=1.5), ValueError, "end_factor"),
    (lambda o: LinearLR(o, total_iters=-1), ValueError, "total_iters"),
    (lambda o: StepLR(o, 2, interval="batch"), ValueError, "interval"),
    (lambda o: StepLR("sgd", 2), TypeError, "optimizer"),
    (lambda o: SequentialLR(o, [], []), ValueError, "schedulers"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], []), ValueError, "milestones"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], [0]), ValueError, "milestones[0]"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3), StepLR(o, 3)], [5, 5]), ValueError, "milestones"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(optimizer(), 3)], [5]), ValueError, "schedulers[1]"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), ReduceLROnPlateau()], [5]), TypeError, "schedulers[1]"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), LinearLR(o, total_iters=0)], [5]), ValueError, "total_iters=0"),
])
def test_bad_arguments_raise_naming_the_argument(build, error, name):
    with pytest.raises(error, match=name.replace("[", r"\[").replace("]", r"\]")):
        build(optimizer())


# ------------------------------------------------------------------ state
@pytest.mark.parametrize("case", ["step", "cosine", "linear", "sequential"])
def test_state_dict_round_trip_continues_exactly(case):
    build = {"step": lambda o: StepLR(o, 3, 0.5), "cosine": lambda o: CosineAnnealingLR(o, 20, 0.01),
             "linear": lambda o: LinearLR(o, 0.2, 1.0, 8),
             "sequential": lambda o: SequentialLR(o, [LinearLR(o, 0.2, 1.0, 8), CosineAnnealingLR(o, 20)], [8])}[case]
    full = build(optimizer())
    expected = rates(full, 40)
    first = build(optimizer())
    rates(first, 13)
    state = first.state_dict()
    second = build(optimizer(0.7))                       # another lr: the state carries it
    second.load_state_dict(state)
    assert [second.optimizer.lr] + rates(second, 27)[1:] == expected[13:]


@pytest.mark.parametrize("change, error", [
    (lambda s: s.update(type="StepLR"), ValueError),
    (lambda s: s.pop("last_epoch"), ValueError),
    (lambda s: s.update(last_epoch=-3), ValueError),
    (lambda s: s.update(lr=float("nan")), ValueError),
    (lambda s: s.update(lr="0.1"), TypeError),
    (lambda s: s.update(settings={"interval": "epoch", "T_max": 9, "eta_min": 0.0}), ValueError),
    (lambda s: s.update(epoch_end_pending="yes"), TypeError),
])
def test_a_bad_state_is_refused_and_changes_nothing(change, error):
    schedule = CosineAnnealingLR(optimizer(), 10)
    rates(schedule, 3)
    state, before = schedule.state_dict(), (schedule.last_epoch, schedule.optimizer.lr)
    change(state)
    with pytest.raises(error):
        schedule.load_state_dict(state)
    assert (schedule.last_epoch, schedule.optimizer.lr) == before


def test_settings_are_the_constructor_arguments():
    assert StepLR(optimizer(), 4, 0.5).settings() == {"interval": "epoch", "step_size": 4, "gamma": 0.5}
    assert CosineAnnealingLR(optimizer(), 9, interval="step").settings() == {
        "interval": "step", "T_max": 9, "eta_min": 0.0}
    assert not hasattr(StepLR(optimizer(), 4), "monitor")          # fit would validate it


# ------------------------------------------------------------------ in fit
def blobs_fit(epochs, make_schedule, checkpoint=None, resume=False, extra=(), check_every_steps=None):
    X, y = make_blobs(150, classes=3, spread=2.0, seed=3)
    model = MLP([2, 16, 3], seed=1)
    opt = Adam(model, lr=0.01)
    callbacks = [ReduceLROnPlateau(monitor="val_loss", patience=2, factor=0.5), make_schedule(opt), *extra]
    history = fit(model, "cross_entropy", opt, X, y, epochs=epochs, batch_size=10, validation_split=0.2,
                  callbacks=callbacks, seed=7, checkpoint=checkpoint, resume=resume,
                  check_every_steps=check_every_steps)
    return model, opt, callbacks, history


def test_an_epoch_schedule_steps_once_per_epoch_and_the_history_shows_its_rate():
    model, opt, callbacks, history = blobs_fit(6, lambda o: StepLR(o, 2, 0.5))
    assert callbacks[1].last_epoch == 6
    assert history["lr"][:3] == [0.01, 0.01, 0.005]          # the check sees the rate of its epoch


def test_a_step_schedule_steps_after_every_optimizer_step():
    model, opt, callbacks, history = blobs_fit(3, lambda o: ExponentialLR(o, 0.99, interval="step"))
    assert callbacks[1].last_epoch == history.steps == 36
    assert relative(opt.lr, 0.01 * 0.99 ** 36) <= CLOSE


def test_plateau_then_schedule_order_in_one_epoch():
    """ReduceLROnPlateau acts in on_check, the schedule at the epoch's end: the schedule's
    recursion starts from the reduced rate (as in PyTorch with plateau.step before sched.step)."""
    class Plateau:                        # reduces at every check, like a patience-0 plateau
        def on_check(self, run):
            run.optimizer.lr *= 0.5
    X, y = make_blobs(60, classes=3, spread=2.0, seed=3)
    model = MLP([2, 4, 3], seed=1)
    opt = SGD(model, lr=0.1)
    schedule = ExponentialLR(opt, 0.9)
    fit(model, "cross_entropy", opt, X, y, epochs=3, batch_size=20, callbacks=[Plateau(), schedule])
    assert relative(opt.lr, 0.1 * (0.5 * 0.9) ** 3) <= CLOSE


SCHEDULES = {"cosine": lambda o: CosineAnnealingLR(o, 5, 1e-4),
             "warmup_step": lambda o: SequentialLR(o, [LinearLR(o, 0.1, 1.0, 3), StepLR(o, 2, 0.5)], [3]),
             "step_interval": lambda o: ExponentialLR(o, 0.995, interval="step")}


def assert_same(full, resumed):
    assert np.array_equal(full[0].params, resumed[0].params)
    assert full[1].lr == resumed[1].lr
    assert [r["lr"] for r in full[3].records] == [r["lr"] for r in resumed[3].records]
    assert full[2][1].state_dict() == resumed[2][1].state_dict()


@pytest.mark.parametrize("case", sorted(SCHEDULES))
def test_resume_after_k_epochs_is_bit_identical(tmp_path, case):
    full = blobs_fit(8, SCHEDULES[case], tmp_path / "full.npz")
    blobs_fit(3, SCHEDULES[case], tmp_path / "part.npz")
    resumed = blobs_fit(8, SCHEDULES[case], tmp_path / "part.npz", resume=True)
    assert_same(full, resumed)


class CopyCheckpointAfterEpoch:
    """The checkpoint a crash right after the check at the end of ``epoch`` would leave."""

    def __init__(self, epoch, source, target):
        self.epoch, self.source, self.target = epoch, source, target

    def on_epoch_end(self, run):
        if run.epoch == self.epoch:
            self.target.write_bytes(self.source.read_bytes())


@pytest.mark.parametrize("case", sorted(SCHEDULES))
@pytest.mark.parametrize("epoch", [0, 3])
def test_resume_from_an_epoch_end_check_before_the_schedule_stepped_is_bit_identical(tmp_path, case, epoch):
    copy = CopyCheckpointAfterEpoch(epoch, tmp_path / "full.npz", tmp_path / "crash.npz")
    full = blobs_fit(7, SCHEDULES[case], tmp_path / "full.npz", extra=[copy])
    state = ckpt.load_checkpoint(tmp_path / "crash.npz")[1]["callbacks"]
    assert any(entry["state"].get("epoch_end_pending") for entry in state) == (case != "step_interval")
    resumed = blobs_fit(7, SCHEDULES[case], tmp_path / "crash.npz", resume=True, extra=[copy])
    assert_same(full, resumed)


def test_resume_from_a_mid_epoch_check_is_bit_identical(tmp_path):
    """With check_every_steps, checks in the middle of an epoch leave no pending step."""
    copy = CopyCheckpointAfterEpoch(2, tmp_path / "full.npz", tmp_path / "crash.npz")
    full = blobs_fit(5, SCHEDULES["cosine"], tmp_path / "full.npz", extra=[copy], check_every_steps=5)
    meta = ckpt.load_checkpoint(tmp_path / "crash.npz")[1]
    assert meta["counters"]["batch"] < 12                          # saved in the middle of epoch 2
    resumed = blobs_fit(5, SCHEDULES["cosine"], tmp_path / "crash.npz", resume=True, extra=[copy],
                        check_every_steps=5)
    assert_same(full, resumed)


class CopyCheckpointAtStep:
    """The checkpoint a crash right after the check at optimizer step ``step`` would leave."""

    def __init__(self, step, source, target):
        self.step, self.source, self.target = step, source, target

    def on_step_end(self, run):                        # the next step: the check's file is written
        if run.step == self.step + 1:
            self.target.write_bytes(self.source.read_bytes())


def test_resume_from_a_mid_epoch_check_in_the_first_epoch_is_bit_identical(tmp_path):
    copy = CopyCheckpointAtStep(5, tmp_path / "full.npz", tmp_path / "crash.npz")
    full = blobs_fit(4, SCHEDULES["cosine"], tmp_path / "full.npz", extra=[copy], check_every_steps=5)
    resumed = blobs_fit(4, SCHEDULES["cosine"], tmp_path / "crash.npz", resume=True, extra=[copy],
                        check_every_steps=5)
    assert_same(full, resumed)
