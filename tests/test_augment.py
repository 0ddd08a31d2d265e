"""Training augmentation (retinanet/data/augment.py): each step against hand-computed boxes, the
invariants of the strong preset over many draws, the presets' flags, and seeded batches."""
import json

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from retinanet import config
from retinanet.cli import options
from retinanet.data.augment import (Draw, TrainAugmentation, augment_settings, crop_or_pad, drop_small_boxes,
                                    flip_and_rotate)
from retinanet.data.coco import CocoDetection
from retinanet.data.loader import build_loader
from retinanet.data.synthetic import generate_dataset
from retinanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, normalise
from scripts import TINY_TRAIN_FLAGS, load_script


def _boxes(rows, height, width):
    return tv_tensors.BoundingBoxes(torch.tensor(rows, dtype=torch.float32), format="XYXY",
                                    canvas_size=(height, width))


def _painted(height, width, box):
    """(3, H, W) uint8, zero except 255 inside ``box`` (whole pixels)."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    return image


def _extent(image):
    """xyxy of the nonzero pixels of (3, H, W)."""
    ys, xs = torch.nonzero(image[0], as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


# ----- each step against a hand-computed case ----------------------------------------------------
@pytest.mark.parametrize("hflip, vflip, turns, expected, canvas", [
    (True, False, 0, [70, 20, 90, 40], (50, 100)),   # x -> 100 - x
    (False, True, 0, [10, 10, 30, 30], (50, 100)),   # y -> 50 - y
    (False, False, 1, [20, 70, 40, 90], (100, 50)),  # counter-clockwise: (x, y) -> (y, 100 - x)
    (False, False, 2, [70, 10, 90, 30], (50, 100)),  # (x, y) -> (100 - x, 50 - y)
    (False, False, 3, [10, 10, 30, 30], (100, 50)),  # (x, y) -> (50 - y, x)
    (True, True, 1, [10, 10, 30, 30], (100, 50)),    # both flips = a half turn; then a quarter turn
])
def test_flips_and_quarter_turns_move_box_and_pixels_together(hflip, vflip, turns, expected, canvas):
    box = [10, 20, 30, 40]
    image, boxes = flip_and_rotate(_painted(50, 100, box), _boxes([box], 50, 100), hflip, vflip, turns)
    assert boxes.tolist() == [expected]
    assert tuple(boxes.canvas_size) == canvas == tuple(image.shape[-2:])
    assert _extent(image) == expected  # the painted rectangle went where the box went


def test_fixed_scale_jitter_crop_clips_and_drops_boxes():
    # 100x200 image, short side 50: base scale 0.5, canvas 50x100. Factor 1.5: scale 0.75, resized 75x150,
    # cropped at top 10, left 40 to 50x100.
    image = np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    boxes = np.array([[20, 20, 60, 40],     # -> [15, 15, 45, 30] - (40, 10) = [-25, 5, 5, 20] -> [0, 5, 5, 20]
                      [100, 40, 180, 80],   # -> [75, 30, 135, 60] -> [35, 20, 95, 50]
                      [0, 0, 20, 10],       # -> [-40, -10, -25, -2.5]: outside, dropped
                      [186, 20, 196, 40]],  # -> [99.5, 5, 107, 20] -> [99.5, 5, 100, 20]: 0.5 wide, dropped
                     dtype=np.float32)
    augmentation = TrainAugmentation(50, 1000, scale_jitter=(1.5, 1.5), min_box_size=2)
    tensor, out_boxes, labels, scale = augmentation.apply(image, boxes, np.array([1, 2, 3, 4]),
                                                          Draw(scale=0.75, canvas=(50, 100), top=10, left=40))
    assert scale == 0.75 and tuple(tensor.shape) == (3, 50, 100)
    assert out_boxes.tolist() == [[0, 5, 5, 20], [35, 20, 95, 50]]
    assert labels.tolist() == [1, 2]
    resized = cv2.resize(image, (150, 75), interpolation=cv2.INTER_AREA)  # a reduction, as EvalTransform
    assert torch.equal(tensor, normalise(resized[10:60, 40:140]))


def test_fixed_scale_jitter_below_one_pads_in_the_mean_colour():
    image = np.full((100, 200, 3), 200, dtype=np.uint8)
    boxes = np.array([[20, 20, 60, 40]], dtype=np.float32)
    augmentation = TrainAugmentation(50, 1000, scale_jitter=(0.5, 0.5))
    tensor, out_boxes, labels, scale = augmentation.apply(image, boxes, np.array([3]),
                                                          Draw(scale=0.25, canvas=(50, 100)))
    assert tuple(tensor.shape) == (3, 50, 100) and scale == 0.25
    assert out_boxes.tolist() == [[5, 5, 15, 10]] and labels.tolist() == [3]  # padding at bottom/right moves nothing
    assert torch.equal(tensor[:, :25, :50], normalise(np.full((25, 50, 3), 200, dtype=np.uint8)))
    assert tensor[:, 25:, :].abs().max() < 0.01 and tensor[:, :, 50:].abs().max() < 0.01  # mean colour -> about 0


def test_crop_or_pad_clips_a_box_cut_by_the_crop():
    image, boxes = crop_or_pad(torch.zeros(3, 80, 120, dtype=torch.uint8), _boxes([[10, 10, 50, 30]], 80, 120),
                               canvas=(40, 60), top=20, left=30)
    assert tuple(image.shape) == (3, 40, 60) and boxes.tolist() == [[0, 0, 20, 10]]


def test_min_box_size_drops_exactly_the_small_boxes_and_keeps_labels_aligned():
    boxes = _boxes([[0, 0, 1.9, 10], [5, 5, 7, 7], [10, 10, 13, 11.5], [20, 20, 30, 40], [3, 3, 3, 9]], 50, 50)
    kept, labels = drop_small_boxes(v2.SanitizeBoundingBoxes(min_size=2), boxes, torch.tensor([10, 11, 12, 13, 14]))
    assert kept.tolist() == [[5, 5, 7, 7], [20, 20, 30, 40]]  # 2 px wide is kept, 1.9 and 1.5 are not
    assert labels.tolist() == [11, 13]


# ----- presets against the old transforms ----------------------------------------------------------
def _random_images(count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        height, width = (int(side) for side in rng.integers(40, 161, size=2))
        corners = rng.uniform(0, 1, size=(int(rng.integers(0, 7)), 2, 2)) * [width, height]
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1) + 1], axis=1)
        boxes = np.minimum(boxes, [width, height, width, height]).astype(np.float32).reshape(-1, 4)
        yield rng.integers(0, 256, (height, width, 3), dtype=np.uint8), boxes


def test_flip_preset_reproduces_train_transform_exactly():
    old = TrainTransform(64, 96)
    new = TrainAugmentation.from_options({"augment": "flip", "min_side": 64, "max_side": 96})
    flipped = 0
    for seed, (image, boxes) in enumerate(_random_images(20, seed=1)):
        labels = np.arange(len(boxes))
        old_tensor, old_boxes, old_scale = old(image, boxes, np.random.default_rng(seed))
        tensor, new_boxes, new_labels, scale = new(image, boxes, labels, np.random.default_rng(seed))
        assert torch.equal(tensor, old_tensor) and np.array_equal(new_boxes, old_boxes) and scale == old_scale
        assert new_labels.tolist() == labels.tolist()
        flipped += np.random.default_rng(seed).random() < 0.5
    assert 3 <= flipped <= 17  # both branches were compared


def test_off_preset_is_the_evaluation_transform():
    evaluation = EvalTransform(64, 96)
    augmentation = TrainAugmentation.from_options({"augment": "off", "min_side": 64, "max_side": 96})
    for seed, (image, boxes) in enumerate(_random_images(5, seed=2)):
        tensor, out_boxes, _, scale = augmentation(image, boxes, np.arange(len(boxes)), np.random.default_rng(seed))
        expected = evaluation(image, boxes)
        assert torch.equal(tensor, expected[0]) and np.array_equal(out_boxes, expected[1]) and scale == expected[2]


def test_strong_preset_with_vflip_and_rot90_keeps_every_box_valid():
    settings = augment_settings({"augment": "strong", "min_side": 64, "max_side": 96, "vflip": True, "rot90": True})
    augmentation = TrainAugmentation.from_options(dict(settings, min_side=64, max_side=96))
    low = torch.tensor((0 - IMAGENET_MEAN) / IMAGENET_STD).view(3, 1, 1)
    high = torch.tensor((1 - IMAGENET_MEAN) / IMAGENET_STD).view(3, 1, 1)
    boxes_in = boxes_out = portrait_from_landscape = 0
    for seed, (image, boxes) in enumerate(_random_images(300, seed=3)):
        labels = np.arange(100, 100 + len(boxes))
        tensor, out_boxes, out_labels, scale = augmentation(image, boxes, labels, np.random.default_rng(seed))
        height, width = tensor.shape[-2:]
        assert tensor.dtype == torch.float32 and tensor.shape[0] == 3
        assert bool(((tensor >= low - 1e-5) & (tensor <= high + 1e-5)).all())
        assert out_boxes.shape == (len(out_labels), 4) and out_boxes.dtype == np.float32
        assert (out_boxes[:, :2] >= 0).all()
        assert (out_boxes[:, 2] <= width).all() and (out_boxes[:, 3] <= height).all()
        sizes = out_boxes[:, 2:] - out_boxes[:, :2]
        assert (sizes >= settings["min_box_size"]).all()
        # Labels stay with their boxes: kept in order, and each box no larger than its source scaled
        # (crops only shrink boxes; a quarter turn swaps width and height, so compare sorted sides).
        assert np.all(np.diff(out_labels) > 0) and set(out_labels) <= set(labels)
        source = (boxes[out_labels - 100, 2:] - boxes[out_labels - 100, :2]) * scale
        assert (np.sort(sizes, axis=1) <= np.sort(source, axis=1) + 1e-3).all()
        boxes_in, boxes_out = boxes_in + len(boxes), boxes_out + len(out_boxes)
        portrait_from_landscape += (image.shape[0] < image.shape[1]) and height > width
    assert 0 < boxes_out < boxes_in and portrait_from_landscape > 20  # drops and turns both happened


# ----- flags, saved config and resume ----------------------------------------------------------------
def test_presets_fill_the_knobs_and_flags_override_them():
    strong = augment_settings({"augment": "strong", "min_side": 600})
    assert strong == {"augment": "strong", "vflip": False, "rot90": False, "train_sides": [480, 510, 540, 570, 600],
                      "scale_jitter": [0.5, 1.5], "photometric": 0.4, "min_box_size": 2.0}
    flip = augment_settings({"min_side": 600})
    assert flip["augment"] == "flip" and flip["train_sides"] == [600] and flip["scale_jitter"] is None
    assert flip["photometric"] == 0 and flip["min_box_size"] == 0
    custom = augment_settings({"augment": "light", "min_side": 600, "train_sides": [500, 700],
                               "scale_jitter": [0.8, 1.25], "photometric": 0.1, "min_box_size": 3})
    assert custom["train_sides"] == [500, 700] and custom["scale_jitter"] == [0.8, 1.25]
    assert custom["photometric"] == 0.1 and custom["min_box_size"] == 3.0


@pytest.mark.parametrize("flags, message", [
    (["--scale_jitter", "1.5", "0.5"], "--scale_jitter 1.5 0.5: expected LOW HIGH with 0 < LOW <= HIGH"),
    (["--min_box_size", "0.5"], "--min_box_size 0.5: must be 0 (keep every box) or at least 1 pixel"),
    (["--augment", "strong", "--min_box_size", "0"], "--min_box_size 0: must be at least 1 with --scale_jitter"),
    (["--photometric", "1.5"], "--photometric: must be between 0 and 1"),
])
def test_bad_augmentation_flags_stop_with_one_line(tmp_path, capsys, flags, message):
    parser = options.build_train_parser()
    with pytest.raises(SystemExit) as stopped:
        options.check_train_args(parser, parser.parse_args(["--coco_path", str(tmp_path), *flags]))
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_resume_keeps_the_augmentation_and_refuses_a_change(tmp_path):
    parser = options.build_train_parser()
    saved = vars(config.resolve_training_args(parser.parse_args(["--augment", "strong", "--rot90"])))
    checkpoint = {"args": saved, "epoch": 1}
    args = parser.parse_args(["--resume", "x.pt"])
    restored, overrides = options.restore_resumed_args(args, {"resume"}, checkpoint, "x.pt")
    assert (restored.augment, restored.rot90, restored.train_sides) == ("strong", True, [486, 517, 547, 578, 608])
    assert restored.scale_jitter == [0.5, 1.5] and overrides == []
    changed = parser.parse_args(["--resume", "x.pt", "--augment", "light"])
    with pytest.raises(ValueError, match=r"--augment light \(run had strong\) would change the augmentation"):
        options.restore_resumed_args(changed, {"resume", "augment"}, checkpoint, "x.pt")


# ----- seeded batches and a training epoch -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(module_tmp):
    root = module_tmp("data")
    generate_dataset(str(root), num_train=8, num_val=2, num_test=1, min_size=96, max_size=128, seed=5)
    return str(root)


def _batches(data, seed, workers):
    augmentation = TrainAugmentation.from_options({"augment": "strong", "min_side": 64, "max_side": 96,
                                                "vflip": True, "rot90": True})
    loader = build_loader(CocoDetection(data, "train", augmentation), batch_size=4, shuffle=True, seed=seed,
                          workers=workers)
    return list(loader)


def _signature(batches):
    """Every batch's images and, per image, its id, boxes and labels."""
    return [(images, [(target["image_id"], target["boxes"], target["labels"]) for target in targets])
            for images, targets, _ in batches]


def _same(first, second):
    """Two signatures hold the same images, ids, boxes and labels in the same order."""
    def same_targets(targets, others):
        return len(targets) == len(others) and all(
            a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) for a, b in zip(targets, others))
    return len(first) == len(second) and all(
        images.shape == others.shape and torch.equal(images, others) and same_targets(targets, other_targets)
        for (images, targets), (others, other_targets) in zip(first, second))


def test_same_seed_gives_the_same_batches_with_any_worker_count(tiny_data):
    first = _signature(_batches(tiny_data, 7, 0))
    assert sum(len(targets) for _, targets in first) == 8
    assert _same(first, _signature(_batches(tiny_data, 7, 1)))
    assert not _same(first, _signature(_batches(tiny_data, 8, 0)))


def _non_square_set(root, count=12):
    """A COCO set of 64x128 (landscape) and 128x64 (portrait) images, one box each."""
    (root / "images" / "train").mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        height, width = (64, 128) if index % 3 else (128, 64)
        cv2.imwrite(str(root / "images" / "train" / f"{index}.png"), np.full((height, width, 3), 90, np.uint8))
        images.append({"id": index + 1, "file_name": f"{index}.png", "height": height, "width": width})
        annotations.append({"id": index + 1, "image_id": index + 1, "category_id": 1, "bbox": [4, 6, 20, 30],
                            "area": 600, "iscrowd": 0})
    (root / "train.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                 "categories": [{"id": 1, "name": "thing"}]}))
    return str(root)


def test_a_batch_shares_its_orientation_under_rot90(tmp_path):
    """A quarter turn swaps width and height, so each batch turns all its images or none and keeps a
    non-square shape instead of being padded to a square; every image still gets all four turns."""
    augmentation = TrainAugmentation.from_options({"augment": "off", "min_side": 64, "max_side": 128, "rot90": True})
    dataset = CocoDetection(_non_square_set(tmp_path), "train", augmentation)
    loader = build_loader(dataset, batch_size=4, shuffle=True, seed=3407)
    turned_batches, boxes_seen = set(), {}
    for epoch in range(32):
        loader.batch_sampler.set_epoch(epoch)
        for images, targets, _ in loader:
            turned = {(target["size"][0] > target["size"][1]) != (target["orig_size"][0] > target["orig_size"][1])
                      for target in targets}
            assert len(turned) == 1
            turned_batches |= turned
            assert tuple(images.shape[-2:]) in {(64, 128), (128, 64)}
            for target in targets:
                boxes_seen.setdefault(target["image_id"], set()).add(tuple(target["boxes"][0].tolist()))
    assert turned_batches == {True, False}
    assert all(len(boxes) == 4 for boxes in boxes_seen.values())  # the four turns of each image's box


def test_one_epoch_with_strong_augmentation_trains(tiny_data, tmp_path, one_thread):
    train_script = load_script("train")
    train_script.main(["--coco_path", tiny_data, "--output_path", str(tmp_path / "output"), "--log_dir",
                       str(tmp_path / "log"), "--run_name", "strong", *TINY_TRAIN_FLAGS,
                       "--epochs", "1", "--val_set", "", "--augment", "strong", "--vflip", "--rot90"])
    records = [json.loads(line) for line in (tmp_path / "output" / "strong" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["images"] == 8
    assert np.isfinite(records[0]["loss"]) and records[0]["loss"] > 0
    config = json.loads((tmp_path / "output" / "strong" / "config.json").read_text())
    assert config["augment"] == "strong" and config["train_sides"] == [77, 82, 86, 91, 96]
    assert config["scale_jitter"] == [0.5, 1.5] and config["vflip"] and config["rot90"]
    log = (tmp_path / "log" / "strong.log").read_text()
    assert ("augmentation: strong (horizontal flip, vertical flip, 90-degree rotations, short sides 77 82 86 91 96 "
            "(long side at most 128), scale jitter 0.5-1.5") in log
