"""Learning-rate schedules with PyTorch's constructors and PyTorch's arithmetic.

    StepLR(optimizer, step_size, gamma=0.1)
    ExponentialLR(optimizer, gamma)
    CosineAnnealingLR(optimizer, T_max, eta_min=0.0)
    LinearLR(optimizer, start_factor=1/3, end_factor=1.0, total_iters=5)
    SequentialLR(optimizer, schedulers, milestones)

Each takes torch.optim.lr_scheduler's argument names and defaults (no ``last_epoch``: resume
through ``state_dict``), plus ``interval="epoch"`` (step at every epoch's end inside
``minidl.fit``) or ``interval="step"`` (after every optimizer step).

Like PyTorch, a schedule writes ``optimizer.lr``: the constructor makes the initial step
(last_epoch -1 -> 0) and every ``step()`` advances last_epoch by one and sets the new rate.
``base_lr`` is the optimizer's lr when the FIRST schedule was built on it (torch's
``initial_lr``, kept on the optimizer as ``optimizer.initial_lr``). Most rates are computed
RECURSIVELY from the optimizer's current lr, in PyTorch's floating-point order, so the
rates agree with PyTorch's bit for bit; and, as in PyTorch, a change made by someone else
(ReduceLROnPlateau) carries over into the later rates. The formulas are written out in
docs/optimizers.md, section "Learning-rate schedules".
"""
import math
from bisect import bisect_right

from .optim import Optimizer
from .validation import check_flag, check_non_negative_int, check_positive_int, check_real, check_state_keys

INTERVALS = ("epoch", "step")


class _Schedule:
    """What every schedule shares: the initial step, step(), the fit hooks and the state.

    Subclasses define ``_next_lr(lr, initial)`` (torch's get_lr, from the optimizer's current
    lr) and ``_closed_form()`` (torch's _get_closed_form_lr, from base_lr; SequentialLR uses
    it at a milestone) and list their constructor settings in ``_SETTINGS``.
    """
    _SETTINGS = ()
    _STATE_KEYS = ("type", "settings", "last_epoch", "base_lr", "lr")      # what state_dict() holds

    def __init__(self, optimizer, interval="epoch"):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a minidl optimizer (minidl.SGD, minidl.Adam), "
                            f"got {type(optimizer).__name__}")
        if interval not in INTERVALS:
            raise ValueError(f"interval must be 'epoch' or 'step', got {interval!r}")
        self.optimizer, self.interval = optimizer, interval
        if getattr(optimizer, "initial_lr", None) is None:      # torch: group.setdefault("initial_lr", lr)
            optimizer.initial_lr = optimizer.lr
        self.base_lr = optimizer.initial_lr
        self.last_epoch = -1
        self._pending = False                # an epoch-end check has run, on_epoch_end not yet
        self._initial_step()

    # ------------------------------------------------------------------ the schedule
    def _initial_step(self):
        """torch's constructor step: last_epoch 0, get_lr in "initial" mode."""
        self.last_epoch = 0
        self._set_lr(self._next_lr(self.optimizer.lr, initial=True))

    def step(self):
        """Advance one epoch (or one optimizer step with interval="step") and set optimizer.lr."""
        self.last_epoch += 1
        self._set_lr(self._next_lr(self.optimizer.lr, initial=False))

    def _restart(self):
        """SequentialLR at a milestone (torch: scheduler._update_lr(0)): last_epoch 0 and the
        closed form at 0."""
        self.last_epoch = 0
        self._set_lr(self._closed_form())

    def _set_lr(self, lr):
        """optimizer.lr = lr; a rate that rounding took below zero (LinearLR decaying to
        end_factor=0 can end at -1e-17) becomes 0.0, which the optimizer accepts. The one
        deviation from PyTorch, which sets the negative rate."""
        self.optimizer.lr = lr if lr >= 0.0 else 0.0

    def get_last_lr(self):
        """The learning rate now (torch returns one per parameter group; minidl has one)."""
        return self.optimizer.lr

    def settings(self):
        """The constructor settings: fit compares them across ranks at start-up."""
        return {"interval": self.interval, **{name: getattr(self, name) for name in self._SETTINGS}}

    # ------------------------------------------------------------------ as a callback of fit
    def on_step_end(self, run):
        self._pending = False
        if self.interval == "step":
            self.step()

    def on_check(self, run):
        """Note whether this check ends an epoch: fit checkpoints it before on_epoch_end, and a
        resume from that file continues with the next epoch (see load_state_dict)."""
        self._pending = self.interval == "epoch" and run.batch >= run.batches_per_epoch

    def on_epoch_end(self, run):
        self._pending = False
        if self.interval == "epoch":
            self.step()

    # ------------------------------------------------------------------ state
    def _own_state(self):
        return {"type": type(self).__name__, "settings": self.settings(), "last_epoch": self.last_epoch,
                "base_lr": self.base_lr, "lr": self.optimizer.lr}

    def state_dict(self):
        """last_epoch, base_lr, the optimizer's current lr (the recursion continues from it) and
        ``epoch_end_pending``: saved by an epoch-end check whose on_epoch_end step is still to
        come (loading such a state makes that step, since the resumed fit starts the next epoch)."""
        return {**self._own_state(), "epoch_end_pending": self._pending}

    def load_state_dict(self, state):
        """Restore a state_dict(): last_epoch, base_lr and optimizer.lr; then, if an epoch end
        was pending, make its step. Everything is validated first: a bad state changes nothing."""
        self._load_assign(self._load_check(state))

    def _load_check(self, state):
        """The validated values of ``state`` to assign; raises naming the key, changes nothing."""
        what = f"{type(self).__name__} state"
        check_state_keys(what, state, self._STATE_KEYS, optional=("epoch_end_pending",),
                         kind=type(self).__name__)
        if state["settings"] != self.settings():
            raise ValueError(f"{what} was saved with settings {state['settings']}, "
                             f"this schedule has {self.settings()}")
        pending = check_flag(f"{what} 'epoch_end_pending'",
                             state.get("epoch_end_pending", False))   # absent from older states
        return {"last_epoch": check_non_negative_int(f"{what} 'last_epoch'", state["last_epoch"]),
                "base_lr": check_real(f"{what} 'base_lr'", state["base_lr"], minimum=0.0),
                "lr": check_real(f"{what} 'lr'", state["lr"], minimum=0.0), "epoch_end_pending": pending}

    def _load_assign(self, values):
        self.last_epoch, self.base_lr, self.optimizer.lr = values["last_epoch"], values["base_lr"], values["lr"]
        self._pending = False
        if values["epoch_end_pending"]:
            self.step()


def _rate_factor(name, value):
    """A finite factor >= 0 (the optimizer refuses a negative learning rate)."""
    return check_real(name, value, minimum=0.0)


class StepLR(_Schedule):
    """Multiply the learning rate by gamma every step_size epochs.

        lr_e = lr_{e-1} * gamma   if e > 0 and e % step_size == 0,   else lr_{e-1}
        closed form: base_lr * gamma ** (e // step_size)
    """
    _SETTINGS = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1, *, interval="epoch"):
        self.step_size = check_positive_int("step_size", step_size)
        self.gamma = _rate_factor("gamma", gamma)
        super().__init__(optimizer, interval)

    def _next_lr(self, lr, initial):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma

    def _closed_form(self):
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class ExponentialLR(_Schedule):
    """Multiply the learning rate by gamma every epoch.

        lr_0 = lr (unchanged by the constructor),   lr_e = lr_{e-1} * gamma
        closed form: base_lr * gamma ** e
    """
    _SETTINGS = ("gamma",)

    def __init__(self, optimizer, gamma, *, interval="epoch"):
        self.gamma = _rate_factor("gamma", gamma)
        super().__init__(optimizer, interval)

    def _next_lr(self, lr, initial):
        return lr if initial else lr * self.gamma

    def _closed_form(self):
        return self.base_lr * self.gamma ** self.last_epoch


class CosineAnnealingLR(_Schedule):
    """Cosine annealing from base_lr to eta_min over T_max epochs (no restarts; past T_max the
    rate climbs back, a cosine of period 2 T_max, as PyTorch's does). Recursive, as PyTorch:

        lr_e = (1 + cos(pi * e / T_max)) / (1 + cos(pi * (e - 1) / T_max)) * (lr_{e-1} - eta_min) + eta_min
        lr_e = lr_{e-1} + (base_lr - eta_min) * (1 - cos(pi / T_max)) / 2
                                              when (e - 1 - T_max) % (2 T_max) == 0
        closed form: eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2

    The second line is taken where the first would divide by 1 + cos(pi) = 0.
    """
    _SETTINGS = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, *, interval="epoch"):
        self.T_max = check_positive_int("T_max", T_max)
        self.eta_min = check_real("eta_min", eta_min, minimum=0.0)
        super().__init__(optimizer, interval)

    def _next_lr(self, lr, initial):
        e, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if initial:
            return lr
        if (e - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - eta_min) + eta_min

    def _closed_form(self):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2


class LinearLR(_Schedule):
    """Multiply the learning rate by a factor going linearly from start_factor to end_factor
    over total_iters epochs (a warm-up when start_factor < end_factor). Recursive, as PyTorch:

        lr_0 = lr * start_factor                                         (the constructor)
        lr_e = lr_{e-1} * (1 + (end_factor - start_factor)
                           / (total_iters * start_factor + (e - 1) * (end_factor - start_factor)))
                                                                         for 1 <= e <= total_iters
        lr_e = lr_{e-1}                                                  for e > total_iters
        closed form: base_lr * (start_factor + (end_factor - start_factor) * min(total_iters, e) / total_iters)

    total_iters=0 keeps lr * start_factor for good (PyTorch does the same).
    """
    _SETTINGS = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, *, interval="epoch"):
        self.start_factor = check_real("start_factor", start_factor, 0.0, 1.0, min_inclusive=False)
        self.end_factor = check_real("end_factor", end_factor, 0.0, 1.0)
        self.total_iters = check_non_negative_int("total_iters", total_iters)
        super().__init__(optimizer, interval)

    def _next_lr(self, lr, initial):
        e, start, end = self.last_epoch, self.start_factor, self.end_factor
        if e == 0:
            return lr * start
        if initial or e > self.total_iters:
            return lr
        return lr * (1.0 + (end - start) / (self.total_iters * start + (e - 1) * (end - start)))

    def _closed_form(self):
        start, end = self.start_factor, self.end_factor
        return self.base_lr * (start + (end - start) * min(self.total_iters, self.last_epoch) / self.total_iters)


class SequentialLR(_Schedule):
    """Run ``schedulers[0]`` until milestones[0], then schedulers[1] until milestones[1], ...

    As PyTorch: the constructor sets optimizer.lr back to base_lr, undoes the sub-schedules'
    constructor steps and makes the first one's initial step again. step(): e += 1; at a
    milestone the next schedule restarts at its own epoch 0 with its CLOSED form at 0 (from
    base_lr), otherwise the active schedule steps (recursively, from the current lr).
    The sub-schedules' own ``interval`` is ignored: this one's counts.
    """
    _STATE_KEYS = _Schedule._STATE_KEYS + ("schedulers_last_epoch",)

    def __init__(self, optimizer, schedulers, milestones, *, interval="epoch"):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a minidl optimizer (minidl.SGD, minidl.Adam), "
                            f"got {type(optimizer).__name__}")
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise ValueError(f"schedulers must be a non-empty list of schedules, got {schedulers!r}")
        for index, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, _Schedule) or isinstance(scheduler, SequentialLR):
                raise TypeError(f"schedulers[{index}] must be a StepLR, ExponentialLR, CosineAnnealingLR "
                                f"or LinearLR, got {type(scheduler).__name__}")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"schedulers[{index}] ({type(scheduler).__name__}) belongs to another "
                                 f"optimizer: every schedule must be built on this one")
            if index > 0 and isinstance(scheduler, LinearLR) and scheduler.total_iters == 0:
                raise ValueError(f"schedulers[{index}] is a LinearLR with total_iters=0: its closed form "
                                 f"at the milestone divides by zero (PyTorch raises ZeroDivisionError)")
        if not isinstance(milestones, (list, tuple)) or len(milestones) != len(schedulers) - 1:
            raise ValueError(f"milestones must be a list of len(schedulers) - 1 = {len(schedulers) - 1} "
                             f"epochs, got {milestones!r}")
        milestones = [check_positive_int(f"milestones[{i}]", m) for i, m in enumerate(milestones)]
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        if interval not in INTERVALS:
            raise ValueError(f"interval must be 'epoch' or 'step', got {interval!r}")
        self.optimizer, self.interval = optimizer, interval
        self.schedulers, self.milestones = list(schedulers), milestones
        self.base_lr = optimizer.initial_lr
        self._pending = False
        self.last_epoch = 0
        optimizer.lr = optimizer.initial_lr
        for scheduler in self.schedulers:
            scheduler.last_epoch -= 1
        self.schedulers[0]._initial_step()

    def step(self):
        self.last_epoch += 1
        index = bisect_right(self.milestones, self.last_epoch)
        scheduler = self.schedulers[index]
        if index > 0 and self.milestones[index - 1] == self.last_epoch:
            scheduler._restart()
        else:
            scheduler.step()

    def settings(self):
        return {"interval": self.interval, "milestones": list(self.milestones),
                "schedulers": [[type(s).__name__, s.settings()] for s in self.schedulers]}

    def _own_state(self):
        return {**super()._own_state(), "schedulers_last_epoch": [s.last_epoch for s in self.schedulers]}

    def _load_check(self, state):
        values = super()._load_check(state)
        epochs = state["schedulers_last_epoch"]
        if not isinstance(epochs, (list, tuple)) or len(epochs) != len(self.schedulers):
            raise ValueError(f"SequentialLR state 'schedulers_last_epoch' must list one epoch per "
                             f"schedule ({len(self.schedulers)}), got {epochs!r}")
        values["schedulers_last_epoch"] = [check_positive_int(f"SequentialLR state 'schedulers_last_epoch'[{i}]",
                                                              e, minimum=-1) for i, e in enumerate(epochs)]
        return values

    def _load_assign(self, values):
        for scheduler, epoch in zip(self.schedulers, values["schedulers_last_epoch"]):
            scheduler.last_epoch, scheduler.base_lr = epoch, values["base_lr"]
        super()._load_assign(values)
