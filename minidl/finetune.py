"""Fine-tuning: start from a trained model, give it a new output layer, freeze its body.

    model = rundir.load_model("runs/pretrained")        # or a checkpoint / final.npz
    model = replace_head(model, n_outputs=2, seed=0)    # new, freshly initialised last layer
    model.freeze(0)                                      # Dense layer 0 gets no updates
    fit(model, ...)                                      # e.g. with EarlyStopping
"""
from .model import MLP
from .validation import check_positive_int


def replace_head(model, n_outputs, seed=0):
    """A copy of ``model`` whose last Dense layer is new, with ``n_outputs`` outputs.

    Every other layer keeps its weights and its frozen/trainable flag; the new head is drawn
    from ``seed`` with the model's init scheme and is trainable.
    """
    n_outputs = check_positive_int("n_outputs", n_outputs)
    config = dict(model.config(), sizes=list(model.sizes[:-1]) + [n_outputs], seed=seed)
    fresh = MLP(**config)
    body_end = model.layout()[-2][1]                 # where the last layer's weight starts
    fresh.params[:body_end] = model.params[:body_end]
    for old, new in zip(model.dense_layers[:-1], fresh.dense_layers[:-1]):
        new.trainable = old.trainable
    return fresh
