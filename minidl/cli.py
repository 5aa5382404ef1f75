"""The `minidl` command line: train | evaluate | predict | plot | gradcheck | golden.

Here: the parsers, `train` and `main`; the other commands are minidl.commands', the exit
codes and the one-line messages minidl.errors'.

Every training option is a flag and a key of a TOML config file (--config; flags override
the file, the file overrides the defaults); the options, their layering and what they build
are minidl.config's. Every failure ends with one line on stderr, never a traceback; the exit
codes (EXIT_CODES, also in `minidl --help`) say which kind it was.
"""
import argparse
import math
import os
import sys
import textwrap

from . import rundir
from .comm import resolve_comm
from .config import (SECTIONS, RunFiles, UsageError, build_callbacks, build_dataset, build_model,
                     build_optimizer, check_options_not_in_use, check_resume_config, merge_config,
                     prepare_output, resolve_config)
from .config import DEFAULT_LR, OPTIONS, RESUME_MAY_CHANGE, TRAIN_OPTIONS, Option  # noqa: F401  (scripts import them from here)
from .data import DATASETS
from .commands import cmd_evaluate, cmd_golden, cmd_gradcheck, cmd_plot, cmd_predict
from .errors import EXIT_CODES, EXIT_INTERRUPTED, EXIT_USAGE, REPORTED, exit_code_and_line
from .loop import evaluate, fit
from .losses import LOSSES
from .modelfile import load as load_model
from .mpi import launched_by_mpi, launcher_rank, set_blas_threads
from .optim import OPTIMIZERS
from .parallel import CollectiveError, FailureInjection, collectively, from_rank_zero_if_missing, on_rank_zero
from .preflight import check_free_space


def _add_train_flags(parser):
    """One flag per training option, grouped by section in --help; each defaults to None, so
    that only what was given overrides."""
    for title, options in SECTIONS.items():
        group = parser.add_argument_group(title)
        for option in options:
            flag = "--" + option.key.replace("_", "-")
            default_text = "" if option.default is None else f" (default: {option.default})"
            if option.choices:
                default_text = f"; one of: {', '.join(option.choices)}" + default_text
            if option.kind is bool:
                group.add_argument(flag, dest=option.key, action=argparse.BooleanOptionalAction,
                                   default=None, help=option.help + default_text)
            else:
                kind = option.kind if option.kind in (int, float, str) else str
                group.add_argument(flag, dest=option.key, type=kind, default=None, metavar=option.key.upper(),
                                   help=option.help + default_text)


def build_parser():
    from . import __version__
    exit_codes = "\n".join(textwrap.fill(meaning, 90, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
                           for code, meaning in EXIT_CODES.items())
    parser = _Parser(prog="minidl", description="Train and check multilayer perceptrons, in NumPy.",
                     epilog=f"exit codes:\n{exit_codes}", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"minidl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train with early stopping and write a run directory",
                                description="Train an MLP (default: digits, 64-128-10, SGD, early stopping "
                                            "on val_loss with patience 10, best weights restored). "
                                            "The summary line printed at the end counts epochs from 1, "
                                            "as the progress bar does (summary.json and history.json "
                                            "keep 0-based epoch indices).")
    train.add_argument("--config", help="TOML file of options (keys as the flags, with underscores)")
    train.add_argument("--output", help="run directory (default: runs/<timestamp>)")
    resume_or_overwrite = train.add_mutually_exclusive_group()
    resume_or_overwrite.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    resume_or_overwrite.add_argument("--overwrite", action="store_true",
                                     help="replace minidl's files in a non-empty --output")
    train.add_argument("--quiet", action="store_true", help="no progress bar, only the summary line")
    train.add_argument("--verbose", action="store_true", help="one line per check")
    train.add_argument("--no-plot", dest="plot", action="store_false", help="do not write curves.png")
    _add_train_flags(train)

    evaluate_cmd = commands.add_parser("evaluate", help="evaluate a trained model on a dataset split")
    evaluate_cmd.add_argument("model", help="run directory, final.npz or checkpoint")
    evaluate_cmd.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate_cmd.add_argument("--dataset", choices=DATASETS, help="default: the run's dataset")
    evaluate_cmd.add_argument("--data-dir")
    evaluate_cmd.add_argument("--json", action="store_true", help="print one JSON object")

    predict = commands.add_parser("predict", help="predict with a trained model on new inputs",
                                  description="Classes (or, with --proba, probabilities) for the rows of "
                                              "--input, standardised as the run's training data were.")
    predict.add_argument("model", help="run directory, final.npz, checkpoint or a model.save file")
    predict.add_argument("--input", required=True, help=".npy, .npz (one array, or X) or numeric .csv")
    predict.add_argument("--output", help=".npy or .csv (default: one prediction per line on stdout)")
    predict.add_argument("--proba", action="store_true", help="probabilities instead of classes")

    plot = commands.add_parser("plot", help="plot a history file (json or csv) to PNG")
    plot.add_argument("history", help="history.json, history.csv or a run directory")
    plot.add_argument("-o", "--output", help="PNG path (default: curves.png beside the history, "
                      "only if there is none)")
    plot.add_argument("--overwrite", action="store_true", help="replace an existing PNG (e.g. the run's curves.png)")

    gradcheck = commands.add_parser("gradcheck", help="finite-difference gradient check of an architecture")
    gradcheck.add_argument("--sizes", default="4,8,3", help="layer widths incl. input and output")
    gradcheck.add_argument("--activation", default="tanh")
    gradcheck.add_argument("--loss", default="cross_entropy", choices=tuple(LOSSES))
    gradcheck.add_argument("--batch-size", type=int, default=5)
    gradcheck.add_argument("--seed", type=int, default=0)
    gradcheck.add_argument("--eps", type=float, default=1e-5)
    gradcheck.add_argument("--tolerance", type=float, default=1e-6)

    golden = commands.add_parser("golden", help="write or check a golden file (see docs/oracle.md)")
    golden_commands = golden.add_subparsers(dest="golden_command", metavar="write|check")
    golden_commands.required = True
    write = golden_commands.add_parser("write", help="write minidl's float64 answer for a seeded model and batch")
    write.add_argument("path")
    write.add_argument("--sizes", default="4,8,3", help="layer widths incl. input and output")
    write.add_argument("--activation", default="relu", help="one activation, or one per hidden layer")
    write.add_argument("--negative-slope", default="0.01", help="LeakyReLU slope, or one per hidden layer")
    write.add_argument("--loss", default="cross_entropy", choices=tuple(LOSSES))
    write.add_argument("--seed", type=int, default=0)
    write.add_argument("--batch-size", type=int, default=8)
    write.add_argument("--trajectory-steps", type=int, default=0)
    write.add_argument("--optimizer", choices=tuple(OPTIMIZERS))
    write.add_argument("--optimizer-args", help='JSON keyword arguments, e.g. \'{"lr": 0.01}\'')
    check = golden_commands.add_parser("check", help="recompute a golden file with this minidl (exit 1 on mismatch)")
    check.add_argument("path")
    check.add_argument("--rtol", type=float)
    return parser


# --------------------------------------------------------------------------- train
def _read_run_directory(args):
    """(output, its saved config.toml or None, whether to resume): rank 0's look at the run
    directory, which the other ranks need not see."""
    output = prepare_output(args)
    config_path = os.path.join(output, rundir.CONFIG)
    saved = rundir.read_toml(config_path) if args.resume and os.path.exists(config_path) else None
    return output, saved, args.resume and os.path.exists(os.path.join(output, rundir.CHECKPOINT))


def _checked_config(args, comm, saved):
    """The resolved configuration, checked; applies --collective-timeout and --threads."""
    config = resolve_config(args, saved)
    if saved is not None:
        check_resume_config(config, merge_config(("the run's config.toml", saved)))
    if (config["fail_on_rank"] is None) != (config["fail_at_step"] is None):
        raise UsageError("--fail-on-rank and --fail-at-step go together (a testing aid: raise on rank R at step S)")
    if config["collective_timeout"] is not None:
        if config["collective_timeout"] <= 0:
            raise UsageError(f"--collective-timeout must be a positive number of seconds, got "
                             f"{config['collective_timeout']}")
        comm.collective_timeout = config["collective_timeout"]
    if config["threads"] != "auto":                     # auto needs the model: _build times it
        try:
            set_blas_threads(config["threads"], comm)
        except ImportError as error:
            raise UsageError(f"--threads: {error}") from None
    return config


def _build(args, comm, config, dataset, initial, output):
    """The model (from ``initial``, the --init-from model, if any), optimizer and callbacks."""
    config["loss"] = config["loss"] or dataset.loss
    if config["loss"] == "cross_entropy" and dataset.n_outputs < 2:
        raise UsageError(f"cross_entropy needs at least 2 outputs (one per class); {dataset.name} has "
                         f"{dataset.n_outputs}: use --loss binary_cross_entropy")
    model = build_model(config, dataset, initial)
    if comm.rank == 0:
        check_free_space(output, model)
    if config["threads"] == "auto":                     # the count chosen goes to config.toml
        from .threads import auto_threads, describe
        config["threads"], seconds = auto_threads(model, config["batch_size"], comm)
        if args.verbose and comm.rank == 0:
            print(f"minidl: {describe(config['threads'], seconds)}", flush=True)
    optimizer = build_optimizer(config, model)
    from .progress import ProgressBar
    progress = ProgressBar(math.ceil(len(dataset.X_train) / config["batch_size"]), config["epochs"],
                           enabled=comm.rank == 0 and not args.quiet, verbose=args.verbose)
    callbacks = build_callbacks(config, optimizer) + [progress, RunFiles(output, config, dataset.info)]
    check_options_not_in_use(config)
    if config["fail_on_rank"] is not None:
        callbacks.append(FailureInjection(config["fail_on_rank"], config["fail_at_step"]))
    return model, optimizer, callbacks


def _set_up_training(args, comm):
    """Everything before fit: output directory, configuration, data, model, optimizer, callbacks.

    Every step is collective, so a bad argument fails on all ranks alike. Rank 0 alone reads
    the run directory and the --init-from model and broadcasts what it read; a rank that
    cannot read the data itself gets them from rank 0: no shared filesystem is needed.
    """
    output, saved, resume = on_rank_zero(comm, lambda: _read_run_directory(args), "run_directory")
    config = collectively(comm, lambda: _checked_config(args, comm, saved))
    dataset = from_rank_zero_if_missing(comm, lambda: build_dataset(config), "dataset")
    initial = on_rank_zero(comm, lambda: config["init_from"] and load_model(config["init_from"]),
                           "init_from")
    model, optimizer, callbacks = collectively(comm, lambda: _build(args, comm, config, dataset, initial, output))
    return output, resume, config, dataset, model, optimizer, callbacks


def cmd_train(args):
    """Train, write the run directory, print the summary line; 130 when interrupted (state saved)."""
    comm = resolve_comm("auto")
    output, resume, config, dataset, model, optimizer, callbacks = _set_up_training(args, comm)
    checkpoint = os.path.join(output, rundir.CHECKPOINT)
    try:
        history = fit(model, config["loss"], optimizer, dataset.X_train, dataset.y_train,
                      epochs=config["epochs"], batch_size=config["batch_size"],
                      validation_data=(dataset.X_val, dataset.y_val), callbacks=callbacks,
                      seed=config["seed"], check_every_steps=config["check_every_steps"], comm=comm,
                      sync=config["sync"], sync_every=config["sync_every"],
                      check_replicas=config["check_replicas"], checkpoint=checkpoint, resume=resume,
                      verbose=0)                      # the ProgressBar of --quiet / --verbose is in callbacks
        test = evaluate(model, dataset.X_test, dataset.y_test, config["loss"], comm=comm)
        summary = dict(history.summary(), monitor=config["monitor"] if config["early_stopping"] else None,
                       best_value=_best_value(history, config), test_loss=test["loss"],
                       dataset=dataset.name, output=output)
        if "accuracy" in test:
            summary["test_accuracy"] = test["accuracy"]
        if comm.rank == 0:
            _write_outputs(output, model, history, summary, args.plot)
            print(_summary_line(summary, config), flush=True)
    except OSError as error:                          # e.g. the disk filled up mid-run
        error.__notes__ = [*getattr(error, "__notes__", []), _what_survives(output, checkpoint)]   # add_note, 3.10 too
        raise
    if history.stop_reason == "interrupted":
        if comm.rank == 0:                                    # said once, as errors are
            print(f"minidl: interrupted; the state is saved. Continue with: minidl train --output "
                  f"{output} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _what_survives(output, checkpoint):
    """What a run that failed to write still has, and how to go on."""
    if os.path.exists(checkpoint):
        return (f"the last good checkpoint {checkpoint} is intact: free space (or fix the folder), "
                f"then continue with: minidl train --output {output} --resume")
    return "no checkpoint was written yet: fix the cause and start again with --overwrite"


def _best_value(history, config):
    if history.best_check is None or not config["early_stopping"]:
        return None
    return history.records[history.best_check].get(config["monitor"])


def _write_outputs(output, model, history, summary, plot):
    history.to_json(os.path.join(output, rundir.HISTORY_JSON))
    history.to_csv(os.path.join(output, rundir.HISTORY_CSV))
    rundir.write_params(os.path.join(output, rundir.FINAL), model)
    rundir.write_json(os.path.join(output, rundir.SUMMARY), summary)
    if plot and history.records:
        from .plot import plot_history
        try:
            plot_history(history.records, os.path.join(output, rundir.CURVES), history.best_epoch,
                         history.stopped_epoch, steps_per_epoch=history.steps_per_epoch,
                         name=os.path.basename(os.path.abspath(output)), stop_reason=history.stop_reason,
                         best_check=history.best_check, stopped_check=history.stopped_check)
        except ValueError as error:          # matplotlib missing: the run itself is fine
            print(f"minidl: note: no curves.png ({error})", file=sys.stderr)


def _summary_line(summary, config):
    """The one line `minidl train` ends with; its epochs count from 1 (summary.json's from 0)."""
    epoch = summary["epochs_run"]                     # a partial epoch counts: the 1-based epoch it stopped in
    where = f"at epoch {epoch}" if epoch else "before epoch 1"
    parts = [f"stopped: {summary['stop_reason']} {where} of {config['epochs']}"]
    if summary["best_epoch"] is not None:
        parts.append(f"best {config['monitor']} {summary['best_value']:.4g} at epoch {summary['best_epoch'] + 1}")
    if summary["restored_from"] is not None:
        parts.append(f"restored weights from epoch {summary['restored_from'] + 1}")
    test = f"test loss {summary['test_loss']:.4f}"
    if "test_accuracy" in summary:
        test += f", accuracy {summary['test_accuracy']:.4f}"
    parts.append(test)
    if summary["samples_per_second"]:
        parts.append(f"{summary['samples_per_second']:,.0f} samples/s")
    parts.append(f"run directory {summary['output']}")
    return "minidl: " + " | ".join(parts)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "plot": cmd_plot, "gradcheck": cmd_gradcheck,
            "golden": cmd_golden}


class _Parser(argparse.ArgumentParser):
    """argparse that, under mpiexec, prints usage errors on rank 0 only (all ranks exit 2)."""

    def error(self, message):
        """Two lines, not argparse's usage block (train's is 38 lines): the error and where to look."""
        if launcher_rank() == 0:
            self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")
        self.exit(EXIT_USAGE)


def main(argv=None):
    """Run a command; every failure becomes one line on stderr and an exit code of EXIT_CODES
    (minidl.errors says which). Under mpiexec an error that every rank raised together (start-up validation is collective)
    is printed once, by rank 0; any other error propagates, so the abort hook ends the whole
    job with its traceback instead of leaving the other ranks waiting. Set MINIDL_DEBUG=1 to
    see the traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except REPORTED as error:
        distributed = launched_by_mpi() is not None
        if os.environ.get("MINIDL_DEBUG") or (distributed and not isinstance(error, CollectiveError)):
            raise
        code, line = exit_code_and_line(error)
        if launcher_rank() == 0:
            print(f"minidl: error: {line}", file=sys.stderr)
        return code


def entry_point():
    sys.exit(main())
