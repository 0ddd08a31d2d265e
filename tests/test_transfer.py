"""Starting from other detectors: torchvision's COCO RetinaNets imported exactly, and checkpoints
with other class lists carried over class by class."""
import math

import numpy as np
import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn_v2

from retinanet.detector import Detector
from retinanet.engine import DeviceConfig
from retinanet.models.retinanet import RetinaNet, build_model
from retinanet.models.transfer import (TORCHVISION_VARIANTS, TransferError, convert_torchvision_state, coco_classes, match_classes,
                                       transfer_weights)
from retinanet.models import transfer
from retinanet.models.checkpoint import load_model_weights
from scripts import assert_same_detections, load_script

HEIGHT, WIDTH = 256, 384  # multiples of 128, so torchvision's strides are exactly 8 ... 128


def random_torchvision_model(variant):
    """torchvision's own model with random weights, made to detect (models.transfer), at the test's size."""
    return transfer.random_torchvision_model(variant, min_size=HEIGHT, max_size=WIDTH)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(2)]


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_imported_torchvision_model_detects_exactly_what_torchvision_does(variant, images, one_thread):
    reference = random_torchvision_model(variant)
    state, names, category_ids, options = convert_torchvision_state(reference.state_dict(), variant)
    assert len(names) == 80 and names[0] == "person" and category_ids[-1] == 90
    model = build_model(len(names), options)
    load_model_weights(model, state)
    model.eval()
    tensors = [torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image in images]
    with torch.no_grad():
        image_list, _ = reference.transform(tensors)
        assert image_list.tensors.shape[-2:] == (HEIGHT, WIDTH)  # nothing resized or padded
        features = list(reference.backbone(image_list.tensors).values())
        head = reference.head(features)
        anchors = reference.anchor_generator(image_list, features)[0]
        ours = model(image_list.tensors)
        expected = reference(tensors)
    assert torch.equal(ours["anchors"], anchors)
    torch.testing.assert_close(ours["cls_logits"], head["cls_logits"][:, :, category_ids], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours["box_deltas"], head["bbox_regression"], atol=1e-4, rtol=0)

    detector = Detector(model, names, category_ids, min_side=HEIGHT, max_side=WIDTH,
                        device_config=DeviceConfig(torch.device("cpu"), None, False))
    detections = detector.predict(images, max_detections=100)
    for got, want in zip(detections, expected):
        assert_same_detections((got["boxes"], got["scores"], got["category_ids"]),
                               (want["boxes"], want["scores"], want["labels"]), count=100)


# (height, width) of images on which the nominal strides and torchvision's (padded side // grid) differ:
# 800 // 7 = 114 on P7 and 800 // 13 = 61 on P6; 480 // 4 = 120; 768 // 6 = 128 but 1344 // 11 = 122.
ODD_SIZES = [(800, 800), (480, 640), (750, 1333)]


@pytest.mark.parametrize("padded", [(800, 800), (480, 640), (768, 1344), (256, 384), (96, 1024), (32, 32)])
def test_the_torchvision_layout_places_anchors_as_torchvision_does_at_any_size(padded):
    from torchvision.models.detection.image_list import ImageList

    reference = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None).anchor_generator
    *_, options = convert_torchvision_state(random_torchvision_model("v2").state_dict(), "v2")
    ours = build_model(80, options).anchor_generator
    height, width = padded
    sizes = [(math.ceil(height / 2 ** level), math.ceil(width / 2 ** level)) for level in range(3, 8)]
    features = [torch.zeros(1, 1, *size) for size in sizes]
    expected = reference(ImageList(torch.zeros(1, 3, height, width), [(height, width)]), features)[0]
    assert torch.equal(ours(sizes, torch.device("cpu"), image_size=padded), expected)
    nominal = ours(sizes, torch.device("cpu"))  # equal only where every grid of over one cell has the nominal stride
    agree = all(grid == 1 or side // grid == 2 ** level for level, size in zip(range(3, 8), sizes)
                for side, grid in zip(padded, size))
    assert torch.equal(nominal, expected) == agree
    assert agree == (padded in [(256, 384), (32, 32)])


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_imported_models_detect_what_torchvision_does_at_sizes_not_divisible_by_128(variant, one_thread):
    """Every one of the top 50 detections matches in float32 (1e-4 in score, 0.01 px in box), on
    images torchvision neither resizes nor pads beyond the multiple of 32."""
    reference = random_torchvision_model(variant)
    state, names, category_ids, options = convert_torchvision_state(reference.state_dict(), variant)
    model = build_model(len(names), options)
    load_model_weights(model, state)
    model.eval()
    rng = np.random.default_rng(1)
    for height, width in ODD_SIZES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        reference.transform.min_size, reference.transform.max_size = (min(height, width),), max(height, width)
        with torch.no_grad():
            want = reference([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
        detector = Detector(model, names, category_ids, min_side=min(height, width), max_side=max(height, width),
                            device_config=DeviceConfig(torch.device("cpu"), None, False))
        got = detector.predict([image], max_detections=50)[0]
        assert len(got["scores"]) == 50 and len(want["scores"]) >= 50, (height, width)
        assert_same_detections((got["boxes"], got["scores"], got["category_ids"]),
                               (want["boxes"], want["scores"], want["labels"]), count=50)


def test_the_variant_is_recognised_and_checked():
    state = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()
    *_, options = convert_torchvision_state(state)
    assert options["p6_from"] == "c5" and options["head_norm"] == "gn" and options["fpn_norm"] == "none"
    with pytest.raises(TransferError, match="torchvision's RetinaNet v2, not v1"):
        convert_torchvision_state(state, "v1")
    with pytest.raises(TransferError, match="not a torchvision RetinaNet"):
        convert_torchvision_state({"conv1.weight": torch.zeros(1)})


def test_class_names_match_without_case_spaces_or_separators():
    assert match_classes(["Traffic_Light", "zebra", "unicorn"], ["person", "traffic light", "zebra"]) == [(0, 1), (1, 2)]


def small_detector(num_classes, seed):
    torch.manual_seed(seed)
    return RetinaNet(num_classes, depth=18, norm="gn", head_norm="gn", fpn_channels=64)


def test_shared_classes_keep_their_rows_and_new_ones_start_at_the_prior():
    source = small_detector(3, seed=0)
    target = small_detector(3, seed=1)
    carried = transfer_weights(target, source.state_dict(), ["cat", "dog", "fish"], ["dog", "bird", "cat"])
    assert carried == [("dog", "dog"), ("cat", "cat")]
    anchors = target.anchor_generator.num_anchors
    new_weight = target.classification_head.logits.weight.view(anchors, 3, -1)
    old_weight = source.classification_head.logits.weight.view(anchors, 3, -1)
    new_bias = target.classification_head.logits.bias.view(anchors, 3)
    old_bias = source.classification_head.logits.bias.view(anchors, 3)
    assert torch.equal(new_weight[:, 0], old_weight[:, 1]) and torch.equal(new_weight[:, 2], old_weight[:, 0])
    assert torch.equal(new_bias[:, 0], old_bias[:, 1]) and torch.equal(new_bias[:, 2], old_bias[:, 0])
    prior_bias = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(new_bias[:, 1], torch.full((anchors,), prior_bias))
    assert torch.equal(target.backbone.layer2[0].conv1.weight, source.backbone.layer2[0].conv1.weight)
    assert torch.equal(target.regression_head.deltas.weight, source.regression_head.deltas.weight)


def test_weights_of_another_network_are_refused():
    source = RetinaNet(3, depth=34, norm="gn", head_norm="gn", fpn_channels=64)
    with pytest.raises(TransferError, match="another network"):
        transfer_weights(small_detector(3, seed=0), source.state_dict(), ["a", "b", "c"], ["a", "b", "c"])


def test_imported_checkpoint_is_read_by_the_detector_and_test_script(tmp_path, images, one_thread, capsys,
                                                                      monkeypatch):
    reference = random_torchvision_model("v2")
    weights = tmp_path / "retinanet_v2.pth"
    torch.save(reference.state_dict(), weights)
    output = tmp_path / "coco_v2.pt"
    importer = load_script("tools/import_torchvision")
    # A conversion that got a network option wrong (here the anchor layout) is caught by the check.
    monkeypatch.setitem(TORCHVISION_VARIANTS, "v2", dict(TORCHVISION_VARIANTS["v2"], anchor_layout="centred"))
    with pytest.raises(SystemExit, match="does not compute what torchvision's does.*nothing written"):
        importer.main(["--weights", str(weights), "--output", str(output)])
    assert not output.exists()
    monkeypatch.undo()
    importer.main(["--weights", str(weights), "--variant", "v2", "--output", str(output), "--min_side", str(HEIGHT),
                   "--max_side", str(WIDTH)])
    printed = capsys.readouterr().out
    assert "checked against torchvision's own v2 in float32 on a 480x640 image: anchors identical" in printed
    assert float(printed.split("largest difference ")[1].split()[0]) < 1e-3
    detector = Detector.from_checkpoint(str(output), device="cpu", amp="off")
    names, category_ids = coco_classes()
    assert detector.class_names == names and detector.category_ids == category_ids
    got = detector.predict(images[0], max_detections=100)
    with torch.no_grad():
        want = reference([torch.from_numpy(images[0]).permute(2, 0, 1).float() / 255])[0]
    assert_same_detections((got["boxes"], got["scores"], got["category_ids"]),
                           (want["boxes"], want["scores"], want["labels"]), count=100)
    with pytest.raises(SystemExit, match="is the v2 variant, not --variant v1"):
        load_script("tools/import_torchvision").main(["--weights", "torchvision-coco-v2", "--variant", "v1",
                                                      "--output", str(tmp_path / "x.pt")])
