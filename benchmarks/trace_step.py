"""How much library code one steady-state training step passes through (a reader's cost).

Trains a small MLP with ``minidl.fit`` (SGD with momentum, cross-entropy, validation and
EarlyStopping, as ``minidl train`` does) and, with ``sys.setprofile``, records every Python
function of the minidl package that runs between the end of one steady-state step and the end
of the next: the loop, the step, the layers, the loss, the optimizer, the callbacks' hooks.

    python benchmarks/trace_step.py            # files and functions, one per line
    python benchmarks/trace_step.py --json     # {"files": N, "functions": M, "calls": {...}}
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # measure this checkout
import minidl                                                      # noqa: E402

PACKAGE = Path(minidl.__file__).resolve().parent


class StepTracer:
    """Callback: profile the Python calls from the end of step ``start`` to the end of the next."""

    def __init__(self, start):
        self.start, self.calls = start, {}

    def profile(self, frame, event, arg):
        if event == "call":
            path = Path(frame.f_code.co_filename).resolve()
            if path.parent == PACKAGE:
                key = f"{path.name}:{frame.f_code.co_qualname}"
                self.calls[key] = self.calls.get(key, 0) + 1

    def on_step_end(self, run):
        if run.step == self.start:
            sys.setprofile(self.profile)
        elif run.step == self.start + 1:
            sys.setprofile(None)


def trace_one_step():
    """{"file.py:function": calls} of one steady-state step (the 5th of 2 epochs of 4 steps)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 8)), rng.integers(0, 3, 40)
    model = minidl.MLP([8, 16, 3], seed=0)
    tracer = StepTracer(start=5)
    try:
        minidl.fit(model, "cross_entropy", minidl.SGD(model, lr=0.05, momentum=0.9), X, y, epochs=2,
                   batch_size=8, validation_split=0.2, comm=None,
                   callbacks=[minidl.EarlyStopping(patience=5, restore_best_weights=True), tracer])
    finally:
        sys.setprofile(None)
    return tracer.calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    calls = trace_one_step()
    files = sorted({key.split(":")[0] for key in calls})
    if args.json:
        print(json.dumps({"files": len(files), "functions": len(calls), "calls": calls}))
        return
    for key in sorted(calls):
        print(f"{calls[key]:4d}  {key}")
    print(f"one steady-state step: {len(calls)} library functions in {len(files)} files ({', '.join(files)})")


if __name__ == "__main__":
    main()
