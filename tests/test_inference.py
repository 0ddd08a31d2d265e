import pytest
import torch

from retinanet.models.retinanet import RetinaNet
from retinanet.models.postprocess import PostProcessor


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = RetinaNet(num_classes=4, depth=18, norm="gn", head_norm="gn", fpn_channels=64, prior=0.3)
    return net.eval()


def test_batched_and_one_image_inference_give_the_same_detections(model):
    torch.manual_seed(1)
    images = torch.randn(3, 3, 96, 128)
    postprocessor = PostProcessor(score_threshold=0.05, max_detections=100)
    sizes, scales = [(96, 128), (90, 120), (96, 100)], [1.0, 0.5, 2.0]
    with torch.no_grad():
        batched = postprocessor(model(images), sizes, scales)
        single = [postprocessor(model(images[i:i + 1]), sizes[i:i + 1], scales[i:i + 1])[0] for i in range(3)]
    for one, many in zip(single, batched):
        assert len(one["scores"]) > 0
        assert torch.equal(one["labels"], many["labels"])
        assert torch.allclose(one["scores"], many["scores"], atol=1e-5)
        assert torch.allclose(one["boxes"], many["boxes"], atol=1e-3)


def test_detections_are_capped_clipped_scaled_and_sorted(model):
    postprocessor = PostProcessor(score_threshold=0.0, max_detections=7)
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
        (detection,) = postprocessor(outputs, [(50, 60)], [0.5])
    assert len(detection["scores"]) == 7
    assert torch.all(detection["scores"][:-1] >= detection["scores"][1:])
    boxes = detection["boxes"]
    assert boxes[:, 0::2].max() <= 60 / 0.5 and boxes[:, 1::2].max() <= 50 / 0.5 and boxes.min() >= 0


def test_score_threshold_drops_everything_below_it():
    outputs = {
        "cls_logits": torch.full((1, 9, 2), -10.0),
        "box_deltas": torch.zeros(1, 9, 4),
        "anchors": torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(9, 1) + torch.arange(9.0)[:, None] * 20,
        "level_sizes": [9],
    }
    outputs["cls_logits"][0, 3, 1] = 3.0
    (detection,) = PostProcessor(score_threshold=0.5)(outputs, [(500, 500)])
    assert detection["labels"].tolist() == [1]
    assert detection["boxes"].tolist() == [[60.0, 60.0, 70.0, 70.0]]


def test_per_class_nms_keeps_overlapping_boxes_of_different_classes():
    outputs = {
        "cls_logits": torch.full((1, 2, 2), -10.0),
        "box_deltas": torch.zeros(1, 2, 4),
        "anchors": torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]]),
        "level_sizes": [2],
    }
    outputs["cls_logits"][0, 0, 0] = 4.0
    outputs["cls_logits"][0, 1, 0] = 3.0  # same class, IoU 0.82: suppressed
    outputs["cls_logits"][0, 1, 1] = 2.0  # other class: kept
    (detection,) = PostProcessor()(outputs, [(100, 100)])
    assert sorted(detection["labels"].tolist()) == [0, 1]
