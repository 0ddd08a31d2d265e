"""COCO scoring: faster_coco_eval and pycocotools agree, and known cases give known numbers."""
import json

import numpy as np
import pytest

from retinanet.evaluation.coco_eval import (
    COCO_STAT_NAMES,
    evaluate_detections,
    format_per_class_table,
    has_annotations,
    load_coco_gt,
)

CATEGORY_IDS = (1, 5, 9)  # deliberately neither starting at 0 nor contiguous
# Box side ranges giving COCO small (< 32^2), medium and large (> 96^2) areas.
SIDE_RANGES = ((8, 28), (40, 90), (110, 200))


def make_gt(num_images=6, seed=0):
    """A COCO dict with every category and every area range represented."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(3, 7))):
            low, high = SIDE_RANGES[int(rng.integers(0, 3))]
            width, height = rng.uniform(low, high, size=2)
            x, y = rng.uniform(0, 640 - width), rng.uniform(0, 480 - height)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(rng.choice(CATEGORY_IDS)),
                "bbox": [float(x), float(y), float(width), float(height)],
                "area": float(width * height),
                "iscrowd": 0,
            })
    categories = [{"id": category_id, "name": f"class_{category_id}"} for category_id in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def noisy_results(gt, seed=1):
    """Jittered copies of most GT boxes with random scores, plus random false positives."""
    rng = np.random.default_rng(seed)
    results = []
    for annotation in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # a miss
        x, y, width, height = annotation["bbox"]
        jitter = rng.normal(0.0, 0.08, size=4) * [width, height, width, height]
        results.append({
            "image_id": annotation["image_id"],
            "category_id": annotation["category_id"],
            "bbox": [float(x + jitter[0]), float(y + jitter[1]),
                     float(max(1.0, width + jitter[2])), float(max(1.0, height + jitter[3]))],
            "score": float(rng.uniform(0.05, 1.0)),
        })
    for _ in range(15):
        results.append({
            "image_id": int(rng.choice([image["id"] for image in gt["images"]])),
            "category_id": int(rng.choice(CATEGORY_IDS)),
            "bbox": [float(v) for v in rng.uniform([0, 0, 10, 10], [500, 350, 120, 120])],
            "score": float(rng.uniform(0.0, 0.6)),
        })
    return results


def perfect_results(gt, category_ids=CATEGORY_IDS):
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
        for a in gt["annotations"]
        if a["category_id"] in category_ids
    ]


def test_faster_and_pycocotools_agree():
    gt = make_gt()
    results = noisy_results(gt)
    faster = evaluate_detections(gt, results, evaluator="faster")
    reference = evaluate_detections(gt, results, evaluator="pycocotools")
    assert faster["evaluator"] == "faster" and reference["evaluator"] == "pycocotools"
    assert set(faster["stats"]) == set(COCO_STAT_NAMES)
    for name in COCO_STAT_NAMES:
        assert abs(faster["stats"][name] - reference["stats"][name]) < 1e-3, name
    # Noisy boxes with misses and false positives: a real score, neither 0 nor perfect.
    assert 0.1 < faster["stats"]["AP"] < 0.95
    assert all(value >= 0 for value in faster["stats"].values())  # every area range has GT
    for faster_row, reference_row in zip(faster["per_class"], reference["per_class"]):
        assert faster_row["category_id"] == reference_row["category_id"]
        assert abs(faster_row["AP"] - reference_row["AP"]) < 1e-3
        assert abs(faster_row["AP50"] - reference_row["AP50"]) < 1e-3


def test_lines_match_pycocotools_format():
    gt = make_gt()
    metrics = evaluate_detections(gt, noisy_results(gt), evaluator="faster")
    assert len(metrics["lines"]) == 12
    ap = metrics["stats"]["AP"]
    assert metrics["lines"][0] == (
        f" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {ap:0.3f}"
    )
    assert metrics["lines"][6].startswith(" Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]")


@pytest.mark.parametrize("evaluator", ["faster", "pycocotools"])
def test_perfect_results_score_one(evaluator):
    gt = make_gt()
    metrics = evaluate_detections(gt, perfect_results(gt), evaluator=evaluator)
    assert metrics["stats"]["AP"] == pytest.approx(1.0)
    assert metrics["stats"]["AP50"] == pytest.approx(1.0)
    assert metrics["stats"]["AR100"] == pytest.approx(1.0)
    assert all(row["AP"] == pytest.approx(1.0) for row in metrics["per_class"])


@pytest.mark.parametrize("evaluator", ["faster", "pycocotools"])
def test_empty_results_score_zero(evaluator):
    gt = make_gt()
    metrics = evaluate_detections(gt, [], evaluator=evaluator)
    assert metrics["stats"] == {name: 0.0 for name in COCO_STAT_NAMES}
    assert len(metrics["lines"]) == 12 and metrics["lines"][0].endswith("= 0.000")
    assert [row["AP"] for row in metrics["per_class"]] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("evaluator", ["faster", "pycocotools"])
def test_per_class_ap_and_gt_counts(evaluator):
    gt = make_gt()
    gt["categories"].append({"id": 12, "name": "never_annotated"})
    # Class 1 detected perfectly, class 5 noisily, class 9 not at all.
    results = perfect_results(gt, category_ids=(1,))
    results += [entry for entry in noisy_results(gt) if entry["category_id"] == 5]
    metrics = evaluate_detections(gt, results, evaluator=evaluator, class_names={5: "renamed"})
    rows = {row["category_id"]: row for row in metrics["per_class"]}
    assert list(rows) == [1, 5, 9, 12]
    for category_id in CATEGORY_IDS:
        expected = sum(1 for a in gt["annotations"] if a["category_id"] == category_id)
        assert rows[category_id]["num_gt"] == expected > 0
    assert rows[1]["AP"] == pytest.approx(1.0) and rows[1]["AP50"] == pytest.approx(1.0)
    assert 0.0 < rows[5]["AP"] < 1.0
    assert rows[9]["AP"] == 0.0 and rows[9]["AP50"] == 0.0
    assert rows[12] == {"category_id": 12, "name": "never_annotated", "AP": None, "AP50": None, "num_gt": 0}
    assert rows[5]["name"] == "renamed" and rows[1]["name"] == "class_1"
    table = format_per_class_table(metrics["per_class"]).splitlines()
    assert table[0] == "| class | AP | AP50 | #GT |"
    assert table[2] == f"| class_1 (1) | 1.000 | 1.000 | {rows[1]['num_gt']} |"
    assert table[-1] == "| never_annotated (12) | - | - | 0 |"


def test_images_without_detections_count_as_misses():
    gt = make_gt()
    first_image_only = [entry for entry in perfect_results(gt) if entry["image_id"] == 1]
    metrics = evaluate_detections(gt, first_image_only)
    first_image_gt = sum(1 for a in gt["annotations"] if a["image_id"] == 1)
    assert metrics["stats"]["AR100"] < 1.0
    assert metrics["stats"]["AR100"] >= first_image_gt / len(gt["annotations"]) - 1e-6


@pytest.mark.parametrize("evaluator", ["faster", "pycocotools"])
def test_gt_from_path_quiet_and_unmodified(tmp_path, capsys, evaluator):
    gt = make_gt()
    results = noisy_results(gt)
    gt_before, results_before = json.dumps(gt), json.dumps(results)
    path = tmp_path / "val.json"
    path.write_text(gt_before)
    from_path = evaluate_detections(path, results, evaluator=evaluator)
    from_dict = evaluate_detections(gt, results, evaluator=evaluator)
    assert from_path["stats"] == from_dict["stats"]
    assert json.dumps(gt) == gt_before and json.dumps(results) == results_before
    coco = load_coco_gt(path, evaluator=evaluator)
    assert sorted(coco.getImgIds()) == [image["id"] for image in gt["images"]]
    assert capsys.readouterr().out == ""


def test_has_annotations():
    gt = make_gt()
    assert has_annotations(gt)
    assert not has_annotations({**gt, "annotations": []})
    assert not has_annotations({"images": gt["images"], "categories": gt["categories"]})


def test_unknown_evaluator_is_rejected():
    with pytest.raises(ValueError, match="evaluator"):
        evaluate_detections(make_gt(), [], evaluator="fast")
