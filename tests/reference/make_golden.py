"""Write tests/reference/golden_v1.npz, the golden file the test suite checks minidl against.

    python tests/reference/make_golden.py

A 3-5-4-3 network (tanh, then LeakyReLU with slope 0.2), softmax cross-entropy on a batch of
6, and 4 full-batch Adam steps. Load it with NumPy alone:
``np.load("golden_v1.npz", allow_pickle=False)``; ``print(str(file["readme"]))`` lists the
entries. Regenerate it only when the golden format changes (and say why in the commit).
"""
import pathlib

from minidl.golden import write_golden

ARGUMENTS = {"sizes": [3, 5, 4, 3], "activation": ["tanh", "leaky_relu"],
             "negative_slope": [0.01, 0.2], "loss": "cross_entropy", "seed": 0, "batch": 6,
             "trajectory_steps": 4, "optimizer": ("adam", {"lr": 0.01})}
PATH = pathlib.Path(__file__).with_name("golden_v1.npz")


def main(path=PATH):
    return write_golden(path, **ARGUMENTS)


if __name__ == "__main__":
    golden = main()
    print(f"wrote {PATH} (loss {golden.loss:.17g}, {golden.steps} {golden.optimizer['type']} steps)")
