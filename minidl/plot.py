"""Learning curves: loss and val_loss per epoch, best and stop marked, lr on a second axis."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError('plotting needs matplotlib: pip install -e ".[plot]"') from None
    matplotlib.use("Agg")                       # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def plot_history(records, path, best_epoch=None, stopped_epoch=None, title=None, steps_per_epoch=None):
    """Write a PNG of the history ``records`` (dicts with epoch, loss, val_loss?, lr) to ``path``.

    x is the 0-based epoch index, so the check at the end of epoch e sits at e (the epochs
    summary.json names); checks inside an epoch sit at fractions of it (``steps_per_epoch``,
    from the History; estimated from the records when not given).
    """
    if not records:
        raise ValueError("the history is empty: nothing to plot")
    plt = _pyplot()
    if not steps_per_epoch:
        steps_per_epoch = max((r["step"] / (r["epoch"] + 1) for r in records if r.get("step")), default=1)
    # steps done inside epoch e, as a fraction of an epoch; the end of epoch e lands on e
    x = [r["epoch"] + (r["step"] - r["epoch"] * steps_per_epoch) / steps_per_epoch - 1 for r in records]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    axis.plot(x, [r["loss"] for r in records], label="loss (train)", color="tab:blue")
    if records[0].get("val_loss") is not None:
        axis.plot(x, [r["val_loss"] for r in records], label="val_loss", color="tab:orange")
    by_epoch = {r["epoch"]: xi for r, xi in zip(records, x)}
    if best_epoch is not None and best_epoch in by_epoch:
        axis.axvline(by_epoch[best_epoch], color="tab:green", linestyle="--", label=f"best (epoch {best_epoch})")
    if stopped_epoch is not None and stopped_epoch in by_epoch:
        axis.axvline(by_epoch[stopped_epoch], color="tab:red", linestyle=":", label=f"stop (epoch {stopped_epoch})")
    axis.set_xlabel("epoch (0-based; a check at the end of epoch e is at e)")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    lr_axis = axis.twinx()
    lr_axis.plot(x, [r["lr"] for r in records], color="tab:gray", alpha=0.6, label="lr")
    lr_axis.set_ylabel("learning rate")
    lines = axis.get_legend_handles_labels()
    lr_lines = lr_axis.get_legend_handles_labels()
    axis.legend(lines[0] + lr_lines[0], lines[1] + lr_lines[1], loc="upper right", fontsize=8)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
