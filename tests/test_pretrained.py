import pytest
import torch
import torchvision

from retinanet.models.backbone import ResNet, load_pretrained_backbone
from retinanet.models.retinanet import RetinaNet


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_torchvision_weights_load_into_the_backbone(resnet18_file):
    backbone = ResNet(18, norm="frozen_bn")
    missing, unexpected = load_pretrained_backbone(backbone, str(resnet18_file))
    assert missing == [] and unexpected == []  # fc.* is not part of a detection backbone
    source = torch.load(resnet18_file, weights_only=True)
    assert torch.equal(backbone.layer3[1].conv2.weight, source["layer3.1.conv2.weight"])
    assert torch.equal(backbone.bn1.running_var, source["bn1.running_var"])


def test_weights_of_another_depth_are_refused_clearly(resnet18_file):
    with pytest.raises(ValueError, match=r"does not fit a ResNet-34 backbone: it has \(2, 2, 2, 2\) residual blocks"):
        load_pretrained_backbone(ResNet(34, norm="frozen_bn"), str(resnet18_file))
    with pytest.raises(ValueError, match="does not fit a ResNet-50 backbone"):
        load_pretrained_backbone(ResNet(50, norm="frozen_bn"), str(resnet18_file))


def test_group_norm_backbone_reports_the_batch_norm_statistics_it_cannot_use(resnet18_file):
    model = RetinaNet(3, depth=18, norm="gn", head_norm="gn", fpn_channels=64)
    missing, unexpected = load_pretrained_backbone(model.backbone, str(resnet18_file))
    assert missing == []
    assert "bn1.running_mean" in unexpected and all("running" in k or "num_batches" in k for k in unexpected)


def test_frozen_batch_norm_does_not_train(resnet18_file):
    backbone = ResNet(18, norm="frozen_bn")
    load_pretrained_backbone(backbone, str(resnet18_file))
    trainable = {name for name, parameter in backbone.named_parameters() if parameter.requires_grad}
    assert not any(".bn" in name or name.startswith("bn1") or "downsample.1" in name for name in trainable)
    before = backbone.bn1.running_mean.clone()
    backbone.train()
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(backbone.bn1.running_mean, before)
