"""The synthetic shapes dataset: COCO structure, tight boxes, determinism and layout statistics."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from retinanet.data.synthetic import (CLASS_NAMES, draw_object, generate_dataset, sample_image_size,
                                 sample_object_layout, sample_shape)

TINY = dict(num_train=10, num_val=10, num_test=10, seed=5, min_size=160, max_size=256)


def file_hashes(root):
    """{relative path: sha256} of every file under ``root``."""
    hashes = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                hashes[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def tiny_dataset(module_tmp):
    root = str(module_tmp("synthetic"))
    return root, generate_dataset(root, **TINY)


def load_json(root, name):
    with open(os.path.join(root, name)) as handle:
        return json.load(handle)


def test_coco_structure_and_boxes_inside_images(tiny_dataset):
    root, summary = tiny_dataset
    for set_name in ("train", "val"):
        coco = load_json(root, f"{set_name}.json")
        assert [c["name"] for c in coco["categories"]] == list(CLASS_NAMES)
        assert all(c["supercategory"] == "shape" for c in coco["categories"])
        assert len(coco["images"]) == 10 and summary["sets"][set_name]["images"] == 10
        images = {image["id"]: image for image in coco["images"]}
        for image in coco["images"]:
            pixels = cv2.imread(os.path.join(root, "images", set_name, image["file_name"]), cv2.IMREAD_UNCHANGED)
            assert pixels.shape == (image["height"], image["width"], 3)
            assert image["width"] % 16 == 0 and image["height"] % 16 == 0
            assert 160 <= image["width"] <= 256 and 160 <= image["height"] <= 256
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"]) > 0
        for annotation in coco["annotations"]:
            image = images[annotation["image_id"]]
            x, y, w, h = annotation["bbox"]
            assert all(isinstance(value, float) for value in annotation["bbox"])
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0
            assert x + w <= image["width"] and y + h <= image["height"]
            assert 24 <= max(w, h) <= 0.45 * min(image["width"], image["height"]) + 2
            assert 0 < annotation["area"] <= w * h
            assert annotation["iscrowd"] == 0 and 1 <= annotation["category_id"] <= len(CLASS_NAMES)


def test_test_set_is_held_out(tiny_dataset):
    root, summary = tiny_dataset
    test = load_json(root, "test.json")
    ground_truth = load_json(root, "test_ground_truth.json")
    assert test["annotations"] == []
    assert test["images"] == ground_truth["images"] and test["categories"] == ground_truth["categories"]
    assert len(ground_truth["annotations"]) == summary["sets"]["test"]["annotations"] > 0


@pytest.mark.parametrize("category_id", range(1, len(CLASS_NAMES) + 1))
def test_box_is_tight_extent_of_drawn_pixels(category_id):
    rng = np.random.default_rng(category_id)
    background = np.array([40, 90, 200], dtype=np.uint8)
    for _ in range(5):
        image = np.empty((120, 150, 3), dtype=np.uint8)
        image[:] = background
        outlines = sample_shape(rng, category_id, rng.uniform(24, 60), 150, 120)
        bbox, area = draw_object(image, outlines, (230, 220, 10))
        rows, cols = np.nonzero((image != background).any(axis=2))
        expected = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert bbox == [float(value) for value in expected]
        assert area == rows.size


def test_same_arguments_give_identical_files(tiny_dataset, tmp_path):
    root, _ = tiny_dataset
    generate_dataset(str(tmp_path), **TINY)
    first, second = file_hashes(root), file_hashes(str(tmp_path))
    assert len(first) == 3 * 10 + 4
    assert first == second


def test_different_seeds_differ(tiny_dataset, tmp_path):
    root, _ = tiny_dataset
    generate_dataset(str(tmp_path), **dict(TINY, seed=6))
    first, second = file_hashes(root), file_hashes(str(tmp_path))
    assert first.keys() == second.keys()
    differing = [path for path in first if first[path] != second[path]]
    assert len(differing) == len(first)


def test_sets_do_not_depend_on_each_others_sizes(tiny_dataset, tmp_path):
    root, _ = tiny_dataset
    generate_dataset(str(tmp_path), **dict(TINY, num_train=3, num_test=0))
    first, second = file_hashes(root), file_hashes(str(tmp_path))
    for path in ["val.json", os.path.join("images", "train", "000003.png")]:
        assert first[path] == second[path]


def test_refuses_to_overwrite_without_force(tiny_dataset, tmp_path):
    generate_dataset(str(tmp_path), **dict(TINY, num_train=2, num_val=1, num_test=1))
    with pytest.raises(FileExistsError, match="train.json"):
        generate_dataset(str(tmp_path), **dict(TINY, num_train=2, num_val=1, num_test=1))
    summary = generate_dataset(str(tmp_path), **dict(TINY, num_train=1, num_val=1, num_test=1), force=True)
    assert summary["sets"]["train"]["images"] == 1
    assert os.listdir(os.path.join(str(tmp_path), "images", "train")) == ["000001.png"]


def test_portrait_and_landscape_sizes():
    sizes = [sample_image_size(np.random.default_rng([0, 0, index]), 160, 256) for index in range(40)]
    assert any(width > height for width, height in sizes)
    assert any(width < height for width, height in sizes)
    assert all(value % 16 == 0 and 160 <= value <= 256 for size in sizes for value in size)


def test_layout_counts_include_empty_images():
    counts = [len(sample_object_layout(np.random.default_rng([1, index]), 224, 192)) for index in range(400)]
    assert 5 <= counts.count(0) <= 40
    assert max(counts) == 6
    assert set(counts) == set(range(7))
