"""The ONNX file that stands alone (retinanet/deploy/end_to_end.py): a uint8 image in, detections out.

The graph's resize is held to OpenCV's pixel by pixel, its detections to PyTorch's (exactly where
the file resizes nothing, counted where it does), and docs/deploy.md's 20-line example is run as it
stands against vis.py's predictions.
"""
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the deploy extra (pip install -e '.[deploy]') is not installed")
onnx = pytest.importorskip("onnx", reason="the deploy extra (pip install -e '.[deploy]') is not installed")

from retinanet.data.image_io import load_image_rgb  # noqa: E402
from retinanet.deploy.end_to_end import EndToEndSession, export_end_to_end  # noqa: E402
from retinanet.deploy.export import generated_images  # noqa: E402
from retinanet.deploy.metadata import ExportedModelError  # noqa: E402
from retinanet.deploy.onnx_graph import GraphBuilder, area_resize, linear_resize  # noqa: E402
from retinanet.detector import Detector  # noqa: E402
from scripts import ROOT, assert_same_detections, tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def resize_session(kind):
    """A graph of the file's resize alone: uint8 (H, W, 3) and the new (height, width) -> the resized image."""
    b = GraphBuilder(onnx)
    pixels = b.op("Unsqueeze", b.op("Transpose", "image", perm=[2, 0, 1]), b.i64(0))
    sides = [b.op("Squeeze", b.op("Slice", "sizes", b.i64(i), b.i64(i + 1), b.i64(0)), b.i64(0)) for i in range(4)]
    if kind == "area":
        resized = area_resize(b, b.op("Cast", pixels, to=onnx.TensorProto.DOUBLE), sides[:2], sides[2:])
    else:
        resized = linear_resize(b, b.op("Cast", pixels, to=onnx.TensorProto.INT64), sides[:2], sides[2:])
    rounded = b.op("Clip", b.op("Round", b.op("Cast", resized, to=onnx.TensorProto.FLOAT)), b.f32(0.0), b.f32(255.0))
    b.op("Transpose", b.op("Squeeze", rounded, b.i64(0)), perm=[1, 2, 0], output_names=["resized"])
    helper = onnx.helper
    graph = helper.make_graph(b.nodes, "resize", [
        helper.make_tensor_value_info("image", onnx.TensorProto.UINT8, [None, None, 3]),
        helper.make_tensor_value_info("sizes", onnx.TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("resized", onnx.TensorProto.FLOAT, None)], initializer=b.initializers)
    import onnxruntime
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("size, new_size", [((160, 288), (333, 600)), ((37, 53), (128, 183)), ((7, 9), (30, 41)),
                                            ((300, 301), (301, 302)), ((96, 128), (96, 128))])
def test_the_enlarging_resize_is_opencvs_bit_for_bit(size, new_size):
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    want = cv2.resize(image, new_size[::-1], interpolation=cv2.INTER_LINEAR)
    got = resize_session("linear").run(None, {"image": image, "sizes": np.array([*size, *new_size], np.int64)})[0]
    assert np.array_equal(got, want)


@pytest.mark.parametrize("size, new_size", [((160, 288), (107, 192)), ((480, 640), (400, 533)),
                                            ((1000, 1500), (128, 192)), ((97, 211), (61, 133))])
def test_the_shrinking_resize_is_opencvs_area_mean_but_for_half_levels(size, new_size):
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    want = cv2.resize(image, new_size[::-1], interpolation=cv2.INTER_AREA).astype(np.float32)
    got = resize_session("area").run(None, {"image": image, "sizes": np.array([*size, *new_size], np.int64)})[0]
    difference = np.abs(got - want)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


@pytest.mark.parametrize("layout", ["centred", "torchvision"])
def test_the_file_detects_what_pytorch_does(tmp_path, layout):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt", layout)
    path = str(tmp_path / "tiny.onnx")
    lines = []
    report = export_end_to_end(checkpoint, path, generated_images(2), log=lines.append)
    assert report["exact_detections"] == 200 and "PyTorch's 200 detections" in lines[0]  # 100 per image
    assert not os.path.exists(str(tmp_path / "tiny.unchecked.onnx"))
    session = EndToEndSession(path, threads=1)
    detector = Detector.from_checkpoint(checkpoint, device="cpu", amp="off")
    # Enlarged images (OpenCV's linear resize, rebuilt exactly) of sizes not divisible by 32 or 128:
    rng = np.random.default_rng(3)
    for height, width in ((50, 70), (97, 61), (128, 150)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        want, got = detector.predict(image), session.detect(image)
        assert len(want["scores"]) == len(got["scores"]) > 0
        assert_same_detections((got["boxes"], got["scores"], got["category_ids"]),
                               (want["boxes"], want["scores"], want["category_ids"]))
        assert got["boxes"][:, 2].max() <= width and got["boxes"][:, 3].max() <= height
    empty = session.detect(np.zeros((40, 40, 3), np.uint8) + 128)
    assert all(len(value) == len(empty["scores"]) for value in empty.values())


def test_the_scripts_refuse_an_end_to_end_file_and_say_what_to_give_them(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt", "centred")
    path = str(tmp_path / "tiny.onnx")
    export_end_to_end(checkpoint, path, generated_images(1), log=lambda line: None)
    with pytest.raises(ExportedModelError, match="an end-to-end file .* export with tools/export.py --raw"):
        Detector.from_checkpoint(path, device="cpu")


def test_the_documented_example_prints_what_vis_py_predicts(tmp_path):
    readme = open(os.path.join(ROOT, "docs", "deploy.md"), encoding="utf-8").read()
    [example] = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if '{"image": pixels}' in block]
    (tmp_path / "detect.py").write_text(example)
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt", "centred")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export.py"), "--checkpoint_path", checkpoint,
                    "--output", str(tmp_path / "model.onnx"), "--num_check_images", "1"], check=True, cwd=ROOT,
                   capture_output=True)
    image = np.random.default_rng(5).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), image[:, :, ::-1])
    assert np.array_equal(load_image_rgb(str(tmp_path / "photo.png")), image)
    printed = subprocess.run([sys.executable, str(tmp_path / "detect.py"), str(tmp_path / "model.onnx"),
                              str(tmp_path / "photo.png")], check=True, capture_output=True, text=True).stdout
    subprocess.run([sys.executable, "vis.py", "--images", str(tmp_path / "photo.png"), "--checkpoint_path", checkpoint,
                    "--amp", "off", "--output_dir", str(tmp_path / "vis"), "--workers", "0"], check=True, cwd=ROOT,
                   capture_output=True)
    predictions = json.loads((tmp_path / "vis" / "predictions.json").read_text())
    names = {2: "star", 5: "ring", 9: "disc"}
    want = [f"{names[p['category_id']]:12s} {p['score']:.3f}  ({p['bbox'][0]:.1f}, {p['bbox'][1]:.1f}) - "
            f"({p['bbox'][0] + p['bbox'][2]:.1f}, {p['bbox'][1] + p['bbox'][3]:.1f})" for p in predictions]
    got = printed.splitlines()
    assert len(got) == len(want) > 10
    unmatched = list(want)  # in any order: detections of equal score may come in either
    for line in got:
        partner = next((other for other in unmatched if _close(line, other)), None)
        assert partner is not None, f"{line!r} is not among vis.py's predictions"
        unmatched.remove(partner)


def _close(line, other):
    """Two printed detections: the same class, scores within 0.0015, corners within 0.15 px (the
    printing rounds to 0.001 and 0.1, and predictions.json's boxes are x, y, width, height)."""
    numbers = [[float(value) for value in re.findall(r"-?\d+\.\d+", text)] for text in (line, other)]
    return (line.split()[0] == other.split()[0] and abs(numbers[0][0] - numbers[1][0]) <= 0.0015
            and max(abs(a - b) for a, b in zip(numbers[0][1:], numbers[1][1:])) <= 0.15)
