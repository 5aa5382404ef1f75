"""Generate docs/figures/early_stopping_curves.png: an overfitting run, stopped early.

A wide network trained on 300 digits, 30% of whose labels were replaced by random ones,
memorises the noise: the training loss keeps falling while the validation loss turns up. EarlyStopping (patience 8) stops the run and puts back
the weights of the best check. Run: python docs/figures/early_stopping_curves.py
"""
import os

import numpy as np

import minidl
from minidl.data import load_dataset
from minidl.plot import plot_history

HERE = os.path.dirname(os.path.abspath(__file__))


def main(path=os.path.join(HERE, "early_stopping_curves.png")):
    data = load_dataset("digits", seed=0, val_fraction=0.5, test_fraction=0.3)
    rng = np.random.default_rng(0)
    X, y = data.X_train[:300], data.y_train[:300].copy()          # little data ...
    noisy = rng.random(len(y)) < 0.3
    y[noisy] = rng.integers(0, 10, noisy.sum())                    # ... with 30% wrong labels
    model = minidl.MLP([64, 256, 10], seed=0)
    monitor = minidl.EarlyStopping(monitor="val_loss", patience=8, restore_best_weights=True)
    history = minidl.fit(model, "cross_entropy", minidl.SGD(model, lr=0.005), X, y,
                         epochs=200, batch_size=16, validation_data=(data.X_val, data.y_val),
                         callbacks=[monitor], seed=0)
    plot_history(history.records, path, history.best_epoch, history.stopped_epoch,
                 name="EarlyStopping(patience=8), noisy labels", stop_reason=history.stop_reason)
    print(f"best: epoch {history.best_epoch + 1}, stopped at epoch {history.stopped_epoch + 1}, "
          f"weights restored from epoch {history.restored_from + 1} (counted from 1); wrote {path}")
    return history


if __name__ == "__main__":
    main()
