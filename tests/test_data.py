import json
import os

import cv2
import numpy as np
import pytest
import torch

from retinanet.data.coco import CocoDetection
from retinanet.data.loader import collate
from retinanet.data.sampler import AspectRatioBatchSampler
from retinanet.data.transforms import EvalTransform, TrainTransform, resize_scale


def write_dataset(root, images, annotations, categories, set_name="train"):
    os.makedirs(os.path.join(root, "images", set_name), exist_ok=True)
    for image in images:
        pixels = np.full((image["height"], image["width"], 3), 100, dtype=np.uint8)
        cv2.imwrite(os.path.join(root, "images", set_name, image["file_name"]), pixels)
    with open(os.path.join(root, f"{set_name}.json"), "w") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)


def test_non_contiguous_category_ids_map_to_contiguous_labels_and_back(tmp_path):
    images = [{"id": 7, "file_name": "a.png", "width": 64, "height": 48}]
    categories = [{"id": 90, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}]
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 17, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 90, "bbox": [5, 5, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 1},
    ]
    write_dataset(tmp_path, images, annotations, categories)
    dataset = CocoDetection(str(tmp_path), "train", EvalTransform(48, 64))
    assert dataset.label_to_category_id == [3, 17, 90]
    assert dataset.class_names == ["cat", "dog", "zebra"]
    image, target = dataset[0]
    assert target["labels"].tolist() == [1, 2]  # the crowd region is not trained on
    assert [dataset.label_to_category_id[label] for label in target["labels"]] == [17, 90]
    assert target["boxes"].tolist() == [[1.0, 2.0, 11.0, 22.0], [5.0, 5.0, 35.0, 35.0]]
    assert target["image_id"] == 7 and image.shape == (3, 48, 64)


def test_boxes_below_one_pixel_are_skipped_and_boxes_clipped(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0.5, 10], "area": 5, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 20], "area": 400, "iscrowd": 0},
    ]
    write_dataset(tmp_path, images, annotations, [{"id": 1, "name": "thing"}])
    boxes, labels = CocoDetection(str(tmp_path), "train", EvalTransform(30, 40)).ground_truth(0)
    assert boxes.tolist() == [[30.0, 20.0, 40.0, 30.0]]


def test_resize_rule_short_side_unless_long_side_too_long():
    assert resize_scale(480, 640, 608, 1024) == pytest.approx(608 / 480)
    assert resize_scale(200, 1000, 608, 1024) == pytest.approx(1024 / 1000)


def test_train_transform_flips_boxes_with_the_image():
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[5:10, 2:8] = 255
    boxes = np.array([[2.0, 5.0, 8.0, 10.0]], dtype=np.float32)
    transform = TrainTransform(20, 40, flip_probability=1.0)
    tensor, flipped, scale = transform(image, boxes, np.random.default_rng(0))
    assert scale == 1.0
    assert flipped.tolist() == [[32.0, 5.0, 38.0, 10.0]]
    bright = (tensor[0] > 0).nonzero()
    assert bright[:, 1].min().item() == 32 and bright[:, 1].max().item() == 37


def test_collate_pads_to_a_multiple_of_32_and_drops_failed_samples():
    a = (torch.ones(3, 40, 50), {"boxes": torch.zeros(0, 4)})
    b = (torch.ones(3, 64, 33), {"boxes": torch.zeros(0, 4)})
    images, targets, skipped = collate([a, None, b])
    assert images.shape == (2, 3, 64, 64) and len(targets) == 2 and skipped == 1
    assert images[0, :, 40:].abs().sum() == 0 and images[0, :, :40, :50].min() == 1


def test_sampler_never_mixes_aspect_ratio_groups_and_covers_every_image():
    rng = np.random.default_rng(1)
    ratios = rng.uniform(0.5, 2.0, size=103).tolist()
    sampler = AspectRatioBatchSampler(ratios, batch_size=4, drop_last=False, shuffle=True, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        seen = [index for batch in batches for index, *_ in batch]
        assert sorted(seen) == list(range(103))
        for batch in batches:
            groups = {ratios[index] >= 1.0 for index, *_ in batch}
            assert len(groups) == 1
        assert len(batches) == len(sampler)


def test_sampler_gives_each_batch_one_seed_of_its_own():
    sampler = AspectRatioBatchSampler([1.5] * 12 + [0.7] * 9, batch_size=4, seed=3407)
    batches = list(sampler)
    batch_seeds = [{item[2] for item in batch} for batch in batches]
    assert all(len(seeds) == 1 for seeds in batch_seeds)  # shared within a batch
    assert len({seeds.pop() for seeds in batch_seeds}) == len(batches)  # and differs between batches
    sample_seeds = [item[1] for batch in batches for item in batch]
    assert len(set(sample_seeds)) == 21


def test_sampler_reshuffles_every_epoch_and_is_reproducible():
    ratios = [1.5] * 20 + [0.7] * 20
    sampler = AspectRatioBatchSampler(ratios, batch_size=2, seed=3407)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert first != second


def test_sampler_drop_last_drops_incomplete_batches_per_group():
    ratios = [1.5] * 5 + [0.7] * 3
    sampler = AspectRatioBatchSampler(ratios, batch_size=2, drop_last=True)
    batches = list(sampler)
    assert all(len(batch) == 2 for batch in batches)
    assert len(batches) == 2 + 1


def test_sampler_shards_batches_over_processes_equally():
    ratios = [1.5] * 9 + [0.7] * 4
    shards = [list(AspectRatioBatchSampler(ratios, 2, num_replicas=2, rank=rank, seed=5)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    covered = {index for shard in shards for batch in shard for index, *_ in batch}
    assert covered == set(range(13))


def test_sampler_resumes_inside_an_epoch():
    sampler = AspectRatioBatchSampler([1.0] * 10, batch_size=2, seed=1)
    full = list(sampler)
    sampler.set_epoch(0, skip_batches=3)
    # Every pass over the epoch skips: torch's worker loader calls iter() twice before the first batch.
    assert list(sampler) == full[3:] and list(sampler) == full[3:]
    sampler.set_epoch(1)
    assert list(sampler) != full and len(list(sampler)) == len(full)
