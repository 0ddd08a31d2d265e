"""Datasets as they come: ours, COCO's own, Roboflow's and explicit paths (retinanet/data/layout.py).

One small generated set is rearranged into each layout; train.py, test.py and test_submission.py
then read it end to end, and the resolver is tested on its own: which layout it picks, that
explicit paths win, and the one error that names every path it looked for and the sets it found.
"""
import json
import shutil
from argparse import Namespace

import pytest
import torch

from retinanet.data.check import check_dataset
from retinanet.data.coco import DatasetLoadError
from retinanet.data.layout import SetFiles, SetNotFoundError, find_sets, resolve_set
from retinanet.data.synthetic import generate_dataset
from retinanet.config import resolve_training_args
from retinanet.training.setup import build_data
from scripts import load_script

train_script = load_script("train")
test_script = load_script("test")
submission_script = load_script("test_submission")

# Tiny enough that one epoch on 8 images of 64-96 px takes seconds on one CPU thread.
TINY_FLAGS = ["--depth", "18", "--fpn_channels", "32", "--head_norm", "none", "--head_init", "kaiming",
              "--min_side", "64", "--max_side", "96", "--epochs", "1", "--pretrained", "none", "--workers", "0",
              "--batch_size", "4", "--print_every", "0", "--amp", "off", "--warmup_iters", "0"]
# Threshold 0 keeps every candidate: an untrained model's scores sit near the prior, under the default 0.05.
DECODING = ["--score_threshold", "0"]
AP_LABEL = "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"


@pytest.fixture(scope="module")
def generated(module_tmp):
    """Our layout: train (8 images) and val (4 images), 64-96 px."""
    root = module_tmp("generated")
    generate_dataset(str(root), num_train=8, num_val=4, num_test=0, min_size=64, max_size=96, seed=5)
    return root


def _copy_set(source, set_name, json_path, image_dir, name_prefix=""):
    """Copy one generated set to ``json_path`` and ``image_dir``; each file_name gets ``name_prefix``."""
    coco = json.loads((source / f"{set_name}.json").read_text())
    for image in coco["images"]:
        shutil.copy(source / "images" / set_name / image["file_name"],
                    _make_parent(image_dir / name_prefix / image["file_name"]))
        image["file_name"] = f"{name_prefix}{image['file_name']}"
    _make_parent(json_path).write_text(json.dumps(coco))


def _make_parent(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def arrange(source, root, layout):
    """Rearrange the generated set under ``root``; returns (train.py flags, val set name, test.py flags)."""
    if layout == "ours":
        shutil.copytree(source, root)
        return ["--coco_path", str(root)], "val", ["--coco_path", str(root), "--set_name", "val"]
    if layout == "coco":  # COCO 2017's names: annotations/instances_val2017.json + val2017/
        for set_name in ("train", "val"):
            _copy_set(source, set_name, root / "annotations" / f"instances_{set_name}2017.json", root / f"{set_name}2017")
        return (["--coco_path", str(root), "--train_set", "train2017", "--val_set", "val2017"], "val2017",
                ["--coco_path", str(root), "--set_name", "val2017"])
    if layout == "roboflow":  # {set}/_annotations.coco.json beside the images; validation is 'valid'
        for set_name, folder in (("train", "train"), ("val", "valid")):
            _copy_set(source, set_name, root / folder / "_annotations.coco.json", root / folder)
        return (["--coco_path", str(root), "--val_set", "valid"], "valid",
                ["--coco_path", str(root), "--set_name", "valid"])
    # Explicit paths: a CVAT export (annotations/instances_default.json, images/) for training, and a
    # Label Studio export (result.json, file_names "images/..." relative to its own folder) for validation.
    _copy_set(source, "train", root / "cvat" / "annotations" / "instances_default.json", root / "cvat" / "images")
    _copy_set(source, "val", root / "label_studio" / "result.json", root / "label_studio", name_prefix="images/")
    val_json = str(root / "label_studio" / "result.json")
    return (["--train_json", str(root / "cvat" / "annotations" / "instances_default.json"),
             "--train_images", str(root / "cvat" / "images"), "--val_json", val_json], "val",
            ["--set_json", val_json])


@pytest.mark.parametrize("layout", ["ours", "coco", "roboflow", "explicit"])
def test_train_test_and_submission_check_read_each_layout(generated, tmp_path, monkeypatch, layout, one_thread,
                                                           capsys):
    train_flags, val_set, test_flags = arrange(generated, tmp_path / "export", layout)
    monkeypatch.chdir(tmp_path)  # no ./data here: nothing may depend on the default --coco_path
    train_script.main([*train_flags, "--output_path", str(tmp_path / "output"), "--log_dir", str(tmp_path / "log"),
                       "--run_name", layout, *TINY_FLAGS, *DECODING])
    run = tmp_path / "output" / layout
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and record["images"] == 8 and 0 <= record["coco"]["AP"] <= 1  # val was evaluated
    config = json.loads((run / "config.json").read_text())
    assert config["class_names"] == ["ellipse", "rectangle", "triangle", "plus", "star", "ring"]

    capsys.readouterr()
    test_script.main([*test_flags, "--checkpoint_path", str(run / "model_final.pt"), "--output_dir",
                      str(tmp_path / "results"), "--workers", "0", "--amp", "off", *DECODING])
    metrics = json.loads((tmp_path / "results" / f"{val_set}_metrics.json").read_text())
    assert metrics["stats"]["AP"] == pytest.approx(record["coco"]["AP"], abs=1e-6)  # the set train.py validated on
    assert f"{AP_LABEL} = {metrics['stats']['AP']:0.3f}" in capsys.readouterr().out
    results_path = tmp_path / "results" / f"{val_set}_bbox_results.json"
    assert len(json.loads(results_path.read_text())) > 0

    submission = submission_script.get_args_parser().parse_args(
        [*(test_flags if layout != "explicit" else ["--ground_truth", test_flags[1]]), "--results", str(results_path)])
    assert submission_script.main(submission) == 0
    assert f"{AP_LABEL} = {metrics['stats']['AP']:0.3f}" in capsys.readouterr().out


# ----- the resolver -----------------------------------------------------------------------------
def _touch(path):
    _make_parent(path).write_text("{}")


@pytest.mark.parametrize("layout, files, set_name, expected_json, expected_images", [
    ("ours", ["val.json"], "val", "val.json", "images/val"),
    ("coco", ["annotations/instances_val.json"], "val", "annotations/instances_val.json", "val"),
    ("coco", ["annotations/instances_val2017.json"], "val2017", "annotations/instances_val2017.json", "val2017"),
    ("roboflow", ["valid/_annotations.coco.json"], "valid", "valid/_annotations.coco.json", "valid"),
])
def test_resolver_picks_each_layout(tmp_path, layout, files, set_name, expected_json, expected_images):
    for name in files:
        _touch(tmp_path / name)
    assert resolve_set(str(tmp_path), set_name) == SetFiles(str(tmp_path / expected_json),
                                                             str(tmp_path / expected_images), layout)


def test_ours_wins_silently_when_several_layouts_hold_the_set(tmp_path, capsys):
    for name in ("val.json", "annotations/instances_val.json", "val/_annotations.coco.json"):
        _touch(tmp_path / name)
    assert resolve_set(str(tmp_path), "val").layout == "ours"
    _touch(tmp_path / "other" / "annotations" / "instances_val.json")
    _touch(tmp_path / "other" / "val" / "_annotations.coco.json")
    assert resolve_set(str(tmp_path / "other"), "val").layout == "coco"  # COCO's own before Roboflow's
    assert capsys.readouterr() == ("", "")


def test_explicit_paths_win(tmp_path):
    _touch(tmp_path / "data" / "val.json")
    _touch(tmp_path / "export" / "result.json")
    (tmp_path / "pictures").mkdir()
    root, explicit_json = str(tmp_path / "data"), str(tmp_path / "export" / "result.json")
    assert resolve_set(root, "val", json_path=explicit_json) == SetFiles(explicit_json, str(tmp_path / "export"),
                                                                         "explicit")
    assert resolve_set(root, "val", explicit_json, str(tmp_path / "pictures")).image_dir == str(tmp_path / "pictures")
    # An image folder alone replaces the layout's, with the layout's annotation file.
    assert resolve_set(root, "val", image_dir=str(tmp_path / "pictures")) == SetFiles(
        str(tmp_path / "data" / "val.json"), str(tmp_path / "pictures"), "explicit")
    with pytest.raises(SetNotFoundError, match="missing.json: annotation file of set 'val' not found"):
        resolve_set(root, "val", json_path=str(tmp_path / "missing.json"))


def test_a_root_without_the_set_names_every_path_looked_for_and_the_sets_found(tmp_path):
    _touch(tmp_path / "train.json")  # ours
    _touch(tmp_path / "annotations" / "instances_test2017.json")  # COCO's
    _touch(tmp_path / "valid" / "_annotations.coco.json")  # Roboflow's
    assert find_sets(str(tmp_path)) == ["test2017", "train", "valid"]
    with pytest.raises(SetNotFoundError) as caught:
        resolve_set(str(tmp_path), "val")
    message = str(caught.value)
    looked_for = [str(tmp_path / "val.json"), str(tmp_path / "annotations" / "instances_val.json"),
                  str(tmp_path / "val" / "_annotations.coco.json")]
    assert message.startswith(f"{tmp_path}: set 'val': no such set in any known layout")
    assert all(path in message for path in looked_for) and caught.value.looked_for == looked_for
    assert message.endswith("sets found: test2017, train, valid") and "\n" not in message
    assert isinstance(caught.value, DatasetLoadError)  # what train.py turns into exit status 2
    with pytest.raises(SetNotFoundError, match=f"{tmp_path / 'nowhere'}: set 'val': no such folder;.*sets found: none"):
        resolve_set(str(tmp_path / "nowhere"), "val")
    # The dataset check reports it as the set's one problem, with the same paths.
    report = check_dataset(str(tmp_path), "val")
    assert [problem.kind for problem in report.errors] == ["json_missing"]
    assert all(path in report.errors[0].reason for path in looked_for)
    assert "sets found: test2017, train, valid" in report.errors[0].reason


def test_test_script_lists_the_sets_of_every_layout_for_an_unknown_set(tmp_path, capsys):
    _touch(tmp_path / "train" / "_annotations.coco.json")
    _touch(tmp_path / "valid" / "_annotations.coco.json")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(SystemExit) as caught:
        test_script.parse_args(["--coco_path", str(tmp_path), "--checkpoint_path", str(checkpoint)])
    assert caught.value.code == 2
    stderr = capsys.readouterr().err
    assert "--set_name val:" in stderr and str(tmp_path / "val" / "_annotations.coco.json") in stderr
    assert "sets found: train, valid" in stderr


def test_submission_check_takes_roboflows_valid_set(generated, tmp_path, capsys):
    _copy_set(generated, "val", tmp_path / "valid" / "_annotations.coco.json", tmp_path / "valid")
    coco = json.loads((tmp_path / "valid" / "_annotations.coco.json").read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in coco["annotations"]]
    (tmp_path / "valid_bbox_results.json").write_text(json.dumps(perfect))
    parser = submission_script.get_args_parser()
    args = parser.parse_args(["--coco_path", str(tmp_path), "--set_name", "valid",
                              "--results", str(tmp_path / "valid_bbox_results.json")])
    assert submission_script.main(args) == 0
    assert f"{AP_LABEL} = 1.000" in capsys.readouterr().out
    args = parser.parse_args(["--coco_path", str(tmp_path), "--set_name", "val",
                              "--results", str(tmp_path / "valid_bbox_results.json")])
    assert submission_script.main(args) == 2
    stderr = capsys.readouterr().err
    assert f"{tmp_path / 'val.json'}: ground-truth file not found" in stderr and "sets found: valid" in stderr


def test_file_names_may_hold_sub_folders_but_not_leave_the_image_folder(generated, tmp_path):
    _copy_set(generated, "val", tmp_path / "valid" / "_annotations.coco.json", tmp_path / "valid", "shots/day1/")
    assert check_dataset(str(tmp_path), "valid").ok
    json_path = tmp_path / "valid" / "_annotations.coco.json"
    coco = json.loads(json_path.read_text())
    coco["images"][0]["file_name"] = "../train/000001.png"
    json_path.write_text(json.dumps(coco))
    report = check_dataset(str(tmp_path), "valid")
    assert [problem.kind for problem in report.errors] == ["image_path_outside"]
    assert f"leaves {tmp_path / 'valid'}/" in report.errors[0].reason


def test_resume_keeps_the_explicit_set_paths_and_refuses_others(tmp_path):
    from retinanet.cli.options import build_train_parser, explicit_flags, restore_resumed_args

    saved = vars(resolve_training_args(train_json="export/train.json", train_images="export/images",
                                       val_json="export/val.json", val_images="export/images"))
    checkpoint = {"args": dict(saved, run_name="run"), "epoch": 1}
    path = str(tmp_path / "run" / "checkpoint_last.pt")
    argv = ["--resume", path]
    args, _ = restore_resumed_args(build_train_parser().parse_args(argv), explicit_flags(build_train_parser(), argv),
                                   checkpoint, path)
    assert (args.train_json, args.train_images, args.val_json, args.val_images) == (
        "export/train.json", "export/images", "export/val.json", "export/images")
    argv = ["--resume", path, "--val_json", "other/val.json"]
    with pytest.raises(ValueError, match=r"--val_json other/val.json \(run had export/val.json\) would change the "
                                         "dataset"):
        restore_resumed_args(build_train_parser().parse_args(argv), explicit_flags(build_train_parser(), argv),
                             checkpoint, path)


def test_training_without_the_named_validation_set_warns_with_the_sets_found(generated, tmp_path, capsys):
    root = tmp_path / "roboflow"
    for set_name, folder in (("train", "train"), ("val", "valid")):
        _copy_set(generated, set_name, root / folder / "_annotations.coco.json", root / folder)
    args = resolve_training_args(Namespace(coco_path=str(root), workers=0, batch_size=4))
    train_set, _, val_loader = build_data(args, torch.device("cpu"), rank=0, world_size=1)
    assert len(train_set) == 8 and train_set.layout == "roboflow" and val_loader is None
    assert "no validation set 'val' under" in capsys.readouterr().err
    _, _, val_loader = build_data(resolve_training_args(args, val_set="valid"), torch.device("cpu"), 0, 1)
    assert len(val_loader.dataset) == 4 and val_loader.dataset.image_dir == str(root / "valid")


def test_each_set_is_found_once_and_its_annotation_file_read_once_with_the_check(generated, monkeypatch):
    """The dataset check hands its parsed file to the dataset: a run's set-up parses each set's JSON
    once, and the training set's recorded SHA-256 is the file's."""
    import hashlib

    from retinanet.data import layout
    from retinanet.training import setup

    parsed, located = [], []
    real_loads, real_resolve = json.loads, layout.resolve_set
    monkeypatch.setattr(json, "loads", lambda text, *a, **k: parsed.append(len(text)) or real_loads(text, *a, **k))
    for module in (layout, setup, __import__("retinanet.data.check", fromlist=["x"]),
                   __import__("retinanet.data.coco", fromlist=["x"])):
        if hasattr(module, "resolve_set"):
            monkeypatch.setattr(module, "resolve_set",
                                lambda *a, **k: located.append(a[1]) or real_resolve(*a, **k))
    args = resolve_training_args(Namespace(coco_path=str(generated), workers=0, batch_size=4))
    loaded = setup.load_datasets(args, check=True)
    train_set, _, val_loader = build_data(args, torch.device("cpu"), 0, 1, loaded)
    sizes = sorted((generated / f"{name}.json").stat().st_size for name in ("train", "val"))
    assert sorted(parsed) == sizes
    assert sorted(located) == ["train", "val"]
    assert len(train_set) == 8 and len(val_loader.dataset) == 4
    digest = hashlib.sha256((generated / "train.json").read_bytes()).hexdigest()
    assert setup.training_set_record(train_set)["sha256"] == digest
