"""Deployment: ONNX export round trip, test.py through ONNX Runtime and OpenVINO, int8, the missing-extra message."""
import importlib.util
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from retinanet import Detector
from retinanet.data.coco import CocoDetection
from retinanet.data.loader import collate
from retinanet.data.synthetic import generate_dataset
from retinanet.data.transforms import EvalTransform
from retinanet.deploy import export as deploy_export
from retinanet.deploy.backends import open_exported
from retinanet.deploy.cache import ensure_exported
from retinanet.deploy.export import (RAW_TOLERANCE, check_against_torch, detection_difference, generated_images,
                                     raw_difference)
from retinanet.deploy.extras import MissingExtraError, import_extras
from retinanet.deploy.metadata import read_metadata
from retinanet.deploy.quantize import Calibration, CalibrationImages
from retinanet.models.checkpoint import load_checkpoint
from retinanet.util.device import isa_limit
from scripts import ROOT, TINY_TRAIN_FLAGS, load_script, single_thread

train_script = load_script("train")
test_script = load_script("test")
vis_script = load_script("vis")
spec = importlib.util.spec_from_file_location("tools_export", os.path.join(ROOT, "tools", "export.py"))
export_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_script)

# The bound the int8 model's AP is held to, against float32 on the same images (stated in docs/deploy.md).
# Measured on this fixture: AP 0.0450 in int8 against 0.0452 in float32.
INT8_AP_BOUND = 0.01


@pytest.fixture(scope="module")
def trained(module_tmp):
    """A tiny model trained 6 epochs on 16 generated images: AP about 0.05 on them, enough to compare."""
    root = module_tmp("deploy")
    data = str(root / "data")
    generate_dataset(data, num_train=16, num_val=4, num_test=2, min_size=96, max_size=128, seed=11)
    with single_thread():
        train_script.main(["--coco_path", data, "--output_path", str(root / "output"), "--log_dir", str(root / "log"),
                           "--run_name", "tiny", *TINY_TRAIN_FLAGS, "--epochs", "6", "--batch_size", "2",
                           "--learning_rate", "5e-4", "--milestones", "100", "--warmup_iters", "20",
                           "--eval_every", "0", "--val_set", ""])
        yield data, str(root / "output" / "tiny" / "model_final.pt")


def _test(data, checkpoint, output_dir, *extra):
    test_script.main(["--coco_path", data, "--checkpoint_path", checkpoint, "--set_name", "train",
                      "--output_dir", str(output_dir), "--workers", "0", "--amp", "off", *extra])
    return json.loads((output_dir / "train_metrics.json").read_text())


def test_export_round_trip_gives_pytorchs_outputs_and_detections(trained, tmp_path, capsys):
    data, checkpoint = trained
    path = str(tmp_path / "tiny.onnx")
    export_script.main(["--checkpoint_path", checkpoint, "--output", path, "--raw",
                        "--check_images", os.path.join(data, "images", "val")])
    printed = capsys.readouterr().out
    assert "ONNX Runtime matches PyTorch on 4 images" in printed and "(limit 0.0001), the same" in printed, printed
    saved = load_checkpoint(checkpoint)
    metadata = read_metadata(path)
    assert metadata["class_names"] == saved["class_names"] and metadata["precision"] == "float32"
    assert (metadata["min_side"], metadata["max_side"]) == (96, 128)
    assert metadata["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert metadata["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert (metadata["model_options"]["depth"], metadata["model_options"]["anchor_layout"]) == (18, "centred")

    # A batch size and image sizes the export never saw.
    torch_detector = Detector.from_checkpoint(checkpoint, device="cpu", amp="off")
    onnx_detector = Detector.from_checkpoint(path, device="cpu")
    dataset = CocoDetection(data, "train", EvalTransform(96, 128))
    batch, targets, _ = collate([dataset[index] for index in range(3)])
    with torch.no_grad():
        expected = torch_detector.model(batch)
    got = onnx_detector.model(batch)
    for name in ("cls_logits", "box_deltas", "anchors"):
        assert raw_difference(expected[name], got[name]) <= RAW_TOLERANCE, name
    assert got["level_sizes"] == expected["level_sizes"]
    paths = [dataset.image_path(index) for index in range(len(dataset))]
    total = 0
    for want, have in zip(torch_detector.predict(paths, batch_size=3), onnx_detector.predict(paths, batch_size=3)):
        assert len(want["scores"]) == len(have["scores"])
        assert want["class_names"] == have["class_names"]
        assert abs(want["boxes"] - have["boxes"]).max(initial=0) <= 0.01
        assert abs(want["scores"] - have["scores"]).max(initial=0) <= 1e-4
        total += len(want["scores"])
    assert total > 16


def test_onnxruntime_backend_gives_the_torch_backends_ap(trained, tmp_path, capsys):
    data, checkpoint = trained
    torch_metrics = _test(data, checkpoint, tmp_path / "torch", "--backend", "torch")
    onnx_metrics = _test(data, checkpoint, tmp_path / "onnx", "--backend", "onnxruntime")
    assert torch_metrics["stats"]["AP"] > 0.01
    assert onnx_metrics["stats"]["AP"] == pytest.approx(torch_metrics["stats"]["AP"], abs=0.005)
    cached = os.path.splitext(checkpoint)[0] + ".onnx"
    assert os.path.isfile(cached)
    capsys.readouterr()
    again = _test(data, checkpoint, tmp_path / "again", "--backend", "onnxruntime")  # the cached export, not redone
    printed = capsys.readouterr().out
    assert "exported" not in printed and f"backend onnxruntime (float32): {cached}" in printed
    assert again["stats"]["AP"] == onnx_metrics["stats"]["AP"]
    from_file = _test(data, cached, tmp_path / "file")  # a .onnx path runs through onnxruntime by default
    assert from_file["stats"]["AP"] == onnx_metrics["stats"]["AP"]


@pytest.mark.skipif(isa_limit() is not None, reason="OpenVINO crashes under an ONEDNN_MAX_CPU_ISA limit; the backend "
                    "refuses it (test_openvino_refuses_an_isa_limit_instead_of_crashing)")
def test_openvino_backend_matches_pytorch(trained):
    data, checkpoint = trained
    detector = Detector.from_checkpoint(checkpoint, device="cpu", amp="off")
    cached = ensure_exported(checkpoint)  # the export beside the checkpoint, made unless there already
    report = check_against_torch(detector.model, open_exported(cached, "openvino"), generated_images(2),
                                 detector.transform)
    assert report["max_raw_difference"] <= RAW_TOLERANCE and report["images"] == 2


def test_openvino_refuses_an_isa_limit_instead_of_crashing(trained, monkeypatch):
    data, checkpoint = trained
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(ValueError, match=r"crashes when ONEDNN_MAX_CPU_ISA \(AVX2\) limits its bundled oneDNN"):
        open_exported(ensure_exported(checkpoint), "openvino")


def test_int8_ap_stays_within_its_bound(trained, tmp_path, capsys):
    data, checkpoint = trained
    metrics = _test(data, checkpoint, tmp_path / "int8", "--int8", "--calibration_images", "8")
    printed = capsys.readouterr().out
    assert "int8, calibrated on 8 images" in printed and "int8 accuracy cost: AP" in printed, printed
    cost = metrics["int8"]
    assert cost["int8_AP"] == metrics["stats"]["AP"] and cost["float32_AP"] > 0.01
    assert abs(cost["AP_cost"]) <= INT8_AP_BOUND, cost
    int8_file = os.path.splitext(checkpoint)[0] + ".int8.onnx"
    calibration = read_metadata(int8_file)["calibration"]
    assert read_metadata(int8_file)["precision"] == "int8"
    assert (calibration["num_images"], calibration["set_name"]) == (8, "train")


def test_a_failed_check_leaves_no_file_to_reuse(trained, tmp_path, monkeypatch, capsys):
    data, checkpoint = trained
    monkeypatch.setattr(deploy_export, "RAW_TOLERANCE", -1.0)  # no difference can pass
    with pytest.raises(SystemExit) as exit_info:
        export_script.main(["--checkpoint_path", checkpoint, "--output", str(tmp_path / "bad.onnx"), "--raw"])
    assert exit_info.value.code == 1
    assert "cls_logits differs from PyTorch's by" in capsys.readouterr().err
    assert not (tmp_path / "bad.onnx").exists() and (tmp_path / "bad.unchecked.onnx").exists()


def test_detection_difference_names_what_differs():
    one = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    assert detection_difference(one, dict(one)) == ""
    assert detection_difference(one, dict(one, labels=torch.tensor([2]))) == "labels differ"
    assert "boxes by up to 0.5 px" in detection_difference(one, dict(one, boxes=one["boxes"] + 0.5))
    assert detection_difference(one, dict(one, scores=torch.tensor([]))) == "0 detections instead of 1"


def test_a_missing_extra_says_how_to_install_it(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(MissingExtraError) as caught:
        import_extras("onnxruntime")
    message = str(caught.value)
    assert message == ("--backend onnxruntime needs the optional packages onnx and onnxruntime (onnxruntime missing): "
                       "pip install -e '.[deploy]' (or pip install onnxruntime)")
    data, checkpoint = trained
    os.makedirs(tmp_path / "fresh")
    fresh = str(tmp_path / "fresh" / "model.pt")  # no cached export beside it
    with open(checkpoint, "rb") as source, open(fresh, "wb") as target:
        target.write(source.read())
    with pytest.raises(SystemExit) as exit_info:
        _test(data, fresh, tmp_path / "out", "--backend", "onnxruntime")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pip install -e '.[deploy]'" in error, error


def test_calibration_reads_explicit_paths_and_names_a_missing_file(tmp_path):
    data = str(tmp_path / "data")
    generate_dataset(data, num_train=1, num_val=4, num_test=0, min_size=96, max_size=128, seed=3)
    elsewhere = tmp_path / "calibration.json"
    shutil.copy(os.path.join(data, "val.json"), elsewhere)
    calibration = Calibration(None, "calibration", num_images=3, json_path=str(elsewhere),
                              image_dir=os.path.join(data, "images", "val"))
    reader = CalibrationImages(calibration, 96, 128)
    assert reader.dataset.json_path == str(elsewhere) and len(reader.indices) == 3
    batch = reader.get_next()["images"]
    assert batch.dtype == np.float32 and batch.shape[:2] == (1, 3) and min(batch.shape[2:]) >= 96
    assert calibration.describe(96, 128)["json_path"] == str(elsewhere)
    missing = Calibration(None, "train", json_path=str(tmp_path / "absent.json"))
    with pytest.raises(ValueError, match=r"absent\.json.*--calibration_json"):
        missing.check()


def _foreign_onnx(path, metadata, nodes, inputs, outputs, initializers=()):
    """An ONNX file with this project's metadata around a graph of another shape."""
    onnx, = import_extras("export")
    from onnx import TensorProto, helper
    graph = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", 3, "h", "w"])
                                                 for name in inputs],
                              [helper.make_tensor_value_info(name, kind, None) for name, kind in outputs],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return str(path)


def _foreign_files(tmp_path, valid):
    onnx, = import_extras("export")
    from onnx import TensorProto, helper
    metadata = {entry.key: entry.value for entry in onnx.load(valid, load_external_data=False).metadata_props}
    float32, int64 = TensorProto.FLOAT, TensorProto.INT64
    outside = helper.make_tensor("w", float32, [1], [1.0])
    outside.data_location = TensorProto.EXTERNAL
    outside.ClearField("float_data")
    for key, value in (("location", "../../../../etc/hostname"), ("offset", "0"), ("length", "4")):
        entry = outside.external_data.add()
        entry.key, entry.value = key, value
    identity = helper.make_node("Identity", ["images"], ["cls_logits"])
    both = [identity, helper.make_node("Identity", ["images"], ["box_deltas"])]
    files = {
        "identity": ([identity], ["images"], [("cls_logits", float32)], (), "outputs are 'cls_logits' of rank 4"),
        "wrong shapes": (both, ["images"], [("cls_logits", float32), ("box_deltas", float32)], (),
                         "expected 'cls_logits' of rank 3, 'box_deltas' of rank 3"),
        "input name": ([helper.make_node("Identity", ["x"], ["cls_logits"]),
                        helper.make_node("Identity", ["x"], ["box_deltas"])], ["x"],
                       [("cls_logits", float32), ("box_deltas", float32)], (), "inputs are 'x' of rank 4"),
        "integer output": ([helper.make_node("Cast", ["images"], ["cls_logits"], to=int64), both[1]], ["images"],
                           [("cls_logits", int64), ("box_deltas", float32)], (), "expected 'cls_logits' of rank 3"),
        "external data outside": ([helper.make_node("Mul", ["images", "w"], ["cls_logits"]), both[1]], ["images"],
                                  [("cls_logits", float32), ("box_deltas", float32)], [outside],
                                  "cannot load the file"),
    }
    for name, (nodes, inputs, outputs, initializers, message) in files.items():
        path = _foreign_onnx(tmp_path / f"{name.replace(' ', '_')}.onnx", metadata, nodes, inputs, outputs, initializers)
        yield name, path, message
    # The real network with box_deltas replaced by cls_logits: right names and ranks, a wrong shape.
    proto = onnx.load(valid)
    for node in proto.graph.node:
        node.output[:] = ["box_deltas_unused" if name == "box_deltas" else name for name in node.output]
    proto.graph.node.append(helper.make_node("Identity", ["cls_logits"], ["box_deltas"]))
    onnx.save(proto, str(tmp_path / "box_shape.onnx"))
    yield "box shape", str(tmp_path / "box_shape.onnx"), "gave box_deltas of shape"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_foreign_network_behind_the_projects_metadata_is_refused_in_one_line(trained, tmp_path, backend, capsys):
    if backend == "openvino" and isa_limit() is not None:
        pytest.skip("OpenVINO crashes under an ONEDNN_MAX_CPU_ISA limit, which the backend refuses")
    data, checkpoint = trained
    valid = ensure_exported(checkpoint)
    seen = 0
    for name, path, message in _foreign_files(tmp_path, valid):
        for script in (test_script, vis_script):
            argv = ["--coco_path", data, "--checkpoint_path", path, "--set_name", "val", "--backend", backend,
                    "--output_dir", str(tmp_path / "out"), "--workers", "0"]
            with pytest.raises(SystemExit) as info:
                script.main(argv if script is test_script else argv + ["--num_images", "1"])
            error = capsys.readouterr().err.strip()
            assert info.value.code == 2 and len(error.splitlines()) == 1, (name, error)
            assert error.startswith(f"error: {path}: ") and message in error, (name, error)
            seen += 1
    assert seen == 12


def test_image_sizes_read_from_files_keep_the_flags_ranges(trained, tmp_path, capsys):
    data, checkpoint = trained
    state = load_checkpoint(checkpoint)
    state["args"]["min_side"] = 60000
    huge = str(tmp_path / "huge.pt")
    torch.save(state, huge)
    error = _refusal(data, huge, tmp_path, capsys)
    assert f"{huge}: the saved min_side 60000 is not a side length from 1 to 4096" in error
    onnx, = import_extras("export")
    proto = onnx.load(ensure_exported(checkpoint))
    for entry in proto.metadata_props:
        if entry.key == "min_side":
            entry.value = "99999999"
    damaged = str(tmp_path / "damaged.onnx")
    onnx.save(proto, damaged)
    error = _refusal(data, damaged, tmp_path, capsys)
    assert f"{damaged}: damaged metadata: min_side 99999999 is not a side length" in error


def _refusal(data, path, tmp_path, capsys):
    """test.py's one-line refusal of ``path`` (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        _test(data, path, tmp_path / "out")
    error = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(error.splitlines()) == 1, error
    return error
