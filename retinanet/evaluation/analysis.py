"""What a results file gets right and wrong, from COCOeval's own matching (pycocotools).

``analyze_detections(gt, results)`` scores a COCO results list as ``coco_eval`` does, and then
reads the library's per-image matches (``COCOeval.evalImgs``: ``dtMatches``, ``gtMatches``,
``dtIgnore``, ``gtIgnore``) and its accumulated ``eval['precision']`` array rather than matching
boxes again. It returns a plain dict (what ``{set}_analysis.json`` holds)::

    {
        "num_images": int, "num_gt": int, "num_detections": int,
        "per_class": [{"category_id", "name", "AP", "AP50", "AP75", "num_gt"}, ...],   # None: no GT
        "pr_curves": {"recall": [101 floats],
                      "iou0.5" | "iou0.75": [{"category_id", "name", "AP", "precision": [R floats]}, ...]},
        "f1": {"iou": 0.5, "thresholds": [101 floats], "f1": [...], "precision": [...], "recall": [...],
               "best": {"threshold", "f1", "precision", "recall", "tp", "fp", "num_gt"} | None},
        "confusion": {"iou": 0.5, "score_threshold": float, "labels": [class names..., "background"],
                      "matrix": [[int]] (rows: ground truth, columns: detections), "ignored_detections": int},
        "by_size": [{"size": "small" | "medium" | "large", "area_range": [lo, hi], "AP", "AP50", "AR100",
                     "num_gt"}, ...],
    }

Rules, all at COCOeval's maxDets=100 and area "all" unless a size is named:

- **F1 against the score threshold** (IoU 0.5, all classes pooled): a detection scoring at least t
  is kept; a kept detection that COCOeval matched to a ground-truth box of its class is a true
  positive, any other kept one a false positive; F1 = 2 TP / (TP + FP + #GT). The best threshold
  is the score, among the detections' own scores, with the highest F1 (the highest such score on
  ties). Detections COCOeval ignores (matched to a crowd region) count as neither.
- **Confusion matrix** (IoU 0.5, at the best-F1 threshold unless one is given): COCOeval run
  again with ``useCats=0``, so that a box may match a ground-truth box of another class. Row =
  ground-truth class, column = detected class; the background column counts the ground-truth
  boxes no kept detection matched (missed), the background row the kept detections that matched
  nothing (false detections). Rows sum to the non-crowd ground-truth boxes of each class, columns
  to the kept detections of each class (less ``ignored_detections``, those on crowd regions).
- **Precision-recall curves**: ``eval['precision']`` at IoU 0.5 and 0.75 against COCO's 101
  recall points, cut at the class's highest recall; their mean over the points is the AP.
- **By size**: COCO's APs/APm/APl (and AP50, AR@100) per area range, with the number of
  ground-truth boxes COCOeval scores in each range.
"""
import contextlib
import io
import json
import os

import numpy as np

from retinanet.evaluation.coco_eval import load_coco_gt, load_gt_json

MATCH_IOU = 0.5
PR_IOUS = (0.5, 0.75)
SIZE_NAMES = ("small", "medium", "large")
THRESHOLD_GRID = np.linspace(0.0, 1.0, 101)
BACKGROUND = "background"
DEFAULT_SCORE_THRESHOLD = 0.5  # where there is no best-F1 threshold (no detection): the confusion matrix, pictures


def analyze_detections(gt, results, score_threshold=None, class_names=None):
    """The analysis dict of the module docstring.

    gt: path to a COCO instances JSON, or the loaded dict. results: COCO results list (may be
    empty). score_threshold: the confusion matrix's threshold; None takes the best-F1 one (0.5
    when there is no detection). class_names: optional {category_id: name} overriding the GT's.
    """
    coco_dict = gt if isinstance(gt, dict) else load_gt_json(str(gt))
    category_ids = sorted(int(category["id"]) for category in coco_dict["categories"])
    names = {int(category["id"]): str(category.get("name", category["id"])) for category in coco_dict["categories"]}
    names.update({key: value for key, value in (class_names or {}).items() if key in names})
    per_class_eval = run_cocoeval(coco_dict, results, use_categories=True)
    matches = detection_matches(per_class_eval)
    f1 = f1_curve(matches)
    if score_threshold is None:
        score_threshold = f1["best"]["threshold"] if f1["best"] else DEFAULT_SCORE_THRESHOLD
    agnostic_eval = run_cocoeval(coco_dict, results, use_categories=False)
    return {
        "num_images": len(coco_dict["images"]),
        "num_gt": matches["num_gt"],
        "num_detections": len(results),
        "per_class": per_class_table(per_class_eval, coco_dict, names),
        "pr_curves": pr_curves(per_class_eval, names),
        "f1": f1,
        "confusion": confusion_matrix(agnostic_eval, category_ids, names, score_threshold),
        "by_size": ap_by_size(per_class_eval),
    }


def run_cocoeval(coco_dict, results, use_categories=True):
    """pycocotools' COCOeval after evaluate() and accumulate(), silently, ``params.useCats`` set
    from ``use_categories``. With no results the detections are an empty set (loadRes refuses [])."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = load_coco_gt(coco_dict, "pycocotools")
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes([dict(entry) for entry in results])  # loadRes writes into its entries
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_dict["images"], "categories": coco_dict["categories"], "annotations": []}
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.params.useCats = int(use_categories)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _index(values, wanted):
    return int(np.flatnonzero(np.isclose(np.asarray(values, dtype=float), wanted))[0])


def _entries(coco_eval, area="all"):
    """The non-empty ``evalImgs`` entries of one area range (maxDets=100)."""
    area_range = coco_eval.params.areaRng[list(coco_eval.params.areaRngLbl).index(area)]
    return [entry for entry in coco_eval.evalImgs if entry is not None and list(entry["aRng"]) == list(area_range)]


def detection_matches(coco_eval, iou=MATCH_IOU):
    """COCOeval's matching at ``iou`` (area all), flattened over images and classes.

    Returns {"scores": (N,) float, "true_positive": (N,) bool, "num_gt": int}: one entry per
    detection COCOeval does not ignore; ``num_gt`` counts the ground-truth boxes it does not ignore.
    """
    t = _index(coco_eval.params.iouThrs, iou)
    scores, true_positive, num_gt = [np.zeros(0)], [np.zeros(0, dtype=bool)], 0
    for entry in _entries(coco_eval):
        kept = ~np.asarray(entry["dtIgnore"], dtype=bool)[t]  # dtIgnore, dtMatches: (T iou, D detections)
        scores.append(np.asarray(entry["dtScores"], dtype=float)[kept])
        true_positive.append(np.asarray(entry["dtMatches"])[t][kept] > 0)
        num_gt += int((np.asarray(entry["gtIgnore"]) == 0).sum())
    return {"scores": np.concatenate(scores), "true_positive": np.concatenate(true_positive), "num_gt": num_gt}


def counts_at_thresholds(scores, true_positive, thresholds):
    """(TP, FP) arrays: detections scoring at least each threshold, matched or not. Shapes (len(thresholds),)."""
    order = np.argsort(-scores, kind="mergesort")
    tp_cumulative = np.concatenate([[0], np.cumsum(true_positive[order])])
    kept = np.searchsorted(-scores[order], -np.asarray(thresholds, dtype=float), side="right")
    return tp_cumulative[kept], kept - tp_cumulative[kept]


def f1_score(tp, fp, num_gt):
    """2 TP / (TP + FP + #GT), elementwise; 0 where nothing is detected and nothing is there."""
    tp, fp = np.asarray(tp), np.asarray(fp)
    denominator = tp + fp + num_gt
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def best_f1(matches):
    """The best threshold (module docstring) as {"threshold", "f1", "precision", "recall", "tp", "fp",
    "num_gt"}, or None without detections."""
    scores, num_gt = matches["scores"], matches["num_gt"]
    if scores.size == 0:
        return None
    candidates = np.unique(scores)[::-1]  # highest first, so argmax picks the highest of tied thresholds
    tp, fp = counts_at_thresholds(scores, matches["true_positive"], candidates)
    f1 = f1_score(tp, fp, num_gt)
    best = int(np.argmax(f1))
    return {"threshold": float(candidates[best]), "f1": float(f1[best]),
            "precision": float(tp[best] / max(tp[best] + fp[best], 1)), "recall": float(tp[best] / max(num_gt, 1)),
            "tp": int(tp[best]), "fp": int(fp[best]), "num_gt": int(num_gt)}


def f1_curve(matches, thresholds=THRESHOLD_GRID):
    """F1, precision and recall at each of ``thresholds`` (default 0, 0.01, ..., 1), and ``best``;
    precision is None where no detection is kept."""
    tp, fp = counts_at_thresholds(matches["scores"], matches["true_positive"], thresholds)
    num_gt = matches["num_gt"]
    return {"iou": MATCH_IOU, "thresholds": [float(value) for value in thresholds],
            "f1": _rounded(f1_score(tp, fp, num_gt)),
            "precision": [round(float(a / (a + b)), 5) if a + b else None for a, b in zip(tp, fp)],
            "recall": _rounded(tp / max(num_gt, 1)), "best": best_f1(matches)}


def confusion_matrix(agnostic_eval, category_ids, names, score_threshold, iou=MATCH_IOU):
    """The confusion matrix of the module docstring from a ``useCats=0`` COCOeval."""
    t = _index(agnostic_eval.params.iouThrs, iou)
    position = {category_id: index for index, category_id in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=int)
    gt_anns, dt_anns = agnostic_eval.cocoGt.anns, agnostic_eval.cocoDt.anns
    ignored = 0
    for entry in _entries(agnostic_eval):
        dt_matches, dt_ignore = np.asarray(entry["dtMatches"])[t], np.asarray(entry["dtIgnore"], dtype=bool)[t]
        kept = np.asarray(entry["dtScores"], dtype=float) >= score_threshold
        for dt_id, match, is_ignored, is_kept in zip(entry["dtIds"], dt_matches, dt_ignore, kept):
            if not is_kept:
                continue
            if is_ignored:
                ignored += 1
                continue
            column = position[dt_anns[dt_id]["category_id"]]
            row = position[gt_anns[int(match)]["category_id"]] if match > 0 else background
            matrix[row, column] += 1
        gt_matches = np.asarray(entry["gtMatches"])[t]  # (T iou, G ground-truth boxes)
        for gt_id, match, gt_ignore in zip(entry["gtIds"], gt_matches, entry["gtIgnore"]):
            if not gt_ignore and (match == 0 or dt_anns[int(match)]["score"] < score_threshold):
                matrix[position[gt_anns[gt_id]["category_id"]], background] += 1
    return {"iou": iou, "score_threshold": float(score_threshold),
            "labels": [names[category_id] for category_id in category_ids] + [BACKGROUND],
            "matrix": matrix.tolist(), "ignored_detections": ignored}


def _rounded(values, digits=5):
    """A short list for the JSON file: curves do not need 17 digits."""
    return [round(float(value), digits) for value in values]


def _mean_valid(values):
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def per_class_table(coco_eval, coco_dict, names):
    """Per category: AP (IoU .50:.95), AP50, AP75 and the number of scored ground-truth boxes."""
    precision = np.asarray(coco_eval.eval["precision"])  # (T iou, R recall, K class, A area, M maxDets)
    iou_thresholds, area, last = coco_eval.params.iouThrs, list(coco_eval.params.areaRngLbl).index("all"), -1
    num_gt = {int(category["id"]): 0 for category in coco_dict["categories"]}
    for annotation in coco_dict.get("annotations") or []:
        if not annotation.get("iscrowd", 0):
            num_gt[int(annotation["category_id"])] += 1
    rows = []
    for k, category_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k, area, last]
        rows.append({"category_id": int(category_id), "name": names[int(category_id)], "AP": _mean_valid(values),
                     "AP50": _mean_valid(values[_index(iou_thresholds, 0.5)]),
                     "AP75": _mean_valid(values[_index(iou_thresholds, 0.75)]), "num_gt": num_gt[int(category_id)]})
    return rows


def pr_curves(coco_eval, names):
    """Per class and IoU of ``PR_IOUS``: precision at COCO's recall points up to the highest recall."""
    precision = np.asarray(coco_eval.eval["precision"])
    highest_recall = np.asarray(coco_eval.eval["recall"])  # (T, K, A, M)
    recall_points = np.asarray(coco_eval.params.recThrs)
    area, last = list(coco_eval.params.areaRngLbl).index("all"), -1
    curves = {"recall": recall_points.tolist()}
    for iou in PR_IOUS:
        t = _index(coco_eval.params.iouThrs, iou)
        rows = []
        for k, category_id in enumerate(coco_eval.params.catIds):
            values = precision[t, :, k, area, last]
            reached = recall_points <= highest_recall[t, k, area, last] + 1e-12
            rows.append({"category_id": int(category_id), "name": names[int(category_id)],
                         "AP": _mean_valid(values), "precision": _rounded(values[reached]) if values[0] > -1 else []})
        curves[f"iou{iou}"] = rows
    return curves


def ap_by_size(coco_eval):
    """COCO's AP, AP50 and AR@100 per area range, and the ground-truth boxes scored in each."""
    precision, recall = np.asarray(coco_eval.eval["precision"]), np.asarray(coco_eval.eval["recall"])
    labels, iou50 = list(coco_eval.params.areaRngLbl), _index(coco_eval.params.iouThrs, 0.5)
    rows = []
    for size in SIZE_NAMES:
        a = labels.index(size)
        num_gt = sum(int((np.asarray(entry["gtIgnore"]) == 0).sum()) for entry in _entries(coco_eval, size))
        rows.append({"size": size, "area_range": [float(value) for value in coco_eval.params.areaRng[a]],
                     "AP": _mean_valid(precision[:, :, :, a, -1]), "AP50": _mean_valid(precision[iou50, :, :, a, -1]),
                     "AR100": _mean_valid(recall[:, :, a, -1]), "num_gt": num_gt})
    return rows


def best_threshold(analysis):
    """The best-F1 score threshold of an analysis dict (as read from ``{set}_analysis.json``), or None."""
    best = (analysis.get("f1") or {}).get("best") if isinstance(analysis, dict) else None
    threshold = best.get("threshold") if isinstance(best, dict) else None
    return float(threshold) if isinstance(threshold, (int, float)) and 0 <= threshold <= 1 else None


def find_best_threshold(set_name, folders):
    """(threshold, path) from the first ``{set_name}_analysis.json`` among ``folders`` (None entries
    skipped) that has a best-F1 threshold, or None when there is none. An analysis file that
    cannot be read raises ValueError naming it."""
    for folder in folders:
        path = os.path.join(folder, f"{set_name}_analysis.json") if folder is not None else None
        if path is None or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                threshold = best_threshold(json.load(handle))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read the analysis ({error})") from None
        if threshold is not None:
            return threshold, path
    return None


def summary_line(analysis):
    """One line for the console: the best F1 and its threshold, and the confusion matrix's totals."""
    best, confusion = analysis["f1"]["best"], np.asarray(analysis["confusion"]["matrix"])
    if best is None:
        return f"no detections: all {analysis['num_gt']} ground-truth boxes missed"
    matched = confusion[:-1, :-1]
    return (f"best F1 {best['f1']:.3f} at score >= {best['threshold']:.3f} (IoU {analysis['f1']['iou']}: precision "
            f"{best['precision']:.3f}, recall {best['recall']:.3f}); at score >= "
            f"{analysis['confusion']['score_threshold']:.3f}: {confusion[:-1, -1].sum()} boxes missed, "
            f"{confusion[-1, :-1].sum()} false detections, {np.trace(matched)} found with the right class, "
            f"{matched.sum() - np.trace(matched)} with a wrong class")
