"""The options the recipe benchmark compares: data styles, frozen-statistics BatchNorm, He-initialised heads."""
import json
import math

import pytest
import torch

from retinanet.data.synthetic import STYLES, generate_dataset
from retinanet.models.backbone import FrozenStatsBatchNorm2d, ResNet
from retinanet.models.retinanet import RetinaNet


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_writes_its_classes_and_object_sizes(tmp_path, style):
    generate_dataset(str(tmp_path), num_train=12, num_val=0, num_test=0, seed=2, min_size=200, max_size=320,
                     style=style)
    coco = json.loads((tmp_path / "train.json").read_text())
    preset = STYLES[style]
    assert [c["name"] for c in coco["categories"]] == list(preset.classes)
    assert coco["annotations"], style
    longest = [max(a["bbox"][2:]) for a in coco["annotations"]]
    limit = preset.max_object_size or 320
    assert max(longest) <= limit + 2  # the box of the drawn pixels, anti-aliasing included
    per_image = {}
    for annotation in coco["annotations"]:
        per_image[annotation["image_id"]] = per_image.get(annotation["image_id"], 0) + 1
    assert max(per_image.values()) <= preset.max_objects


def test_styles_differ_in_what_they_promise(tmp_path):
    summaries = {style: generate_dataset(str(tmp_path / style), num_train=30, num_val=0, num_test=0, seed=3,
                                         min_size=200, max_size=320, style=style)["sets"]["train"]
                 for style in ("default", "small_objects", "crowded")}
    assert summaries["small_objects"]["box_side_range"][1] <= 30 < summaries["default"]["box_side_range"][1]
    assert summaries["crowded"]["annotations"] > 2 * summaries["default"]["annotations"]
    with pytest.raises(ValueError, match="unknown style"):
        generate_dataset(str(tmp_path / "x"), num_train=1, num_val=0, num_test=0, style="nope")


def test_frozen_statistics_batchnorm_trains_scale_and_shift_but_never_its_statistics():
    norm = FrozenStatsBatchNorm2d(4)
    norm.running_mean.fill_(1.0)
    norm.running_var.fill_(4.0)
    norm.train()
    x = torch.randn(2, 4, 5, 5) * 3 + 7
    out = norm(x)
    assert torch.allclose(out, (x - 1.0) / math.sqrt(4.0 + norm.eps), atol=1e-5)  # running stats, not the batch's
    assert torch.equal(norm.running_mean, torch.ones(4)) and torch.equal(norm.running_var, torch.full((4,), 4.0))
    out.sum().backward()
    assert norm.weight.grad is not None and norm.bias.grad is not None
    # It loads the same state dict as ordinary BatchNorm (ImageNet weights).
    assert set(ResNet(18, "frozen_stats_bn").state_dict()) == set(ResNet(18, "bn").state_dict())


def test_kaiming_heads_start_at_the_prior_and_keep_the_signal_scale():
    torch.manual_seed(0)
    model = RetinaNet(num_classes=3, depth=18, norm="frozen_stats_bn", head_norm="none", fpn_channels=128,
                      prior=0.01, head_init="kaiming").eval()
    assert torch.count_nonzero(model.classification_head.logits.weight) == 0
    first = model.classification_head.tower[0].weight
    assert first.std().item() == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.05)
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 128, 128))
    assert torch.allclose(torch.sigmoid(outputs["cls_logits"]), torch.full_like(outputs["cls_logits"], 0.01))
    normal = RetinaNet(num_classes=3, depth=18, norm="gn", head_norm="gn", fpn_channels=128, head_init="normal")
    assert normal.classification_head.tower[0].weight.std().item() == pytest.approx(0.01, rel=0.05)
