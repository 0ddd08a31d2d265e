"""Anchor coverage and box statistics: exact best IoU, hand-computed cases, the proposal search and
tools/check_dataset.py's report."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet.data.box_stats import (ALL_CLASSES, anchor_coverage, box_statistics, coverage_report_lines,
                                      load_resized_boxes, scale_extremes, training_report_lines)
from retinanet.data.coco import CocoDetection
from retinanet.models import box_coding
from retinanet.models.anchor_coverage import (AnchorSetting, Coverage, Reach, best_anchor_iou, coverage_lines, percent,
                                              propose, proposal_lines)
from retinanet.models.anchors import AnchorGenerator, feature_sizes_for_image
from retinanet.cli.options import build_train_parser
from scripts import ROOT

spec = importlib.util.spec_from_file_location("tools_check_dataset", os.path.join(ROOT, "tools", "check_dataset.py"))
check_dataset_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_dataset_script)

DEFAULTS = AnchorSetting.from_options({})


def random_boxes(count, low, high, extent, seed):
    """``count`` xyxy boxes with sides from ``low`` to ``high`` (log-uniform), corners in [-10, extent]."""
    rng = np.random.default_rng(seed)
    corners = rng.uniform(-10, extent, size=(count, 2))
    sides = np.exp(rng.uniform(np.log(low), np.log(high), size=(count, 2)))
    return np.concatenate([corners, corners + sides], axis=1)


@pytest.mark.parametrize("layout", ["centred", "torchvision"])
def test_best_iou_equals_the_maximum_over_every_anchor(layout):
    generator = AnchorGenerator(ratios=(0.25, 0.5, 1.0, 2.0), scales=(1.0, 1.5), layout=layout,
                                sizes=(20, 40, 80, 160, 320))
    height, width = 160, 224
    boxes = random_boxes(300, 2, 400, 230, seed=1)
    anchors = generator(feature_sizes_for_image(height, width), torch.device("cpu"), torch.float64,
                        image_size=(height, width))  # sides not divisible by 128: torchvision's strides differ
    brute_force = box_coding.pairwise_iou(anchors, torch.from_numpy(boxes)).max(dim=0).values.numpy()
    fast = best_anchor_iou(boxes, np.tile([height, width], (len(boxes), 1)), generator)
    assert np.abs(fast - brute_force).max() < 1e-9
    assert 0.1 < fast.mean() < 0.9  # the boxes span misses and hits


def test_hand_computed_boxes():
    # P3 (stride 8) anchors of the default set are centred at 4 + 8j; the 32 x 32 one at (44, 44):
    boxes = np.array([[28.0, 28.0, 60.0, 60.0],   # exactly that anchor: IoU 1
                      [39.0, 39.0, 49.0, 49.0],   # 10 x 10 inside it: IoU 100 / 1024, no anchor does better
                      [40.0, 0.0, 48.0, 200.0]])  # 8 x 200: h/w 25, beyond every ratio's reach
    sizes = np.full((3, 2), 256.0)
    coverage = Coverage.of(boxes, sizes, DEFAULTS, 0.5)
    assert coverage.best_iou[0] == pytest.approx(1.0)
    assert coverage.best_iou[1] == pytest.approx(100 / 1024)
    assert coverage.covered.tolist() == [True, False, False]
    assert coverage.fraction == pytest.approx(1 / 3)
    assert coverage.miss_counts(boxes) == {"small": 1, "thin": 1, "large": 0, "other": 0}
    reach = Reach.of(DEFAULTS.generator(), 0.5)
    assert reach.min_size == pytest.approx(32 * 0.5 ** 0.5)  # area under half the smallest anchor's
    assert reach.max_ratio == pytest.approx(2 * 2.25)  # ((1 + 0.5) / (2 x 0.5))^2 beyond ratio 2
    lines = coverage_lines(coverage, boxes, low_quality_matches=True)
    assert lines[0].startswith("anchor coverage: 33.3% of 3 boxes have an anchor at IoU >= 0.5")
    assert "1 small (under 22.6 px" in lines[1] and "1 thin" in lines[1]
    assert "these 2 boxes still train on their best anchor" in lines[2]


def test_a_lower_positive_iou_covers_more():
    boxes = random_boxes(400, 8, 120, 200, seed=2)
    sizes = np.full((len(boxes), 2), 224.0)
    strict, loose = (Coverage.of(boxes, sizes, DEFAULTS, iou).fraction for iou in (0.6, 0.4))
    assert strict < loose


def test_percent_never_rounds_up_to_full():
    assert percent(0.9995) == "99.9%" and percent(1.0) == "100.0%" and percent(0.5) == "50.0%"


def write_coco(root, images, boxes_per_image, set_name="train"):
    """A COCO JSON (no image files: statistics read only the JSON) of (width, height) images whose
    boxes (xywh) alternate between the classes cat and dog."""
    annotations = []
    for index, boxes in enumerate(boxes_per_image):
        for position, box in enumerate(boxes):
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": 1 + position % 2,
                                "bbox": [float(value) for value in box], "area": float(box[2] * box[3]),
                                "iscrowd": 0})
    data = {"images": [{"id": index + 1, "file_name": f"{index}.png", "width": width, "height": height}
                       for index, (width, height) in enumerate(images)],
            "annotations": annotations, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (root / f"{set_name}.json").write_text(json.dumps(data))


def test_boxes_are_resized_as_training_resizes_them(tmp_path):
    # A 100 x 50 image at min_side 100 is scaled x2; the box [10, 10, 20, 20] (xywh) becomes 40 x 40.
    write_coco(tmp_path, [(100, 50), (400, 400)], [[[10, 10, 20, 20], [0, 0, 10, 40]], [[0, 0, 100, 50]]])
    resized = load_resized_boxes(str(tmp_path), "train", 100, 400)
    assert resized.boxes[0].tolist() == [20.0, 20.0, 60.0, 60.0]
    assert resized.image_sizes.tolist() == [[100, 200], [100, 100]]
    statistics = box_statistics(resized)
    assert statistics["cat"]["boxes"] == 2 and statistics["dog"]["boxes"] == 1
    assert statistics["cat"]["size"]["min"] == pytest.approx((25.0 * 12.5) ** 0.5)  # 100 x 50 scaled by 1/4
    assert statistics["dog"]["aspect_ratio"]["p50"] == pytest.approx(4.0)  # 10 x 40 -> h/w 4
    assert statistics[ALL_CLASSES]["boxes_per_image"] == {"mean": 1.5, "max": 2}


def small_box_set(tmp_path):
    rng = np.random.default_rng(3)
    images = [(128, 128)] * 30
    boxes = [[[*rng.uniform(0, 100, 2), *np.exp(rng.uniform(np.log(7), np.log(40), 2))] for _ in range(5)]
             for _ in images]
    write_coco(tmp_path, images, boxes)
    return load_resized_boxes(str(tmp_path), "train", 128, 128)


def test_the_proposal_raises_coverage_and_its_flags_give_what_it_printed(tmp_path):
    resized = small_box_set(tmp_path)
    defaults = vars(build_train_parser().parse_args([]))
    current = anchor_coverage(resized, defaults)
    assert current.fraction < 0.8
    proposals = propose(resized.boxes, resized.padded_box_image_sizes, current)
    assert proposals and proposals[0].fraction > current.fraction + 0.1
    assert [p.fraction for p in proposals] == sorted((p.fraction for p in proposals), reverse=True)
    lines = proposal_lines(proposals, current.setting)
    for proposal, line in zip(proposals, lines[1:]):
        flags = proposal.setting.flags()
        assert flags in line and percent(proposal.fraction) in line
        applied = vars(build_train_parser().parse_args(flags.split()))
        assert anchor_coverage(resized, applied).fraction == proposal.fraction
    report = coverage_report_lines(resized, current, low_quality_matches=False)
    assert "have no positive anchor and are never learnt" in report[2] and proposals[0].setting.flags() in report[4]


def test_check_dataset_prints_the_statistics_and_writes_the_histogram(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    small_box_set(data)
    (data / "images" / "train").mkdir(parents=True)
    for index in range(30):
        Image.new("RGB", (128, 128)).save(data / "images" / "train" / f"{index}.png")
    output = tmp_path / "out"
    code = check_dataset_script.main(["--coco_path", str(data), "--set_name", "train", "--min_side", "128",
                                      "--max_side", "128", "--output_dir", str(output)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "box statistics of train: 30 images, 150 boxes" in printed
    assert "anchor coverage:" in printed and "--anchor_sizes" in printed
    assert (output / "train_box_sizes.png").stat().st_size > 10000


def test_check_dataset_refuses_bad_anchor_flags(tmp_path, capsys):
    for flags, message in ((["--negative_iou", "0.7"], "--negative_iou 0.7 is above --positive_iou 0.5"),
                           (["--anchor_sizes", "8", "16"], "expected 1 size")):
        with pytest.raises(SystemExit) as caught:
            check_dataset_script.parse_args(["--coco_path", str(tmp_path), *flags])
        assert caught.value.code == 2 and message in capsys.readouterr().err


def test_training_report_gives_the_coverage_at_the_ends_of_the_scale_range(tmp_path):
    # 30 images of 128 x 128 with boxes of 7-40 px; trained at short sides 96-128 with jitter 0.5-1.5.
    small_box_set(tmp_path)
    args = build_train_parser().parse_args(["--min_side", "128", "--max_side", "128"])
    dataset = CocoDetection(str(tmp_path), "train", transform=None)
    assert scale_extremes(128, [128], None) == []
    assert scale_extremes(128, [96, 112, 128], [0.5, 1.5]) == [("smallest", 96, 0.5), ("largest", 128, 1.5)]
    lines = training_report_lines(dataset, vars(args), {"train_sides": [96, 112, 128], "scale_jitter": [0.5, 1.5]})
    # The smallest scale, 96 x 0.5, is the set resized to 48: fewer boxes reach an anchor; the largest, more.
    at_48 = anchor_coverage(load_resized_boxes(str(tmp_path), "train", 48, 48), vars(args)).fraction
    at_192 = anchor_coverage(load_resized_boxes(str(tmp_path), "train", 192, 192), vars(args)).fraction
    at_128 = anchor_coverage(load_resized_boxes(str(tmp_path), "train", 128, 128), vars(args)).fraction
    assert at_48 < at_128 < at_192
    assert f"at the smallest training scale (short side 96 x 0.5): {percent(at_48)}" in lines[-2]
    assert f"at the largest training scale (short side 128 x 1.5): {percent(at_192)}" in lines[-1]
    assert training_report_lines(dataset, vars(args), {"train_sides": [128], "scale_jitter": None}) == \
        training_report_lines(dataset, vars(args))


def test_check_dataset_reads_low_quality_matches_as_train_py_does():
    for argv, expected in (([], True), (["--low_quality_matches"], True), (["--low_quality_matches", "off"], False)):
        assert check_dataset_script.parse_args(argv).low_quality_matches is expected
        assert build_train_parser().parse_args(argv).low_quality_matches is expected
