"""The Python API: Detector.from_checkpoint + predict, against test.py's results file."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet import Detector
from retinanet.data.coco import CocoDetection
from retinanet.data.image_io import load_image_rgb
from retinanet.data.synthetic import generate_dataset
from retinanet.models.retinanet import build_model
from retinanet.models.checkpoint import CheckpointError, atomic_torch_save
from scripts import load_script

test_script = load_script("test")
MODEL = {"depth": 18, "norm": "gn", "head_norm": "gn", "fpn_channels": 64, "prior": 0.2}


@pytest.fixture(scope="module")
def setup(module_tmp):
    """A generated set and a checkpoint of a randomly initialised model (many detections, no training)."""
    root = module_tmp("detector")
    data = root / "data"
    generate_dataset(str(data), num_train=2, num_val=5, num_test=1, min_size=96, max_size=160, seed=21)
    dataset = CocoDetection(str(data), "val", transform=None)
    torch.manual_seed(0)
    model = build_model(dataset.num_classes, MODEL)
    path = root / "model.pt"
    atomic_torch_save({"model": model.state_dict(), "args": dict(MODEL, min_side=96, max_side=160),
                       "class_names": dataset.class_names, "category_ids": dataset.label_to_category_id}, str(path))
    return str(data), str(path), dataset


def test_predict_gives_the_detections_of_the_test_script(setup, tmp_path):
    data, checkpoint, dataset = setup
    test_script.main(["--coco_path", data, "--checkpoint_path", checkpoint, "--set_name", "val", "--output_dir",
                      str(tmp_path), "--workers", "0", "--batch_size", "1", "--device", "cpu"])
    from_script = json.loads((tmp_path / "val_bbox_results.json").read_text())
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    paths = [dataset.image_path(index) for index in range(len(dataset))]
    results = detector.predict(paths, batch_size=1)
    assert len(results) == len(paths)
    total = 0
    for info, result in zip(dataset.images, results):
        expected = sorted((e for e in from_script if e["image_id"] == info["id"]), key=lambda e: -e["score"])
        assert len(expected) == len(result["scores"]) > 0
        total += len(expected)
        for entry, box, score, category_id in zip(expected, result["boxes"], result["scores"],
                                                  result["category_ids"]):
            x1, y1, x2, y2 = box.tolist()
            assert entry["category_id"] == int(category_id)
            assert entry["score"] == pytest.approx(float(score), abs=1e-5)
            assert entry["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
    assert total == len(from_script)


def test_paths_arrays_and_pil_images_give_the_same_result(setup):
    data, checkpoint, dataset = setup
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    path = dataset.image_path(0)
    array = load_image_rgb(path)
    from_path = detector.predict(path)
    assert isinstance(from_path, dict)  # one input, one dict
    for other in (detector.predict(array), detector.predict(Image.open(path)), detector.predict([path])[0]):
        assert np.array_equal(other["boxes"], from_path["boxes"])
        assert np.array_equal(other["scores"], from_path["scores"])
        assert np.array_equal(other["labels"], from_path["labels"])
    names = from_path["class_names"]
    assert names == [dataset.class_names[label] for label in from_path["labels"]]
    height, width = array.shape[:2]
    boxes = from_path["boxes"]
    assert boxes.dtype == np.float32 and boxes.shape == (len(names), 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (np.diff(from_path["scores"]) <= 0).all()  # highest score first


def test_decoding_options_are_honoured(setup):
    _, checkpoint, dataset = setup
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    path = dataset.image_path(1)
    everything = detector.predict(path, score_threshold=0.0)
    few = detector.predict(path, score_threshold=0.0, max_detections=7)
    confident = detector.predict(path, score_threshold=0.3)
    assert len(everything["scores"]) == 100 and len(few["scores"]) == 7
    assert np.array_equal(few["scores"], everything["scores"][:7])
    assert (confident["scores"] > 0.3).all() and len(confident["scores"]) < 100


def test_grey_and_rgba_arrays_are_accepted_and_bad_arrays_are_refused(setup):
    _, checkpoint, dataset = setup
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    rgb = load_image_rgb(dataset.image_path(2))
    grey = rgb[:, :, 0]
    from_grey = detector.predict(grey)
    from_stacked = detector.predict(np.stack([grey] * 3, axis=2))
    assert np.array_equal(from_grey["boxes"], from_stacked["boxes"])
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(detector.predict(rgba)["scores"], detector.predict(rgb)["scores"])
    with pytest.raises(ValueError, match="uint8"):
        detector.predict(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        detector.predict(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="path"):
        detector.predict(42)


def test_a_missing_checkpoint_or_another_depth_is_a_checkpoint_error(setup, tmp_path):
    _, checkpoint, _ = setup
    with pytest.raises(CheckpointError, match="not found"):
        Detector.from_checkpoint(os.path.join(tmp_path, "absent.pt"), device="cpu")
    with pytest.raises(CheckpointError, match="ResNet-18"):
        Detector.from_checkpoint(checkpoint, device="cpu", expected_depth=50)


def test_results_are_objects_with_arrays_a_picture_and_coco_entries(setup, tmp_path):
    data, checkpoint, dataset = setup
    detector = Detector.from_checkpoint(checkpoint, device="cpu", amp="off")
    path = dataset.image_path(0)
    result = detector.predict(path)
    assert result.boxes is result["boxes"] and result.class_names == result["class_names"] and len(result.scores) > 0
    assert repr(result).startswith(f"Detections({os.path.basename(path)}: {len(result.scores)} detections, "
                                   "score >= 0.05: ")
    entries = result.to_coco(image_id=7)
    assert len(entries) == len(result.scores) and entries[0]["image_id"] == 7
    x1, y1, x2, y2 = result.boxes[0].tolist()
    assert entries[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
    picture = result.plot()
    assert picture.dtype == np.uint8 and picture.shape[1] == result.image.shape[1]
    assert not np.array_equal(picture[-result.image.shape[0]:], result.image)  # boxes were drawn
    saved = result.save(str(tmp_path / "drawn.png"))
    assert np.array_equal(load_image_rgb(saved), picture)


def test_every_kind_of_input_gives_the_same_detections(setup, tmp_path):
    import shutil

    data, checkpoint, dataset = setup
    detector = Detector.from_checkpoint(checkpoint, device="cpu", amp="off")
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(2):
        shutil.copy(dataset.image_path(index), folder / f"photo_{index}.png")
    array = load_image_rgb(str(folder / "photo_0.png"))
    expected = detector.predict(str(folder / "photo_0.png"))
    tensor_uint8 = torch.from_numpy(array).permute(2, 0, 1)
    kinds = {"array": array, "PIL": Image.open(folder / "photo_0.png"), "uint8 tensor": tensor_uint8,
             "float tensor": tensor_uint8.float() / 255, "pathlib path": folder / "photo_0.png"}
    for kind, item in kinds.items():
        got = detector.predict(item)
        assert np.array_equal(got.scores, expected.scores) and np.array_equal(got.boxes, expected.boxes), kind
    for many in (str(folder), str(folder / "*.png"), [str(folder / "photo_0.png"), array]):
        results = detector.predict(many, batch_size=1)  # images of other sizes in one batch pad to a common size
        assert isinstance(results, list) and len(results) == 2
        assert np.array_equal(results[0].scores, expected.scores)
    assert detector.predict(str(folder))[1].source.endswith("photo_1.png")
    with pytest.raises(ValueError, match="no file matches"):
        detector.predict(str(folder / "*.jpeg"))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        detector.predict(tensor_uint8.float())
    with pytest.raises(ValueError, match="CxHxW"):
        detector.predict(torch.zeros(2, 5, 5))


def test_evaluate_takes_an_annotation_file_in_one_call(setup, tmp_path):
    data, checkpoint, dataset = setup
    detector = Detector.from_checkpoint(checkpoint, device="cpu", amp="off")
    test_script.main(["--coco_path", data, "--checkpoint_path", checkpoint, "--set_name", "val", "--output_dir",
                      str(tmp_path), "--workers", "0", "--device", "cpu", "--amp", "off"])
    from_script = json.loads((tmp_path / "val_metrics.json").read_text())
    evaluation = detector.evaluate(dataset.json_path, image_dir=dataset.image_dir)
    assert evaluation["stats"]["AP"] == pytest.approx(from_script["stats"]["AP"], abs=1e-6)
    assert {row["name"] for row in evaluation["per_class"]} == set(dataset.class_names)


def test_the_default_threshold_is_the_runs_best_f1_when_it_has_one(setup, tmp_path):
    import shutil

    data, checkpoint, dataset = setup
    path = dataset.image_path(0)
    plain = Detector.from_checkpoint(checkpoint, device="cpu", amp="off")
    assert plain.score_threshold == 0.05 and "best F1" not in repr(plain.predict(path))
    shutil.copy(checkpoint, tmp_path / "model_final.pt")
    (tmp_path / "val_analysis.json").write_text(json.dumps({"f1": {"best": {"threshold": 0.3, "f1": 0.5}}}))
    detector = Detector.from_checkpoint(str(tmp_path / "model_final.pt"), device="cpu", amp="off")
    result = detector.predict(path)
    assert detector.score_threshold == 0.3 and "score >= 0.3 (best F1 on val)" in repr(result)
    assert (result.scores > 0.3).all()
    assert np.array_equal(result.scores, plain.predict(path, score_threshold=0.3).scores)
    assert len(detector.predict(path, score_threshold=0.05).scores) > len(result.scores)  # an explicit one wins
