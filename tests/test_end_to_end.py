"""A tiny train -> test -> submission check -> vis pass on generated data, and exact resume."""
import json
import os
import subprocess
import sys

import pytest
import torch

from retinanet.models.checkpoint import load_checkpoint
from retinanet.data.synthetic import generate_dataset
from scripts import ROOT, TINY_TRAIN_FLAGS, load_script, train_run

test_script = load_script("test")


@pytest.fixture(scope="module")
def tiny_data(module_tmp):
    root = module_tmp("data")
    generate_dataset(str(root), num_train=16, num_val=4, num_test=2, min_size=96, max_size=128, seed=11)
    return str(root)


def _train(data, tmp_path, name, *extra):
    return train_run(data, tmp_path, name, *TINY_TRAIN_FLAGS, *extra)


def test_train_test_submission_and_vis_end_to_end(tiny_data, tmp_path):
    # Memorising 16 images is the quickest way to see the whole pipeline learn: evaluate on them.
    run = _train(tiny_data, tmp_path, "e2e", "--epochs", "30", "--batch_size", "2", "--learning_rate", "5e-4",
                 "--milestones", "25", "--eval_every", "5", "--warmup_iters", "20", "--val_set", "train")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 31))
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    ap50 = [r["coco"]["AP50"] for r in records if "coco" in r]
    assert len(ap50) == 6
    # Measured: AP50 about 0.10 after 5 epochs and 0.22 after 30 (AP 0.04 -> 0.14).
    assert ap50[-1] > 0.15 and ap50[-1] > ap50[0] + 0.05, ap50
    assert records[-1]["coco"]["AP"] > 0.08, records[-1]["coco"]
    assert (tmp_path / "log" / "e2e.log").read_text().count("epoch_loss_list") == 1
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "model_final.pt", "config.json", "summary.json",
                 "curves.png"):
        assert (run / name).exists(), name
    evaluated = [r for r in records if "coco" in r]
    best = max(evaluated, key=lambda r: r["coco"]["AP"])
    assert load_checkpoint(str(run / "checkpoint_best.pt"))["epoch"] == best["epoch"]
    assert load_checkpoint(str(run / "checkpoint_last.pt"))["epoch"] == 30
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == best["epoch"] and summary["best_metric"] == pytest.approx(best["coco"]["AP"])
    assert summary["epoch_loss_list"] == pytest.approx([r["loss"] for r in records])

    out = tmp_path / "results"
    test_script.main(["--coco_path", tiny_data, "--checkpoint_path", str(run / "model_final.pt"), "--set_name", "train",
                      "--output_dir", str(out), "--workers", "0", "--amp", "off"])  # the precision the run evaluated in
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["stats"]["AP"] == pytest.approx(records[-1]["coco"]["AP"], abs=1e-6)
    assert {row["name"] for row in metrics["per_class"]} == set(load_checkpoint(str(run / "model_final.pt"))["class_names"])
    results = json.loads((out / "train_bbox_results.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} <= set(results[0])

    test_script.main(["--coco_path", tiny_data, "--checkpoint_path", str(run / "model_final.pt"), "--set_name", "test",
                      "--output_dir", str(out), "--workers", "0"])
    assert (out / "test_bbox_results.json").exists() and not (out / "test_metrics.json").exists()

    check = subprocess.run([sys.executable, "test_submission.py", "--coco_path", tiny_data, "--set_name", "train",
                            "--results", str(out / "train_bbox_results.json")], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{metrics['stats']['AP']:.3f}" in check.stdout

    vis = subprocess.run([sys.executable, "vis.py", "--coco_path", tiny_data, "--set_name", "val", "--checkpoint_path",
                          str(run / "model_final.pt"), "--num_images", "3", "--output_dir", str(tmp_path / "vis"),
                          "--workers", "0"], cwd=ROOT, capture_output=True, text=True)
    assert vis.returncode == 0, vis.stderr
    pictures = [line for line in vis.stdout.splitlines() if line.endswith(".png")]
    assert len(pictures) == 3 and all(os.path.getsize(p) > 1000 for p in pictures)


def test_resume_gives_the_same_weights_and_losses_as_an_uninterrupted_run(tiny_data, tmp_path):
    common = ["--epochs", "2", "--milestones", "10", "--eval_every", "0", "--val_set", ""]
    straight = _train(tiny_data, tmp_path, "straight", *common)
    _train(tiny_data, tmp_path, "split", "--epochs", "1", "--milestones", "10", "--eval_every", "0", "--val_set", "")
    resumed = _train(tiny_data, tmp_path, "split", *common, "--resume",
                     str(tmp_path / "output" / "split" / "checkpoint_last.pt"))
    a = load_checkpoint(str(straight / "checkpoint_last.pt"))
    b = load_checkpoint(str(resumed / "checkpoint_last.pt"))
    assert a["epoch"] == b["epoch"] == 2
    assert a["loss_history"] == b["loss_history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_extending_a_run_moves_the_drop_that_epochs_placed(tiny_data, tmp_path, capsys):
    # No --milestones: the drop follows --epochs (after 7/8 of them). A 1-epoch run extended to 4 must
    # train as a 4-epoch run would, not at a tenth of the rate after the first run's drop.
    common = ["--eval_every", "0", "--val_set", "", "--warmup_iters", "0"]
    straight = _train(tiny_data, tmp_path, "straight4", "--epochs", "4", *common)
    _train(tiny_data, tmp_path, "short", "--epochs", "1", *common)
    capsys.readouterr()
    extended = _train(tiny_data, tmp_path, "short", "--epochs", "4", *common, "--resume",
                      str(tmp_path / "output" / "short" / "checkpoint_last.pt"))
    printed = capsys.readouterr().out
    assert "override: --milestones 4 (run had 1): the learning-rate drop follows --epochs 4" in printed
    a = load_checkpoint(str(straight / "checkpoint_last.pt"))
    b = load_checkpoint(str(extended / "checkpoint_last.pt"))
    assert a["args"]["milestones"] == b["args"]["milestones"] == [4]
    assert a["loss_history"] == b["loss_history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    rates = [json.loads(line)["lr"] for line in (extended / "metrics.jsonl").read_text().splitlines()]
    assert rates == [json.loads(line)["lr"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(set(rates)) == 1  # the full rate throughout: the drop after epoch 4 is never reached


def test_predictions_on_plain_image_files_need_no_dataset_json(tiny_data, tmp_path):
    run = _train(tiny_data, tmp_path, "plain", "--epochs", "1", "--val_set", "")
    folder = os.path.join(tiny_data, "images", "test")
    vis = subprocess.run([sys.executable, "vis.py", "--images", folder, "--checkpoint_path", str(run / "model_final.pt"),
                          "--output_dir", str(tmp_path / "pictures"), "--workers", "0", "--score_threshold", "0"],
                         cwd=ROOT, capture_output=True, text=True)
    assert vis.returncode == 0, vis.stderr
    files = sorted(os.listdir(folder))
    pictures = [line for line in vis.stdout.splitlines() if line.endswith(".png")]
    assert len(pictures) == len(files)
    predictions = json.loads((tmp_path / "pictures" / "predictions.json").read_text())
    class_names = load_checkpoint(str(run / "model_final.pt"))["class_names"]
    # Threshold 0 keeps every candidate, so each image has detections, capped at 100.
    per_file = {name: sum(os.path.basename(p["file_name"]) == name for p in predictions) for name in files}
    assert all(0 < count <= 100 for count in per_file.values()), per_file
    assert all(1 <= p["category_id"] <= len(class_names) and 0 <= p["score"] <= 1 for p in predictions)


def test_bfloat16_autocast_trains_on_the_cpu(tiny_data, tmp_path):
    run = _train(tiny_data, tmp_path, "amp", "--epochs", "1", "--val_set", "", "--amp")
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < record["loss"] < 10 and record["images"] == 16
    assert load_checkpoint(str(run / "model_final.pt"))["args"]["amp"] == "on"
    assert "precision: bfloat16 autocast (--amp on" in (tmp_path / "log" / "amp.log").read_text()


def test_vis_titles_each_picture_by_its_file():
    vis_script = load_script("vis")
    assert vis_script.picture_title("/photos/dog_01.jpg", 1, from_files=True) == "dog_01.jpg"
    assert vis_script.picture_title("data/images/val/000042.png", 42, from_files=False) == "000042.png (id 42)"
