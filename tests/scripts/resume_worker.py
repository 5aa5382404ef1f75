"""A fixed training run with a checkpoint, for test_train.py's SIGKILL-and-resume test.

    python resume_worker.py CHECKPOINT OUT.npy [--resume] [--sleep SECONDS]

Trains blobs on a 2-16-3 MLP (SGD with momentum, EarlyStopping and ReduceLROnPlateau, a
check every 5 steps, so checkpoints fall mid-epoch) and saves the final parameters to OUT.npy.
``--sleep`` pauses after every check (it does not change the numbers), so a test can kill the
process part-way. The test imports ``train`` to make the uninterrupted reference in-process.
"""
import argparse
import sys
import time

import numpy as np

from minidl import MLP, SGD
from minidl.data import make_blobs
from minidl.monitor import EarlyStopping, ReduceLROnPlateau
from minidl import fit

EPOCHS, BATCH, CHECK_EVERY = 8, 10, 5


class Sleep:
    def __init__(self, seconds):
        self.seconds = seconds

    def on_check(self, run):
        time.sleep(self.seconds)


def train(checkpoint, resume=False, sleep=0.0):
    X, y = make_blobs(150, classes=3, spread=2.0, seed=3)
    model = MLP([2, 16, 3], seed=1)
    optimizer = SGD(model, lr=0.05, momentum=0.9)
    callbacks = [EarlyStopping(monitor="val_loss", patience=1000, restore_best_weights=True),
                 ReduceLROnPlateau(monitor="val_loss", patience=3, factor=0.5), Sleep(sleep)]
    history = fit(model, "cross_entropy", optimizer, X, y, epochs=EPOCHS, batch_size=BATCH,
                  validation_split=0.2, callbacks=callbacks, seed=7, check_every_steps=CHECK_EVERY,
                  checkpoint=checkpoint, resume=resume)
    return model, history


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    model, _ = train(args.checkpoint, args.resume, args.sleep)
    np.save(args.out, model.params)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
