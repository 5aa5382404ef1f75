"""Central-difference gradient checks in float64, for tests and for users.

    numeric_i = (f(theta + eps e_i) - f(theta - eps e_i)) / (2 eps)

is compared with the analytic gradient tensor by tensor using

    error(a, b) = max|a - b| / max(tiny, max|b|)      (b is the reference)

The whole model is checked by perturbing the flat parameter vector (and the input); a single
layer by a vector-Jacobian product: f(x, W, b) = sum(layer.forward(x) * dy) for a fixed
random dy, whose gradient is exactly what layer.backward(dy) returns.
"""
import numpy as np

from .layers import Dense
from .losses import check_loss_targets, loss_kernel
from .model import MLP
from .validation import check_inputs, check_real

TINY = 1e-300


def relative_error(a, b):
    """max|a - b| / max(tiny, max|b|), with b the reference; 0.0 for two empty arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(TINY, float(np.max(np.abs(b)))))


class GradcheckReport:
    """Per-tensor max relative error of analytic against numerical gradients."""

    def __init__(self, errors, shapes):
        self.errors = dict(errors)          # name -> error
        self.shapes = dict(shapes)          # name -> shape

    @property
    def max_error(self):
        return max(self.errors.values(), default=0.0)

    def ok(self, tolerance=1e-6):
        """Whether every relative error is at most ``tolerance`` (a finite number >= 0)."""
        return self.max_error <= check_real("tolerance", tolerance, minimum=0.0)

    def __str__(self):
        width = max(len("tensor"), *(len(name) for name in self.errors))
        lines = [f"{'tensor':<{width}}  {'shape':<14}  max rel error"]
        for name, error in self.errors.items():
            lines.append(f"{name:<{width}}  {str(self.shapes[name]):<14}  {error:.3e}")
        return "\n".join(lines)


def _central_differences(f, values, eps):
    """Numerical gradient of the scalar f() with respect to the array ``values`` (perturbed in place)."""
    grad = np.empty(values.shape, np.float64)
    flat, out = values.reshape(-1), grad.reshape(-1)        # views: perturbing flat perturbs values
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        upper = f()
        flat[i] = saved - eps
        lower = f()
        flat[i] = saved
        out[i] = (upper - lower) / (2 * eps)
    return grad


def check_gradients(model, X, y, loss="cross_entropy", eps=1e-5, check_input=True):
    """Compare backprop with central differences for ``loss`` on the batch (X, y).

    Works on a float64 copy of ``model`` (the model itself is untouched). Returns a
    GradcheckReport with one row per parameter tensor (state_dict names) and one for "input".
    """
    eps = check_real("eps", eps, minimum=0.0, min_inclusive=False)
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a minidl.MLP, got {type(model).__name__}")
    work = model.copy(dtype="float64")
    kernel = loss_kernel(loss)
    X = check_inputs("X", X, np.float64, work.in_features)
    targets = check_loss_targets(loss, y, (X.shape[0], work.out_features), np.float64)

    def f():
        return kernel(work.forward_unchecked(X), targets, X.shape[0])[0]

    _, dlogits = kernel(work.forward_unchecked(X), targets, X.shape[0])
    dX = work.backward_unchecked(dlogits, input_grad=True)
    analytic = {name: grad.copy() for name, grad in work.named_gradients().items()}
    numeric_flat = _central_differences(f, work.params, eps)
    errors, shapes = {}, {}
    for name, start, stop, shape in work.layout():
        errors[name] = relative_error(analytic[name], numeric_flat[start:stop].reshape(shape))
        shapes[name] = shape
    if check_input:
        errors["input"] = relative_error(dX, _central_differences(f, X, eps))
        shapes["input"] = X.shape
    return GradcheckReport(errors, shapes)


def check_layer(layer, x, eps=1e-5, seed=0):
    """Vector-Jacobian check of one layer at the float64 input x (N, in).

    f = sum(layer.forward(x) * dy) for a random dy; checks dx and, for Dense, dW and db.
    """
    eps = check_real("eps", eps, minimum=0.0, min_inclusive=False)
    if not (callable(getattr(layer, "forward", None)) and callable(getattr(layer, "backward", None))):
        raise TypeError(f"layer must have forward() and backward(), got {type(layer).__name__}")
    x = check_inputs("x", x, np.float64)
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(layer.forward(x).shape)

    def f():
        return float(np.sum(layer.forward(x) * dy))

    layer.forward(x)
    analytic = {"x": layer.backward(dy)}
    tensors = {"x": x}
    if isinstance(layer, Dense):
        analytic.update(W=layer.dW.copy(), b=layer.db.copy())
        tensors.update(W=layer.W, b=layer.b)
    errors = {name: relative_error(analytic[name], _central_differences(f, tensors[name], eps))
              for name in analytic}
    return GradcheckReport(errors, {name: tensors[name].shape for name in tensors})


def loss_and_grads(model, X, y, loss="cross_entropy"):
    """(loss, {name: gradient}) of ``loss`` for the batch (X, y) at the model's parameters.

    The dict has the keys, order and shapes of ``model.state_dict()`` and holds copies.
    loss: "cross_entropy", "mse" or "binary_cross_entropy" (see minidl.losses for reductions).
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a minidl.MLP, got {type(model).__name__}")
    kernel = loss_kernel(loss)
    X = check_inputs("X", X, model.dtype, model.in_features)
    targets = check_loss_targets(loss, y, (X.shape[0], model.out_features), model.dtype)
    value, dlogits = kernel(model.forward_unchecked(X), targets, X.shape[0])
    model.backward_unchecked(dlogits)
    return value, {name: grad.copy() for name, grad in model.named_gradients().items()}
