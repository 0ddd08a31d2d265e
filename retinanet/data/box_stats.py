"""Box statistics of a COCO set as training sees it: boxes resized as ``data.transforms`` resizes
their images, from the image sizes in the JSON (no image is decoded).

``resized_boxes(dataset, min_side, max_side)`` gives every trained box (the loader's boxes: crowd
regions skipped, boxes clipped and those under 1 px dropped by ``data.check.sanitize_box``) in
resized pixels; ``box_statistics`` summarises them per class and over all classes:

- ``size``: sqrt(width x height) in resized pixels: min, the SIZE_PERCENTILES, max;
- ``aspect_ratio``: height / width (the sense of ``--anchor_ratios``): min, the RATIO_PERCENTILES, max;
- ``boxes_per_image``: mean and max over the set's images (images without the class count as 0).

``dataset_report_lines`` (tools/check_dataset.py) adds to the table how well the anchors reach
these boxes (``models.anchor_coverage``), and ``training_report_lines`` is its short form, which
train.py logs at start: the coverage and, under COVERAGE_TARGET, anchor options that raise it.
"""
import dataclasses

import numpy as np

from retinanet.data.coco import CocoDetection
from retinanet.data.transforms import resize_scale
from retinanet.models.anchor_coverage import (COVERAGE_TARGET, AnchorSetting, Coverage, coverage_lines, percent,
                                              proposal_lines, propose)

PAD_MULTIPLE = 32  # data.loader.collate pads each side to a multiple of this
SIZE_PERCENTILES = (5, 25, 50, 75, 95)
RATIO_PERCENTILES = (5, 50, 95)
ALL_CLASSES = "all"


@dataclasses.dataclass
class ResizedBoxes:
    """A set's boxes in resized pixels.

    boxes: float64 (N, 4) xyxy; labels: int64 (N,) contiguous; image_index: int64 (N,) position of
    each box's image; image_sizes: int64 (I, 2) (height, width) of each resized image, unpadded;
    class_names: one per label; set_name, min_side, max_side: what was resized, and how."""
    boxes: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    image_sizes: np.ndarray
    class_names: list
    set_name: str
    min_side: int
    max_side: int

    @property
    def box_image_sizes(self):
        """(N, 2) the (height, width) of each box's resized image."""
        return self.image_sizes[self.image_index]

    @property
    def padded_box_image_sizes(self):
        """(N, 2) the same padded to the multiple of 32 the network is fed (a batch of one image)."""
        return np.ceil(self.box_image_sizes / PAD_MULTIPLE) * PAD_MULTIPLE


def load_resized_boxes(root, set_name, min_side, max_side):
    """``resized_boxes`` of ``{root}/{set_name}.json``; raises what CocoDetection raises for a bad file."""
    return resized_boxes(CocoDetection(root, set_name, transform=None), min_side, max_side)


def resized_boxes(dataset, min_side, max_side):
    """ResizedBoxes of a CocoDetection: each image's boxes scaled by its ``resize_scale`` in float32,
    exactly as ``transforms.resize`` scales them, and its size rounded as the image is."""
    boxes, labels, image_index, image_sizes = [], [], [], []
    for index, info in enumerate(dataset.images):
        height, width = int(info["height"]), int(info["width"])
        scale = resize_scale(height, width, min_side, max_side)
        image_sizes.append((max(1, round(height * scale)), max(1, round(width * scale))))
        image_boxes, image_labels = dataset.ground_truth(index)
        boxes.append((image_boxes * np.float32(scale)).astype(np.float64))
        labels.append(image_labels)
        image_index.append(np.full(len(image_labels), index, dtype=np.int64))
    return ResizedBoxes(
        boxes=np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4)),
        labels=np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, dtype=np.int64),
        image_index=np.concatenate(image_index) if image_index else np.zeros(0, dtype=np.int64),
        image_sizes=np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2),
        class_names=list(dataset.class_names), set_name=dataset.set_name, min_side=min_side, max_side=max_side)


def box_sizes(boxes):
    """(N, 4) xyxy -> (N,) sqrt(width x height)."""
    return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def aspect_ratios(boxes):
    """(N, 4) xyxy -> (N,) height / width."""
    return (boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0])


def _spread(values, percentiles):
    """{'min', 'p5', ..., 'max'} of a non-empty array."""
    points = np.percentile(values, percentiles)
    return {"min": float(values.min()), **{f"p{p}": float(v) for p, v in zip(percentiles, points)},
            "max": float(values.max())}


def box_statistics(resized):
    """{class name or ALL_CLASSES: {'boxes', 'size', 'aspect_ratio', 'boxes_per_image'}}, classes in
    label order and ALL_CLASSES last; 'size' and 'aspect_ratio' are None for a class without boxes."""
    sizes, ratios = box_sizes(resized.boxes), aspect_ratios(resized.boxes)
    num_images = len(resized.image_sizes)
    statistics = {}
    for label, name in [*enumerate(resized.class_names), (None, ALL_CLASSES)]:
        chosen = np.ones(len(sizes), bool) if label is None else resized.labels == label
        per_image = np.bincount(resized.image_index[chosen], minlength=num_images)
        statistics[name] = {
            "boxes": int(chosen.sum()),
            "size": _spread(sizes[chosen], SIZE_PERCENTILES) if chosen.any() else None,
            "aspect_ratio": _spread(ratios[chosen], RATIO_PERCENTILES) if chosen.any() else None,
            "boxes_per_image": {"mean": float(per_image.mean()) if num_images else 0.0,
                                "max": int(per_image.max()) if num_images else 0},
        }
    return statistics


def format_statistics(statistics, coverage_by_class=None, name_width=14):
    """The statistics as a fixed-width table, one row per class and ALL_CLASSES last;
    ``coverage_by_class`` ({name: fraction or None}) adds an anchor-coverage column."""
    size_keys = ["min", *(f"p{p}" for p in SIZE_PERCENTILES), "max"]
    ratio_keys = [f"p{p}" for p in RATIO_PERCENTILES]
    labels = ("  size px: ", "  h/w: ", "  per image: ")
    header = (f"{'class':<{name_width}} {'boxes':>6}{labels[0]}" + " ".join(f"{key:>5}" for key in size_keys)
              + labels[1] + " ".join(f"{key:>5}" for key in ratio_keys) + f"{labels[2]}{'mean':>5} {'max':>5}"
              + ("  coverage" if coverage_by_class is not None else ""))
    lines = [header]
    for name, row in statistics.items():
        shown = name if len(name) <= name_width else name[:name_width - 1] + "~"
        sizes = " ".join(f"{row['size'][key]:>5.1f}" if row["size"] else f"{'-':>5}" for key in size_keys)
        ratios = " ".join(f"{row['aspect_ratio'][key]:>5.2f}" if row["aspect_ratio"] else f"{'-':>5}"
                          for key in ratio_keys)
        per_image = row["boxes_per_image"]
        line = (f"{shown:<{name_width}} {row['boxes']:>6}{' ' * len(labels[0])}{sizes}{' ' * len(labels[1])}{ratios}"
                f"{' ' * len(labels[2])}{per_image['mean']:>5.2f} {per_image['max']:>5}")
        if coverage_by_class is not None:
            coverage = coverage_by_class.get(name)
            line += f"  {'-' if coverage is None else percent(coverage):>8}"
        lines.append(line)
    return lines


# ----- the reports -------------------------------------------------------------------------------
def anchor_coverage(resized, options):
    """The Coverage of the anchors that ``options`` (train.py's flags, as a mapping) build."""
    return Coverage.of(resized.boxes, resized.padded_box_image_sizes, AnchorSetting.from_options(options),
                       options["positive_iou"])


def coverage_report_lines(resized, coverage, low_quality_matches):
    """The coverage, why boxes are missed and, under COVERAGE_TARGET, the proposed anchor options."""
    if not len(resized.boxes):
        return ["anchor coverage: the set has no boxes"]
    lines = coverage_lines(coverage, resized.boxes, low_quality_matches)
    if coverage.fraction < COVERAGE_TARGET:
        proposals = propose(resized.boxes, resized.padded_box_image_sizes, coverage)
        lines += proposal_lines(proposals, coverage.setting)
    return lines


def dataset_report_lines(resized, options):
    """tools/check_dataset.py's report: the statistics table (with each class's coverage) and the
    coverage report of the anchors and thresholds in ``options``. Returns (lines, Coverage)."""
    coverage = anchor_coverage(resized, options)
    by_class = dict(coverage.fraction_by_class(resized.labels, resized.class_names), **{ALL_CLASSES: coverage.fraction})
    header = (f"box statistics of {resized.set_name}: {len(resized.image_sizes)} images, {len(resized.boxes)} boxes, "
              f"resized as training resizes them (--min_side {resized.min_side} --max_side {resized.max_side})")
    lines = [header]
    lines += format_statistics(box_statistics(resized), by_class if len(resized.boxes) else None)
    lines += coverage_report_lines(resized, coverage, options["low_quality_matches"])
    return lines, coverage


def scaled(resized, factor):
    """ResizedBoxes times a scale-jitter ``factor``: boxes and image sizes (before the crop or pad back
    to the canvas, which only clips boxes at its border)."""
    if factor == 1:
        return resized
    sizes = np.maximum(1, np.round(resized.image_sizes * factor)).astype(np.int64)
    return dataclasses.replace(resized, boxes=resized.boxes * factor, image_sizes=sizes)


def scale_extremes(min_side, train_sides, scale_jitter):
    """The (short side, jitter factor) of the smallest and the largest scale training resizes to, those
    other than (min_side, 1), the evaluation scale; none without multi-scale or scale jitter."""
    low, high = scale_jitter if scale_jitter else (1.0, 1.0)
    extremes = {(min(train_sides), float(low)): "smallest", (max(train_sides), float(high)): "largest"}
    return [(name, side, factor) for (side, factor), name in extremes.items() if (side, factor) != (min_side, 1.0)]


def training_report_lines(dataset, options, settings=None):
    """The short report train.py logs at start for its training set (a CocoDetection) and flags (as a
    mapping): the coverage at the evaluation size and, with multi-scale or scale jitter (``settings``
    from ``augment.augment_settings``), at the smallest and largest training scale."""
    min_side, max_side = options["min_side"], options["max_side"]
    resized = resized_boxes(dataset, min_side, max_side)
    lines = coverage_report_lines(resized, anchor_coverage(resized, options), options["low_quality_matches"])
    if not len(resized.boxes) or settings is None:
        return lines
    for name, side, factor in scale_extremes(min_side, settings["train_sides"], settings["scale_jitter"]):
        coverage = anchor_coverage(scaled(resized_boxes(dataset, side, max_side), factor), options)
        jitter = f" x {factor:g}" if factor != 1 else ""
        lines.append(f"  at the {name} training scale (short side {side}{jitter}): {percent(coverage.fraction)} "
                     f"of the boxes have an anchor at IoU >= {coverage.positive_iou:g}")
    return lines
