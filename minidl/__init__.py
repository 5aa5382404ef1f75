"""minidl: a from-scratch, pure-NumPy reference library for training multilayer perceptrons.

Notation used in every docstring (see docs/conventions.md):

    N batch, D inputs, H hidden units, C classes/outputs
    dfoo means dL/dfoo and always has the shape of foo
    forward(x) caches exactly what backward needs; backward(dy) returns dx and
    OVERWRITES its parameter gradients (an MLP shares no weights, so nothing accumulates)
"""
from .gradcheck import check_gradients, check_layer, loss_and_grads, relative_error
from .layers import Dense, Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from .losses import binary_cross_entropy, mse, softmax_cross_entropy
from .model import MLP
from .monitor import EarlyStopping, ReduceLROnPlateau
from .optim import SGD, Adam
from .schedules import CosineAnnealingLR, ExponentialLR, LinearLR, SequentialLR, StepLR
from .checkpoint import History
from .loop import evaluate, fit
from .callbacks import Callback, LambdaCallback, ModelCheckpoint
from .modelfile import load

__version__ = "0.1.0"

__all__ = [
    "MLP", "loss_and_grads", "Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Identity",
    "mse", "softmax_cross_entropy", "binary_cross_entropy", "SGD", "Adam",
    "check_gradients", "check_layer", "relative_error", "EarlyStopping", "ReduceLROnPlateau",
    "fit", "evaluate", "History",
    "Callback", "LambdaCallback", "ModelCheckpoint", "load",
]
