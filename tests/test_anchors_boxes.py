import math

import pytest
import torch

from retinanet.models import box_coding as box_ops
from retinanet.models.anchors import AnchorGenerator, cell_anchors, feature_sizes_for_image, num_anchors_for_image


def test_anchor_count_per_level_for_a_given_image_size():
    # 512 x 640 input: strides 8..128 give 64x80, 32x40, 16x20, 8x10, 4x5 cells, 9 anchors each.
    counts = num_anchors_for_image(512, 640)
    assert counts == [64 * 80 * 9, 32 * 40 * 9, 16 * 20 * 9, 8 * 10 * 9, 4 * 5 * 9]
    generator = AnchorGenerator()
    anchors = generator(feature_sizes_for_image(512, 640), torch.device("cpu"))
    assert anchors.shape == (sum(counts), 4)


def test_non_multiple_of_128_sizes_round_up_like_the_convolutions():
    assert feature_sizes_for_image(224, 160) == [(28, 20), (14, 10), (7, 5), (4, 3), (2, 2)]


def test_cell_anchor_sizes_ratios_and_scales():
    cells = cell_anchors(32, (0.5, 1.0, 2.0), (1.0, 2 ** (1 / 3), 2 ** (2 / 3)))
    widths = cells[:, 2] - cells[:, 0]
    heights = cells[:, 3] - cells[:, 1]
    areas = widths * heights
    expected_areas = torch.tensor([(32 * s) ** 2 for s in (1.0, 2 ** (1 / 3), 2 ** (2 / 3))] * 3)
    assert torch.allclose(areas, expected_areas, rtol=1e-5)
    assert torch.allclose(heights / widths, torch.tensor([0.5] * 3 + [1.0] * 3 + [2.0] * 3), rtol=1e-5)
    assert torch.allclose(cells[:, :2] + cells[:, 2:], torch.zeros(9, 2), atol=1e-5)  # centred


def test_anchors_are_centred_on_cells_and_cached():
    generator = AnchorGenerator()
    sizes = feature_sizes_for_image(256, 256)
    anchors = generator(sizes, torch.device("cpu"))
    first = anchors[:9]
    centres = (first[:, :2] + first[:, 2:]) / 2
    assert torch.allclose(centres, torch.full((9, 2), 4.0))  # stride 8, cell (0, 0)
    assert generator(sizes, torch.device("cpu")) is anchors


def test_encode_decode_round_trip():
    generator = torch.Generator().manual_seed(0)
    anchors = torch.rand(500, 2, generator=generator) * 300
    anchors = torch.cat([anchors, anchors + 10 + torch.rand(500, 2, generator=generator) * 200], dim=1)
    boxes = torch.rand(500, 2, generator=generator) * 300
    boxes = torch.cat([boxes, boxes + 1 + torch.rand(500, 2, generator=generator) * 200], dim=1)
    decoded = box_ops.decode(anchors, box_ops.encode(anchors, boxes))
    assert torch.allclose(decoded, boxes, atol=1e-3)


def test_encode_of_the_anchor_itself_is_zero_and_uses_std():
    anchor = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    assert torch.equal(box_ops.encode(anchor, anchor), torch.zeros(1, 4))
    shifted = anchor + torch.tensor([[4.0, 0.0, 4.0, 0.0]])  # dx = 4 / 40 = 0.1 -> 0.1 / 0.1 = 1
    assert torch.allclose(box_ops.encode(anchor, shifted), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    doubled = torch.tensor([[-10.0, 20.0, 70.0, 100.0]])  # width x2 -> log 2 / 0.2
    assert torch.allclose(box_ops.encode(anchor, doubled), torch.tensor([[0.0, 0.0, math.log(2) / 0.2, 0.0]]))


def test_pairwise_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert torch.allclose(box_ops.pairwise_iou(a, b), torch.tensor([[1.0, 50 / 150, 0.0]]))


def test_clip_boxes():
    clipped = box_ops.clip_boxes(torch.tensor([[-5.0, -1.0, 120.0, 40.0]]), height=30, width=100)
    assert clipped.tolist() == [[0.0, 0.0, 100.0, 30.0]]


@pytest.mark.parametrize("huge", [50.0, 1e4])
def test_decode_clamps_extreme_scales(huge):
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    box = box_ops.decode(anchor, torch.tensor([[0.0, 0.0, huge, huge]]))
    assert torch.isfinite(box).all()
    assert (box[0, 2] - box[0, 0]).item() == pytest.approx(1000.0, rel=1e-4)
