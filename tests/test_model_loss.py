import pytest
import torch

from retinanet.models.backbone import ResNet
from retinanet.models.loss import RetinaNetLoss, assign_anchors, focal_loss
from retinanet.models.retinanet import RetinaNet
from retinanet.models import box_coding as box_ops


@pytest.mark.parametrize("depth,channels", [(18, (128, 256, 512)), (34, (128, 256, 512)),
                                            (50, (512, 1024, 2048)), (101, (512, 1024, 2048)),
                                            (152, (512, 1024, 2048))])
def test_every_depth_builds_with_the_right_c3_c5_channels(depth, channels):
    backbone = ResNet(depth, norm="frozen_bn")
    assert backbone.out_channels == channels
    with torch.no_grad():
        c3, c4, c5 = backbone(torch.zeros(1, 3, 64, 96))
    assert [c3.shape[1], c4.shape[1], c5.shape[1]] == list(channels)
    assert c3.shape[-2:] == (8, 12) and c4.shape[-2:] == (4, 6) and c5.shape[-2:] == (2, 3)


def test_backbone_parameter_names_match_torchvision():
    torchvision = pytest.importorskip("torchvision")
    ours = set(ResNet(50, norm="bn").state_dict())
    theirs = {k for k in torchvision.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")}
    assert ours == theirs


def test_model_outputs_shapes_and_prior_initialisation():
    model = RetinaNet(num_classes=3, depth=18, norm="gn", head_norm="gn", fpn_channels=64, prior=0.01)
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 128, 160))
    total = sum(outputs["level_sizes"])
    assert total == 9 * (16 * 20 + 8 * 10 + 4 * 5 + 2 * 3 + 1 * 2)
    assert outputs["cls_logits"].shape == (2, total, 3)
    assert outputs["box_deltas"].shape == (2, total, 4)
    assert outputs["anchors"].shape == (total, 4)
    # Regression starts at zero; classification near the prior probability.
    assert torch.count_nonzero(outputs["box_deltas"]) == 0
    assert torch.sigmoid(outputs["cls_logits"]).mean().item() == pytest.approx(0.01, rel=0.2)


def _single_anchor_outputs(logit_value, num_classes=2):
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 9.0, 10.0]])
    return {
        "cls_logits": torch.full((1, 3, num_classes), logit_value),
        "box_deltas": torch.zeros(1, 3, 4),
        "anchors": anchors,
    }


def test_image_without_boxes_trains_background_and_has_zero_box_loss():
    criterion = RetinaNetLoss()
    outputs = _single_anchor_outputs(0.0)
    losses = criterion(outputs, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert losses["cls_loss"].item() > 0
    assert losses["box_loss"].item() == 0.0
    # Every anchor is a negative: alpha_t = 0.75, p = 0.5 -> 0.75 * 0.25 * ln 2 per logit, 6 logits.
    expected = 6 * 0.75 * 0.5 ** 2 * torch.log(torch.tensor(2.0)).item()
    assert losses["cls_loss"].item() == pytest.approx(expected, rel=1e-5)


def test_perfect_match_gives_near_zero_loss():
    criterion = RetinaNetLoss()
    outputs = _single_anchor_outputs(-20.0)
    outputs["cls_logits"][0, 0, 1] = 20.0  # anchor 0 is the box, class 1; anchor 2 overlaps > 0.5 too
    outputs["cls_logits"][0, 2, 1] = 20.0
    anchors = outputs["anchors"]
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    outputs["box_deltas"][0, 2] = box_ops.encode(anchors[2], gt[0])
    losses = criterion(outputs, [{"boxes": gt, "labels": torch.tensor([1])}])
    assert losses["cls_loss"].item() < 1e-6
    assert losses["box_loss"].item() < 1e-6


def test_assignment_thresholds_and_ignored_band():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0],    # IoU 1.0 -> positive
                            [0.0, 0.0, 10.0, 5.5],     # IoU 0.55 -> positive
                            [0.0, 0.0, 10.0, 4.5],     # IoU 0.45 -> ignored
                            [0.0, 0.0, 10.0, 3.0],     # IoU 0.3 -> negative
                            [40.0, 40.0, 50.0, 50.0]])  # IoU 0 -> negative
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    matched, positive, negative = assign_anchors(anchors, gt, torch.tensor([[True]]))
    assert positive[0].tolist() == [True, True, False, False, False]
    assert negative[0].tolist() == [False, False, False, True, True]


def test_focal_loss_matches_the_formula():
    logits = torch.tensor([2.0, -1.0])
    targets = torch.tensor([1.0, 0.0])
    p = torch.sigmoid(logits)
    expected = torch.stack([0.25 * (1 - p[0]) ** 2 * -torch.log(p[0]), 0.75 * p[1] ** 2 * -torch.log(1 - p[1])])
    assert torch.allclose(focal_loss(logits, targets), expected, atol=1e-6)


def test_batched_loss_equals_per_image_losses():
    torch.manual_seed(0)
    model = RetinaNet(num_classes=3, depth=18, norm="gn", head_norm="gn", fpn_channels=64)
    images = torch.randn(3, 3, 96, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 120.0, 90.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        {"boxes": torch.tensor([[30.0, 5.0, 70.0, 40.0]]), "labels": torch.tensor([1])},
    ]
    criterion = RetinaNetLoss()
    with torch.no_grad():
        outputs = model(images)
        batched = criterion(outputs, targets)
        single = [criterion({"cls_logits": outputs["cls_logits"][i:i + 1], "box_deltas": outputs["box_deltas"][i:i + 1],
                             "anchors": outputs["anchors"]}, [targets[i]]) for i in range(3)]
    for key in ("cls_loss", "box_loss"):
        assert batched[key].item() == pytest.approx(sum(s[key].item() for s in single) / 3, rel=1e-5)


def test_low_quality_matches_rescue_a_box_no_anchor_covers_well():
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [100.0, 100.0, 132.0, 132.0], [0.0, 0.0, 20.0, 20.0]])
    gt = torch.tensor([[[0.0, 0.0, 12.0, 12.0]]])  # best IoU 144 / 400 = 0.36 with anchor 2
    valid = torch.tensor([[True]])
    _, positive, negative = assign_anchors(anchors, gt, valid)
    assert positive.sum() == 0
    matched, positive, negative = assign_anchors(anchors, gt, valid, low_quality_matches=True)
    assert positive[0].tolist() == [False, False, True]
    assert negative[0].tolist() == [True, True, False]
    assert matched[0, 2].item() == 0


def test_stem_pooling_equals_plain_max_pooling_in_value_and_gradient():
    from retinanet.models.backbone import StemMaxPool
    x = torch.randn(2, 8, 30, 33, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    ours, reference = StemMaxPool()(x), torch.nn.MaxPool2d(3, 2, 1)(y)
    assert torch.equal(ours, reference) and ours.is_contiguous()
    ours.square().sum().backward()
    reference.square().sum().backward()
    assert torch.equal(x.grad, y.grad)
