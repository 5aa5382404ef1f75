"""minidl.plot: the figure's structure (panels, scales, legends outside the data, title, marks).

The figure counts epochs from 1 (as the summary line); the History's best_epoch etc. are 0-based."""
import json

import pytest

pytest.importorskip("matplotlib")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from minidl.plot import plot_history, read_run_history  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def records(epochs=6, accuracy=True, lrs=None, checks_per_epoch=1, steps_per_epoch=4):
    """Synthetic history records: loss falling, val_loss turning up after epoch 3."""
    rows = []
    for epoch in range(epochs):
        for k in range(1, checks_per_epoch + 1):
            step = epoch * steps_per_epoch + k * steps_per_epoch // checks_per_epoch
            t = step / steps_per_epoch
            row = {"check": len(rows), "epoch": epoch, "step": step, "loss": 1.0 / (1 + t) ** 2,
                   "val_loss": 0.5 + 0.05 * (t - 3) ** 2, "lr": (lrs[epoch] if lrs else 0.05), "time": t}
            if accuracy:
                row.update(accuracy=min(1.0, 0.5 + 0.1 * t), val_accuracy=min(0.9, 0.4 + 0.1 * t))
            rows.append(row)
    return rows


def draw(tmp_path, rows, **kwargs):
    path = tmp_path / "curves.png"
    axes = plot_history(rows, path, **kwargs)
    assert path.read_bytes()[:8] == PNG
    return axes


def test_loss_and_accuracy_panels_and_no_lr_panel_when_the_rate_is_constant(tmp_path):
    axes = draw(tmp_path, records(), best_epoch=3, stopped_epoch=5)
    assert len(axes) == 2
    assert axes[0].get_ylabel().startswith("loss") and axes[0].get_yscale() == "log"
    assert axes[1].get_ylabel() == "accuracy"
    labels = axes[0].get_legend_handles_labels()[1]
    assert labels[:4] == ["train loss", "val loss", "best (epoch 4)", "stop (epoch 6)"]   # counted from 1
    assert "lr 0.05 (constant)" in labels                        # said once, not drawn as an axis
    assert not any("lr" in axis.get_ylabel() for axis in axes)


def test_no_accuracy_panel_without_accuracy(tmp_path):
    axes = draw(tmp_path, records(accuracy=False))
    assert len(axes) == 1 and axes[0].get_ylabel().startswith("loss")


def test_a_changing_rate_gets_a_log_panel(tmp_path):
    lrs = [0.05, 0.05, 0.005, 0.0005, 5e-5, 5e-6]
    axes = draw(tmp_path, records(lrs=lrs), best_epoch=1, stopped_epoch=5)
    assert len(axes) == 3
    lr_axis = axes[-1]
    assert lr_axis.get_yscale() == "log" and lr_axis.get_ylabel().startswith("lr")
    low, high = lr_axis.get_ylim()
    assert low < 5e-6 and high > 0.05                           # small rates are not drawn as 0
    assert all(axis.get_shared_x_axes().joined(axes[0], axis) for axis in axes)


def test_an_accuracy_free_run_with_a_changing_rate_has_loss_and_lr_panels(tmp_path):
    axes = draw(tmp_path, records(accuracy=False, lrs=[0.1, 0.1, 0.01, 0.01, 0.001, 0.001]))
    assert len(axes) == 2 and axes[1].get_yscale() == "log"


def test_legends_are_outside_the_data(tmp_path):
    axes = draw(tmp_path, records(lrs=[0.05, 0.05, 0.005, 0.0005, 5e-5, 5e-6]), best_epoch=3, stopped_epoch=5)
    figure = axes[0].figure
    renderer = FigureCanvasAgg(figure).get_renderer()          # the figure as saved (pyplot closed it)
    for axis in axes:
        legend = axis.get_legend()
        assert legend is not None
        box = legend.get_window_extent(renderer)
        data = axis.get_window_extent(renderer)               # the whole data area of the panel
        assert box.x0 >= data.x1, (axis.get_ylabel(), box, data)   # to the right of it, no overlap
        assert box.x1 <= figure.bbox.x1 + 1                     # and still inside the image


def test_best_and_stop_are_marked_in_every_panel(tmp_path):
    axes = draw(tmp_path, records(), best_epoch=2, stopped_epoch=4)
    for axis in axes:
        vertical = sorted(line.get_xdata()[0] for line in axis.get_lines() if len(set(line.get_xdata())) == 1
                          and len(line.get_xdata()) == 2)
        assert vertical == [3, 5]                              # epochs trained: index + 1


def test_checks_inside_epochs_sit_at_fractions_and_best_check_places_the_line(tmp_path):
    rows = records(epochs=3, checks_per_epoch=2, steps_per_epoch=4)
    axes = draw(tmp_path, rows, best_epoch=1, best_check=2, steps_per_epoch=4)
    x = list(axes[0].get_lines()[0].get_xdata())
    assert x == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]                   # epochs trained
    best = [line for line in axes[0].get_lines() if line.get_label().startswith("best")]
    assert best[0].get_xdata()[0] == 1.5 and best[0].get_label() == "best (epoch 2, check 2)"


def test_title_names_the_run_and_the_stop(tmp_path):
    axes = draw(tmp_path, records(), stopped_epoch=5, name="digits", stop_reason="patience")
    assert axes[0].figure.get_suptitle() == "digits: stopped by patience at epoch 6"
    axes = draw(tmp_path, records(), name="digits", stop_reason="max_epochs")
    assert axes[0].figure.get_suptitle() == "digits: stopped by max_epochs at epoch 6"   # the last one
    axes = draw(tmp_path, records(), title="given")
    assert axes[0].figure.get_suptitle() == "given"


def test_losses_within_a_decade_use_a_linear_axis(tmp_path):
    rows = records(accuracy=False)
    for row in rows:
        row["loss"], row["val_loss"] = 1.0 + 0.1 * row["epoch"], 1.2
    assert draw(tmp_path, rows)[0].get_yscale() == "linear"


def test_non_positive_losses_use_a_linear_axis(tmp_path):
    rows = records(accuracy=False)
    rows[-1]["loss"] = 0.0
    assert draw(tmp_path, rows)[0].get_yscale() == "linear"


def test_missing_values_are_gaps_not_errors(tmp_path):
    rows = records()
    rows[2]["val_loss"] = None
    rows[3]["loss"] = float("nan")
    assert len(draw(tmp_path, rows)) == 2


@pytest.mark.parametrize("rows, fragment", [([], "empty"), ([{"epoch": 0}], "no 'loss'"),
                                            ([{"epoch": 0, "loss": "x"}], "not a number"), ([3], "not a mapping")])
def test_bad_records_are_value_errors(tmp_path, rows, fragment):
    with pytest.raises(ValueError, match=fragment):
        plot_history(rows, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_read_run_history_takes_the_stop_facts_from_the_summary_beside_a_csv(tmp_path):
    run = tmp_path / "myrun"
    run.mkdir()
    (run / "history.csv").write_text("check,epoch,step,loss,lr\n0,0,4,0.5,0.1\n1,1,8,0.4,0.1\n")
    (run / "summary.json").write_text(json.dumps({"stop_reason": "max_epochs", "best_epoch": None,
                                                  "stopped_epoch": None, "steps_per_epoch": 4}))
    rows, facts = read_run_history(str(run / "history.csv"))
    assert [row["loss"] for row in rows] == [0.5, 0.4]
    assert facts["name"] == "myrun" and facts["stop_reason"] == "max_epochs" and facts["steps_per_epoch"] == 4
