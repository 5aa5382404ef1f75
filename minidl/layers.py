"""Layers: forward caches exactly what backward needs; backward returns dx.

Notation (docs/conventions.md): N batch, D inputs, H hidden units, C outputs;
``dfoo`` means dL/dfoo and has the shape of ``foo``.

Every ``forward(x, out=None)`` and ``backward(dy, out=None)`` may write its result into a
caller-owned buffer ``out`` (the MLP passes reusable workspaces for the activations); with
``out=None`` a new array is returned.
``Dense.backward`` OVERWRITES its parameter gradients: an MLP shares no weights, so
nothing ever accumulates.
"""
import numpy as np


INIT_SCHEMES = ("he", "glorot", "torch")      # Dense.initialize's schemes


class Dense:
    """Affine map y = x @ W.T + b, with W shaped (out, in) like torch.nn.Linear.weight.

    Forward, with x of shape (N, in):
        y = x @ W.T + b        (N, out)
    Backward, with dy of shape (N, out):
        dW = dy.T @ x          (out, in)
        db = dy.sum(axis=0)    (out,)
        dx = dy @ W            (N, in)

    ``params`` and ``grads`` are 1-D arrays of length out*in + out (W then b); the layer
    keeps views into them, so an MLP can hand it slices of its flat buffers.
    """

    def __init__(self, in_features, out_features, params=None, grads=None, dtype=np.float64):
        size = out_features * in_features + out_features
        params = np.zeros(size, dtype) if params is None else params
        grads = np.zeros(size, dtype) if grads is None else grads
        split = out_features * in_features
        self.in_features, self.out_features = in_features, out_features
        self.W = params[:split].reshape(out_features, in_features)   # views, not copies
        self.b = params[split:]
        self.bind_grads(grads)
        self.trainable = True
        self._x = None

    def bind_grads(self, grads):
        """Make dW and db views into ``grads`` (length out*in + out), where backward writes."""
        split = self.out_features * self.in_features
        self.dW = grads[:split].reshape(self.out_features, self.in_features)
        self.db = grads[split:]

    def initialize(self, rng, scheme):
        """Draw W with ``scheme`` (in float64, then cast) and set b to zero.

        he:     W ~ Normal(0, 2/in)                      (He et al. 2015, for ReLU)
        glorot: W ~ Uniform(±sqrt(6/(in+out)))           (Glorot & Bengio 2010)
        torch:  W, b ~ Uniform(±1/sqrt(in))              (torch.nn.Linear's default)
        """
        fan_in, fan_out = self.in_features, self.out_features
        shape = self.W.shape
        if scheme == "he":
            self.W[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            self.b[...] = 0.0
        elif scheme == "glorot":
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            self.W[...] = rng.uniform(-limit, limit, shape)
            self.b[...] = 0.0
        elif scheme == "torch":
            limit = 1.0 / np.sqrt(fan_in)
            self.W[...] = rng.uniform(-limit, limit, shape)
            self.b[...] = rng.uniform(-limit, limit, self.b.shape)
        else:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r}")

    def forward(self, x, out=None):
        self._x = x                                  # (N, in), needed for dW
        y = np.matmul(x, self.W.T, out=out)          # (N, out)
        y += self.b                                  # broadcast over rows, in place
        return y

    def backward(self, dy, out=None, need_dx=True):
        np.matmul(dy.T, self._x, out=self.dW)        # (out, in), written into the flat grad buffer
        # np.sum without its Python wrapper, whose cost is a measured loss at small batches
        np.add.reduce(dy, axis=0, out=self.db)       # (out,)
        if not need_dx:                              # the first layer's dx is never used
            return None
        return np.matmul(dy, self.W, out=out)        # (N, in)


class Identity:
    """y = x; dx = dy (torch.nn.Identity)."""

    name = "identity"

    def forward(self, x, out=None):
        return _copy_into(out, x)

    def backward(self, dy, out=None):
        return _copy_into(out, dy)


class ReLU:
    """y = max(x, 0); dx = dy * [x > 0].

    The gradient at exactly x = 0 is 0, as in PyTorch (its mask is ``x > 0`` too).
    """

    name = "relu"

    def forward(self, x, out=None):
        self._y = np.maximum(x, 0, out=out)          # (N, H); y > 0 exactly where x > 0
        return self._y

    def backward(self, dy, out=None):
        return np.multiply(dy, self._y > 0, out=out)


class LeakyReLU:
    """y = x if x > 0 else slope * x; dx = dy * (1 if x > 0 else slope).

    negative_slope defaults to 0.01 as torch.nn.LeakyReLU; at x = 0 the gradient is the
    slope, as in PyTorch.
    """

    name = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        self.negative_slope = float(negative_slope)

    def forward(self, x, out=None):
        self._positive = x > 0                       # (N, H) bool, needed by backward
        y = _copy_into(out, x)
        np.multiply(y, self.negative_slope, out=y, where=~self._positive)   # scale x <= 0 only
        return y

    def backward(self, dy, out=None):
        dx = _copy_into(out, dy)
        np.multiply(dx, self.negative_slope, out=dx, where=~self._positive)
        return dx


class Sigmoid:
    """y = 1 / (1 + exp(-x)); dx = dy * y * (1 - y).

    Overflow-free: with e = exp(-|x|) in (0, 1], y = 1/(1+e) for x >= 0 and e/(1+e) otherwise,
    so exp never sees a large positive argument.
    """

    name = "sigmoid"

    def forward(self, x, out=None):
        self._y = stable_sigmoid(x, out=out)
        return self._y

    def backward(self, dy, out=None):
        y = self._y
        return np.multiply(dy, y * (1 - y), out=out)


class Tanh:
    """y = tanh(x); dx = dy * (1 - y**2). np.tanh saturates to ±1 without overflow."""

    name = "tanh"

    def forward(self, x, out=None):
        self._y = np.tanh(x, out=out)
        return self._y

    def backward(self, dy, out=None):
        y = self._y
        return np.multiply(dy, 1 - y * y, out=out)


class Workspace:
    """Named scratch arrays reused from call to call: ``work(key, shape, dtype)`` returns the
    array kept under ``key``, reallocated (uninitialised) only when its shape or dtype changes,
    so a loop over batches of one size allocates nothing. The MLP keeps one.
    """

    def __init__(self):
        self._arrays = {}

    def __call__(self, key, shape, dtype):
        array = self._arrays.get(key)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[key] = np.empty(shape, dtype)
        return array


def _copy_into(out, src):
    """``src`` copied into ``out`` (a new array if out is None); no copy when out is src."""
    if out is None:
        return src.copy()
    if out is not src:
        np.copyto(out, src)
    return out


def stable_sigmoid(x, out=None):
    """sigmoid(x) computed from e = exp(-|x|), which never overflows."""
    e = np.exp(-np.abs(x))                           # (0, 1]
    numerator = np.where(x >= 0, 1, e).astype(x.dtype, copy=False)
    return np.divide(numerator, 1 + e, out=out)


ACTIVATIONS = {cls.name: cls for cls in (ReLU, LeakyReLU, Sigmoid, Tanh, Identity)}


def check_activation(name):
    """``name`` if it names an activation (relu, leaky_relu, sigmoid, tanh, identity), else raise."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return name


def make_activation(name):
    """An activation layer from its name: relu, leaky_relu, sigmoid, tanh, identity."""
    return ACTIVATIONS[check_activation(name)]()
