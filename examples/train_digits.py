"""Train a 64-64-10 MLP on scikit-learn's 8x8 handwritten digits with plain minidl pieces.

This is the whole training loop written out: shuffle, batch, forward, loss, backward, step,
and a held-out test accuracy at the end. Run: python examples/train_digits.py
"""
import numpy as np

import minidl
from minidl.losses import softmax_cross_entropy

try:
    from sklearn.datasets import load_digits
except ImportError:
    raise SystemExit("the digits dataset needs scikit-learn: pip install -e '.[data]'")

digits = load_digits()
X, y = digits.data, digits.target                        # (1797, 64), (1797,)
order = np.random.default_rng(0).permutation(len(X))
train, test = order[:1400], order[1400:]
mean, std = X[train].mean(axis=0), X[train].std(axis=0) + 1e-8   # fitted on training rows only
X = (X - mean) / std

model = minidl.MLP([64, 64, 10], activation="relu", seed=0)
optimizer = minidl.SGD(model, lr=0.05, momentum=0.9)
batch_size = 32
for epoch in range(30):
    perm = np.random.default_rng([0, epoch]).permutation(train)
    total = 0.0
    for start in range(0, len(perm), batch_size):
        rows = perm[start:start + batch_size]
        logits = model.forward(X[rows])                  # (B, 10)
        loss, dlogits = softmax_cross_entropy(logits, y[rows])
        model.backward(dlogits)                          # overwrites model.grads
        optimizer.step()
        total += loss * len(rows)
    if epoch % 5 == 4:
        print(f"epoch {epoch + 1:2d}  train loss {total / len(train):.4f}")

accuracy = np.mean(model.predict(X[test]).argmax(axis=1) == y[test])
print(f"test accuracy {accuracy:.4f} on {len(test)} held-out digits")
