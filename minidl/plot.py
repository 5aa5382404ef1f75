"""Learning curves that answer questions.

One panel per question, sharing the epoch axis:

- loss: train and val loss (log axis when all positive), best and stop marked;
- accuracy: train and val accuracy, only when the history has accuracy;
- learning rate: a small panel on a log axis, only when the rate changes.

Legends sit to the right of the panels, outside the data. The title names the run and why it
stopped ("digits: stopped by patience at epoch 94") when those are known.

Epochs are counted from 1 here, as in the progress bar and the summary line `minidl train`
prints: x is the number of epochs trained, so the check at the end of the first epoch sits at 1.
history.json and summary.json keep 0-based indices (``best_epoch`` 83 is epoch 84 here).
"""
import json
import math
import os

from .files import atomic_write

LEGEND = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)
BEST = dict(color="tab:green", linestyle="--", linewidth=1.2)
STOP = dict(color="tab:red", linestyle=":", linewidth=1.5)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError('plotting needs matplotlib: pip install -e ".[plot]"') from None
    matplotlib.use("Agg")                       # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def _values(records, key):
    """The float values of ``key`` over ``records`` (nan where missing), or None when never present."""
    values = [record.get(key) for record in records]
    if all(value is None for value in values):
        return None
    return [math.nan if value is None else float(value) for value in values]


def _finite(values):
    return [value for value in values if math.isfinite(value)]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value):
    """A non-negative whole number (3 or 3.0: a CSV's numbers are floats)."""
    return _is_number(value) and math.isfinite(value) and value >= 0 and value == int(value)


def check_records(records):
    """Raise ValueError naming the first record that is not a History record: a mapping with a
    whole non-negative ``epoch`` (and ``step``, when present) and numbers or nulls elsewhere."""
    if not isinstance(records, list) or not records:
        raise ValueError("the history is empty (no records): nothing to plot")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"record {index} is not a mapping: {record!r:.60}")
        for key in ("epoch", "loss"):
            if key not in record:
                raise ValueError(f"record {index} has no {key!r}")
        for key, value in record.items():
            if not isinstance(key, str) or (value is not None and not _is_number(value)):
                raise ValueError(f"record {index}: {key!r:.40} = {value!r:.40} is not a number")
        for key in ("epoch", "step"):
            if (key == "epoch" or record.get(key) is not None) and not _is_count(record[key]):
                raise ValueError(f"record {index}: {key} = {record[key]!r} is not a whole number >= 0")


def check_facts(facts):
    """Raise ValueError unless the facts a history gives about its run have their types."""
    for key in ("best_epoch", "stopped_epoch", "best_check", "stopped_check", "steps_per_epoch"):
        if facts.get(key) is not None and not _is_count(facts[key]):
            raise ValueError(f"{key} = {facts[key]!r:.40} is not a whole number >= 0")
    if facts.get("stop_reason") is not None and not isinstance(facts["stop_reason"], str):
        raise ValueError(f"stop_reason = {facts['stop_reason']!r:.40} is not a string")


def read_run_history(path):
    """(records, facts) of a history.json or history.csv; facts are plot_history's keyword arguments.

    best/stop facts and the stop reason come from the history, else from the summary.json beside
    it; ``name`` is the folder's name (the run's). Raises ValueError when it is no history.
    """
    from .checkpoint import read_history_csv
    try:
        if path.endswith(".csv"):
            data = {"records": read_history_csv(path)}
        else:
            with open(path) as handle:
                data = json.load(handle)
    except (ValueError, KeyError, TypeError, AttributeError) as error:   # bad JSON, bad CSV numbers
        raise ValueError(str(error)) from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError("no list of 'records'")
    check_records(data["records"])
    folder = os.path.dirname(os.path.abspath(path))
    keys = ("best_epoch", "stopped_epoch", "best_check", "stopped_check", "steps_per_epoch", "stop_reason")
    facts = {key: data.get(key) for key in keys}
    summary_path = os.path.join(folder, "summary.json")
    if any(value is None for value in facts.values()) and os.path.exists(summary_path):
        try:
            with open(summary_path) as handle:
                summary = json.load(handle)
        except (OSError, ValueError):
            summary = None                       # the summary only adds facts; the plot works without
        if isinstance(summary, dict):
            facts = {key: summary.get(key) if value is None else value for key, value in facts.items()}
    check_facts(facts)
    facts["name"] = os.path.basename(folder)
    return data["records"], facts


def epoch_positions(records, steps_per_epoch=None):
    """x of each record: epochs trained, so the end of the e-th epoch (index e - 1) is at e, checks
    inside an epoch at fractions of it."""
    if not steps_per_epoch:
        steps_per_epoch = max((r["step"] / (r["epoch"] + 1) for r in records if r.get("step")), default=1)
    if not all(r.get("step") is not None for r in records):
        return [float(r["epoch"]) + 1 for r in records]
    return [r["step"] / steps_per_epoch for r in records]


def run_title(name=None, stop_reason=None, stopped_at=None):
    """The title "NAME: stopped by REASON at epoch N", with the parts that are known; None when none is."""
    stop = None
    if stop_reason:
        stop = f"stopped by {stop_reason}" + (f" at epoch {stopped_at}" if stopped_at is not None else "")
    parts = [part for part in (name, stop) if part]
    return ": ".join(parts) if parts else None


def plot_history(records, path, best_epoch=None, stopped_epoch=None, title=None, steps_per_epoch=None,
                 name=None, stop_reason=None, best_check=None, stopped_check=None):
    """Write a PNG of the history ``records`` (dicts with epoch, step, loss, val_loss?, accuracy?, lr?).

    x counts epochs from 1 (epochs trained: the check at the end of index e sits at e + 1, and
    the labels and title say epoch e + 1, as the summary line does; ``best_epoch`` and
    ``stopped_epoch`` are the 0-based indices of the History); checks inside an epoch sit at
    fractions of it (``steps_per_epoch``,
    from the History; estimated from the records when not given). ``best_check`` and
    ``stopped_check`` (indices into ``records``) place the best and stop lines exactly when
    checks are more frequent than epochs; otherwise the last check of ``best_epoch`` /
    ``stopped_epoch`` is used. Without ``title``, the title is built from ``name`` (the run)
    and ``stop_reason``. Returns the figure's axes (loss, [accuracy], [lr]) after saving.
    """
    check_records(records)
    check_facts(dict(best_epoch=best_epoch, stopped_epoch=stopped_epoch, best_check=best_check,
                     stopped_check=stopped_check, steps_per_epoch=steps_per_epoch, stop_reason=stop_reason))
    plt = _pyplot()
    x = epoch_positions(records, steps_per_epoch)
    by_epoch = {r["epoch"]: xi for r, xi in zip(records, x)}

    def position(check, epoch):
        if check is not None and 0 <= check < len(records):
            return x[check]
        return by_epoch.get(epoch) if epoch is not None else None

    best_x, stop_x = position(best_check, best_epoch), position(stopped_check, stopped_epoch)
    if title is None:
        last_epoch = records[-1]["epoch"]
        stopped_at = stopped_epoch if stopped_epoch is not None else (int(last_epoch) if stop_reason else None)
        stopped_at = None if stopped_at is None else int(stopped_at) + 1
        title = run_title(name, stop_reason, stopped_at)

    accuracy = {key: _values(records, key) for key in ("accuracy", "val_accuracy")}
    has_accuracy = any(values and _finite(values) for values in accuracy.values())
    lr = _values(records, "lr")
    lr_changes = lr is not None and len(set(value for value in _finite(lr) if value > 0)) > 1

    heights = [3.0] + ([2.0] if has_accuracy else []) + ([1.1] if lr_changes else [])
    figure, axes = plt.subplots(len(heights), 1, sharex=True, squeeze=False, layout="constrained",
                                figsize=(8.0, 1.0 + 1.15 * sum(heights)),
                                gridspec_kw={"height_ratios": heights})
    axes = list(axes[:, 0])
    loss_axis = axes[0]

    several = len(by_epoch) < len(records)      # several checks per epoch: name the check too

    def describe(what, epoch, check):
        where = f"epoch {int(epoch) + 1}" if epoch is not None else "epoch ?"
        return f"{what} ({where}" + (f", check {check}" if several and check is not None else "") + ")"

    def mark(axis, label):
        if best_x is not None:
            axis.axvline(best_x, **BEST, label=describe("best", best_epoch, best_check) if label else None)
        if stop_x is not None:
            axis.axvline(stop_x, **STOP, label=describe("stop", stopped_epoch, stopped_check) if label else None)

    loss = _values(records, "loss")
    val_loss = _values(records, "val_loss")
    loss_axis.plot(x, loss, label="train loss", color="tab:blue")
    if val_loss is not None:
        loss_axis.plot(x, val_loss, label="val loss", color="tab:orange")
    positive = _finite(loss + (val_loss or []))
    if positive and min(positive) > 0 and max(positive) / min(positive) >= 20:   # log only over decades
        loss_axis.set_yscale("log")
    if best_x is not None and val_loss is not None and best_check is not None and 0 <= best_check < len(records):
        if math.isfinite(val_loss[best_check]):
            loss_axis.plot([best_x], [val_loss[best_check]], "o", color="tab:green", markersize=5)
    mark(loss_axis, True)
    rates = sorted(set(_finite(lr))) if lr is not None else []
    if len(rates) == 1:                          # a constant rate: said in the legend, no panel
        loss_axis.plot([], [], " ", label=f"lr {rates[0]:g} (constant)")
    loss_axis.set_ylabel("loss" + (" (log)" if loss_axis.get_yscale() == "log" else ""))
    loss_axis.grid(True, which="major", alpha=0.3)
    loss_axis.legend(**LEGEND)

    next_axis = 1
    if has_accuracy:
        axis = axes[next_axis]
        next_axis += 1
        names = {"accuracy": ("train accuracy", "tab:blue"), "val_accuracy": ("val accuracy", "tab:orange")}
        for key, values in accuracy.items():
            if values is not None:
                axis.plot(x, values, label=names[key][0], color=names[key][1])
        mark(axis, False)
        axis.set_ylabel("accuracy")
        axis.grid(True, alpha=0.3)
        axis.legend(**LEGEND)
    if lr_changes:
        axis = axes[next_axis]
        axis.plot(x, lr, color="tab:gray", drawstyle="steps-post", label="learning rate")
        axis.set_yscale("log")
        mark(axis, False)
        axis.set_ylabel("lr (log)")
        axis.grid(True, which="major", alpha=0.3)
        axis.legend(**LEGEND)
    axes[-1].set_xlabel("epochs trained (the check at the end of epoch N is at N)")
    if title:
        figure.suptitle(title)
    try:                                          # one whole PNG or none; missing folders are made
        image_format = os.path.splitext(path)[1][1:].lower() or "png"
        atomic_write(path, lambda handle: figure.savefig(handle, dpi=110, format=image_format))
    finally:
        plt.close(figure)
    return axes
