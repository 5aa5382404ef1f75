"""Run under mpiexec by test_mpi.py: rank 1 freezes (SIGSTOP) or dies (SIGKILL) after step 3.

    mpiexec -n N python faults.py freeze|kill

The other ranks then wait in the next collective for a rank that never comes; with
MINIDL_COLLECTIVE_TIMEOUT set low, the watchdog must end the job.
"""
import os
import signal
import sys

from common import make_data, train
from minidl.comm import default_comm

SIGNALS = {"freeze": signal.SIGSTOP, "kill": signal.SIGKILL}


class Fault:
    """Callback: send this process the fault's signal on rank 1 after step 3."""

    def on_step_end(self, run):
        if run.comm.rank == 1 and run.step == 3:
            os.kill(os.getpid(), SIGNALS[sys.argv[1]])


X, y = make_data(400)
train(default_comm(), X, y, epochs=50, batch_size=4, callbacks=[Fault()])
