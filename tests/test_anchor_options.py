"""Anchor and assignment options: the defaults reproduce the fixed anchors, bad values are refused at
parse time, and non-default anchors are saved with the model and rebuilt by Detector, --resume and
the ONNX path."""
import hashlib
import json

import numpy as np
import pytest
import torch

from retinanet import Detector
from retinanet.data.coco import CocoDetection
from retinanet.data.loader import collate
from retinanet.data.synthetic import generate_dataset
from retinanet.data.transforms import EvalTransform
from retinanet.deploy.backends import open_exported
from retinanet.deploy.export import export_checkpoint, generated_images
from retinanet.deploy.metadata import ExportedModelError, build_metadata, decode, read_metadata
from retinanet.models.anchors import AnchorGenerator, feature_sizes_for_image
from retinanet.models.retinanet import build_model, model_options
from retinanet.models.transfer import TORCHVISION_VARIANTS
from retinanet.models.checkpoint import CheckpointError, check_model_description, load_checkpoint
from retinanet.cli.options import build_train_parser
from retinanet.training.trainer import Trainer
from scripts import TINY_TRAIN_FLAGS, load_script, single_thread

train_script = load_script("train")

# SHA-256 of the float32 anchors (N, 4) that the generator gave before the anchor options existed
# (fixed P3-P7 sizes 32..512, scales 2^(k/3), ratios 0.5 1 2), for two input sizes.
FIXED_ANCHORS = {
    ("centred", (96, 128)): "338ebabf812427a41e463457db1af0b8583ade38389f11a328bcfa427bf3d01f",
    ("centred", (608, 1024)): "e26a9e3f696303e0b719ac298b70451e3d74023102bb391d59f1f2f6a8fd225d",
    ("torchvision", (96, 128)): "eeaec450211d2a4bb2f8c74d6bfa5df2ef52944243d5201a0ba7bea161bd1a41",
    ("torchvision", (608, 1024)): "2cda343569e7f14f80e4f80a2cc70a63f52fb70f7deb3dc20824da5bd32d6494",
}
TINY_MODEL = {"depth": 18, "norm": "gn", "head_norm": "gn", "fpn_channels": 64, "prior": 0.01}
ANCHOR_FLAGS = ["--anchor_sizes", "24", "--anchor_scales", "2", "--anchor_ratios", "0.25", "0.5", "1", "2"]
TINY_ANCHORS = {"anchor_sizes": [24.0, 48.0, 96.0, 192.0, 384.0], "anchor_scales": [1.0, 2 ** 0.5],
                "anchor_ratios": [0.25, 0.5, 1.0, 2.0]}


def digest(generator, size):
    anchors = generator(feature_sizes_for_image(*size), torch.device("cpu"))
    return hashlib.sha256(anchors.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("layout", ["centred", "torchvision"])
def test_default_options_reproduce_the_fixed_anchors(layout):
    flags = vars(build_train_parser().parse_args([]))
    generators = [AnchorGenerator(layout=layout),
                  AnchorGenerator.from_options({"anchor_layout": layout}),  # a checkpoint from before the options
                  build_model(3, dict(flags, **TINY_MODEL, anchor_layout=layout)).anchor_generator]
    if layout == "torchvision":  # what --init_from torchvision-coco-v2 and tools/import_torchvision.py build
        generators.append(AnchorGenerator.from_options(model_options(dict(TORCHVISION_VARIANTS["v2"], prior=0.01))))
    for generator in generators:
        assert generator.num_anchors == 9
        for size in ((96, 128), (608, 1024)):
            assert digest(generator, size) == FIXED_ANCHORS[(layout, size)]


def test_heads_are_built_for_the_number_of_anchors():
    model = build_model(3, dict(TINY_MODEL, **TINY_ANCHORS)).eval()
    assert model.classification_head.logits.out_channels == 8 * 3  # 4 ratios x 2 scales, 3 classes
    assert model.regression_head.deltas.out_channels == 8 * 4
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 64, 96))
    expected = sum(rows * columns * 8 for rows, columns in feature_sizes_for_image(64, 96))
    assert outputs["anchors"].shape == (expected, 4) and outputs["cls_logits"].shape == (1, expected, 3)


def test_flags_expand_a_single_size_and_a_count_of_scales():
    args = build_train_parser().parse_args(["--anchor_sizes", "16", "--anchor_scales", "2", "--anchor_ratios", "0.5"])
    assert args.anchor_sizes == [16.0, 32.0, 64.0, 128.0, 256.0]
    assert args.anchor_scales == [1.0, 2 ** 0.5] and args.anchor_ratios == [0.5]
    args = build_train_parser().parse_args(["--anchor_sizes", "20", "40", "80", "160", "320", "--anchor_scales", "1",
                                            "1.5"])
    assert args.anchor_sizes == [20.0, 40.0, 80.0, 160.0, 320.0] and args.anchor_scales == [1.0, 1.5]


@pytest.mark.parametrize("flags, message", [
    (["--positive_iou", "0.4", "--negative_iou", "0.5"], "--negative_iou 0.5 is above --positive_iou 0.4"),
    (["--anchor_sizes", "0"], "argument --anchor_sizes: must be a finite number greater than 0, got 0"),
    (["--anchor_sizes", "-8"], "argument --anchor_sizes: must be a finite number greater than 0, got -8"),
    (["--anchor_sizes", "16", "32", "64"], ("argument --anchor_sizes: expected 1 size (P3's, each level doubling it) "
                                            "or 5 sizes (P3-P7), got 3")),
    (["--anchor_scales", "9"], "argument --anchor_scales: at most 8 scales per octave, got 9"),
    (["--anchor_ratios", "0.5", "0.5"], "argument --anchor_ratios: must not repeat a value"),
    (["--positive_iou", "0"], "argument --positive_iou: must be a finite number greater than 0, got 0"),
])
def test_invalid_values_are_refused_at_parse_time(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        train_script.parse_args(["--coco_path", str(tmp_path), *flags])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_damaged_saved_anchor_options_are_refused():
    checkpoint = {"args": dict(TINY_MODEL, anchor_sizes=[32, 64]), "class_names": ["a"]}
    with pytest.raises(CheckpointError, match=r"x.pt: saved model option anchor_sizes is .*; it must be 5 numbers"):
        check_model_description(checkpoint, "x.pt")
    raw = build_metadata(["a"], [1], 96, 128, dict(TINY_MODEL, anchor_ratios=[0.5, 0.0]), "0" * 64)
    with pytest.raises(ExportedModelError, match=r"x.onnx: metadata model_options anchor_ratios is \[0.5, 0.0\]"):
        decode(raw, "x.onnx")


@pytest.fixture(scope="module")
def trained(module_tmp):
    """A tiny model trained one epoch with 4 ratios x 2 scales from 24 px and IoU 0.45 / 0.35."""
    root = module_tmp("anchors")
    data = str(root / "data")
    generate_dataset(data, num_train=8, num_val=2, num_test=1, min_size=96, max_size=128, seed=5)
    with single_thread():
        args = train_script.parse_args(["--coco_path", data, "--output_path", str(root / "output"), "--log_dir",
                                        str(root / "log"), "--run_name", "anchors", *TINY_TRAIN_FLAGS, *ANCHOR_FLAGS,
                                        "--positive_iou", "0.45", "--negative_iou", "0.35", "--epochs", "1",
                                        "--warmup_iters", "2", "--val_set", "", "--eval_every", "0"])
        trainer = Trainer(args)
        trainer.fit()
        trainer.close()
        yield {"data": data, "trainer": trainer, "checkpoint": str(root / "output" / "anchors" / "model_final.pt"),
               "log": str(root / "log" / "anchors.log"), "config": str(root / "output" / "anchors" / "config.json")}


def test_options_are_saved_and_used_in_training(trained):
    saved = load_checkpoint(trained["checkpoint"])["args"]
    assert {name: saved[name] for name in TINY_ANCHORS} == TINY_ANCHORS
    assert (saved["positive_iou"], saved["negative_iou"]) == (0.45, 0.35)
    with open(trained["config"], encoding="utf-8") as handle:
        config = json.load(handle)
    assert (config["positive_iou"], config["anchor_ratios"]) == (0.45, [0.25, 0.5, 1.0, 2.0])
    criterion = trained["trainer"].criterion
    assert (criterion.positive_iou, criterion.negative_iou) == (0.45, 0.35)
    with open(trained["log"], encoding="utf-8") as handle:
        log = handle.read()
    assert "anchor coverage: " in log and "2 scales x 4 ratios = 8 per location" in log


def test_detector_rebuilds_the_anchors_and_gives_the_same_detections(trained):
    detector = Detector.from_checkpoint(trained["checkpoint"], device="cpu", amp="off")
    model = trained["trainer"].model_without_ddp.eval()
    generator = detector.model.anchor_generator
    assert (generator.sizes, generator.scales, generator.ratios) == (
        tuple(TINY_ANCHORS["anchor_sizes"]), tuple(TINY_ANCHORS["anchor_scales"]), tuple(TINY_ANCHORS["anchor_ratios"]))
    sizes = feature_sizes_for_image(96, 160)
    assert torch.equal(generator(sizes, torch.device("cpu")), model.anchor_generator(sizes, torch.device("cpu")))
    trained_detector = Detector(model, detector.class_names, min_side=96, max_side=128)
    images = generated_images(3)
    options = {"score_threshold": 0.001, "max_detections": 20}
    expected, got = trained_detector.predict(images, **options), detector.predict(images, **options)
    assert sum(len(result["scores"]) for result in got) > 0
    for want, have in zip(expected, got):
        assert np.array_equal(want["boxes"], have["boxes"]) and np.array_equal(want["scores"], have["scores"])


def test_resume_keeps_the_options_and_refuses_other_anchors(trained, capsys):
    last = trained["checkpoint"].replace("model_final.pt", "checkpoint_last.pt")
    args = train_script.parse_args(["--resume", last, "--epochs", "2"])  # a finished run, extended
    assert args.anchor_sizes == TINY_ANCHORS["anchor_sizes"] and (args.positive_iou, args.negative_iou) == (0.45, 0.35)
    with pytest.raises(SystemExit) as caught:
        train_script.parse_args(["--resume", last, "--epochs", "2", "--anchor_sizes", "32"])
    assert ("--anchor_sizes 32.0 64.0 128.0 256.0 512.0 (run had 24.0 48.0 96.0 192.0 384.0) would change a model "
            "option") in str(caught.value)


def test_the_onnx_path_rebuilds_the_same_anchors(trained, tmp_path):
    path = str(tmp_path / "anchors.onnx")
    export_checkpoint(trained["checkpoint"], path, generated_images(1), log=lambda line: None)
    options = read_metadata(path)["model_options"]
    assert {name: options[name] for name in TINY_ANCHORS} == TINY_ANCHORS
    exported = open_exported(path, "onnxruntime", threads=1)
    dataset = CocoDetection(trained["data"], "train", EvalTransform(96, 128))
    batch, _, _ = collate([dataset[0], dataset[1]])
    with torch.no_grad():
        expected = trained["trainer"].model_without_ddp.eval()(batch)
    got = exported(batch)
    assert torch.equal(got["anchors"], expected["anchors"]) and got["level_sizes"] == expected["level_sizes"]
    assert float((got["cls_logits"] - expected["cls_logits"]).abs().max()) < 1e-4
