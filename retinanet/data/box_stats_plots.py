"""The box-size histogram of tools/check_dataset.py: ``{set}_box_sizes.png``.

One panel per class (the MAX_PLOTTED_CLASSES with most boxes) and one for all classes: the
distribution of box sizes (sqrt of the area, resized pixels, log scale) with the anchors' sizes
marked (solid: each level's base size, dotted: its other scales) and the sizes no anchor can match
at the positive IoU shaded. Drawn with matplotlib's object API on the Agg canvas and written
atomically, as ``evaluation.analysis_plots``.
"""
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from retinanet.data.box_stats import ALL_CLASSES, box_sizes
from retinanet.models.anchor_coverage import percent
from retinanet.util.io import write_figure_png

MAX_PLOTTED_CLASSES = 12
BINS = 40


def box_sizes_path(output_dir, set_name):
    return os.path.join(output_dir, f"{set_name}_box_sizes.png")


def plot_box_sizes(resized, coverage, png_path):
    """Write the histogram of ``resized`` (data.box_stats.ResizedBoxes) with the anchors of
    ``coverage`` (models.anchor_coverage.Coverage of those boxes) marked."""
    sizes = box_sizes(resized.boxes)
    panels = _panels(resized, coverage)
    anchor_sizes = np.array([size * scale for size in coverage.setting.sizes for scale in coverage.setting.scales])
    low = min(sizes.min(initial=np.inf), anchor_sizes.min(), coverage.reach.min_size) / 1.25
    high = max(sizes.max(initial=0), anchor_sizes.max()) * 1.25
    bins = np.geomspace(low, high, BINS + 1)
    figure = Figure(figsize=(9.0, 1.1 + 1.5 * len(panels)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes_list = np.atleast_1d(figure.subplots(len(panels), 1, sharex=True))
    for axes, (title, chosen) in zip(axes_list, panels):
        axes.hist(sizes[chosen], bins=bins, color="tab:blue", alpha=0.8)
        _mark_anchors(axes, coverage, low, high)
        axes.set_title(title.replace("$", r"\$"), fontsize="small", loc="left")
        axes.set_ylabel("boxes", fontsize="small")
    axes_list[-1].set_xscale("log")
    axes_list[-1].set_xlim(low, high)
    axes_list[-1].set_xlabel(f"box size: sqrt(width x height) in pixels after resizing (--min_side {resized.min_side} "
                             f"--max_side {resized.max_side}); lines: anchor sizes; shaded: no anchor reaches IoU "
                             f"{coverage.positive_iou:g}", fontsize="small")
    write_figure_png(png_path, figure)


def _panels(resized, coverage):
    """[(title, boolean mask of boxes)]: all classes, then the classes with most boxes."""
    counts = np.bincount(resized.labels, minlength=len(resized.class_names))
    shown = [label for label in np.argsort(-counts, kind="stable")[:MAX_PLOTTED_CLASSES] if counts[label]]
    fractions = coverage.fraction_by_class(resized.labels, resized.class_names)
    panels = [(f"{ALL_CLASSES}: {len(resized.boxes)} boxes, coverage {percent(coverage.fraction)}",
               np.ones(len(resized.boxes), bool))]
    for label in shown:
        name = resized.class_names[label]
        panels.append((f"{name}: {counts[label]} boxes, coverage {percent(fractions[name])}", resized.labels == label))
    if len(shown) < int((counts > 0).sum()):
        panels[0] = (panels[0][0] + f" ({int((counts > 0).sum()) - len(shown)} classes with fewer boxes not shown)",
                     panels[0][1])
    return panels


def _mark_anchors(axes, coverage, low, high):
    setting, reach = coverage.setting, coverage.reach
    for size in setting.sizes:
        for index, scale in enumerate(setting.scales):
            axes.axvline(size * scale, color="tab:red", linewidth=1.0 if index == 0 else 0.6,
                         linestyle="-" if index == 0 else ":")
    axes.axvspan(low, reach.min_size, color="grey", alpha=0.2)
    if reach.max_size < high:
        axes.axvspan(reach.max_size, high, color="grey", alpha=0.2)
