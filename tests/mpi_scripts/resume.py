"""Run under mpiexec by test_mpi.py: a checkpoint written by N ranks resumed by M ranks.

    mpiexec -n 2 python resume.py save CHECKPOINT
    mpiexec -n 3 python resume.py resume CHECKPOINT OUT.json

"save" trains 2 of 4 epochs; "resume" finishes them, and rank 0 writes the largest relative
errors against one uninterrupted process (parameters, validation losses of every epoch).
"""
import json
import sys
import warnings

from common import make_data, max_relative_error, train
from minidl.comm import default_comm

comm = default_comm()
X, y = make_data(31)
kwargs = dict(batch_size=5, validation_data=make_data(9, seed=8))
phase, path = sys.argv[1], sys.argv[2]
if phase == "save":
    train(comm, X, y, epochs=2, checkpoint=path, **kwargs)
else:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, history = train(comm, X, y, epochs=4, checkpoint=path, resume=True, **kwargs)
    serial, expected = train(None, X, y, epochs=4, **kwargs)
    result = {"ranks": comm.size, "epochs": len(history), "params": max_relative_error(model, serial),
              "val_loss": max(abs(a - b) / abs(b) for a, b in zip(history["val_loss"], expected["val_loss"])),
              "warnings": [str(warning.message) for warning in caught]}
    if comm.rank == 0:
        with open(sys.argv[3], "w") as handle:
            json.dump(result, handle)
