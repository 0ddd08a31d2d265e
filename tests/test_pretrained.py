import pytest
import torch
import torchvision

from retinanet.models.backbone import ResNet, load_pretrained_backbone
from retinanet.models.retinanet import RetinaNet


@pytest.fixture(scope="module")
def resnet18_file(module_tmp):
    torch.manual_seed(0)
    path = module_tmp("weights") / "resnet18-test.pth"
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


# ----- where a run starts: --pretrained auto|imagenet|none and --init_from ------------------------
import json  # noqa: E402  (the tests below drive whole runs)
import math  # noqa: E402
import os  # noqa: E402

from retinanet.data.synthetic import Style, generate_dataset  # noqa: E402
from retinanet.config import resolve_training_args  # noqa: E402
from retinanet.training.start import imagenet_url  # noqa: E402
from retinanet.training.setup import TrainingError  # noqa: E402
from retinanet.training.trainer import Trainer  # noqa: E402
from scripts import TINY_TRAIN_FLAGS, load_script  # noqa: E402

train_script = load_script("train")


@pytest.fixture(scope="module")
def shapes_data(module_tmp):
    """Two tiny sets whose class lists share two names of three."""
    root = module_tmp("starts")
    source, target = root / "source", root / "target"
    generate_dataset(str(source), num_train=8, num_val=2, num_test=0, min_size=96, max_size=128, seed=1,
                     style=Style(classes=("ellipse", "rectangle", "triangle")))
    generate_dataset(str(target), num_train=8, num_val=2, num_test=0, min_size=96, max_size=128, seed=2,
                     style=Style(classes=("rectangle", "star", "ellipse")))
    return source, target


def cache_imagenet_file(torch_home, depth, weights_depth):
    """Put torchvision's ResNet-``weights_depth`` (random weights) where the ResNet-``depth`` download would go."""
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / os.path.basename(imagenet_url(depth))
    torch.manual_seed(weights_depth)
    torch.save(getattr(torchvision.models, f"resnet{weights_depth}")(weights=None).state_dict(), path)
    return path


def run_flags(data, tmp_path, name, *extra):
    """train.py's parsed flags for a one-epoch tiny run; ``--pretrained none`` unless ``extra`` sets the start."""
    tiny = TINY_TRAIN_FLAGS[:TINY_TRAIN_FLAGS.index("--pretrained")]
    start = [] if "--pretrained" in extra or "--init_from" in extra else ["--pretrained", "none"]
    return train_script.parse_args([*tiny, "--coco_path", str(data), "--output_path", str(tmp_path / "output"),
                                    "--log_dir", str(tmp_path / "log"), "--run_name", name, "--epochs", "1",
                                    "--eval_every", "0", *start, *extra])


def test_imagenet_weights_come_from_the_cache_and_set_the_fine_tuning_defaults(shapes_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = cache_imagenet_file(tmp_path / "torch", 18, 18)
    trainer = Trainer(run_flags(shapes_data[0], tmp_path, "imagenet", "--pretrained", "imagenet"))
    try:
        backbone = trainer.model_without_ddp.backbone
        source = torch.load(weights, weights_only=True)
        assert all(torch.equal(tensor, source[name]) for name, tensor in backbone.state_dict().items())
        assert trainer.args.norm == "frozen_bn" and trainer.args.trainable_layers == 3
        frozen = {name.split(".")[0] for name, p in backbone.named_parameters() if not p.requires_grad}
        assert frozen == {"conv1", "layer1"}
        config = json.loads((tmp_path / "output" / "imagenet" / "config.json").read_text())
        assert config["start"] == f"ImageNet weights for ResNet-18 from {weights}"
        trainer.fit()
    finally:
        trainer.close()
    log = (tmp_path / "log" / "imagenet.log").read_text().splitlines()
    # The header (run, precision, augmentation), then the start line.
    assert log[1].startswith("precision:") and log[2].startswith("augmentation:")
    assert log[3].startswith("start: ImageNet weights for ResNet-18") and "stages trained: 3 of 5" in log[3]


def test_imagenet_weights_of_another_depth_are_refused_in_one_line(shapes_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache_imagenet_file(tmp_path / "torch", 18, 34)
    with pytest.raises(TrainingError) as stop:
        Trainer(run_flags(shapes_data[0], tmp_path, "wrong", "--pretrained", "imagenet"))
    message = str(stop.value)
    assert message.startswith("--pretrained imagenet: ") and "does not fit a ResNet-18 backbone" in message
    assert "\n" not in message and not (tmp_path / "output" / "wrong").exists()


def test_imagenet_offline_names_the_url_the_file_and_the_folder(shapes_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(TrainingError) as stop:
        Trainer(run_flags(shapes_data[0], tmp_path, "offline", "--pretrained", "imagenet"))
    message = str(stop.value)
    url = imagenet_url(18)
    assert url in message and os.path.basename(url) in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message and "\n" not in message
    assert not (tmp_path / "output").exists() and not (tmp_path / "log").exists()


def test_auto_without_weights_trains_from_scratch_and_says_so(shapes_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    trainer = Trainer(run_flags(shapes_data[0], tmp_path, "auto", "--pretrained", "auto"))
    try:
        assert trainer.args.norm == "gn" and trainer.args.trainable_layers == 5
        assert all(p.requires_grad for p in trainer.model_without_ddp.parameters())
    finally:
        trainer.close()
    printed = capsys.readouterr()
    assert "WARNING: training from scratch" in printed.err  # once on the console, once in the log
    assert (printed.out + printed.err).count("WARNING: training from scratch") == 1
    assert (tmp_path / "log" / "auto.log").read_text().count("WARNING: training from scratch") == 1
    config = json.loads((tmp_path / "output" / "auto" / "config.json").read_text())
    assert config["start"] == "random weights (ImageNet weights unavailable)"


def test_init_from_another_class_list_carries_the_shared_classes(shapes_data, tmp_path):
    source_data, target_data = shapes_data
    train_script.main([*TINY_TRAIN_FLAGS, "--coco_path", str(source_data), "--output_path", str(tmp_path / "output"),
                       "--log_dir", str(tmp_path / "log"), "--run_name", "source", "--epochs", "1",
                       "--eval_every", "0", "--val_set", ""])
    source_path = tmp_path / "output" / "source" / "model_final.pt"
    source = torch.load(source_path, weights_only=True)["model"]
    trainer = Trainer(run_flags(target_data, tmp_path, "target", "--init_from", str(source_path), "--prior", "0.02"))
    try:
        head = trainer.model_without_ddp.classification_head.logits
        anchors = trainer.model_without_ddp.anchor_generator.num_anchors
        new_bias, old_bias = head.bias.view(anchors, 3), source["classification_head.logits.bias"].view(anchors, 3)
        new_weight = head.weight.view(anchors, 3, -1)
        old_weight = source["classification_head.logits.weight"].view(anchors, 3, -1)
        # target (rectangle, star, ellipse) <- source (ellipse, rectangle, triangle)
        assert torch.equal(new_weight[:, 0], old_weight[:, 1]) and torch.equal(new_weight[:, 2], old_weight[:, 0])
        assert torch.equal(new_bias[:, 0], old_bias[:, 1]) and torch.equal(new_bias[:, 2], old_bias[:, 0])
        assert torch.allclose(new_bias[:, 1], torch.full((anchors,), -math.log(0.98 / 0.02)))
        backbone = trainer.model_without_ddp.backbone.state_dict()
        assert all(torch.equal(backbone[name], source[f"backbone.{name}"]) for name in backbone)
        assert trainer.args.trainable_layers == 3
        trainer.fit()
    finally:
        trainer.close()
    log = (tmp_path / "log" / "target.log").read_text()
    assert "classes carried over from" in log and "2 of 3 (rectangle, ellipse); initialised at the prior: star" in log
    records = [json.loads(line) for line in (tmp_path / "output" / "target" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and math.isfinite(records[0]["loss"])
    final = torch.load(tmp_path / "output" / "target" / "model_final.pt", weights_only=True)
    assert final["args"]["init_from"] == str(source_path) and final["epoch"] == 1


def test_init_from_refuses_network_flags_that_disagree(shapes_data, tmp_path):
    source = RetinaNet(3, depth=18, norm="gn", head_norm="gn", fpn_channels=64)
    path = tmp_path / "source.pt"
    torch.save({"model": source.state_dict(), "class_names": ["a", "b", "c"],
                "args": {"depth": 18, "norm": "gn", "head_norm": "gn", "fpn_channels": 64, "prior": 0.01}}, path)
    with pytest.raises(TrainingError, match=r"--depth 34 \(.* has 18\)"):
        Trainer(run_flags(shapes_data[1], tmp_path, "bad", "--init_from", str(path), "--depth", "34"))
    # A typed flag counts even when it is the default: --depth 50 next to a ResNet-18 source trained a ResNet-18.
    tiny = TINY_TRAIN_FLAGS[:TINY_TRAIN_FLAGS.index("--pretrained")]
    with pytest.raises(SystemExit, match=r"--depth 50 \(.*source\.pt.* has 18\); leave them out"):
        train_script.main([*tiny, "--coco_path", str(shapes_data[1]), "--output_path", str(tmp_path / "output"),
                           "--log_dir", str(tmp_path / "log"), "--run_name", "typed", "--epochs", "1",
                           "--init_from", str(path), "--depth", "50"])
    assert not (tmp_path / "output" / "typed").exists()
    with pytest.raises(TrainingError, match="torchvision-coco-v1.* not in the cache and RETINANET_OFFLINE is set"):
        Trainer(run_flags(shapes_data[1], tmp_path, "bad", "--init_from", "torchvision-coco-v1"))
    assert resolve_training_args(init_from=str(path)).norm == "auto"  # decided by the source
