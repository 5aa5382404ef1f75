"""Fine-tuning: start from a trained model, give it a new output layer, freeze its body.

    model = minidl.load("runs/pretrained")              # or a checkpoint, final.npz, model file
    model = replace_head(model, n_outputs=2, seed=0)    # new, freshly initialised last layer
    model.freeze(0)                                      # Dense layer 0 gets no updates
    fit(model, ...)                                      # e.g. with EarlyStopping
"""


def replace_head(model, n_outputs, seed=0):
    """A copy of ``model`` whose last Dense layer is new, with ``n_outputs`` outputs.

    Every other layer keeps its weights and its frozen/trainable flag; the new head is drawn
    from ``seed`` with the model's init scheme and is trainable.
    """
    return model.copy(n_outputs=n_outputs, seed=seed)
