"""Results-file checks: each rule's message, all problems reported at once, and the script's exit codes."""
import json
import math
import os
import subprocess
import sys

import pytest

from retinanet.evaluation.results_check import SubmissionError, check_results, load_results_file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_gt(with_annotations=True):
    images = [{"id": image_id, "file_name": f"{image_id}.jpg", "width": 320, "height": 240} for image_id in (3, 7, 11)]
    categories = [{"id": 2, "name": "cat"}, {"id": 8, "name": "dog"}]
    annotations = [
        {"id": 1, "image_id": 3, "category_id": 2, "bbox": [10.0, 20.0, 50.0, 40.0], "area": 2000.0, "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 8, "bbox": [100.0, 60.0, 120.0, 110.0], "area": 13200.0, "iscrowd": 0},
    ]
    gt = {"images": images, "categories": categories}
    if with_annotations:
        gt["annotations"] = annotations
    return gt


def entry(**changes):
    detection = {"image_id": 3, "category_id": 2, "bbox": [10.0, 20.0, 50.0, 40.0], "score": 0.9}
    detection.update(changes)
    return detection


def messages(results, gt=None):
    report = check_results(results, gt or make_gt(), gt_name="val.json")
    return [str(problem) for problem in report.problems]


def test_valid_results_have_no_problems():
    report = check_results([entry(), entry(image_id=7, category_id=8, extra_key="fine")], make_gt(), "val.json")
    assert report.ok and report.problems == []
    assert report.num_entries == 2 and report.num_images == 3
    assert report.images_without_detections == [11]
    assert "no problems found" in report.format()


@pytest.mark.parametrize("field_name", ["image_id", "category_id", "bbox", "score"])
def test_missing_field(field_name):
    detection = entry()
    del detection[field_name]
    assert messages([entry(), detection]) == [f"entry 1: {field_name} is missing"]


def test_image_id_not_in_set():
    assert messages([entry(image_id=4)]) == ["entry 0: image_id 4 is not an image of val.json"]


def test_category_id_not_in_set():
    assert messages([entry(), entry(category_id=7)]) == ["entry 1: category_id 7 is not a category of val.json"]


@pytest.mark.parametrize("value, described", [("3", "str '3'"), (3.0, "float 3.0"), (True, "bool True")])
def test_image_id_must_be_integer(value, described):
    assert messages([entry(image_id=value)]) == [f"entry 0: image_id must be an integer, got {described}"]


def test_category_id_must_be_integer():
    assert messages([entry(category_id=None)]) == ["entry 0: category_id must be an integer, got NoneType None"]


@pytest.mark.parametrize("bbox", [[1, 2, 3], (1, 2, 3, 4), "1,2,3,4", [1, 2, 3, 4, 5]])
def test_bbox_must_be_list_of_four(bbox):
    (message,) = messages([entry(bbox=bbox)])
    assert message.startswith("entry 0: bbox must be a list of 4 numbers [x, y, w, h], got ")


@pytest.mark.parametrize("position, value", [(0, math.nan), (1, math.inf), (2, "5"), (3, False)])
def test_bbox_items_must_be_finite_numbers(position, value):
    bbox = [10.0, 20.0, 50.0, 40.0]
    bbox[position] = value
    (message,) = messages([entry(bbox=bbox)])
    name = "xywh"[position]
    assert message.startswith(f"entry 0: bbox {name} (item {position}) must be a finite number, got ")


def test_bbox_width_and_height_not_negative():
    assert messages([entry(bbox=[10, 20, -1, 0]), entry(bbox=[-5, -5, 0, 0])]) == [
        "entry 0: bbox w (item 2) is -1, must be >= 0",
    ]
    assert messages([entry(bbox=[10, 20, 5, -0.5])]) == ["entry 0: bbox h (item 3) is -0.5, must be >= 0"]


@pytest.mark.parametrize("score", [1.5, -0.1])
def test_score_in_unit_interval(score):
    assert messages([entry(score=score)]) == [f"entry 0: score {score} is outside [0, 1]"]


@pytest.mark.parametrize("score, described", [(math.nan, "float nan"), ("0.5", "str '0.5'"), (True, "bool True")])
def test_score_must_be_finite_number(score, described):
    assert messages([entry(score=score)]) == [f"entry 0: score must be a finite number, got {described}"]


def test_scores_zero_and_one_and_integer_boxes_are_fine():
    assert messages([entry(score=0), entry(score=1.0, bbox=[0, 0, 0, 0])]) == []


def test_entry_must_be_object():
    assert messages([entry(), [3, 2, [0, 0, 1, 1], 0.5]]) == [
        "entry 1: must be a JSON object, got list [3, 2, [0, 0, 1, 1], 0.5]"
    ]


def test_top_level_must_be_list():
    report = check_results({"annotations": []}, make_gt(), "val.json")
    assert not report.ok
    assert [str(problem) for problem in report.problems] == [
        "results: top level must be a JSON list of detections, got dict {'annotations': []}"
    ]
    assert report.num_entries == 0 and report.images_without_detections == [3, 7, 11]


def test_all_problems_reported_at_once():
    results = [
        entry(),
        entry(image_id=99, score=2.0),
        entry(category_id="dog", bbox=[0, 0, -3, math.inf]),
        "not a detection",
    ]
    report = check_results(results, make_gt(), "val.json")
    assert [(problem.index, problem.field) for problem in report.problems] == [
        (1, "image_id"), (1, "score"), (2, "category_id"), (2, "bbox"), (2, "bbox"), (3, None),
    ]
    text = report.format(max_problems=4)
    assert "6 problems found:" in text
    assert "entry 1: image_id 99 is not an image of val.json" in text
    assert "entry 2: bbox w (item 2) is -3, must be >= 0" in text
    assert "entry 2: bbox h (item 3)" not in text and "... and 2 more" in text


def test_more_than_100_detections_is_a_warning():
    results = [entry(image_id=7, score=0.5)] * 101 + [entry()] * 100
    report = check_results(results, make_gt(), "val.json")
    assert report.ok
    assert report.images_over_limit == {7: 101}
    assert "warning: 1 image(s) have more than 100 detections" in report.format()
    assert "7 (101)" in report.format()


def test_images_without_detections_counted():
    report = check_results([entry(image_id=7), entry(image_id=7), entry(image_id=12)], make_gt(), "val.json")
    assert report.images_without_detections == [3, 11]
    assert report.format().startswith("3 detections; 2 of the 3 images in val.json have no detections")


def test_load_results_file_round_trip(tmp_path):
    path = tmp_path / "val_bbox_results.json"
    path.write_text(json.dumps([entry()]))
    assert load_results_file(path) == [entry()]


def test_oversized_file_refused(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps([entry()] * 5))
    expected = r"big\.json: results file is \d+ bytes, larger than the limit of 64 bytes"
    with pytest.raises(SubmissionError, match=expected):
        load_results_file(path, max_bytes=64)


def test_unparsable_json_names_the_file(tmp_path):
    path = tmp_path / "broken_results.json"
    path.write_text('[{"image_id": 3, ')
    with pytest.raises(SubmissionError, match=r"broken_results\.json: not valid JSON: .* line 1 column"):
        load_results_file(path)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(SubmissionError, match=r"nowhere\.json: cannot open results file"):
        load_results_file(tmp_path / "nowhere.json")


def run_script(tmp_path, results, gt=None, extra_args=()):
    """Write the split and the results under tmp_path and run test_submission.py there."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "val.json").write_text(json.dumps(gt or make_gt()))
    if results is not None:
        (tmp_path / "val_bbox_results.json").write_text(results if isinstance(results, str) else json.dumps(results))
    command = [sys.executable, os.path.join(REPO_ROOT, "test_submission.py"), "--coco_path", str(data), *extra_args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("evaluator", ["faster", "pycocotools"])
def test_script_scores_valid_file(tmp_path, evaluator):
    results = [entry(), entry(image_id=7, category_id=8, bbox=[100.0, 60.0, 120.0, 110.0], score=0.8)]
    completed = run_script(tmp_path, results, extra_args=("--evaluator", evaluator))
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    assert " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in completed.stdout
    assert "| cat (2) | 1.000 | 1.000 | 1 |" in completed.stdout


def test_script_lists_every_problem_and_exits_1(tmp_path):
    completed = run_script(tmp_path, [entry(image_id=99), entry(score=-1)])
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert "entry 0: image_id 99 is not an image of val.json" in completed.stdout
    assert "entry 1: score -1 is outside [0, 1]" in completed.stdout
    assert "Average Precision" not in completed.stdout


def test_script_without_annotations_has_nothing_to_score(tmp_path):
    completed = run_script(tmp_path, [entry()], gt=make_gt(with_annotations=False))
    assert completed.returncode == 0, completed.stderr
    assert "is well-formed" in completed.stdout and "nothing to score" in completed.stdout
    assert "Average Precision" not in completed.stdout


@pytest.mark.parametrize("results, expected", [
    (None, "val_bbox_results.json: cannot open results file"),
    ("[{", "val_bbox_results.json: not valid JSON"),
])
def test_script_unreadable_results_exit_2(tmp_path, results, expected):
    completed = run_script(tmp_path, results)
    assert completed.returncode == 2
    assert expected in completed.stderr and "Traceback" not in completed.stderr


def test_script_missing_ground_truth_exit_2(tmp_path):
    completed = run_script(tmp_path, [entry()], extra_args=("--set_name", "test"))
    assert completed.returncode == 2
    assert "test.json: ground-truth file not found" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_script_oversized_results_exit_2(tmp_path):
    completed = run_script(tmp_path, [entry()] * 10, extra_args=("--max_bytes", "100"))
    assert completed.returncode == 2
    assert "larger than the limit of 100 bytes" in completed.stderr and "Traceback" not in completed.stderr
