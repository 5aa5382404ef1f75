"""The multilayer perceptron: a Sequential of layers over ONE flat parameter buffer.

``model.params`` is one contiguous 1-D array holding every weight and bias, ``model.grads``
one of the same layout; each Dense layer's W, b, dW, db are reshaped views into them. The
optimizer, the gradient check, MPI and checkpoints all work on these two vectors.
"""
import numbers
from collections.abc import Mapping

import numpy as np

from .layers import INIT_SCHEMES, Dense, LeakyReLU, Workspace, check_activation, make_activation, stable_sigmoid
from .losses import _log_softmax_parts, resolve_loss
from .validation import (as_dtype, check_inputs, check_layer_flags, check_positive_int, check_real,
                         check_same_keys, check_state_array, per_hidden_layer)

RELU_FAMILY = ("relu", "leaky_relu")
INIT_CHOICES = ("auto",) + INIT_SCHEMES         # auto: He before ReLU-like layers, else Glorot


def merge_adjacent(spans):
    """[(start, stop, key)] with each run of touching spans of equal ``key`` merged into one.

    The model merges its trainable layers this way, the optimizer its layers of equal step
    count, so one vectorised pass covers as much of the flat buffer as it can.
    """
    merged = []
    for start, stop, key in spans:
        if merged and merged[-1][1] == start and merged[-1][2] == key:
            merged[-1] = (merged[-1][0], stop, key)
        else:
            merged.append((start, stop, key))
    return merged


class MLP:
    """Dense layers with an activation between each pair; the last layer outputs logits.

    ``MLP([784, 256, 10])`` is Dense(784->256), ReLU, Dense(256->10), exactly like
    ``torch.nn.Sequential(Linear, ReLU, Linear)``: Dense layers sit at even indices of
    ``model.layers`` and ``state_dict()`` uses the same keys ("0.weight", "0.bias", ...).

    activation: one name for every hidden layer or a list with one per hidden layer
        (relu, leaky_relu, sigmoid, tanh, identity).
    init: "auto" (He for layers feeding ReLU/LeakyReLU, Glorot otherwise and for the output
        layer), "he", "glorot" or "torch" (torch.nn.Linear's default); drawn from
        ``numpy.random.default_rng(seed)`` in float64 and cast, so float32 and float64 models
        with the same seed start from the same weights up to rounding.

    ``backward`` OVERWRITES ``model.grads``; gradients are never accumulated across calls.
    """

    def __init__(self, sizes, activation="relu", dtype="float64", seed=0, init="auto",
                 negative_slope=0.01):
        self.sizes = self._check_sizes(sizes)
        hidden = len(self.sizes) - 2
        names = per_hidden_layer("activation", activation, hidden, str)
        for name in names:
            check_activation(name)
        slopes = [check_real("negative_slope", slope) for slope in
                  per_hidden_layer("negative_slope", negative_slope, hidden, numbers.Real)]
        if init not in INIT_CHOICES:
            raise ValueError(f"init must be one of {INIT_CHOICES}, got {init!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
        self.dtype = as_dtype(dtype)
        self.activations = tuple(names)
        self.seed, self.init = int(seed), init

        shapes = list(zip(self.sizes[1:], self.sizes[:-1]))               # (out, in) per Dense
        total = sum(fan_out * fan_in + fan_out for fan_out, fan_in in shapes)
        self.params = np.zeros(total, self.dtype)                          # the flat buffers
        self.grads = np.zeros(total, self.dtype)
        self.layers, self.dense_layers, self._spans = [], [], []
        offset = 0
        for index, (fan_out, fan_in) in enumerate(shapes):
            stop = offset + fan_out * fan_in + fan_out
            dense = Dense(fan_in, fan_out, self.params[offset:stop], self.grads[offset:stop])
            self.layers.append(dense)
            self.dense_layers.append(dense)
            self._spans.append((offset, stop))
            offset = stop
            if index < hidden:
                act = make_activation(names[index])
                if isinstance(act, LeakyReLU):
                    act.negative_slope = float(slopes[index])
                self.layers.append(act)

        rng = np.random.default_rng(self.seed)
        for index, dense in enumerate(self.dense_layers):
            feeds_relu = index < hidden and names[index] in RELU_FAMILY
            scheme = init if init != "auto" else ("he" if feeds_relu else "glorot")
            dense.initialize(rng, scheme)
        self._workspace = Workspace()
        self._cache_from_forward = False          # True after forward(), until predict()

    @staticmethod
    def _check_sizes(sizes):
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"sizes must be a list of layer widths, got {sizes!r}") from None
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output width, got {sizes}")
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, numbers.Integral):
                raise TypeError(f"layer sizes must be integers, got {size!r} in {sizes}")
            if size < 1:
                raise ValueError(f"layer sizes must be >= 1, got {size} in {sizes}")
        return tuple(int(size) for size in sizes)

    # ----------------------------------------------------------------- description
    @property
    def num_parameters(self):
        return self.params.size

    @property
    def in_features(self):
        return self.sizes[0]

    @property
    def out_features(self):
        return self.sizes[-1]

    def config(self):
        """What rebuilds this architecture: MLP(**model.config())."""
        slopes = [layer.negative_slope if isinstance(layer, LeakyReLU) else 0.01
                  for layer in self.layers[1::2]]
        return {"sizes": list(self.sizes), "activation": list(self.activations),
                "dtype": self.dtype.name, "seed": self.seed, "init": self.init,
                "negative_slope": slopes}

    def layout(self):
        """[(name, start, stop, shape)] of every tensor in the flat buffers, in order."""
        entries = []
        for index, ((start, stop), dense) in enumerate(zip(self._spans, self.dense_layers)):
            split = start + dense.W.size
            entries.append((f"{2 * index}.weight", start, split, dense.W.shape))
            entries.append((f"{2 * index}.bias", split, stop, dense.b.shape))
        return entries

    def named_parameters(self):
        """{name: live view into model.params}, in state_dict order."""
        return {name: self.params[a:b].reshape(shape) for name, a, b, shape in self.layout()}

    def named_gradients(self):
        """{name: live view into model.grads}, in state_dict order."""
        return {name: self.grads[a:b].reshape(shape) for name, a, b, shape in self.layout()}

    def state_dict(self):
        """{"0.weight": (out, in), "0.bias": (out,), "2.weight": ...}: copies, PyTorch's keys."""
        return {name: view.copy() for name, view in self.named_parameters().items()}

    def load_state_dict(self, state):
        """Copy ``state`` (same keys and shapes as state_dict()) into the parameters."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of names to arrays, got {type(state).__name__}")
        views = self.named_parameters()
        check_same_keys("state_dict", state, list(views))
        arrays = {name: check_state_array(f"state[{name!r}]", state[name], view.shape)
                  for name, view in views.items()}
        for name, view in views.items():                   # all checked first: all or nothing
            view[...] = arrays[name]

    def copy(self, *, dtype=None, n_outputs=None, seed=None):
        """An independent model built from this one: the one way minidl derives a model.

        Same architecture, parameters and frozen layers, unless told otherwise:
            dtype      the parameters cast to another floating-point type
            n_outputs  a new output layer of this width, freshly initialised from ``seed``
                       (the model's init scheme) and trainable: fine-tuning's new head
        """
        changes = {} if dtype is None else {"dtype": dtype}
        if n_outputs is not None:
            n_outputs = check_positive_int("n_outputs", n_outputs)
            changes.update(sizes=list(self.sizes[:-1]) + [n_outputs], seed=self.seed if seed is None else seed)
        twin = type(self)(**dict(self.config(), **changes))           # a subclass stays one
        kept = twin.dense_layers if n_outputs is None else twin.dense_layers[:-1]
        end = self.layout()[2 * len(kept) - 1][2] if kept else 0      # the copied layers' span
        twin.params[:end] = self.params[:end]
        twin.trainable = self.trainable[:len(kept)] + twin.trainable[len(kept):]
        return twin

    # ----------------------------------------------------------------- freezing
    def freeze(self, *dense_indices, trainable=False):
        """Mark Dense layers (indexed from 0 among Dense layers) as frozen: no optimizer updates."""
        for index in dense_indices:
            if isinstance(index, bool) or not isinstance(index, numbers.Integral) or \
                    not -len(self.dense_layers) <= index < len(self.dense_layers):
                raise ValueError(f"Dense layer index {index!r} is out of range: the model has "
                                 f"{len(self.dense_layers)} Dense layers (0..{len(self.dense_layers) - 1})")
            self.dense_layers[index].trainable = trainable

    def unfreeze(self, *dense_indices):
        self.freeze(*dense_indices, trainable=True)

    @property
    def trainable(self):
        """[flag per Dense layer]: which layers the optimizer updates; assign a list to set all."""
        return [dense.trainable for dense in self.dense_layers]

    @trainable.setter
    def trainable(self, flags):
        flags = check_layer_flags("trainable", flags, len(self.dense_layers))
        for dense, flag in zip(self.dense_layers, flags):
            dense.trainable = flag

    def trainable_spans(self):
        """[(start, stop)] ranges of model.params that the optimizer updates (adjacent merged)."""
        return [(start, stop) for start, stop, _ in
                merge_adjacent((start, stop, None) for (start, stop), dense in zip(self._spans, self.dense_layers)
                               if dense.trainable)]

    def use_gradient_buffer(self, buffer):
        """Keep the flat gradient in ``buffer`` from now on (its contents copied there).

        The seam for communicators: fit moves model.grads to wherever its communicator sums
        gradients fastest (``Communicator.gradient_buffer``; under MPI on one node, memory the
        other ranks can read). Every Dense layer's dW and db become views into ``buffer``.
        """
        if buffer is self.grads:
            return
        if buffer.shape != self.grads.shape or buffer.dtype != self.dtype:
            raise ValueError(f"a gradient buffer must have shape {self.grads.shape} and dtype "
                             f"{self.dtype}, got {buffer.shape} {buffer.dtype}")
        buffer[...] = self.grads
        self.grads = buffer
        for (start, stop), dense in zip(self._spans, self.dense_layers):
            dense.bind_grads(buffer[start:stop])

    # ----------------------------------------------------------------- computation
    def _buffer(self, key, shape):
        """A reusable workspace array for ``key``; reallocated only when the shape changes."""
        return self._workspace(key, shape, self.dtype)

    def forward_unchecked(self, x):
        """Unchecked forward of a (N, D) array of the model's dtype.

        Returns the (N, C) logits in a workspace that the next call overwrites (fit and the
        benchmarks use them at once; forward() and predict() hand out copies).
        """
        self._cache_from_forward = True
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                out = self._buffer(("y", index), (x.shape[0], layer.out_features))
            else:
                out = x            # activations overwrite the Dense output (our workspace) in place
            x = layer.forward(x, out=out)
        return x

    def backward_unchecked(self, dlogits, input_grad=False):
        """Unchecked backward from dL/dlogits (N, C): overwrites model.grads, returns dX or None."""
        dy = dlogits
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if isinstance(layer, Dense):
                need_dx = index > 0 or input_grad
                out = self._buffer(("dx", index), (dy.shape[0], layer.in_features)) if index > 0 else None
                dy = layer.backward(dy, out=out, need_dx=need_dx)
            else:
                dy = layer.backward(dy, out=dy)    # dy is a workspace of ours: update in place
        return dy

    def forward(self, X):
        """Logits (N, C) for inputs X (N, D); caches what backward needs. Returns a new array.

        The cache refers to X itself when it already has the model's dtype: leave X unchanged
        until backward, as autograd frameworks require of in-place changes too.
        """
        return self.forward_unchecked(check_inputs("X", X, self.dtype, self.in_features)).copy()

    def backward(self, dlogits, input_grad=False):
        """Backpropagate dL/dlogits (N, C) from the last forward; OVERWRITES model.grads.

        Returns dL/dX (N, D) when ``input_grad`` is true, else None.
        """
        first = self.dense_layers[0]._x
        if first is None or not self._cache_from_forward:
            raise ValueError("backward needs the activations of a forward: call model.forward(X) "
                             "first (predict() does not keep them for backward)")
        dlogits = check_inputs("dlogits", dlogits, self.dtype, self.out_features, allow_empty=True)
        if dlogits.shape[0] != first.shape[0]:
            raise ValueError(f"dlogits has {dlogits.shape[0]} rows but the last forward had "
                             f"{first.shape[0]}")
        return self.backward_unchecked(dlogits, input_grad)

    def predict(self, X, batch_size=4096):
        """Network outputs (N, C) for X, computed in batches; parameters and grads untouched.

        It replaces the layers' cache, so a backward() after it raises until the next forward.
        """
        X = check_inputs("X", X, self.dtype, self.in_features)
        batch_size = check_positive_int("batch_size", batch_size)
        outputs = np.empty((len(X), self.out_features), self.dtype)
        for i in range(0, len(X), batch_size):
            outputs[i:i + batch_size] = self.forward_unchecked(X[i:i + batch_size])
        self._cache_from_forward = False
        return outputs

    def _probability_loss(self, loss):
        """The classification loss the outputs are read with: ``loss``, or by default
        cross_entropy (softmax) for C >= 2 outputs and binary_cross_entropy (sigmoid) for one."""
        if loss is None:
            return "cross_entropy" if self.out_features >= 2 else "binary_cross_entropy"
        loss = resolve_loss(loss)
        if loss == "mse":
            raise ValueError("a model trained with mse outputs values, not probabilities or classes: "
                             "use model.predict(X)")
        if loss == "cross_entropy" and self.out_features < 2:
            raise ValueError("cross_entropy needs at least 2 outputs; this model has 1: use "
                             "loss='binary_cross_entropy'")
        return loss

    def predict_proba(self, X, loss=None, batch_size=4096):
        """Probabilities (N, C) for X: softmax of the logits for a cross_entropy model (rows sum
        to 1), the sigmoid of each output for binary_cross_entropy. ``loss`` defaults to
        cross_entropy for C >= 2 outputs, binary_cross_entropy for one; mse raises ValueError."""
        loss = self._probability_loss(loss)
        logits = self.predict(X, batch_size)
        if loss == "cross_entropy":
            return _log_softmax_parts(logits)[2]               # the losses' stable softmax
        return stable_sigmoid(logits, out=logits)

    def predict_classes(self, X, loss=None, batch_size=4096):
        """Predicted classes: (N,) argmax of the logits for cross_entropy; for
        binary_cross_entropy sigmoid > 1/2, i.e. logit > 0, as 0/1: (N,) for one output, else
        (N, C) (one decision per output). ``loss`` as in predict_proba."""
        loss = self._probability_loss(loss)
        logits = self.predict(X, batch_size)
        if loss == "cross_entropy":
            return logits.argmax(axis=1)
        decisions = (logits > 0).astype(np.int64)
        return decisions[:, 0] if self.out_features == 1 else decisions

    def save(self, path, standardization=None):
        """Write architecture, parameters and frozen flags (and, if given, the (mean, std) the
        inputs were standardised with) to one .npz, atomically; ``minidl.load(path)`` reads it.
        The format is minidl/modelfile.py's."""
        from .modelfile import save_model                  # modelfile imports this module
        save_model(self, path, standardization)

    def summary(self):
        """A table of the layers (output shape, parameters, trainable) and the totals, in the
        spirit of Keras's model.summary(); ``print(model.summary())``."""
        rows = [("Layer", "Output shape", "Params", "Trainable")]
        frozen = width = 0
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                count, width = layer.W.size + layer.b.size, layer.out_features   # activations keep width
                frozen += 0 if layer.trainable else count
                cells = (f"Dense({layer.in_features} -> {width})", f"{count:,}", "yes" if layer.trainable else "no")
            else:
                cells = (type(layer).__name__, "0", "-")
            rows.append((f"{index} {cells[0]}", f"(None, {width})", *cells[1:]))
        widths = [max(len(row[column]) for row in rows) for column in range(4)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        rule = "=" * max(map(len, lines))
        return "\n".join([f"Model: {self!r}", lines[0], rule, *lines[1:], rule,
                          f"Total params: {self.num_parameters:,}",
                          f"Trainable params: {self.num_parameters - frozen:,}",
                          f"Non-trainable params: {frozen:,}"])

    def __reduce__(self):
        """Pickled as architecture, parameters and frozen flags (the layers' views into the flat
        buffers are rebuilt), so that a model can travel between ranks (broadcast_object)."""
        return _rebuild, (self.config(), self.params, self.trainable)

    def __repr__(self):
        return (f"MLP(sizes={list(self.sizes)}, activation={list(self.activations)}, "
                f"dtype={self.dtype.name!r}, num_parameters={self.num_parameters})")


def _rebuild(config, params, trainable):
    """The model MLP.__reduce__ describes."""
    model = MLP(**config)
    model.params[...] = params
    model.trainable = trainable
    return model


def __getattr__(name):
    """minidl.model.loss_and_grads, from before it moved to minidl/gradcheck.py."""
    if name == "loss_and_grads":
        from .gradcheck import loss_and_grads
        return loss_and_grads
    raise AttributeError(f"module 'minidl.model' has no attribute {name!r}")
