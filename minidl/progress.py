"""Progress reporting as a callback: a tqdm bar per epoch and, optionally, a line per check."""
import sys


class ProgressBar:
    """A bar over the steps of each epoch (only on a TTY), a line per check when ``verbose``.

    Reports only on rank 0; other ranks pass ``enabled=False``.
    """

    def __init__(self, steps_per_epoch, epochs, enabled=True, verbose=False, stream=None):
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.show_bar = enabled and self.stream.isatty()
        self.verbose = enabled and verbose
        self._bar = None

    def _open(self, run):
        from tqdm import tqdm
        self._bar = tqdm(total=self.steps_per_epoch, initial=run.batch, leave=False, file=self.stream,
                         desc=f"epoch {run.epoch + 1}/{self.epochs}", unit="step", dynamic_ncols=True)

    def on_step_end(self, run):
        if not self.show_bar:
            return
        if self._bar is None:
            self._open(run)
        self._bar.update(1)

    def on_check(self, run):
        if self.verbose:
            text = "  ".join(f"{key} {value:.4g}" for key, value in run.metrics.items())
            line = f"epoch {run.epoch + 1:3d}  step {run.step:6d}  {text}"
            if self._bar is not None:
                self._bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)

    def on_epoch_end(self, run):
        self._close()

    def on_train_end(self, run):
        self._close()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
