"""Run under mpiexec by test_mpi.py: rank 1 raises after step 3; the job must end promptly.

    mpiexec -n N python failure.py

Launched as a plain script (not ``python -m mpi4py``): the abort-on-exception hook that
MPIComm installs is what stops the ranks still waiting in their next allreduce.
"""
from common import make_data, train
from minidl.comm import default_comm
from minidl.parallel import FailureInjection

X, y = make_data(400)
train(default_comm(), X, y, epochs=50, batch_size=4, callbacks=[FailureInjection(rank=1, step=3)])
