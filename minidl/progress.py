"""Progress reporting as a callback: a tqdm bar per epoch and, optionally, a line per check.

fit(verbose=...) adds one itself (see ``for_verbose``); `minidl train` builds its own from
--quiet / --verbose.
"""
import numbers
import sys


class ProgressBar:
    """A bar over the steps of each epoch (only on a TTY), a line per check when ``verbose``.

    Reports only on rank 0; other ranks pass ``enabled=False``. ``steps_per_epoch`` None:
    the trainer's (run.batches_per_epoch). ``bar=False``: never a bar, even on a TTY.
    """

    def __init__(self, steps_per_epoch, epochs, enabled=True, verbose=False, stream=None, bar=True):
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.stream = stream or sys.stderr
        self.enabled = enabled = enabled and self.stream is not None     # no sys.stderr (pythonw): silent
        self.show_bar = enabled and bar and self.stream.isatty()
        self.verbose = enabled and verbose
        self._bar = None

    @classmethod
    def for_verbose(cls, verbose, epochs, rank, stream=None):
        """The ProgressBar of fit's ``verbose``; None for 0 / False.

        "auto": a bar when ``stream`` (default sys.stderr) is a TTY, else nothing.
        True / 1: a bar on a TTY, else one line per check (never silent on rank 0).
        2: one line per check, no bar (as Keras's verbose=2).  False / 0: nothing.
        Ranks other than 0 get a disabled one (every rank runs the same callbacks).
        """
        if isinstance(verbose, bool):
            verbose = int(verbose)
        if not (verbose == "auto" if isinstance(verbose, str) else
                isinstance(verbose, numbers.Integral) and verbose in (0, 1, 2)):
            raise ValueError(f"verbose must be 'auto', True/1, False/0 or 2, got {verbose!r}")
        if verbose == 0:
            return None
        stream = stream or sys.stderr
        tty = stream is not None and stream.isatty()
        enabled = rank == 0 and (tty or verbose != "auto")
        return cls(None, epochs, enabled=enabled, verbose=verbose == 2 or (verbose == 1 and not tty),
                   stream=stream, bar=verbose != 2)

    def _open(self, run):
        from tqdm import tqdm
        total = self.steps_per_epoch or run.batches_per_epoch
        # called after the step: run.batch already counts it, so the bar starts one before
        # (also when a resumed run starts mid-epoch) and the update below brings it to run.batch
        self._bar = tqdm(total=total, initial=run.batch - 1, leave=False, file=self.stream,
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
            self._bar.refresh()              # the last count (N/N at an epoch's end) before it clears
            self._bar.close()
            self._bar = None
