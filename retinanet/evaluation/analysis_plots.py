"""The analysis of a results file as files: ``{set}_analysis.json`` and four PNG plots.

``write_analysis(analysis, output_dir, set_name)`` writes, next to ``{set}_metrics.json``:

- ``{set}_analysis.json``: the dict of ``evaluation.analysis.analyze_detections``;
- ``{set}_pr_curves.png``: precision against recall per class, at IoU 0.5 and 0.75;
- ``{set}_f1_threshold.png``: F1, precision and recall against the score threshold, best marked;
- ``{set}_confusion_matrix.png``: the confusion matrix with its background row and column;
- ``{set}_ap_by_size.png``: AP and AP50 of small, medium and large objects, with their counts.

Figures use matplotlib's object API and the Agg canvas (no display, no pyplot state) and are
written atomically. Class names are drawn as plain text: a ``$`` never starts mathtext.
"""
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from retinanet.util.io import write_figure_png, write_json

DPI = 100
MAX_LEGEND_CLASSES = 12
MAX_ANNOTATED_CLASSES = 25
PLOT_NAMES = ("pr_curves", "f1_threshold", "confusion_matrix", "ap_by_size")


def analysis_paths(output_dir, set_name):
    """{"json": path, "pr_curves": path, "f1_threshold": ..., "confusion_matrix": ..., "ap_by_size": ...}."""
    paths = {name: os.path.join(output_dir, f"{set_name}_{name}.png") for name in PLOT_NAMES}
    paths["json"] = os.path.join(output_dir, f"{set_name}_analysis.json")
    return paths


def write_analysis(analysis, output_dir, set_name, source=None):
    """Write the analysis JSON (with ``source``: what was analysed, when given) and the four plots;
    returns ``analysis_paths``."""
    paths = analysis_paths(output_dir, set_name)
    write_json(paths["json"], dict(analysis, set=set_name, **({"source": source} if source else {})))
    plot_pr_curves(analysis, paths["pr_curves"])
    plot_f1_threshold(analysis, paths["f1_threshold"])
    plot_confusion_matrix(analysis, paths["confusion_matrix"])
    plot_ap_by_size(analysis, paths["ap_by_size"])
    return paths


def plain(text):
    """``text`` as matplotlib draws it literally (``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _figure(size):
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _say(axes, text):
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", color="grey")


def _ap_text(value):
    return "-" if value is None else f"{value:.3f}"


def plot_pr_curves(analysis, png_path):
    """Two panels (IoU 0.5, IoU 0.75): one precision-recall line per class, its AP in the legend."""
    curves = analysis["pr_curves"]
    recall = np.asarray(curves["recall"])
    figure = _figure((10.0, 4.0))
    panels = figure.subplots(1, 2, sharey=True)
    rows = curves["iou0.5"]
    palette = colormaps["tab10" if len(rows) <= 10 else "tab20"].colors
    for axes, key in zip(panels, ("iou0.5", "iou0.75")):
        axes.set_title(f"precision-recall at IoU {key[3:]}", fontsize="medium")
        axes.set_xlabel("recall")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.grid(True, alpha=0.3)
        for index, row in enumerate(curves[key]):
            if row["precision"]:
                axes.plot(recall[:len(row["precision"])], row["precision"], color=palette[index % len(palette)],
                          label=f"{plain(row['name'])} (AP {_ap_text(row['AP'])})")
        if not axes.lines:
            _say(axes, "no detections")
        elif len(curves[key]) <= MAX_LEGEND_CLASSES:
            axes.legend(fontsize="x-small", loc="lower left")
    panels[0].set_ylabel("precision")
    write_figure_png(png_path, figure)


def plot_f1_threshold(analysis, png_path):
    """F1, precision and recall (IoU 0.5, all classes) against the score threshold; the best F1 marked."""
    f1 = analysis["f1"]
    thresholds = np.asarray(f1["thresholds"])
    figure = _figure((7.0, 4.0))
    axes = figure.subplots()
    axes.plot(thresholds, f1["f1"], color="black", linewidth=2, label="F1")
    axes.plot(thresholds, np.array(f1["precision"], dtype=float), color="tab:blue", label="precision")
    axes.plot(thresholds, f1["recall"], color="tab:orange", label="recall")
    best = f1["best"]
    if best is not None:
        axes.axvline(best["threshold"], color="tab:red", linestyle="--", linewidth=1)
        axes.set_title(f"best F1 {best['f1']:.3f} at score >= {best['threshold']:.3f} "
                       f"(precision {best['precision']:.2f}, recall {best['recall']:.2f})", fontsize="medium")
    else:
        axes.set_title("no detections", fontsize="medium")
    axes.set_xlabel(f"score threshold (a detection is kept when its score is at least this; IoU {f1['iou']})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    write_figure_png(png_path, figure)


def plot_confusion_matrix(analysis, png_path):
    """The counts, rows ground truth and columns detections, each row shaded by its own total."""
    confusion = analysis["confusion"]
    matrix = np.asarray(confusion["matrix"])
    labels = [plain(label) for label in confusion["labels"]]
    side = min(16.0, max(4.5, 0.55 * len(labels) + 2.5))
    figure = _figure((side + 1.0, side))
    axes = figure.subplots()
    row_totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(matrix / row_totals, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the row")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize="small")
    axes.set_yticks(range(len(labels)), labels, fontsize="small")
    axes.set_xlabel("detected as")
    axes.set_ylabel("ground truth")
    if len(labels) <= MAX_ANNOTATED_CLASSES:
        for (row, column), count in np.ndenumerate(matrix):
            if row == column == len(labels) - 1:
                continue
            axes.text(column, row, str(count), ha="center", va="center", fontsize="small",
                      color="white" if matrix[row, column] / row_totals[row, 0] > 0.6 else "black")
    axes.set_title(f"confusion at score >= {confusion['score_threshold']:.3f}, IoU {confusion['iou']}"
                   + (f" ({confusion['ignored_detections']} on crowd regions not shown)"
                      if confusion["ignored_detections"] else ""), fontsize="medium")
    write_figure_png(png_path, figure)


def plot_ap_by_size(analysis, png_path):
    """AP and AP50 bars for small, medium and large objects; '-' where a size has no box."""
    rows = analysis["by_size"]
    figure = _figure((6.0, 4.0))
    axes = figure.subplots()
    positions = np.arange(len(rows))
    for offset, key, colour in ((-0.2, "AP", "tab:blue"), (0.2, "AP50", "tab:green")):
        values = [row[key] if row[key] is not None else 0.0 for row in rows]
        bars = axes.bar(positions + offset, values, width=0.4, color=colour, label=key)
        for bar, row in zip(bars, rows):
            axes.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, _ap_text(row[key]),
                      ha="center", va="bottom", fontsize="x-small")
    axes.set_xticks(positions, [f"{row['size']}\n{row['num_gt']} boxes" for row in rows])
    axes.set_ylim(0, 1.08)
    axes.set_ylabel("AP (IoU .50:.95) / AP50")
    axes.set_title("AP by object size (COCO areas: < 32², 32²-96², > 96² px)", fontsize="medium")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    write_figure_png(png_path, figure)
