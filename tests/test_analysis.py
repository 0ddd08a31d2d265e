"""The analysis of a results file: best-F1 threshold, confusion matrix, PR curves, AP by size, its files."""
import importlib.util
import json
import os

import numpy as np
import pytest

from retinanet.evaluation.analysis import analyze_detections, detection_matches, run_cocoeval
from retinanet.evaluation.analysis import find_best_threshold
from retinanet.evaluation.analysis_plots import PLOT_NAMES, write_analysis
from retinanet.evaluation.coco_eval import evaluate_detections
from scripts import ROOT


def _image(image_id, size=100):
    return {"id": image_id, "width": size, "height": size, "file_name": f"{image_id}.png"}


def _box(box_id, image_id, category_id, bbox, iscrowd=0):
    return {"id": box_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": iscrowd}


SMALL_GT = {
    "images": [_image(1), _image(2)],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [_box(1, 1, 1, [10, 10, 20, 20]), _box(2, 1, 2, [50, 50, 40, 40]), _box(3, 2, 1, [0, 0, 50, 50])],
}
SMALL_RESULTS = [
    {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},  # found
    {"image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "score": 0.8},  # the dog, called a cat
    {"image_id": 2, "category_id": 2, "bbox": [60, 60, 20, 20], "score": 0.7},  # nothing there
    {"image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.3},    # found, with a low score
]


def random_case(seed=5, num_images=12, num_classes=3):
    """Ground truth with a crowd region, and detections: jittered copies (some of another class) scoring
    0.3-1, and strays scoring 0-0.6, so that the best threshold lies inside the range of scores."""
    rng = np.random.default_rng(seed)
    images = [_image(image_id, 200) for image_id in range(1, num_images + 1)]
    annotations, results = [], []
    for image in images:
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 140, size=2)
            w, h = rng.uniform(8, 60, size=2)
            category_id = int(rng.integers(1, num_classes + 1))
            annotations.append(_box(len(annotations) + 1, image["id"], category_id, [x, y, w, h]))
            if rng.random() < 0.8:
                dx, dy, dw, dh = rng.normal(0, 2, size=4)
                label = category_id if rng.random() < 0.8 else int(rng.integers(1, num_classes + 1))
                results.append({"image_id": image["id"], "category_id": label,
                                "bbox": [x + dx, y + dy, max(1.0, w + dw), max(1.0, h + dh)],
                                "score": round(float(0.3 + 0.7 * rng.random()), 2)})  # 2 decimals: ties happen
        for _ in range(rng.integers(0, 4)):
            results.append({"image_id": image["id"], "category_id": int(rng.integers(1, num_classes + 1)),
                            "bbox": [*rng.uniform(0, 150, size=2), *rng.uniform(5, 40, size=2)],
                            "score": round(float(0.6 * rng.random()), 2)})
    annotations.append(_box(len(annotations) + 1, 1, 1, [150, 150, 45, 45], iscrowd=1))
    results.append({"image_id": 1, "category_id": 1, "bbox": [152, 151, 40, 40], "score": 0.99})  # on the crowd
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, num_classes + 1)]
    return {"images": images, "categories": categories, "annotations": annotations}, results


def test_small_case_gives_the_numbers_worked_out_by_hand():
    analysis = analyze_detections(SMALL_GT, SMALL_RESULTS)
    # Keeping all four: TP 2 (both cats), FP 2, 3 boxes -> F1 = 4 / 7; at 0.9: TP 1, FP 0 -> F1 = 2 / 4.
    assert analysis["f1"]["best"] == {"threshold": 0.3, "f1": pytest.approx(4 / 7), "precision": 0.5,
                                      "recall": pytest.approx(2 / 3), "tp": 2, "fp": 2, "num_gt": 3}
    confusion = analysis["confusion"]
    assert confusion["labels"] == ["cat", "dog", "background"] and confusion["score_threshold"] == 0.3
    assert confusion["matrix"] == [[2, 0, 0],   # both cats found as cats
                                   [1, 0, 0],   # the dog found as a cat
                                   [0, 1, 0]]   # a dog where there is nothing
    above_half = analyze_detections(SMALL_GT, SMALL_RESULTS, score_threshold=0.5)["confusion"]
    assert above_half["matrix"] == [[1, 0, 1], [1, 0, 0], [0, 1, 0]]  # the 0.3 cat is not kept: one cat missed
    by_size = {row["size"]: row for row in analysis["by_size"]}
    assert [by_size[size]["num_gt"] for size in ("small", "medium", "large")] == [1, 2, 0]
    assert by_size["large"]["AP"] is None and by_size["small"]["AP"] == pytest.approx(1.0)
    cat, dog = analysis["per_class"]
    assert (cat["num_gt"], dog["num_gt"], dog["AP"]) == (2, 1, 0.0)
    # The cat's PR curve at IoU 0.5: precision 1 up to recall 0.5, then 2/3 (3 detections, 2 right) up to 1.
    curve = analysis["pr_curves"]["iou0.5"][0]["precision"]
    assert len(curve) == 101 and curve[50] == 1.0 and curve[51] == pytest.approx(2 / 3, abs=1e-5)  # 5 digits kept


def test_per_class_ap_agrees_with_the_scoring_of_test_py():
    gt, results = random_case()
    analysis = analyze_detections(gt, results)
    scored = evaluate_detections(gt, results, evaluator="pycocotools")
    for mine, theirs in zip(analysis["per_class"], scored["per_class"]):
        assert mine["AP"] == pytest.approx(theirs["AP"]) and mine["AP50"] == pytest.approx(theirs["AP50"])
    assert [row["AP"] for row in analysis["by_size"]] == pytest.approx(
        [scored["stats"][name] if scored["stats"][name] >= 0 else None for name in ("APs", "APm", "APl")])


def test_best_f1_threshold_equals_a_brute_force_search_over_the_same_matches():
    gt, results = random_case()
    coco_eval = run_cocoeval(gt, results)
    # Brute force straight from COCOeval's per-image matches (area all, IoU 0.5, index 0).
    detections, num_gt = [], 0
    for entry in coco_eval.evalImgs:
        if entry is None or list(entry["aRng"]) != [0, 1e10]:
            continue
        num_gt += int(sum(1 for ignored in entry["gtIgnore"] if not ignored))
        for score, match, ignored in zip(entry["dtScores"], entry["dtMatches"][0], entry["dtIgnore"][0]):
            if not ignored:
                detections.append((score, match > 0))
    best = None
    for threshold in sorted({score for score, _ in detections}, reverse=True):
        tp = sum(1 for score, matched in detections if score >= threshold and matched)
        fp = sum(1 for score, matched in detections if score >= threshold and not matched)
        f1 = 2 * tp / (tp + fp + num_gt)
        if best is None or f1 > best[1]:
            best = (threshold, f1, tp, fp)
    found = analyze_detections(gt, results)["f1"]["best"]
    assert (found["threshold"], found["tp"], found["fp"], found["num_gt"]) == (best[0], best[2], best[3], num_gt)
    assert found["f1"] == pytest.approx(best[1])
    assert len(detections) == len(results) - 1  # all but the one on the crowd region are scored
    assert detection_matches(coco_eval)["num_gt"] == len(gt["annotations"]) - 1


@pytest.mark.parametrize("threshold", [None, 0.0, 0.5])
def test_confusion_matrix_totals_are_the_boxes_and_the_kept_detections(threshold):
    gt, results = random_case()
    confusion = analyze_detections(gt, results, score_threshold=threshold)["confusion"]
    matrix = np.array(confusion["matrix"])
    kept = [entry for entry in results if entry["score"] >= confusion["score_threshold"]]
    for k, category_id in enumerate((1, 2, 3)):
        boxes = [a for a in gt["annotations"] if a["category_id"] == category_id and not a["iscrowd"]]
        assert matrix[k].sum() == len(boxes)  # each box is found once (as some class) or missed
    on_crowd = confusion["ignored_detections"]
    assert on_crowd == 1  # the 0.99 detection on the crowd region is kept at every threshold here
    assert matrix[:, :-1].sum() + on_crowd == len(kept)
    for k, category_id in enumerate((1, 2, 3)):
        assert matrix[:, k].sum() + (on_crowd if category_id == 1 else 0) == sum(
            1 for entry in kept if entry["category_id"] == category_id)
    assert matrix[-1, -1] == 0


def test_without_detections_every_box_is_missed():
    analysis = analyze_detections(SMALL_GT, [])
    assert analysis["f1"]["best"] is None and analysis["confusion"]["score_threshold"] == 0.5
    assert analysis["confusion"]["matrix"] == [[0, 0, 2], [0, 0, 1], [0, 0, 0]]
    assert [row["AP"] for row in analysis["per_class"]] == [0.0, 0.0]


def test_files_and_the_threshold_vis_py_reads(tmp_path):
    paths = write_analysis(analyze_detections(SMALL_GT, SMALL_RESULTS), str(tmp_path), "val")
    for name in PLOT_NAMES:
        assert os.path.getsize(paths[name]) > 5000, name
    assert json.loads((tmp_path / "val_analysis.json").read_text())["f1"]["best"]["threshold"] == 0.3
    assert find_best_threshold("val", [None, str(tmp_path / "elsewhere"), str(tmp_path)]) == (0.3, paths["json"])
    assert find_best_threshold("test", [str(tmp_path)]) is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "val_analysis.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad/val_analysis.json: cannot read the analysis"):
        find_best_threshold("val", [str(tmp_path / "bad"), str(tmp_path)])


def test_analyze_tool_on_a_results_file(tmp_path, capsys):
    (tmp_path / "val.json").write_text(json.dumps(dict(SMALL_GT, categories=[
        {"id": 1, "name": "cat $x$"}, {"id": 2, "name": "dog"}])))  # a '$' is drawn, not parsed as mathtext
    (tmp_path / "results.json").write_text(json.dumps(SMALL_RESULTS))
    spec = importlib.util.spec_from_file_location("tool_analyze", os.path.join(ROOT, "tools", "analyze.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(["--coco_path", str(tmp_path), "--results", str(tmp_path / "results.json"),
               "--output_dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "best F1 0.571 at score >= 0.300" in printed and "1 with a wrong class" in printed
    assert sorted(os.listdir(tmp_path / "out")) == sorted(["val_analysis.json"] + [f"val_{name}.png"
                                                                                      for name in PLOT_NAMES])
    (tmp_path / "broken.json").write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1],
                                                       "score": 0.5}]))
    with pytest.raises(SystemExit) as stopped:
        tool.main(["--coco_path", str(tmp_path), "--results", str(tmp_path / "broken.json")])
    assert stopped.value.code == 2 and "not a usable results file" in capsys.readouterr().err
