"""Training curves as small PNG files, drawn from the records of a run's ``metrics.jsonl`` and
the rows of its ``steps.csv`` (loss and learning rate by step).

A record is one finished epoch (written by ``training.trainer.Trainer``, kept by ``runs.run_dir.RunDir``): ``epoch`` (1-based), ``loss``,
``cls_loss``, ``box_loss`` and, on epochs where validation ran, ``coco`` with the 12 COCO numbers
(``AP``, ``AP50``, ...; -1 where COCOeval had no ground truth to score).

Figures are built with matplotlib's object API and the Agg canvas, so nothing here touches
pyplot's global state or needs a display. Each panel is 4.5 x 3.5 inches at 100 dpi (a PNG of
900 or 1350 x 350 pixels, a few tens of KB) and is written atomically: a reader never sees half a file.
"""
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from retinanet.evaluation.coco_eval import COCO_STAT_NAMES
from retinanet.util.io import write_figure_png

FIGURE_SIZE = (9.0, 3.5)
DPI = 100
LOSS_KEYS = ("loss", "cls_loss", "box_loss")
LOSS_LABELS = {"loss": "total", "cls_loss": "classification", "box_loss": "regression"}


def plot_run_curves(metrics_records, png_path, title=None, steps=None):
    """One run's curves: the loss and the learning rate by step (left, when ``steps`` has rows),
    the losses per epoch and validation AP / AP50 (right).

    metrics_records: list of per-epoch dicts as read by ``run_dir.read_metrics``.
    png_path: where to write the PNG (its folder is created if missing).
    title: optional figure title, e.g. the run name.
    steps: the rows of the run's steps.csv (``trackers.read_steps``), one per training step.
    """
    figure = _new_figure(title, panels=3 if steps else 2)
    axes = figure.subplots(1, 3 if steps else 2)
    if steps:
        _plot_steps(axes[0], steps)
    loss_axes, ap_axes = axes[-2:]
    _style_axes(loss_axes, "loss per epoch")
    for key, style in (("cls_loss", "-"), ("box_loss", "-"), ("loss", "--")):
        epochs, values = _series(metrics_records, key)
        if epochs:
            loss_axes.plot(epochs, values, style, marker=".", label=LOSS_LABELS[key])
    if loss_axes.lines:
        loss_axes.legend(fontsize="small")
    else:
        _say(loss_axes, "no finished epoch yet")
    _style_axes(ap_axes, "validation mAP")
    for key in ("AP", "AP50"):
        epochs, values = _series(metrics_records, key)
        if epochs:
            ap_axes.plot(epochs, values, marker="o", markersize=3, label=key)
    if ap_axes.lines:
        ap_axes.legend(fontsize="small")
    else:
        _say(ap_axes, "no evaluation yet")
    write_figure_png(png_path, figure, dpi=DPI)


def _plot_steps(axes, steps):
    """The total loss of every step (faint), its running mean over ~2% of the steps, and the
    learning rate on a second axis."""
    iterations = [row["iteration"] for row in steps]
    losses = [row["loss"] for row in steps]
    axes.set_title("loss and learning rate by step", fontsize="medium")
    axes.set_xlabel("iteration")
    axes.grid(True, alpha=0.3)
    axes.plot(iterations, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        running, total = [], 0.0
        for index, value in enumerate(losses):
            total += value - (losses[index - window] if index >= window else 0.0)
            running.append(total / min(index + 1, window))
        axes.plot(iterations, running, color="tab:blue", linewidth=1.5, label=f"loss, mean of {window}")
    axes.set_ylabel("loss")
    rate_axes = axes.twinx()
    rate_axes.plot(iterations, [row["lr"] for row in steps], color="tab:orange", linestyle="--", label="rate")
    rate_axes.set_ylabel("learning rate")
    rate_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    lines = axes.lines + rate_axes.lines
    axes.legend(lines, [line.get_label() for line in lines], fontsize="small")


def plot_runs_overlay(runs, png_path, metric="AP"):
    """Several runs in one PNG, one colour per run: a loss (left) and a validation metric (right).

    runs: {run name: list of per-epoch records}, drawn in the dict's order.
    metric: a loss key (``loss``, ``cls_loss``, ``box_loss``) picks the left panel's loss, with AP on
        the right; a COCO key (``AP``, ``AP50``, ..., ``ARl``) picks the right panel's metric, with the
        total loss on the left.
    """
    if metric in LOSS_KEYS:
        loss_key, coco_key = metric, "AP"
    elif metric in COCO_STAT_NAMES:
        loss_key, coco_key = "loss", metric
    else:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(LOSS_KEYS + COCO_STAT_NAMES)}")
    if not runs:
        raise ValueError(f"no runs to plot into {png_path}")
    figure = _new_figure(None)
    loss_axes, metric_axes = figure.subplots(1, 2)
    _style_axes(loss_axes, f"{LOSS_LABELS[loss_key]} loss")
    _style_axes(metric_axes, f"validation {coco_key}")
    colours = _colours(len(runs))
    for colour, (name, records) in zip(colours, runs.items()):
        epochs, values = _series(records, loss_key)
        loss_axes.plot(epochs, values, color=colour, marker=".", label=name)
        epochs, values = _series(records, coco_key)
        metric_axes.plot(epochs, values, color=colour, marker="o", markersize=3, label=name)
    if not any(line.get_xdata().size for line in metric_axes.lines):
        _say(metric_axes, "no evaluation yet")
    metric_axes.legend(fontsize="x-small", loc="best")
    write_figure_png(png_path, figure, dpi=DPI)


def _series(records, key):
    """(epochs, values) of one key; COCO keys are read from ``record['coco']``, -1 entries skipped."""
    epochs, values = [], []
    for record in records:
        source = record.get("coco") if key in COCO_STAT_NAMES else record
        value = source.get(key) if isinstance(source, dict) else None
        if value is None or (key in COCO_STAT_NAMES and value < 0):
            continue
        epochs.append(record["epoch"])
        values.append(value)
    return epochs, values


def _colours(count):
    """Distinct colours: tab10 for up to 10 runs, tab20 beyond (repeating after 20)."""
    palette = colormaps["tab10" if count <= 10 else "tab20"].colors
    return [palette[index % len(palette)] for index in range(count)]


def _new_figure(title, panels=2):
    figure = Figure(figsize=(FIGURE_SIZE[0] * panels / 2, FIGURE_SIZE[1]), dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure


def _style_axes(axes, title):
    axes.set_title(title, fontsize="medium")
    axes.set_xlabel("epoch")
    axes.grid(True, alpha=0.3)
    # Epochs are integers: no 1.5 ticks on short runs.
    axes.xaxis.get_major_locator().set_params(integer=True)


def _say(axes, text):
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", color="grey")

