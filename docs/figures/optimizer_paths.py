"""Figure for docs/optimizers.md: minidl's optimizers on an elongated quadratic bowl.

    python docs/figures/optimizer_paths.py [--output-dir DIR]      writes optimizer_paths.png

The point p = (W, b) is the flat parameter vector of MLP([1, 1]); its gradient is set by hand
to that of f(p) = (W**2 + 10 b**2) / 2, so each path shows the optimizer's update rule alone.
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minidl import MLP, SGD, Adam  # noqa: E402

CURVATURE = np.array([1.0, 10.0])
START = [-4.0, 1.5]
STEPS = 40
OPTIMIZERS = [
    ("SGD, lr 0.18", SGD, dict(lr=0.18)),
    ("momentum 0.9, lr 0.02", SGD, dict(lr=0.02, momentum=0.9)),
    ("Nesterov 0.9, lr 0.02", SGD, dict(lr=0.02, momentum=0.9, nesterov=True)),
    ("Adam, lr 0.3", Adam, dict(lr=0.3)),
]


def path(cls, options):
    model = MLP([1, 1])
    model.params[:] = START
    optimizer = cls(model, **options)
    points = [model.params.copy()]
    for _ in range(STEPS):
        model.grads[:] = CURVATURE * model.params          # the gradient of f at p
        optimizer.step()
        points.append(model.params.copy())
    return np.array(points)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    W, b = np.meshgrid(np.linspace(-4.5, 1.5, 200), np.linspace(-2.9, 2, 200))
    figure, axis = plt.subplots(figsize=(7, 4.2))
    axis.contour(W, b, (CURVATURE[0] * W ** 2 + CURVATURE[1] * b ** 2) / 2, levels=15, colors="0.85")
    for (label, cls, options), color in zip(OPTIMIZERS, ["tab:blue", "tab:orange", "tab:green", "tab:red"]):
        points = path(cls, options)
        axis.plot(points[:, 0], points[:, 1], "o-", ms=2.5, lw=1, color=color, label=label)
    axis.plot(*START, "ks", ms=5)
    axis.plot(0, 0, "k*", ms=9)
    axis.set_ylim(-2.9, 2.0)
    axis.set_xlabel("W")
    axis.set_ylabel("b")
    axis.set_title(f"{STEPS} steps on f = (W² + 10 b²) / 2 from {tuple(START)}")
    axis.legend(fontsize=8, loc="lower center", ncol=2)
    figure.tight_layout()
    output = os.path.join(args.output_dir, "optimizer_paths.png")
    figure.savefig(output, dpi=110)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
