"""Weights in and out of minidl: PyTorch ``nn.Sequential`` / state dicts, Keras Dense weights.

Layouts (W is minidl's and PyTorch's weight, K is Keras's kernel):

    PyTorch  "0.weight" W (out, in), "0.bias" b (out,), "2.weight", ...   y = x @ W.T + b
    Keras    [K0, b0, K1, b1, ...] with K = W.T of shape (in, out)          y = x @ K + b

so a conversion is a renaming and, for Keras, a transpose: every round trip is exact.

torch and keras are never required: torch is imported only when a torch object is passed
in (recognised by the module of its type), and NumPy arrays work everywhere. The model's dtype
is float32 when every source tensor is float32, else float64; ``dtype=`` overrides it.
"""
from collections.abc import Mapping

import numpy as np

from .model import MLP
from .validation import as_dtype, numeric_array

ACTIVATION_NAMES = {"relu": "relu", "leaky_relu": "leaky_relu", "sigmoid": "sigmoid",
                    "tanh": "tanh", "identity": "identity", "linear": "identity"}
SUPPORTED = "Linear layers with exactly one of ReLU, LeakyReLU, Sigmoid, Tanh, Identity between them"


def is_torch_object(value):
    """True when ``value`` is an instance of a class defined in torch (tensor, module, ...)."""
    return any(cls.__module__.split(".")[0] == "torch" for cls in type(value).__mro__)


def to_numpy(value, name="value"):
    """A NumPy array of real numbers from an array-like or a torch tensor (detached, on CPU)."""
    if is_torch_object(value):
        value = value.detach().cpu().numpy()
    return numeric_array(name, value)


# ----------------------------------------------------------------- PyTorch
def from_torch(module_or_state_dict, activation=None, *, negative_slope=0.01, dtype=None):
    """An MLP with the weights of a torch ``nn.Sequential`` or of a state dict.

    A module must be Linear, activation, Linear, ..., Linear: the activations (ReLU,
    LeakyReLU with its negative_slope, Sigmoid, Tanh, Identity) are read from it and may differ
    per layer. Anything else (BatchNorm, Dropout, a final activation, two Linear layers in a row,
    a Linear without bias) raises ValueError naming the layer by index and class.

    A state dict (a mapping of names to tensors or NumPy arrays) holds no activations:
    ``activation`` (one name or one per hidden layer; "linear" means identity) and
    ``negative_slope`` (for leaky_relu) are required as for ``MLP``. Its entries are grouped
    into layers by the prefix before ".weight"/".bias": numeric prefixes must be 0, 2, 4, ...
    (an nn.Sequential's); other names ("fc1", "fc2") are taken in the mapping's order.
    """
    source = module_or_state_dict
    if isinstance(source, Mapping):
        if activation is None:
            raise TypeError("a state dict holds no activations: pass activation= (one name, or a "
                            "list with one per hidden layer)")
        return _build(_layers_from_state_dict(source), activation, negative_slope, dtype)
    if is_torch_object(source):
        if activation is not None:
            raise TypeError("activation= is only for a bare state dict: a module's activations "
                            "are read from its layers")
        layers, names, slopes = _layers_from_module(source)
        return _build(layers, names, slopes, dtype)
    raise TypeError(f"expected a torch.nn.Sequential or a state dict (a mapping of names to "
                    f"arrays), got {type(source).__name__}")


def _layers_from_module(module):
    """[(W, b)], activation names and slopes of an nn.Sequential of Linear and activations."""
    from torch import nn

    if not isinstance(module, nn.Sequential):
        raise TypeError(f"expected a torch.nn.Sequential, got {type(module).__name__}; for another "
                        f"module pass module.state_dict() with activation=")
    activations = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid",
                   nn.Tanh: "tanh", nn.Identity: "identity"}
    children = list(module)
    if not children:
        raise ValueError("the nn.Sequential is empty: it needs at least one Linear layer")
    layers, names, slopes = [], [], []
    for index, layer in enumerate(children):
        kind = type(layer).__name__
        linear_slot = index % 2 == 0                  # Linear at 0, 2, 4, ...: the state_dict keys
        if type(layer) is nn.Linear:
            if not linear_slot:
                raise ValueError(f"layer {index} (Linear) directly follows layer {index - 1} "
                                 f"(Linear): put nn.Identity() between them (minidl expects {SUPPORTED})")
            if layer.bias is None:
                raise ValueError(f"layer {index} (Linear) has no bias (bias=False); minidl's Dense "
                                 f"layers always have one")
            layers.append((to_numpy(layer.weight, f"layer {index} weight"),
                           to_numpy(layer.bias, f"layer {index} bias")))
        elif type(layer) in activations:
            if linear_slot:
                where = "starts the model" if index == 0 else f"follows layer {index - 1} (an activation)"
                raise ValueError(f"layer {index} ({kind}) {where}: minidl expects {SUPPORTED}")
            names.append(activations[type(layer)])
            slopes.append(float(layer.negative_slope) if isinstance(layer, nn.LeakyReLU) else 0.01)
        else:
            raise ValueError(f"layer {index} ({kind}) is not supported: minidl converts {SUPPORTED}")
    if len(children) % 2 == 0:
        raise ValueError(f"layer {len(children) - 1} ({type(children[-1]).__name__}) follows the last "
                         f"Linear: minidl's MLP outputs logits, so drop it and use a loss that takes "
                         f"logits (CrossEntropyLoss, BCEWithLogitsLoss, MSELoss)")
    return layers, names, slopes


def _layers_from_state_dict(state):
    """[(W, b)] from a mapping with "<prefix>.weight" (out, in) and "<prefix>.bias" (out,)."""
    groups = {}
    for key, value in state.items():
        prefix, _, leaf = str(key).rpartition(".")
        if leaf not in ("weight", "bias"):
            raise ValueError(f"state dict entry {key!r} is not a Linear weight or bias (running "
                             f"statistics of a BatchNorm?): minidl converts {SUPPORTED}")
        groups.setdefault(prefix, {})[leaf] = to_numpy(value, f"state[{key!r}]")
    if not groups:
        raise ValueError("the state dict is empty: it needs at least one Linear weight and bias")
    prefixes = list(groups)
    if all(prefix.isdigit() for prefix in prefixes):
        prefixes.sort(key=int)
        expected = [str(2 * k) for k in range(len(prefixes))]
        if prefixes != expected:
            raise ValueError(f"state dict layers are at {prefixes}, but an MLP's Linear layers sit "
                             f"at {expected} (one activation between each pair); a gap means other "
                             f"layers (Dropout, BatchNorm, ...), which minidl does not support")
    layers = []
    for prefix in prefixes:
        group = groups[prefix]
        missing = [leaf for leaf in ("weight", "bias") if leaf not in group]
        if missing:
            raise ValueError(f"layer {prefix!r} has no {missing[0]}: minidl's Dense layers have both")
        weight, bias = group["weight"], group["bias"]
        if weight.ndim != 2 or bias.shape != weight.shape[:1]:
            raise ValueError(f"layer {prefix!r} has weight {weight.shape} and bias {bias.shape}, not "
                             f"a Linear layer's (out, in) and (out,) (a BatchNorm or other layer?)")
        layers.append((weight, bias))
    return layers


def to_torch_state_dict(model):
    """{"0.weight": W (out, in), "0.bias": b (out,), "2.weight": ...}: NumPy copies with the
    keys and shapes of the equivalent nn.Sequential's state_dict()."""
    return _check_model(model).state_dict()


def to_torch(model):
    """The equivalent ``torch.nn.Sequential`` (same dtype, a copy of the weights). Needs torch."""
    import torch
    from torch import nn

    modules = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}
    dtype = {"float32": torch.float32, "float64": torch.float64}[_check_model(model).dtype.name]
    layers = []
    for index, layer in enumerate(model.layers):
        if index % 2 == 0:
            layers.append(nn.Linear(layer.in_features, layer.out_features, dtype=dtype))
        elif layer.name == "leaky_relu":
            layers.append(nn.LeakyReLU(layer.negative_slope))
        else:
            layers.append(modules[layer.name]())
    sequential = nn.Sequential(*layers)
    sequential.load_state_dict({name: torch.from_numpy(array)
                                for name, array in model.state_dict().items()})
    return sequential


# ----------------------------------------------------------------- Keras
def from_keras(weights, activation, *, negative_slope=0.01, dtype=None):
    """An MLP from Keras-style Dense weights: kernel K (in, out) and bias b (out,) per layer.

    ``weights`` is either flat, as ``keras_model.get_weights()`` returns it,
    ``[K0, b0, K1, b1, ...]``, or a list of pairs ``[(K0, b0), (K1, b1), ...]``; arrays,
    nested lists or tensors. Each W = K.T. ``activation`` names the hidden activations (one
    name or one per hidden layer; Keras's "linear" means identity): the output layer is linear
    and produces logits. A Dense without bias or another layer's weights (BatchNormalization's
    four vectors, ...) raise ValueError naming the position in ``weights``.
    """
    if isinstance(weights, Mapping) or not hasattr(weights, "__iter__"):
        raise TypeError(f"weights must be a list [K0, b0, K1, b1, ...] or [(K0, b0), ...], "
                        f"got {type(weights).__name__}")
    items = list(weights)
    if items and all(_is_pair(item) for item in items):
        items = [array for pair in items for array in pair]
    layers = []
    for i in range(0, len(items), 2):
        kernel = to_numpy(items[i], f"weights[{i}]")
        if kernel.ndim != 2:
            raise ValueError(f"weights[{i}] has shape {kernel.shape} where the kernel (in, out) of "
                             f"Dense layer {i // 2} was expected: only Dense layers are supported")
        if i + 1 == len(items):
            raise ValueError(f"weights ends with the kernel of Dense layer {i // 2} and no bias: "
                             f"Dense(use_bias=False) is not supported")
        bias = to_numpy(items[i + 1], f"weights[{i + 1}]")
        if bias.shape != kernel.shape[1:]:
            raise ValueError(f"weights[{i + 1}] has shape {bias.shape} where the bias "
                             f"({kernel.shape[1]},) of Dense layer {i // 2} was expected: "
                             f"Dense(use_bias=False) and other layers are not supported")
        layers.append((kernel.T, bias))
    if not layers:
        raise ValueError("weights is empty: it needs at least one Dense kernel and bias")
    return _build(layers, activation, negative_slope, dtype)


def _is_pair(item):
    """A (kernel, bias) pair: a 2-sequence of a 2-D and a 1-D array (not a kernel's rows)."""
    return (isinstance(item, (tuple, list)) and len(item) == 2
            and np.ndim(item[0]) == 2 and np.ndim(item[1]) == 1)


def to_keras(model, pairs=False):
    """Keras-style weights ``[K0, b0, K1, b1, ...]`` (K = W.T, (in, out)), or pairs if asked."""
    layers = [(np.ascontiguousarray(dense.W.T), dense.b.copy())
              for dense in _check_model(model).dense_layers]
    return layers if pairs else [array for layer in layers for array in layer]


# ----------------------------------------------------------------- shared
def _check_model(model):
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a minidl.MLP, got {type(model).__name__}")
    return model


def _build(layers, activation, negative_slope, dtype):
    """An MLP from [(W (out, in), b (out,))] and the hidden activations, weights copied in."""
    for index in range(1, len(layers)):
        fan_in, previous_out = layers[index][0].shape[1], layers[index - 1][0].shape[0]
        if fan_in != previous_out:
            raise ValueError(f"Dense layer {index} takes {fan_in} inputs but Dense layer {index - 1} "
                             f"outputs {previous_out}")
    names = [activation] if isinstance(activation, str) else list(activation)
    for name in names:
        if name not in ACTIVATION_NAMES:
            raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATION_NAMES)}")
    names = [ACTIVATION_NAMES[name] for name in names]
    if dtype is None:
        all_float32 = all(array.dtype == np.float32 for layer in layers for array in layer)
        dtype = "float32" if all_float32 else "float64"
    sizes = [layers[0][0].shape[1]] + [weight.shape[0] for weight, _ in layers]
    model = MLP(sizes, activation=names[0] if isinstance(activation, str) else names,
                dtype=as_dtype(dtype), negative_slope=negative_slope)
    model.load_state_dict({f"{2 * k}.{leaf}": array for k, layer in enumerate(layers)
                           for leaf, array in zip(("weight", "bias"), layer)})
    return model
