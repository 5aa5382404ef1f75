"""Optimizers: in-place updates of the model's flat parameter buffer, PyTorch's rules.

Both read ``model.grads`` and update only the trainable layers (frozen layers are untouched,
their optimizer state too). Like PyTorch, which keeps a step count per parameter tensor and
advances it only when the tensor is updated, each Dense layer has its own step count t, so a
layer unfrozen late starts from t = 1. ``lr`` may be changed between steps (schedules,
ReduceLROnPlateau). State lives here, never on the layers; ``state_dict()`` /
``load_state_dict()`` carry it through checkpoints. The update rules, with g the gradient
of the trainable parameters p and t the step count (from 1), are written in docs/optimizers.md.
"""
import json

import numpy as np

from .model import merge_adjacent
from .validation import check_flag, check_non_negative_int, check_real, check_state_array, check_state_keys


class Optimizer:
    """Shared plumbing: the model, a validated ``lr``, the step count and scratch space."""
    _NON_NEGATIVE = ()                                     # state arrays that are never < 0

    def __init__(self, model, lr):
        if not all(hasattr(model, name) for name in ("params", "grads", "dense_layers", "layout")):
            raise TypeError(f"model must be a minidl.MLP, got {type(model).__name__}")
        self.model = model
        self.lr = lr
        self.step_count = 0                                # calls to step()
        layout = model.layout()                            # weight, bias, weight, bias, ...
        self._layer_spans = [(layout[i][1], layout[i + 1][2]) for i in range(0, len(layout), 2)]
        self.layer_steps = np.zeros(len(self._layer_spans), np.int64)   # t of each Dense layer
        self._scratch = np.empty_like(model.params)       # per-step temporaries, reused

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = check_real("lr", value, minimum=0.0)

    def hyperparameters(self):
        """The constructor's keyword arguments: type(opt)(model, **opt.hyperparameters())."""
        raise NotImplementedError

    def state_arrays(self):
        """{name: state array} of this optimizer: its own storage, not copies (fit broadcasts
        them from rank 0 at start-up; state_dict() copies them)."""
        raise NotImplementedError

    def step(self):
        """Apply one update to the trainable parameters from the current model.grads.

        Adjacent trainable layers with the same step count are updated as one span (in the
        usual case, the whole buffer in one vectorized pass).
        """
        self.step_count += 1
        spans = []                                         # (start, stop, t) of each trainable layer
        for index, ((start, stop), dense) in enumerate(zip(self._layer_spans, self.model.dense_layers)):
            if dense.trainable:
                self.layer_steps[index] += 1
                spans.append((start, stop, int(self.layer_steps[index])))
        for start, stop, t in merge_adjacent(spans):
            span = slice(start, stop)
            self._update(self.model.params[span], self.model.grads[span], span, t)

    def _decayed_gradient(self, p, g, span, weight_decay):
        """g + weight_decay * p (L2 penalty folded into the gradient, as PyTorch), in scratch.

        Without weight decay this is g itself, not a copy (a pass over all parameters
        saved): callers only read it.
        """
        if not weight_decay:
            return g
        d = self._scratch[span]
        np.multiply(p, weight_decay, out=d)
        d += g
        return d

    def state_dict(self):
        """Everything a resume needs: type, hyperparameters, step count and state arrays."""
        state = {"type": type(self).__name__, "lr": self.lr, "step_count": self.step_count,
                 "layer_steps": self.layer_steps.tolist(), "hyperparameters": self.hyperparameters()}
        state.update({name: array.copy() for name, array in self.state_arrays().items()})
        return state

    def load_state_dict(self, state):
        """Restore a state_dict() of an optimizer of the same type and hyperparameters (lr aside).

        All of it is checked first (_load_check), then assigned (_load_assign): a state that is
        refused changes nothing."""
        self._load_assign(self._load_check(state))

    def _load_check(self, state):
        """The values of ``state`` to assign, each validated; raises naming the key, changes nothing."""
        what = f"{type(self).__name__} state"
        buffers = self.state_arrays()
        check_state_keys(what, state, ("type", "lr", "step_count", "hyperparameters", *buffers),
                         optional=("layer_steps",), kind=type(self).__name__)
        if not isinstance(state["hyperparameters"], dict):
            raise TypeError(f"{what} 'hyperparameters' must be a dict, got "
                            f"{type(state['hyperparameters']).__name__}")
        mine = {key: value for key, value in self.hyperparameters().items() if key != "lr"}
        saved = {key: value for key, value in state["hyperparameters"].items() if key != "lr"}
        if json.dumps(mine, sort_keys=True) != json.dumps(saved, sort_keys=True):
            raise ValueError(f"optimizer state was saved with hyperparameters {saved}, this optimizer "
                             f"has {mine}: build the optimizer with the same hyperparameters")
        step_count = check_non_negative_int(f"{what} 'step_count'", state["step_count"])
        layer_steps = state.get("layer_steps", [step_count] * len(self.layer_steps))  # older states
        if not isinstance(layer_steps, (list, tuple, np.ndarray)) or len(layer_steps) != len(self.layer_steps):
            raise ValueError(f"{what} 'layer_steps' must list one step count per Dense layer "
                             f"({len(self.layer_steps)}), got {layer_steps!r}")
        layer_steps = [check_non_negative_int(f"{what} 'layer_steps'[{index}]", t)
                       for index, t in enumerate(layer_steps)]
        if max(layer_steps, default=0) > step_count:       # a layer steps only when the optimizer does
            raise ValueError(f"{what} 'layer_steps' {layer_steps} exceed 'step_count' {step_count}")
        return {"lr": check_real(f"{what} 'lr'", state["lr"], minimum=0.0), "step_count": step_count,
                "layer_steps": layer_steps,
                "buffers": {name: check_state_array(f"{what} {name!r}", state[name], array.shape,
                                                    array.dtype, non_negative=name in self._NON_NEGATIVE)
                            for name, array in buffers.items()}}

    def _load_assign(self, values):
        """Assign what _load_check returned."""
        self.lr, self.step_count = values["lr"], values["step_count"]
        self.layer_steps[...] = values["layer_steps"]
        for name, array in self.state_arrays().items():
            array[...] = values["buffers"][name]


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum, dampening, Nesterov and decay.

        d = g + weight_decay * p
        if momentum:  buf = d at t = 1, else buf = momentum * buf + (1 - dampening) * d
                      d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    """

    def __init__(self, model, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        super().__init__(model, lr)
        self.momentum = check_real("momentum", momentum, minimum=0.0)
        self.dampening = check_real("dampening", dampening)
        self.weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
        self.nesterov = check_flag("nesterov", nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0 (as PyTorch)")
        self.momentum_buffer = np.zeros_like(model.params) if self.momentum else None

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def state_arrays(self):
        return {} if self.momentum_buffer is None else {"momentum_buffer": self.momentum_buffer}

    def _update(self, p, g, span, t):
        d = self._decayed_gradient(p, g, span, self.weight_decay)         # (P,) read only
        if self.momentum:
            buf = self.momentum_buffer[span]                              # (P,) updated in place
            if t == 1:
                np.copyto(buf, d)                                         # PyTorch: buf = clone(d)
            else:
                buf *= self.momentum
                # (1 - 0) * d is d: skipping that pass over the parameters is a measured gain
                buf += (1 - self.dampening) * d if self.dampening else d
            d = d + self.momentum * buf if self.nesterov else buf
        # lr * d into scratch, not a new array, so that a step without dampening or Nesterov
        # allocates nothing (benchmarks/epoch.py measures it); it is not faster
        scratch = self._scratch[span]                                     # (P,) may be d itself
        np.multiply(d, self.lr, out=scratch)                              # lr * direction
        p -= scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's update, bias correction and L2 weight decay.

        d = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * d          (computed as PyTorch's lerp)
        v = beta2 * v + (1 - beta2) * d * d
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    _NON_NEGATIVE = ("exp_avg_sq",)                       # v is a mean of squares

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr)
        try:
            beta1, beta2 = betas
        except TypeError:                                  # not iterable
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        except ValueError:                                 # wrong length
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (check_real("betas[0]", beta1, 0.0, 1.0, max_inclusive=False),
                      check_real("betas[1]", beta2, 0.0, 1.0, max_inclusive=False))
        self.eps = check_real("eps", eps, minimum=0.0)
        self.weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
        self.exp_avg = np.zeros_like(model.params)
        self.exp_avg_sq = np.zeros_like(model.params)
        self._scratch2 = np.empty_like(model.params)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def state_arrays(self):
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def _update(self, p, g, span, t):
        beta1, beta2 = self.betas
        d = self._decayed_gradient(p, g, span, self.weight_decay)         # (P,) scratch
        m, v, tmp = self.exp_avg[span], self.exp_avg_sq[span], self._scratch2[span]
        # m.lerp_(d, 1 - beta1), PyTorch's formula: m + w (d - m) for w < 0.5, else d - (d - m)(1 - w)
        np.subtract(d, m, out=tmp)
        if 1 - beta1 < 0.5:
            tmp *= 1 - beta1
            m += tmp
        else:
            tmp *= beta1
            np.subtract(d, tmp, out=m)
        v *= beta2                                                        # v.mul_(b2).addcmul_(d, d, 1-b2)
        np.multiply(d, 1 - beta2, out=tmp)
        tmp *= d
        v += tmp
        step_size = self.lr / (1 - beta1 ** t)
        np.sqrt(v, out=tmp)                                               # denominator
        tmp /= np.sqrt(1 - beta2 ** t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= -step_size
        p += tmp


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
