"""Exact COCO bounding-box scoring with faster_coco_eval or pycocotools.

Ground truth is a COCO instances JSON (a path or the loaded dict); detections are a COCO
results list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.
Every ground-truth image is scored, so an image without detections counts as misses.

``evaluate_detections`` returns a plain dict::

    {
        "stats": {"AP": float, "AP50": float, ..., "ARl": float},   # the 12 COCO numbers
        "lines": [str, ...],        # the 12 lines pycocotools' summarize() prints
        "per_class": [{"category_id": int, "name": str, "AP": float | None,
                       "AP50": float | None, "num_gt": int}, ...],
        "evaluator": "faster" | "pycocotools",
    }

As in COCOeval, a statistic is -1 when no ground truth falls in its area range; a per-class
AP is None when the class has no (non-crowd) ground truth.
"""
import contextlib
import io
import json
import os

import numpy as np

from retinanet.data.check import DatasetReport, check_coco_dict
from retinanet.data.layout import SetNotFoundError, resolve_set

EVALUATORS = ("faster", "pycocotools")

# The 12 numbers of COCOeval.summarize(), in its order; the keys of every "stats" / "coco" dict.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

# The labels of pycocotools' COCOeval.summarize(), in the order of COCO_STAT_NAMES.
STAT_LABELS = (
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)


class GroundTruthError(ValueError):
    """A ground-truth COCO JSON file is missing, unparsable or lacks images/categories."""


def ground_truth_path(coco_path, set_name, ground_truth=None):
    """``ground_truth`` when given, else the annotation file of ``set_name`` under ``coco_path`` in
    any layout. Raises GroundTruthError naming every path looked for and the sets found."""
    if ground_truth:
        return ground_truth
    try:
        return resolve_set(coco_path, set_name).json_path
    except SetNotFoundError as error:
        raise GroundTruthError(f"{error.looked_for[0]}: ground-truth file not found (set '{set_name}' is in no "
                               f"known layout under {coco_path}); {error.search}") from None


def load_gt_json(path):
    """Read the COCO instances JSON at ``path`` into a dict, checked as the dataset check does.

    Raises GroundTruthError naming the file when it is missing, unreadable, not JSON, or
    fails the dataset check's rules for the JSON (``data.check.check_coco_dict``: lists and
    entries of the right types, integer ids, known references, finite boxes).
    """
    if not os.path.isfile(path):
        raise GroundTruthError(f"{path}: ground-truth file not found")
    try:
        with open(path, "rb") as handle:
            coco_dict = json.loads(handle.read())
    except OSError as error:
        raise GroundTruthError(f"{path}: cannot read ground-truth file ({error})") from error
    except ValueError as error:
        raise GroundTruthError(f"{path}: not valid JSON ({error})") from error
    except RecursionError:  # arrays or objects nested thousands deep exhaust the parser's stack
        raise GroundTruthError(f"{path}: not valid JSON for a ground truth: nested too deeply") from None
    if not isinstance(coco_dict, dict):
        raise GroundTruthError(f"{path}: top level must be a JSON object, got {type(coco_dict).__name__}")
    report = DatasetReport(os.path.splitext(os.path.basename(path))[0], path)
    check_coco_dict(coco_dict, report)
    if not report.ok:
        errors = report.errors
        lines = [f"{path}: unusable as ground truth ({len(errors)} error{'' if len(errors) == 1 else 's'}):"]
        raise GroundTruthError("\n".join(lines + report.lines_by_kind(errors, per_kind=5)))
    return coco_dict


def has_annotations(coco_dict):
    """True when the COCO dict holds at least one annotation (a test set may hold none)."""
    return bool(coco_dict.get("annotations"))


def _check_evaluator(evaluator):
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {EVALUATORS}, got {evaluator!r}")


def _ignore_message(*args, **kwargs):
    """Print function handed to faster_coco_eval so it stays silent."""


def _coco_class(evaluator):
    if evaluator == "faster":
        from faster_coco_eval import COCO
    else:
        from pycocotools.coco import COCO
    return COCO


def load_coco_gt(json_path_or_dict, evaluator="faster"):
    """Build the ground-truth COCO object of ``evaluator``'s library, without printing.

    ``json_path_or_dict`` is a path to a COCO instances JSON or the already loaded dict.
    The dict is not modified.
    """
    _check_evaluator(evaluator)
    if isinstance(json_path_or_dict, dict):
        coco_dict = json_path_or_dict
    else:
        coco_dict = load_gt_json(os.fspath(json_path_or_dict))
    coco_class = _coco_class(evaluator)
    with contextlib.redirect_stdout(io.StringIO()):
        if evaluator == "faster":
            coco = coco_class(print_function=_ignore_message)
        else:
            coco = coco_class()
        # COCOeval writes an 'ignore' key into every GT annotation: give it copies.
        coco.dataset = dict(coco_dict)
        coco.dataset["annotations"] = [dict(annotation) for annotation in coco_dict.get("annotations") or []]
        coco.createIndex()
    return coco


def _run_cocoeval(coco_gt, results, evaluator):
    """Run evaluate/accumulate/summarize silently; return the COCOeval object."""
    # loadRes writes 'id', 'area', 'iscrowd' and 'segmentation' into every entry: work on copies.
    result_copies = [dict(entry) for entry in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(result_copies)
        if evaluator == "faster":
            from faster_coco_eval import COCOeval_faster
            coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_ignore_message)
        else:
            from pycocotools.cocoeval import COCOeval
            coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def count_gt_per_category(coco_dict):
    """Map category id -> number of non-crowd annotations (the ones COCOeval scores)."""
    counts = {int(category["id"]): 0 for category in coco_dict.get("categories", [])}
    for annotation in coco_dict.get("annotations") or []:
        if not annotation.get("iscrowd", 0):
            category_id = int(annotation["category_id"])
            counts[category_id] = counts.get(category_id, 0) + 1
    return counts


def per_class_ap(coco_eval):
    """Per-category (AP over IoU .50:.95, AP at IoU .50) for area=all, maxDets=100.

    Reads COCOeval's accumulated precision array, shape (T iou, R recall, K class, A area,
    M maxDets), skipping its -1 entries. Returns {category_id: (AP, AP50)}, None where the
    class has no scored ground truth.
    """
    precision = np.asarray(coco_eval.eval["precision"])
    iou_thresholds = np.asarray(coco_eval.params.iouThrs)
    iou50_index = int(np.flatnonzero(np.isclose(iou_thresholds, 0.5))[0])
    area_all_index = list(coco_eval.params.areaRngLbl).index("all")
    max_dets_index = list(coco_eval.params.maxDets).index(100)
    per_class = {}
    for class_index, category_id in enumerate(coco_eval.params.catIds):
        class_precision = precision[:, :, class_index, area_all_index, max_dets_index]
        per_class[int(category_id)] = (_mean_valid(class_precision), _mean_valid(class_precision[iou50_index]))
    return per_class


def _mean_valid(values):
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def evaluate_detections(gt, results, evaluator="faster", per_class=True, class_names=None):
    """Score COCO detection ``results`` against ground truth ``gt`` over all GT images.

    gt: path to a COCO instances JSON, or the loaded dict.
    results: list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}; may be empty,
        in which case every statistic is 0 (pycocotools cannot load an empty list).
    evaluator: "faster" (faster_coco_eval) or "pycocotools".
    per_class: also compute per-category AP / AP50 (else "per_class" is an empty list).
    class_names: optional {category_id: name}, overriding the names in the GT categories.
    Returns the dict described in the module docstring.
    """
    _check_evaluator(evaluator)
    coco_dict = gt if isinstance(gt, dict) else load_gt_json(os.fspath(gt))
    if results:
        coco_eval = _run_cocoeval(load_coco_gt(coco_dict, evaluator), results, evaluator)
        stats = {name: float(value) for name, value in zip(COCO_STAT_NAMES, coco_eval.stats[: len(COCO_STAT_NAMES)])}
        class_aps = per_class_ap(coco_eval) if per_class else {}
    else:
        stats = {name: 0.0 for name in COCO_STAT_NAMES}
        class_aps = None
    per_class_rows = []
    if per_class:
        per_class_rows = _per_class_rows(coco_dict, class_aps, class_names or {})
    return {
        "stats": stats,
        "lines": format_stats(stats).splitlines(),
        "per_class": per_class_rows,
        "evaluator": evaluator,
    }


def _per_class_rows(coco_dict, class_aps, class_names):
    """One row per GT category, sorted by id. ``class_aps`` None means there were no detections."""
    gt_counts = count_gt_per_category(coco_dict)
    names = {int(category["id"]): str(category.get("name", category["id"])) for category in coco_dict["categories"]}
    rows = []
    for category_id in sorted(names):
        num_gt = gt_counts.get(category_id, 0)
        if class_aps is None:
            ap, ap50 = (0.0, 0.0) if num_gt else (None, None)
        else:
            ap, ap50 = class_aps.get(category_id, (None, None))
        rows.append({
            "category_id": category_id,
            "name": class_names.get(category_id, names[category_id]),
            "AP": ap,
            "AP50": ap50,
            "num_gt": num_gt,
        })
    return rows


def format_stats(stats):
    """The 12 COCO summary lines, formatted exactly as pycocotools' summarize() prints them."""
    return "\n".join(f" {label} = {stats[name]:0.3f}" for name, label in zip(COCO_STAT_NAMES, STAT_LABELS))


def _format_ap(value):
    return "-" if value is None else f"{value:.3f}"


def format_per_class_table(per_class):
    """Markdown table of per-class results: class, AP, AP50, #GT ('-' where a class has no GT)."""
    lines = ["| class | AP | AP50 | #GT |", "|---|---:|---:|---:|"]
    for row in per_class:
        label = f"{row['name']} ({row['category_id']})"
        lines.append(f"| {label} | {_format_ap(row['AP'])} | {_format_ap(row['AP50'])} | {row['num_gt']} |")
    return "\n".join(lines)
