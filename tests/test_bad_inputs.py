"""Bad files and bad flags given to every script end with exit status 2, a message naming the
file, and no Python traceback.

A corpus of broken datasets, checkpoints, results files, images and converter inputs is
generated next to one tiny valid dataset. Each script runs in a fresh interpreter, as
``python script.py ...`` does; the torch-importing scripts run their whole corpus in one
interpreter (``runpy`` with ``__main__``, one case after the other), so the corpus costs one
torch import per script rather than one per file.
"""
import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet import Detector
from retinanet.data.check import check_dataset
from retinanet.data.convert import convert_csv
from retinanet.data.synthetic import generate_dataset
from retinanet.evaluation.coco_eval import GroundTruthError, load_gt_json
from retinanet.models.backbone import PretrainedWeightsError, ResNet, check_pretrained_file, load_pretrained_backbone
from retinanet.models.retinanet import build_model
from retinanet.models.checkpoint import CheckpointError, atomic_torch_save, load_model_weights, model_from_checkpoint
from scripts import ROOT, load_script

ONE_THREAD_ENV = dict(os.environ, OMP_NUM_THREADS="1")
TINY_MODEL = {"depth": 18, "norm": "gn", "head_norm": "gn", "fpn_channels": 64, "prior": 0.01}
DEVICE_FLAGS = ["--device", "cpu", "--workers", "0", "--amp", "off"]

# Runs each case's argv as ``python script.py argv`` would, in this one interpreter, and prints
# one JSON list of {"code", "stderr"}; anything uncaught is printed as the traceback it would be.
DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
script, cases = sys.argv[1], json.loads(sys.argv[2])
outcomes = []
for argv in cases:
    sys.argv = [script] + argv
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) or stop.code is None else 1
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
    outcomes.append({"code": code or 0, "stderr": stderr.getvalue()})
print(json.dumps(outcomes))
"""


def run_script(script, *args):
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                          env=ONE_THREAD_ENV, timeout=300)


def run_corpus(script, cases):
    """{case name: (exit code, stderr)} of ``script`` run with each case's argv."""
    names = list(cases)
    completed = subprocess.run([sys.executable, "-c", DRIVER, script, json.dumps([cases[name] for name in names])],
                               cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD_ENV, timeout=600)
    assert completed.returncode == 0, completed.stderr
    outcomes = json.loads(completed.stdout.strip().splitlines()[-1])
    return {name: (outcome["code"], outcome["stderr"]) for name, outcome in zip(names, outcomes)}


def assert_refused(code, stderr, named):
    assert "Traceback" not in stderr, stderr
    assert code == 2, stderr
    assert named in stderr, stderr


# ----- the corpus ---------------------------------------------------------------------------
def png_header_only(width, height):
    """A PNG signature and IHDR chunk claiming ``width`` x ``height``, and no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(header)) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + end


def broken_sets(coco):
    """{set name: (JSON text or bytes, the name the message must give)} of unusable sets."""
    def changed(edit):
        data = json.loads(json.dumps(coco))
        edit(data)
        return json.dumps(data)

    first_image = coco["images"][0]
    return {
        "no_categories": (changed(lambda data: data.pop("categories")), "no_categories.json"),
        "not_utf8": (changed(lambda data: None).replace(first_image["file_name"], "caf\u00e9.png")
                     .encode("latin-1"), "not_utf8.json"),
        "huge_width": (changed(lambda data: data["images"][0].update(width="WIDTH")).replace('"WIDTH"', "1e400"),
                       "huge_width.json"),
        "duplicate_image_id": (changed(lambda data: data["images"][1].update(id=first_image["id"])),
                               "duplicate_image_id.json"),
        "list_id": (changed(lambda data: data["images"][0].update(id=[first_image["id"]])), "list_id.json"),
        "missing_image": (changed(lambda data: data["images"][0].update(file_name="gone.png")), "gone.png"),
        "nested": ("[" * 100000, "nested.json"),
        "absolute_file_name": (changed(lambda data: data["images"][0].update(file_name="/etc/hostname")),
                               "absolute_file_name.json"),
        "climbing_file_name": (changed(lambda data: data["images"][0].update(file_name="../../val.json")),
                               "climbing_file_name.json"),
    }


@pytest.fixture(scope="module")
def corpus(module_tmp):
    """Paths of the tiny valid dataset, a checkpoint for it, and every bad file."""
    root = module_tmp("bad_inputs")
    data = root / "data"
    generate_dataset(str(data), num_train=2, num_val=2, num_test=1, min_size=96, max_size=128)
    coco = json.loads((data / "val.json").read_text())
    sets = broken_sets(coco)
    for set_name, (content, _) in sets.items():
        path = data / f"{set_name}.json"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        os.symlink(os.path.abspath(data / "images" / "val"), data / "images" / set_name)

    class_names = [category["name"] for category in sorted(coco["categories"], key=lambda c: c["id"])]
    category_ids = sorted(category["id"] for category in coco["categories"])
    torch.manual_seed(0)
    model = build_model(len(class_names), TINY_MODEL)
    good = {"model": model.state_dict(), "args": dict(TINY_MODEL, min_side=96, max_side=128),
            "class_names": class_names, "category_ids": category_ids}
    checkpoints = {
        "depth_7": dict(good, args=dict(good["args"], depth=7)),
        "weird_norm": dict(good, args=dict(good["args"], norm="weird")),
        "fpn_channels_48": dict(good, args=dict(good["args"], fpn_channels=48)),
        "args_string": dict(good, args="str"),
        "empty_model": {"model": {}},
        "more_classes": dict(good, class_names=class_names + ["extra"], category_ids=category_ids + [99]),
    }
    for name, checkpoint in checkpoints.items():
        atomic_torch_save(checkpoint, str(root / f"{name}.pt"))
    atomic_torch_save(good, str(root / "good.pt"))

    entry = {"image_id": coco["images"][0]["id"], "category_id": category_ids[0], "bbox": [1, 2, 10, 10],
             "score": 0.9}
    (root / "no_score_results.json").write_text(json.dumps([{key: value for key, value in entry.items()
                                                              if key != "score"}]))
    (root / "string_bbox_results.json").write_text(json.dumps([dict(entry, bbox="1 2 10 10")]))
    (root / "nested_results.json").write_text("[" * 100000)
    (root / "good_results.json").write_text(json.dumps([entry]))
    images = root / "images"
    images.mkdir()
    (images / "empty.png").write_bytes(b"")
    (images / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "notes.txt").write_text("not a tensor file")
    torch.save({"weights": torch.nn.Linear(2, 2)}, root / "module.pth")  # a pickled module, not a state dict
    return {"root": root, "data": str(data), "sets": sets, "checkpoints": list(checkpoints)}


# ----- the scripts over the corpus ------------------------------------------------------------
def test_check_dataset_reports_every_broken_set(corpus):
    for set_name, (_, named) in corpus["sets"].items():
        result = run_script("tools/check_dataset.py", "--coco_path", corpus["data"], "--set_name", set_name)
        assert_refused(result.returncode, result.stdout + result.stderr, named)
    nested = run_script("tools/check_dataset.py", "--coco_path", corpus["data"], "--set_name", "nested")
    assert "nested too deeply" in nested.stdout


def test_check_dataset_refuses_out_of_range_flags(corpus):
    for flag in ("--num_threads", "--max_lines"):
        result = run_script("tools/check_dataset.py", "--coco_path", corpus["data"], flag, "0")
        assert_refused(result.returncode, result.stderr, f"argument {flag}: must be a positive integer, got 0")


def test_test_script_refuses_broken_sets_checkpoints_and_flags(corpus, tmp_path):
    root, data = corpus["root"], corpus["data"]
    output = ["--output_dir", str(tmp_path / "out")]
    cases = {set_name: ["--coco_path", data, "--set_name", set_name, "--checkpoint_path", str(root / "good.pt"),
                        *output, *DEVICE_FLAGS] for set_name in corpus["sets"]}
    cases.update({name: ["--coco_path", data, "--set_name", "val", "--checkpoint_path", str(root / f"{name}.pt"),
                         *output, *DEVICE_FLAGS] for name in corpus["checkpoints"]})
    cases["huge_min_side"] = ["--coco_path", data, "--checkpoint_path", str(root / "good.pt"),
                              "--min_side", "999999999", *output, *DEVICE_FLAGS]
    outcomes = run_corpus("test.py", cases)
    for set_name, (_, named) in corpus["sets"].items():
        assert_refused(*outcomes[set_name], named)
    for name in corpus["checkpoints"]:
        code, stderr = outcomes[name]
        assert_refused(code, stderr, f"{name}.pt: ")
        assert len(stderr.strip().splitlines()) == 1, stderr
    assert "depth is int 7; it must be one of [18, 34, 50, 101, 152]" in outcomes["depth_7"][1]
    assert "saved (" in outcomes["more_classes"][1] and "vs expected (" in outcomes["more_classes"][1]
    assert_refused(*outcomes["huge_min_side"], "--min_side: must be an integer from 1 to 4096")
    assert "nested too deeply" in outcomes["nested"][1]
    assert not (tmp_path / "out").exists()


def test_vis_script_refuses_broken_sets_results_and_images(corpus, tmp_path):
    root, data = corpus["root"], corpus["data"]
    output = ["--output_dir", str(tmp_path / "vis"), *DEVICE_FLAGS]
    cases = {set_name: ["--coco_path", data, "--set_name", set_name, *output] for set_name in corpus["sets"]}
    for name in ("no_score", "string_bbox", "nested"):
        cases[f"{name}_results"] = ["--coco_path", data, "--results", str(root / f"{name}_results.json"), *output]
    for name in ("empty", "corrupt"):
        cases[f"{name}_image"] = ["--images", str(root / "images" / f"{name}.png"), "--checkpoint_path",
                                  str(root / "good.pt"), *output]
    cases["good_results"] = ["--coco_path", data, "--results", str(root / "good_results.json"), *output]
    outcomes = run_corpus("vis.py", cases)
    for set_name, (_, named) in corpus["sets"].items():
        assert_refused(*outcomes[set_name], named)
    for name in ("no_score", "string_bbox", "nested"):
        assert_refused(*outcomes[f"{name}_results"], f"{name}_results.json")
    assert "entry 0: score is missing" in outcomes["no_score_results"][1]
    assert "entry 0: bbox must be a list of 4 numbers" in outcomes["string_bbox_results"][1]
    for name in ("empty", "corrupt"):
        code, stderr = outcomes[f"{name}_image"]
        assert_refused(code, stderr, f"{name}.png: ")
        assert "1 of 1 --images cannot be read" in stderr
    assert outcomes["good_results"] == (0, ""), outcomes["good_results"]
    assert len(os.listdir(tmp_path / "vis")) == 2  # the good run's pictures only


def test_submission_check_refuses_malformed_ground_truth(corpus, tmp_path):
    results = str(corpus["root"] / "good_results.json")
    base = json.loads((corpus["root"] / "data" / "val.json").read_text())
    broken = {
        "image_not_an_object": dict(base, images=[1]),
        "image_without_id": dict(base, images=[{key: value for key, value in image.items() if key != "id"}
                                               for image in base["images"]]),
        "image_list_id": dict(base, images=[dict(image, id=[image["id"]]) for image in base["images"]]),
    }
    for name, ground_truth in broken.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(ground_truth))
        result = run_script("test_submission.py", "--ground_truth", str(path), "--results", results)
        assert_refused(result.returncode, result.stderr, f"{name}.json: unusable as ground truth")
    nested = run_script("test_submission.py", "--ground_truth", str(corpus["root"] / "data" / "nested.json"),
                        "--results", results)
    assert_refused(nested.returncode, nested.stderr, "nested.json: not valid JSON for a ground truth: nested too deeply")
    nested_results = run_script("test_submission.py", "--coco_path", corpus["data"], "--results",
                                str(corpus["root"] / "nested_results.json"))
    assert_refused(nested_results.returncode, nested_results.stderr, "nested_results.json")


def test_train_script_refuses_bad_weights_and_flags_before_creating_a_run(corpus, tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.save(ResNet(18).state_dict(), weights)
    run_flags = ["--coco_path", corpus["data"], "--output_path", str(tmp_path / "out"), "--log_dir",
                 str(tmp_path / "log"), "--run_name", "refused", *DEVICE_FLAGS]
    cases = {
        "not_weights": [*run_flags, "--pretrained", str(corpus["root"] / "notes.txt")],
        "pickled_module": [*run_flags, "--pretrained", str(corpus["root"] / "module.pth")],
        "other_depth": [*run_flags, "--pretrained", str(weights), "--depth", "34"],
        "negative_seed": [*run_flags, "--seed", "-1"],
        "huge_min_side": [*run_flags, "--min_side", "999999999"],
        "huge_max_side": [*run_flags, "--max_side", "99999"],
    }
    outcomes = run_corpus("train.py", cases)
    assert_refused(*outcomes["not_weights"], "--pretrained")
    assert "notes.txt" in outcomes["not_weights"][1]
    assert "weights_only" not in outcomes["not_weights"][1]
    assert_refused(*outcomes["pickled_module"], "module.pth: refused to load")
    assert "weights_only" not in outcomes["pickled_module"][1]
    assert_refused(*outcomes["other_depth"], "resnet18.pth does not fit a ResNet-34 backbone")
    assert_refused(*outcomes["negative_seed"], "--seed: must be an integer from 0 to 4294967295, got -1")
    assert_refused(*outcomes["huge_min_side"], "--min_side: must be an integer from 1 to 4096")
    assert_refused(*outcomes["huge_max_side"], "--max_side: must be an integer from 1 to 8192")
    assert not (tmp_path / "out").exists() and not (tmp_path / "log").exists()


# ----- converters -----------------------------------------------------------------------------
@pytest.fixture()
def csv_inputs(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bomb.png").write_bytes(png_header_only(20000, 20000))
    (tmp_path / "classes.csv").write_text("cat,0\n")
    (tmp_path / "latin_classes.csv").write_bytes("caf\u00e9,0\n".encode("latin-1"))
    (tmp_path / "train.csv").write_text("ok.png,1,1,5,5,cat\n")
    (tmp_path / "bomb.csv").write_text("bomb.png,1,1,5,5,cat\n")
    (tmp_path / "latin.csv").write_bytes("ok.png,1,1,5,5,cat\nok.png,2,2,6,6,caf\u00e9\n".encode("latin-1"))
    (tmp_path / "wide_field.csv").write_text("ok.png,1,1,5,5,cat\nok.png,1,1,5,5," + "a" * 200_000 + "\n")
    return tmp_path


@pytest.mark.parametrize("annotations, classes, message", [
    ("bomb.csv", "classes.csv", "bomb.png: unreadable image header"),
    ("latin.csv", "classes.csv", "latin.csv:2: the annotation file is not UTF-8 text"),
    ("train.csv", "latin_classes.csv", "latin_classes.csv:1: the class file is not UTF-8 text"),
    ("wide_field.csv", "classes.csv", "wide_field.csv:2: the annotation file is not readable CSV (field larger"),
])
def test_csv_converter_names_the_bad_file(csv_inputs, annotations, classes, message):
    result = run_script("tools/csv_to_coco.py", "--annotations", f"train={csv_inputs / annotations}",
                        "--classes", str(csv_inputs / classes), "--output", str(csv_inputs / "out"))
    assert_refused(result.returncode, result.stderr, message)
    assert not (csv_inputs / "out").exists()


VOC_XML = (b"<annotation><filename>a.jpg</filename><size><width>30</width><height>20</height></size>"
           b"<object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
           b"</object></annotation>")


def make_voc(root, xml=VOC_XML, split=b"a\n"):
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(root / folder)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "JPEGImages" / "a.jpg")
    if xml is None:
        os.makedirs(root / "Annotations" / "a.xml")  # a folder named like an annotation file
    else:
        (root / "Annotations" / "a.xml").write_bytes(xml)
    (root / "ImageSets" / "Main" / "train.txt").write_bytes(split)
    return root


@pytest.mark.parametrize("xml, split, message", [
    (b'<?xml version="1.0" encoding="no-such-codec"?>\n' + VOC_XML, b"a\n",
     "a.xml: not readable XML (unknown encoding: no-such-codec)"),
    (None, b"a\n", "a.xml: cannot be read (Is a directory)"),
    (VOC_XML, "a caf\u00e9\n".encode("latin-1"), "train.txt:1: the split file of set 'train' is not UTF-8 text"),
    (b'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY cat "cat">]>\n' + VOC_XML.replace(b"<name>cat", b"<name>&cat;"),
     b"a\n", "a.xml: refused: the XML declares entities"),
])
@pytest.mark.parametrize("classes", [[], ["--classes", "cat"]])
def test_voc_converter_names_the_bad_file(tmp_path, xml, split, message, classes):
    voc_root = make_voc(tmp_path / "voc", xml, split)
    result = run_script("tools/voc_to_coco.py", "--voc_root", str(voc_root), "--output", str(tmp_path / "out"),
                        *classes)
    assert_refused(result.returncode, result.stderr, message)
    assert not (tmp_path / "out").exists()


def test_failed_image_copy_leaves_the_previous_file(csv_inputs, monkeypatch):
    """--copy writes images atomically: a copy that fails (a full disk) leaves the old file whole."""
    output = csv_inputs / "out"
    convert_csv({"train": str(csv_inputs / "train.csv")}, str(csv_inputs / "classes.csv"), str(output), copy=True)
    copied = output / "images" / "train" / "ok.png"
    before = copied.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert_csv({"train": str(csv_inputs / "train.csv")}, str(csv_inputs / "classes.csv"), str(output),
                    copy=True, force=True)
    assert copied.read_bytes() == before
    assert sorted(os.listdir(copied.parent)) == ["ok.png"]  # no temporary file left behind


# ----- the checks behind the scripts ------------------------------------------------------------
def test_dataset_check_reports_file_names_leaving_the_image_folder(corpus):
    for set_name in ("absolute_file_name", "climbing_file_name"):
        report = check_dataset(corpus["data"], set_name)
        assert [problem.kind for problem in report.errors] == ["image_path_outside"], report.format()
        assert f"images/{set_name}/" in report.errors[0].reason


def test_deeply_nested_json_is_a_json_problem(corpus):
    report = check_dataset(corpus["data"], "nested")
    assert [(problem.kind, problem.reason) for problem in report.errors] == [
        ("json_invalid", "not valid JSON for a dataset: nested too deeply")]
    with pytest.raises(GroundTruthError, match="nested too deeply"):
        load_gt_json(os.path.join(corpus["data"], "nested.json"))


def test_ground_truth_entries_are_checked(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": [1], "categories": []}))
    with pytest.raises(GroundTruthError, match=r"images\[0\] must be an object, got int 1"):
        load_gt_json(str(path))


def test_checkpoint_descriptions_are_checked_before_building(corpus):
    checkpoint = torch.load(corpus["root"] / "good.pt", weights_only=True)
    assert model_from_checkpoint(checkpoint, "good.pt") is not None
    bad = {
        "depth": (7, "depth is int 7; it must be one of"),
        "norm": ("weird", "norm is str 'weird'; it must be one of"),
        "head_norm": (None, "head_norm is NoneType None"),
        "fpn_channels": (48, "fpn_channels is int 48; it must be a positive multiple of 32, at least 64"),
        "prior": (1.5, "prior is float 1.5"),
        "min_side": ("96", "min_side is str '96'"),
    }
    for name, (value, message) in bad.items():
        with pytest.raises(CheckpointError, match=f"^x.pt: saved model option {message}"):
            model_from_checkpoint(dict(checkpoint, args=dict(checkpoint["args"], **{name: value})), "x.pt")
    with pytest.raises(CheckpointError, match="no 'args' entry"):
        model_from_checkpoint({"model": {}}, "x.pt")
    with pytest.raises(CheckpointError, match="'class_names' must be a non-empty list of strings"):
        model_from_checkpoint(dict(checkpoint, class_names=[]), "x.pt")
    num_classes = len(checkpoint["class_names"])
    with pytest.raises(CheckpointError, match=f"'category_ids' must be a list of {num_classes} integers"):
        model_from_checkpoint(dict(checkpoint, category_ids=[1, 2]), "x.pt")


def test_weights_of_another_class_count_give_one_line(corpus):
    """What a resume on a dataset with another number of classes meets."""
    checkpoint = torch.load(corpus["root"] / "good.pt", weights_only=True)
    num_classes = len(checkpoint["class_names"])
    model = build_model(num_classes + 2, TINY_MODEL)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(model, checkpoint["model"], "last.pt")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("last.pt: weights do not fit the model (2 tensors of another shape, first "
                              "classification_head.")
    anchors = 9  # per position: 3 scales x 3 aspect ratios
    assert f"saved ({anchors * num_classes}, 64, 3, 3) vs expected ({anchors * (num_classes + 2)}, 64, 3, 3)" in message


def test_pretrained_file_errors_are_one_line_without_unsafe_advice(corpus, tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.save(ResNet(18).state_dict(), weights)
    check_pretrained_file(str(weights), 18)
    for path in (corpus["root"] / "notes.txt", corpus["root"] / "module.pth"):
        with pytest.raises(PretrainedWeightsError) as info:
            check_pretrained_file(str(path), 18)
        assert str(info.value).startswith(f"{path}: ")
        assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PretrainedWeightsError, match="does not fit a ResNet-34 backbone"):
        load_pretrained_backbone(ResNet(34), str(weights))


def test_outputs_through_a_file_or_onto_a_folder_are_refused_before_any_work(corpus, tmp_path):
    blocker = str(corpus["data"]) + "/val.json"  # a regular file where a folder would have to be
    good = str(corpus["root"] / "good.pt")
    run_flags = ["--coco_path", corpus["data"], *DEVICE_FLAGS, "--output_path", str(tmp_path / "out")]
    train_cases = {
        "log_dir": [*run_flags, "--log_dir", f"{blocker}/log", "--run_name", "x"],
        "output_path": ["--coco_path", corpus["data"], *DEVICE_FLAGS, "--output_path", f"{blocker}/out",
                        "--log_dir", str(tmp_path / "log")],
        "run_name_dot": [*run_flags, "--log_dir", str(tmp_path / "log"), "--run_name", "."],
        "run_name_path": [*run_flags, "--log_dir", str(tmp_path / "log"), "--run_name", "../escape"],
        "resume_bad_checkpoint": [*run_flags, "--log_dir", str(tmp_path / "log"), "--resume",
                                  str(corpus["root"] / "notes.txt")],
        "init_from_bad_checkpoint": [*run_flags, "--log_dir", str(tmp_path / "log"), "--init_from",
                                     str(corpus["root"] / "depth_7.pt")],
    }
    outcomes = run_corpus("train.py", train_cases)
    assert_refused(*outcomes["log_dir"], f"--log_dir {blocker}/log: {blocker} is a file, not a folder")
    assert_refused(*outcomes["output_path"], f"--output_path {blocker}/out: {blocker} is a file, not a folder")
    assert_refused(*outcomes["run_name_dot"], "'.' is not a folder name")
    assert_refused(*outcomes["run_name_path"], "'../escape' is not a folder name")
    assert_refused(*outcomes["resume_bad_checkpoint"], "notes.txt")
    assert_refused(*outcomes["init_from_bad_checkpoint"], "depth_7.pt")
    assert not (tmp_path / "out").exists() and not (tmp_path / "log").exists()

    test_outcomes = run_corpus("test.py", {
        "output_dir": ["--coco_path", corpus["data"], "--checkpoint_path", good, "--output_dir", f"{blocker}/res",
                       *DEVICE_FLAGS],
        "checkpoint_folder": ["--coco_path", corpus["data"], "--checkpoint_path", str(corpus["root"]),
                              *DEVICE_FLAGS],
    })
    assert_refused(*test_outcomes["output_dir"], f"--output_dir {blocker}/res: {blocker} is a file, not a folder")
    assert_refused(*test_outcomes["checkpoint_folder"], f"--checkpoint_path {corpus['root']}: a folder, not a file")
    vis = run_corpus("vis.py", {"output_dir": ["--coco_path", corpus["data"], "--checkpoint_path", good,
                                               "--output_dir", f"{blocker}/vis", *DEVICE_FLAGS]})
    assert_refused(*vis["output_dir"], f"--output_dir {blocker}/vis: {blocker} is a file, not a folder")
    lr_find = run_corpus("tools/lr_find.py", {"output": [*run_flags, "--output", f"{blocker}/lr.png"]})
    assert_refused(*lr_find["output"], f"--output {blocker}/lr.png: {blocker} is a file, not a folder")
    (tmp_path / "a_folder.onnx").mkdir()
    export = run_corpus("tools/export.py", {
        "through_a_file": ["--checkpoint_path", good, "--output", f"{blocker}/x.onnx"],
        "onto_a_folder": ["--checkpoint_path", good, "--output", str(tmp_path / "a_folder.onnx")],
    })
    assert_refused(*export["through_a_file"], f"--output {blocker}/x.onnx: {blocker} is a file, not a folder")
    assert_refused(*export["onto_a_folder"], f"{tmp_path / 'a_folder.onnx'} is a folder; name a file")
    assert os.listdir(tmp_path / "a_folder.onnx") == [] and sorted(os.listdir(tmp_path)) == ["a_folder.onnx"]
    imports = run_corpus("tools/import_torchvision.py", {
        "not_weights": ["--weights", str(corpus["root"] / "notes.txt"), "--output", str(tmp_path / "x.pt")],
        "pickled_module": ["--weights", str(corpus["root"] / "module.pth"), "--output", str(tmp_path / "x.pt")],
        "missing": ["--weights", str(tmp_path / "absent.pth"), "--output", str(tmp_path / "x.pt")],
        "output_through_a_file": ["--weights", good, "--output", f"{blocker}/x.pt"],
    })
    assert_refused(*imports["not_weights"], "notes.txt")
    assert_refused(*imports["pickled_module"], "module.pth: refused to load")
    assert_refused(*imports["missing"], "absent.pth: no such file")
    assert_refused(*imports["output_through_a_file"], f"{blocker} is a file, not a folder")


def test_a_full_disk_is_found_before_evaluating_not_after(corpus, tmp_path, monkeypatch, capsys):
    from retinanet.util import io as util_io
    from retinanet.util.script import run_script as script_entry
    test_script = load_script("test")
    real_fsync = os.fsync

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    evaluated = []
    monkeypatch.setattr(util_io.os, "fsync", full)
    monkeypatch.setattr(Detector, "evaluate", lambda *args, **kwargs: evaluated.append(args))
    with pytest.raises(SystemExit) as info:
        script_entry(lambda: test_script.main(["--coco_path", corpus["data"], "--checkpoint_path",
                                               str(corpus["root"] / "good.pt"), "--output_dir",
                                               str(tmp_path / "results"), *DEVICE_FLAGS]))
    monkeypatch.setattr(util_io.os, "fsync", real_fsync)
    error = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith(f"error: could not write {tmp_path / 'results'}: No space left on device"), error
    assert os.listdir(tmp_path / "results") == [] and evaluated == []  # the probe is gone, nothing evaluated
