"""Run under mpiexec by test_mpi.py: start-up errors are collective.

    mpiexec -n N python startup_errors.py OUT_DIR

Rank r writes OUT_DIR/rank{r}.json with the error it caught for (a) a configuration that
differs on the last rank and (b) a NaN in the last rank's data. Then every rank makes the
same mistake without catching it: the job must exit non-zero with the message printed once.
"""
import json
import sys

import numpy as np

from common import make_data, train
from minidl.comm import default_comm
from minidl.parallel import CollectiveError


def caught(fn):
    """[ordinary type name, message] of the collective error fn raises (None if none)."""
    try:
        fn()
    except CollectiveError as error:
        return [type(error).__bases__[0].__name__, str(error)]
    return None


comm = default_comm()
last = comm.rank == comm.size - 1
X, y = make_data(30)
X_bad = X.copy()
X_bad[4, 2] = np.nan
report = {
    "mismatch": caught(lambda: train(comm, X, y, epochs=2, batch_size=8 if last else 4)),
    "bad_input": caught(lambda: train(comm, X_bad if last else X, y, epochs=1, batch_size=4)),
}
with open(f"{sys.argv[1]}/rank{comm.rank}.json", "w") as handle:
    json.dump(report, handle)
train(comm, X, y, epochs=1, batch_size=0)               # every rank: batch_size must be >= 1
