"""check_dataset finds every kind of bad input, names file, id and reason, and classifies it.

Each test starts from a small valid set generated in tmp_path and breaks one thing.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from retinanet.data.check import DatasetError, check_dataset, sanitize_box, validate_or_raise

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SET = "train"


def write_image(path, width, height, **options):
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **options)


def make_dataset(root):
    """Write three images and return a valid COCO dict for them (category ids 5 and 12)."""
    image_dir = root / "images" / SET
    image_dir.mkdir(parents=True)
    write_image(image_dir / "a.jpg", 64, 48, quality=90)
    write_image(image_dir / "b.png", 32, 40)
    write_image(image_dir / "c.jpg", 50, 50, quality=90)
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.png", "width": 32, "height": 40},
                   {"id": 3, "file_name": "c.jpg", "width": 50, "height": 50}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 5, "bbox": [4, 4, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 12, "bbox": [30, 20, 30, 25], "area": 750, "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 5, "bbox": [0, 0, 32, 40], "area": 1280, "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 12, "name": "dog"}],
    }


def run_check(root, data, **options):
    (root / f"{SET}.json").write_text(json.dumps(data))
    return check_dataset(str(root), SET, **options)


def only(problems, kind):
    found = [problem for problem in problems if problem.kind == kind]
    assert found, f"no problem of kind {kind}; got {[problem.kind for problem in problems]}"
    return found


def assert_single_error(report, kind, item_id, *reason_parts, file_name=f"{SET}.json"):
    assert not report.ok
    assert [problem.kind for problem in report.errors] == [kind]
    problem = report.errors[0]
    assert problem.item_id == item_id
    assert os.path.basename(problem.file) == file_name
    for part in reason_parts:
        assert part in problem.reason
    return problem


@pytest.fixture
def dataset(tmp_path):
    return tmp_path, make_dataset(tmp_path)


def test_valid_set_is_ok_with_counts(dataset):
    root, data = dataset
    report = run_check(root, data)
    assert report.ok and report.errors == [] and report.fixes == []
    assert (report.num_images, report.num_annotations) == (3, 3)
    assert report.class_counts == {"cat": 2, "dog": 1}
    assert report.images_without_annotations == 1
    assert "Result: usable" in report.format()


def test_missing_json(tmp_path):
    report = check_dataset(str(tmp_path), "val")
    assert_single_error(report, "json_missing", None, "not found", file_name="val.json")


def test_unparsable_json(dataset):
    root, _ = dataset
    (root / f"{SET}.json").write_text('{"images": [')
    report = check_dataset(str(root), SET)
    assert_single_error(report, "json_invalid", None, "not valid JSON", "line 1")


def test_json_over_size_limit(dataset):
    root, data = dataset
    report = run_check(root, data, max_json_bytes=100)
    assert_single_error(report, "json_too_large", None, "over the limit of 100 bytes")


def test_missing_keys(dataset):
    root, data = dataset
    del data["images"], data["categories"]
    report = run_check(root, data, check_images=False)
    reasons = [problem.reason for problem in only(report.errors, "json_structure")]
    assert reasons == ["missing required key 'images'", "missing required key 'categories'"]


def test_wrong_top_level_types(dataset):
    root, data = dataset
    data["images"] = {"id": 1}
    report = run_check(root, data)
    assert_single_error(report, "json_structure", None, "'images' must be a list, got dict")


def test_set_without_annotations_key_is_usable_with_a_note(dataset):
    root, data = dataset
    del data["annotations"]
    report = run_check(root, data)
    assert report.ok and report.num_annotations == 0
    assert any("no 'annotations' key" in note for note in report.notes)


def test_empty_set(dataset):
    root, data = dataset
    data["images"], data["annotations"] = [], []
    report = run_check(root, data)
    assert_single_error(report, "empty_set", None, "no images")


@pytest.mark.parametrize("section, kind, reason", [
    ("images", "duplicate_image_id", "image 2: id used again by images[3]"),
    ("annotations", "duplicate_annotation_id", "annotation 11: id used again by annotations[3]"),
    ("categories", "duplicate_category_id", "category 12: id used again by categories[2]"),
])
def test_duplicate_ids(dataset, section, kind, reason):
    root, data = dataset
    data[section].append(dict(data[section][1], name="bird") if section == "categories" else dict(data[section][1]))
    report = run_check(root, data)
    problem = assert_single_error(report, kind, data[section][1]["id"])
    assert problem.reason == reason


def test_unknown_image_id(dataset):
    root, data = dataset
    data["annotations"][1]["image_id"] = 99
    report = run_check(root, data)
    assert_single_error(report, "unknown_image_id", 11, "annotation 11", "image_id 99 does not exist")


def test_unknown_category_id(dataset):
    root, data = dataset
    data["annotations"][0]["category_id"] = 1  # ids 5 and 12 exist; 1 does not
    report = run_check(root, data)
    assert_single_error(report, "unknown_category_id", 10, "annotation 10", "category_id 1 does not exist")


def test_missing_image_file(dataset):
    root, data = dataset
    os.remove(root / "images" / SET / "b.png")
    report = run_check(root, data)
    problem = assert_single_error(report, "image_file_missing", 2, "image 2", "not found", file_name="b.png")
    assert problem.file == os.path.join(str(root), "images", SET, "b.png")


def test_missing_image_folder(dataset):
    root, data = dataset
    os.rename(root / "images" / SET, root / "images" / "elsewhere")
    report = run_check(root, data)
    assert_single_error(report, "image_folder_missing", None, "not found", file_name=SET)


def test_file_that_is_not_an_image(dataset):
    root, data = dataset
    (root / "images" / SET / "c.jpg").write_text("not a picture")
    report = run_check(root, data)
    assert_single_error(report, "image_file_unreadable", 3, "image 3", "not an image file", file_name="c.jpg")


def test_truncated_jpeg(dataset):
    root, data = dataset
    path = root / "images" / SET / "a.jpg"
    path.write_bytes(path.read_bytes()[:-400])
    report = run_check(root, data)
    assert_single_error(report, "image_file_unreadable", 1, "image 1", "truncated", file_name="a.jpg")


def test_size_mismatch(dataset):
    root, data = dataset
    data["images"][1]["width"] = 33
    report = run_check(root, data)
    assert_single_error(report, "image_size_mismatch", 2, "image 2", "JSON gives 33x40 but the file is 32x40",
                        file_name="b.png")


def test_size_mismatch_from_exif_rotation_is_explained(dataset):
    root, data = dataset
    image = Image.open(root / "images" / SET / "c.jpg")
    exif = image.getexif()
    exif[0x0112] = 6
    image.resize((60, 50)).save(root / "images" / SET / "c.jpg", exif=exif)  # upright it is 50x60
    data["images"][2]["width"] = 60
    report = run_check(root, data)
    assert_single_error(report, "image_size_mismatch", 3, "JSON gives 60x50 but the file is 50x60",
                        "before the EXIF rotation", file_name="c.jpg")


def test_no_images_option_skips_file_checks(dataset):
    root, data = dataset
    os.remove(root / "images" / SET / "a.jpg")
    assert run_check(root, data, check_images=False).ok


@pytest.mark.parametrize("bbox, kind, reason", [
    ([4, 4, -20, 10], "box_negative_size", "negative width or height"),
    ([4, 4, 20, math.nan], "box_not_finite", "not finite"),
    ([4, 4, math.inf, 10], "box_not_finite", "not finite"),
    ([4, 4, 20], "box_malformed", "four numbers"),
    (["4", 4, 20, 10], "box_malformed", "four numbers"),
    (None, "box_malformed", "four numbers"),
    ([70, 4, 20, 10], "box_outside_image", "entirely outside the 64x48 image"),
    ([-30, 4, 20, 10], "box_outside_image", "entirely outside the 64x48 image"),
    ([0, 0, 1e30, 1e30], "box_far_outside", "reaches beyond the 64x48 image by more than the image's own size"),
    ([-70, 4, 100, 10], "box_far_outside", "reaches beyond the 64x48 image"),
    ([4, 4, 20, 100], "box_far_outside", "reaches beyond the 64x48 image"),
])
def test_unusable_boxes(dataset, bbox, kind, reason):
    root, data = dataset
    data["annotations"][0]["bbox"] = bbox
    report = run_check(root, data)
    assert_single_error(report, kind, 10, "annotation 10", reason)
    assert sanitize_box(bbox, 64, 48) is None


def test_nan_written_in_the_json_text(dataset):
    root, data = dataset
    text = json.dumps(data).replace("[4, 4, 20, 10]", "[4, 4, NaN, 10]")
    (root / f"{SET}.json").write_text(text)
    report = check_dataset(str(root), SET)
    assert_single_error(report, "box_not_finite", 10, "annotation 10", "not finite")


def test_box_partly_outside_is_clipped(dataset):
    root, data = dataset
    data["annotations"][1]["bbox"] = [50, -5, 30, 25]  # image 1 is 64x48
    report = run_check(root, data)
    assert report.ok
    (fix,) = report.fixes
    assert (fix.kind, fix.item_id) == ("box_clipped", 11)
    assert "annotation 11" in fix.reason and "clipped to [50, 0, 64, 20]" in fix.reason
    assert sanitize_box([50, -5, 30, 25], 64, 48) == (50.0, 0.0, 64.0, 20.0)


@pytest.mark.parametrize("bbox", [[4, 4, 0, 10], [4, 4, 20, 0.5], [63.5, 4, 20, 10]])
def test_zero_size_and_sub_pixel_boxes_are_skipped(dataset, bbox):
    root, data = dataset
    data["annotations"][0]["bbox"] = bbox
    report = run_check(root, data)
    assert report.ok
    (fix,) = report.fixes
    assert (fix.kind, fix.item_id) == ("box_too_small", 10)
    assert "under 1 px: skipped" in fix.reason
    assert sanitize_box(bbox, 64, 48) is None


def test_crowd_region_is_counted_as_fixable(dataset):
    root, data = dataset
    data["annotations"][2]["iscrowd"] = 1
    report = run_check(root, data)
    assert report.ok
    (fix,) = report.fixes
    assert (fix.kind, fix.item_id) == ("crowd_skipped", 12)
    assert "iscrowd=1" in fix.reason


def test_invalid_iscrowd_value(dataset):
    root, data = dataset
    data["annotations"][2]["iscrowd"] = 2
    report = run_check(root, data)
    assert_single_error(report, "annotation_entry_invalid", 12, "iscrowd must be 0 or 1")


def test_class_counts_use_category_names(dataset):
    root, data = dataset
    data["categories"].insert(0, {"id": 40, "name": "bird"})
    data["annotations"].append({"id": 13, "image_id": 3, "category_id": 12, "bbox": [1, 1, 5, 5], "iscrowd": 1})
    report = run_check(root, data)
    assert report.class_counts == {"cat": 2, "dog": 2, "bird": 0}  # in category id order: 5, 12, 40
    assert report.images_without_annotations == 0
    assert any("categories without annotations: bird" in note for note in report.notes)


def test_valid_box_passes_through_unchanged():
    assert sanitize_box([4, 4, 20, 10], 64, 48) == (4.0, 4.0, 24.0, 14.0)
    assert sanitize_box(np.array([0, 0, 64, 48], np.float32), 64, 48) == (0.0, 0.0, 64.0, 48.0)


def test_many_problems_are_reported_together(dataset):
    root, data = dataset
    data["images"].append({"id": 2, "file_name": "b.png", "width": 32, "height": 40})
    data["images"][0]["width"] = "64"
    data["annotations"][0]["bbox"] = [1, 2, 3]
    data["annotations"][1]["category_id"] = 77
    data["annotations"][2]["bbox"] = [-10, -10, 20, 20]
    os.remove(root / "images" / SET / "c.jpg")
    report = run_check(root, data)
    assert sorted(problem.kind for problem in report.errors) == [
        "box_malformed", "duplicate_image_id", "image_entry_invalid", "image_file_missing", "unknown_category_id"]
    assert [problem.kind for problem in report.fixes] == ["box_clipped"]
    text = report.format(max_lines=50)
    for kind in ("box_malformed", "duplicate_image_id", "image_entry_invalid", "image_file_missing",
                 "unknown_category_id", "box_clipped"):
        assert f"  {kind}: 1 " in text
    assert "Result: UNUSABLE (5 errors)" in text


def test_format_quotes_a_limited_number_of_problems(dataset):
    root, data = dataset
    data["annotations"] = [{"id": index, "image_id": 1, "category_id": 5, "bbox": [0, 0, -1, 1]}
                           for index in range(30)]
    report = run_check(root, data)
    text = report.format(max_lines=5)
    assert "box_negative_size: 30 " in text and "... and 25 more" in text
    assert text.count("annotation ") == 5


def test_validate_or_raise(dataset):
    root, data = dataset
    run_check(root, data)
    assert validate_or_raise(str(root), SET).ok
    data["annotations"][0]["image_id"] = 99
    run_check(root, data)
    with pytest.raises(DatasetError) as caught:
        validate_or_raise(str(root), SET)
    assert caught.value.report.errors[0].kind == "unknown_image_id"
    assert "annotation 10: image_id 99 does not exist" in str(caught.value)


def run_script(*args):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "check_dataset.py"), *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def test_script_exits_0_for_a_usable_set(dataset):
    root, data = dataset
    data["annotations"][2]["iscrowd"] = 1
    run_check(root, data)
    result = run_script("--coco_path", str(root), "--set_name", SET)
    assert result.returncode == 0, result.stderr
    assert "crowd_skipped: 1" in result.stdout and "Result: usable" in result.stdout


def test_script_exits_2_without_traceback_for_an_unusable_set(dataset):
    root, data = dataset
    run_check(root, data)
    (root / "val.json").write_text("not json")
    result = run_script("--coco_path", str(root), "--set_name", SET, "val", "--no_images")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert "json_invalid: 1" in result.stdout and "unusable sets: val" in result.stderr


def test_an_image_in_both_training_and_validation_is_an_error_naming_both(tmp_path):
    """A copy under another name (found by content) and one file listed by both sets (a split that
    put it in both) are caught; train.py refuses the sets before anything is written."""
    import shutil
    from argparse import Namespace

    from retinanet.config import resolve_training_args
    from retinanet.data.synthetic import generate_dataset
    from retinanet.training.setup import load_datasets

    root = tmp_path / "data"
    generate_dataset(str(root), num_train=6, num_val=3, num_test=0, min_size=64, max_size=96, seed=4)
    tool = [sys.executable, os.path.join(REPO_ROOT, "tools", "check_dataset.py"), "--coco_path", str(root),
            "--set_name", "train", "val"]
    clean = subprocess.run(tool, capture_output=True, text=True)
    assert clean.returncode == 0 and "image_in_another_set" not in clean.stdout
    same = load_datasets(resolve_training_args(Namespace(coco_path=str(root), val_set="train")), check=True)
    assert same["train"].files == same["val"].files  # validating on the training set itself is a choice

    train = json.loads((root / "train.json").read_text())
    val = json.loads((root / "val.json").read_text())
    copied = train["images"][2]
    shutil.copy(root / "images" / "train" / copied["file_name"], root / "images" / "val" / val["images"][0]["file_name"])
    val["images"][0].update(width=copied["width"], height=copied["height"])
    val["annotations"] = [a for a in val["annotations"] if a["image_id"] != val["images"][0]["id"]]
    (root / "val.json").write_text(json.dumps(val))
    result = subprocess.run(tool, capture_output=True, text=True)
    assert result.returncode == 2, result.stdout
    assert (f"image {val['images'][0]['id']} is also image {copied['id']} of set 'train' (the same content as "
            f"{os.path.realpath(root / 'images' / 'train' / copied['file_name'])})") in result.stdout

    with pytest.raises(DatasetError, match="image_in_another_set|is also image"):
        load_datasets(resolve_training_args(Namespace(coco_path=str(root))), check=True)

    # One file listed by both sets: a split that put it in both, each with part of its boxes.
    shared = tmp_path / "split"
    shutil.copytree(root / "images" / "train", shared / "images")
    for name, images in (("a", train["images"][:4]), ("b", train["images"][3:])):
        ids = {image["id"] for image in images}
        subset = dict(train, images=images, annotations=[a for a in train["annotations"] if a["image_id"] in ids])
        (shared / f"{name}.json").write_text(json.dumps(subset))
    args = resolve_training_args(Namespace(coco_path=str(shared), train_json=str(shared / "a.json"),
                                           train_images=str(shared / "images"), val_set="b",
                                           val_json=str(shared / "b.json"), val_images=str(shared / "images")))
    with pytest.raises(DatasetError) as caught:
        load_datasets(args, check=True)
    [problem] = [p for p in caught.value.report.errors if p.kind == "image_in_another_set"]
    assert f"image {train['images'][3]['id']} is also image {train['images'][3]['id']} of set 'train' " \
           "(the same file)" in problem.reason


def test_an_exact_duplicate_box_is_reported_and_trained_on_once(tmp_path):
    from retinanet.data.coco import CocoDetection
    from retinanet.data.synthetic import generate_dataset

    root = tmp_path / "data"
    generate_dataset(str(root), num_train=3, num_val=0, num_test=0, min_size=64, max_size=96, seed=6)
    before = CocoDetection(str(root), "train", transform=None)
    coco = json.loads((root / "train.json").read_text())
    twin = dict(coco["annotations"][0], id=max(a["id"] for a in coco["annotations"]) + 1)
    coco["annotations"].append(twin)
    (root / "train.json").write_text(json.dumps(coco))
    report = check_dataset(str(root), "train")
    assert report.ok and [p.kind for p in report.fixes] == ["duplicate_box"]
    assert report.fixes[0].reason.startswith(f"annotation {twin['id']}: the same box and class as annotation "
                                             f"{coco['annotations'][0]['id']} on image {twin['image_id']}")
    after = CocoDetection(str(root), "train", transform=None)
    assert all(np.array_equal(a, b) for a, b in zip(before._boxes, after._boxes))


def test_a_roboflow_placeholder_category_is_dropped_with_one_line(tmp_path, capsys):
    from retinanet.data.coco import CocoDetection
    from retinanet.data.synthetic import generate_dataset

    root = tmp_path / "data"
    generate_dataset(str(root), num_train=3, num_val=0, num_test=0, min_size=64, max_size=96, seed=6)
    coco = json.loads((root / "train.json").read_text())
    names = [category["name"] for category in sorted(coco["categories"], key=lambda c: c["id"])]
    for category in coco["categories"]:
        category["supercategory"] = "shapes"
    coco["categories"].insert(0, {"id": 0, "name": "shapes", "supercategory": "none"})
    (root / "train.json").write_text(json.dumps(coco))
    report = check_dataset(str(root), "train")
    assert report.ok and list(report.class_counts) == names
    assert any(note.startswith("category 'shapes' (id 0): no annotations") for note in report.notes)
    dataset = CocoDetection(str(root), "train", transform=None)
    assert dataset.class_names == names and 0 not in dataset.label_to_category_id
    assert capsys.readouterr().err.count("'shapes' (id 0)") == 1
    # A category without boxes that is not the others' supercategory stays a class.
    coco["categories"][0]["name"] = "unused"
    (root / "train.json").write_text(json.dumps(coco))
    assert CocoDetection(str(root), "train", transform=None).class_names == ["unused"] + names
