"""Faults a run meets in practice: untrusted or damaged checkpoints, a crash mid-save, Ctrl-C,
a NaN loss, an image that no longer decodes, an unwritable output folder and a broken dataset.
Each must end with a clear message (no traceback) and, during training, a resumable checkpoint."""
import json
import os
import pickle
import subprocess
import sys
import uuid

import pytest
import torch

from retinanet.data.synthetic import generate_dataset
from retinanet.models.loss import RetinaNetLoss
from retinanet.models.retinanet import build_model
from retinanet.models.checkpoint import CheckpointError, atomic_torch_save, load_checkpoint
from retinanet.training import setup as training_setup
from retinanet.training import trainer as trainer_module
from retinanet.util.script import run_script
from scripts import ROOT, TINY_TRAIN_FLAGS, load_script, train_run

TINY = TINY_TRAIN_FLAGS + ["--epochs", "1", "--val_set", "", "--eval_every", "0"]
TINY_MODEL = {"depth": 18, "norm": "gn", "head_norm": "gn", "fpn_channels": 64, "prior": 0.01}
# Tiny models gain nothing from several threads, and on a busy machine the threads contend.
ONE_THREAD_ENV = dict(os.environ, OMP_NUM_THREADS="1")

test_script = load_script("test")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_data(root, num_train=8):
    generate_dataset(str(root), num_train=num_train, num_val=4, num_test=2, min_size=96, max_size=128, seed=5)
    return str(root)


@pytest.fixture(scope="module")
def tiny_data(module_tmp):
    return make_data(module_tmp("data"), num_train=12)


def train(data, tmp_path, name, *extra):
    return train_run(data, tmp_path, name, *TINY, *extra)


def fail_loss_at_step(monkeypatch, step, fault):
    """Make the training loss call ``fault(losses)`` on its ``step``-th call (counted over the run)."""
    calls = {"count": 0}

    class FaultyLoss(RetinaNetLoss):
        def forward(self, outputs, targets):
            losses = super().forward(outputs, targets)
            calls["count"] += 1
            return fault(losses) if calls["count"] == step else losses

    monkeypatch.setattr(training_setup, "RetinaNetLoss", FaultyLoss)


def save_tiny_checkpoint(path):
    model = build_model(3, TINY_MODEL)
    torch.save({"model": model.state_dict(), "args": dict(TINY_MODEL, min_side=96, max_side=128),
                "class_names": ["a", "b", "c"], "epoch": 1}, path)


class RunsShellCommand:
    """Unpickling this would run a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


# ----- A: untrusted and damaged checkpoint files ----------------------------------------------
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_checkpoint_that_would_run_code_is_refused(tmp_path, writer):
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    path = tmp_path / "evil.pt"
    payload = {"model": RunsShellCommand(f"touch {marker}")}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="refused to load") as info:
        load_checkpoint(str(path))
    assert str(info.value).startswith(f"{path}: refused to load")
    assert "posix.system" in str(info.value)  # the reason names the function the file would call
    assert not os.path.exists(marker)


def test_test_script_refuses_a_code_running_checkpoint_without_a_traceback(tiny_data, tmp_path):
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    path = tmp_path / "evil.pt"
    torch.save({"model": RunsShellCommand(f"touch {marker}")}, path)
    result = subprocess.run([sys.executable, "test.py", "--coco_path", tiny_data, "--checkpoint_path", str(path),
                             "--set_name", "val", "--output_dir", str(tmp_path / "out"), "--device", "cpu",
                             "--workers", "0"], cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD_ENV)
    assert result.returncode == 2, result.stderr
    assert f"error: {path}: refused to load" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(marker)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "text", "empty"])
def test_damaged_checkpoint_is_refused(tmp_path, damage):
    path = tmp_path / "model.pt"
    save_tiny_checkpoint(path)
    content = path.read_bytes()
    path.write_bytes({"truncated": content[: len(content) // 2], "text": b"hello, not a checkpoint\n",
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
        load_checkpoint(str(path))
    assert str(info.value).startswith(f"{path}: ")


def test_dict_without_model_weights_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3), "epoch": 1}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project") as info:
        load_checkpoint(str(path))
    assert "'model'" in str(info.value) and str(path) in str(info.value)


def test_test_script_names_both_depths_when_they_disagree(tiny_data, tmp_path, capsys):
    path = tmp_path / "depth18.pt"
    save_tiny_checkpoint(path)
    with pytest.raises(SystemExit) as info:
        test_script.main(["--coco_path", tiny_data, "--checkpoint_path", str(path), "--set_name", "val",
                          "--depth", "50", "--device", "cpu", "--workers", "0", "--output_dir", str(tmp_path)])
    assert info.value.code == 2
    message = capsys.readouterr().err
    assert "--depth 50" in message and "ResNet-18" in message and str(path) in message


# ----- B: atomic checkpoint writes -------------------------------------------------------------
def test_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pt"
    atomic_torch_save({"model": {"weight": torch.arange(10.0)}, "epoch": 1}, str(path))
    before = path.read_bytes()

    def save_half_then_fail(obj, stream):
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        atomic_torch_save({"model": {"weight": torch.zeros(10)}, "epoch": 2}, str(path))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt"]
    assert load_checkpoint(str(path))["epoch"] == 1


# ----- C: faults during training ---------------------------------------------------------------
def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tiny_data, tmp_path, monkeypatch):
    straight = train(tiny_data, tmp_path, "straight")

    def interrupt(losses):
        raise KeyboardInterrupt

    fail_loss_at_step(monkeypatch, 2, interrupt)
    with pytest.raises(SystemExit) as info:
        train(tiny_data, tmp_path, "split")
    assert info.value.code == 130
    monkeypatch.undo()
    interrupted_path = tmp_path / "output" / "split" / "checkpoint_interrupted.pt"
    interrupted = load_checkpoint(str(interrupted_path))
    assert interrupted["epoch"] == 0 and interrupted["partial_epoch"]["steps"] == 1

    resumed = train(tiny_data, tmp_path, "split", "--resume", str(interrupted_path))
    assert not interrupted_path.exists()
    a = load_checkpoint(str(straight / "checkpoint_last.pt"))  # the training state; its weights are model_final.pt's
    b = load_checkpoint(str(resumed / "checkpoint_last.pt"))
    assert a["loss_history"] == b["loss_history"] and len(a["loss_history"]) == 1
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_non_finite_loss_stops_with_the_step_and_a_resumable_checkpoint(tiny_data, tmp_path, monkeypatch):
    def make_nan(losses):
        return dict(losses, loss=losses["loss"] * float("nan"))

    fail_loss_at_step(monkeypatch, 2, make_nan)
    with pytest.raises(SystemExit) as info:
        train(tiny_data, tmp_path, "nan")
    message = str(info.value)
    assert "non-finite loss" in message and "epoch 1" in message and "step 2" in message, message
    monkeypatch.undo()
    path = tmp_path / "output" / "nan" / "checkpoint_interrupted.pt"
    log = (tmp_path / "log" / "nan.log").read_text()
    assert "no epoch finished before it: start again with a lower --learning_rate" in log and "--resume" not in log
    state = load_checkpoint(str(path))
    assert state["epoch"] == 0 and state["partial_epoch"]["steps"] == 1
    resumed = train(tiny_data, tmp_path, "nan", "--resume", str(path))
    assert (resumed / "model_final.pt").exists() and not path.exists()


def test_non_finite_loss_advises_the_last_good_checkpoint_not_the_interrupted_one(tiny_data, tmp_path, monkeypatch):
    def make_nan(losses):
        return dict(losses, loss=losses["loss"] * float("nan"))

    fail_loss_at_step(monkeypatch, 5, make_nan)  # 3 steps an epoch: epoch 2, step 2
    with pytest.raises(SystemExit):
        train(tiny_data, tmp_path, "nan2", "--epochs", "2")
    run = tmp_path / "output" / "nan2"
    log = (tmp_path / "log" / "nan2.log").read_text()
    assert f"python train.py --resume {run / 'checkpoint_last.pt'} --learning_rate 1e-05" in log, log
    assert f"--resume {run / 'checkpoint_interrupted.pt'}" not in log
    assert load_checkpoint(str(run / "checkpoint_last.pt"))["epoch"] == 1


def corrupt_one_train_image(data):
    """Overwrite the first training image with bytes no decoder accepts; returns its file name."""
    with open(os.path.join(data, "train.json"), encoding="utf-8") as handle:
        file_name = json.load(handle)["images"][0]["file_name"]
    with open(os.path.join(data, "images", "train", file_name), "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return file_name


def test_image_that_fails_to_decode_is_reported_and_skipped(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    file_name = corrupt_one_train_image(data)
    run = train(data, tmp_path, "skip", "--skip_dataset_check")
    assert file_name in capsys.readouterr().err
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped_images"] == 1 and record["images"] == 7
    assert (run / "model_final.pt").exists()


def test_too_many_undecodable_images_stop_the_run_naming_the_limit(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    file_name = corrupt_one_train_image(data)
    with pytest.raises(SystemExit) as info:
        train(data, tmp_path, "strict", "--skip_dataset_check", "--max_skipped_images", "0")
    assert "limit --max_skipped_images 0" in str(info.value), info.value
    assert file_name in capsys.readouterr().err
    assert (tmp_path / "output" / "strict" / "checkpoint_interrupted.pt").exists()


def test_unwritable_output_folder_is_reported_before_training(tiny_data, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file, not a folder")
    output = blocker / "out"
    result = subprocess.run([sys.executable, "train.py", "--coco_path", tiny_data, "--output_path", str(output),
                             "--log_dir", str(tmp_path / "log"), "--run_name", "blocked", *TINY], cwd=ROOT,
                            capture_output=True, text=True, env=ONE_THREAD_ENV)
    assert result.returncode == 2, result.stderr
    assert f"error: --output_path {output}: {blocker} is a file, not a folder" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "log").exists()


def test_unusable_dataset_exits_2_with_the_report_before_creating_a_run(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    json_path = os.path.join(data, "train.json")
    with open(json_path, encoding="utf-8") as handle:
        coco = json.load(handle)
    annotation_id = coco["annotations"][0]["id"]
    coco["annotations"][0]["category_id"] = 999
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(coco, handle)
    with pytest.raises(SystemExit) as info:
        train(data, tmp_path, "broken")
    assert info.value.code == 2
    stderr = capsys.readouterr().err
    assert "train.json" in stderr and "999" in stderr and str(annotation_id) in stderr, stderr
    assert not (tmp_path / "output").exists() and not (tmp_path / "log").exists()


# ----- D: stop signals, killed workers, a full disk, undecodable validation images, no boxes -----
SEND_SIGTERM_AT_STEP_2 = """
import os, signal, sys
sys.path.insert(0, "tests")
from scripts import load_script
from retinanet.models.loss import RetinaNetLoss
from retinanet.training import setup as training_setup

class LossThatSendsSigterm(RetinaNetLoss):
    calls = 0

    def forward(self, outputs, targets):
        LossThatSendsSigterm.calls += 1
        if LossThatSendsSigterm.calls == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().forward(outputs, targets)

training_setup.RetinaNetLoss = LossThatSendsSigterm
load_script("train").main(sys.argv[1:])
"""


def test_sigterm_finishes_the_step_saves_and_exits_143(tiny_data, tmp_path):
    result = subprocess.run([sys.executable, "-c", SEND_SIGTERM_AT_STEP_2, "--coco_path", tiny_data, "--output_path",
                             str(tmp_path / "output"), "--log_dir", str(tmp_path / "log"), "--run_name", "term", *TINY],
                            cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD_ENV)
    assert result.returncode == 143, result.stdout + result.stderr
    assert "SIGTERM: stopping after this step" in result.stdout and "Traceback" not in result.stderr
    state = load_checkpoint(str(tmp_path / "output" / "term" / "checkpoint_interrupted.pt"))
    assert state["epoch"] == 0 and state["partial_epoch"]["steps"] == 2


def test_killed_data_loader_worker_saves_a_checkpoint_and_says_what_happened(tiny_data, tmp_path, monkeypatch):
    def kill_worker(losses):
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")

    fail_loss_at_step(monkeypatch, 2, kill_worker)
    with pytest.raises(SystemExit) as info:
        train(tiny_data, tmp_path, "oom")
    message = str(info.value)
    assert message.startswith("error: a data-loading worker was killed by signal Killed") and "\n" not in message
    assert "memory" in message and "--workers" in message and "--batch_size" in message, message
    state = load_checkpoint(str(tmp_path / "output" / "oom" / "checkpoint_interrupted.pt"))
    assert state["epoch"] == 0 and state["partial_epoch"]["steps"] == 1


def test_other_runtime_errors_are_not_swallowed(tiny_data, tmp_path, monkeypatch):
    def fail(losses):
        raise RuntimeError("DataLoader worker exploded in some other way")

    fail_loss_at_step(monkeypatch, 1, fail)
    with pytest.raises(RuntimeError, match="exploded in some other way"):
        train(tiny_data, tmp_path, "other_error")
    assert not (tmp_path / "output" / "other_error" / "checkpoint_interrupted.pt").exists()


@pytest.mark.parametrize("failing_save", [1, 2])
def test_full_disk_names_the_folder_and_the_size_and_keeps_the_previous_checkpoint(tiny_data, tmp_path, monkeypatch,
                                                                                   failing_save):
    real_save, calls = torch.save, {"count": 0}

    def save_until_the_disk_fills(obj, stream):
        calls["count"] += 1
        if calls["count"] == failing_save:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4352 vs 4240")
        real_save(obj, stream)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    with pytest.raises(SystemExit) as info:
        train(tiny_data, tmp_path, "full", "--epochs", "2")
    monkeypatch.undo()
    run = tmp_path / "output" / "full"
    message = str(info.value)
    assert message.startswith(f"error: could not save {run / 'checkpoint_last.pt'}: the disk is full"), message
    assert f"in {run};" in message and " MB" in message and "\n" not in message
    if failing_save == 1:
        assert "--resume" not in message and "no checkpoint of this run was saved" in message
        assert not (run / "checkpoint_last.pt").exists()
    else:
        assert f"--resume {run / 'checkpoint_last.pt'}" in message
        assert load_checkpoint(str(run / "checkpoint_last.pt"))["epoch"] == 1


def test_the_epochs_checkpoint_is_saved_before_evaluating(tiny_data, tmp_path, monkeypatch):
    def evaluation_fails(*args, **kwargs):
        raise MemoryError("evaluation ran out of memory")

    monkeypatch.setattr(trainer_module, "evaluate", evaluation_fails)
    with pytest.raises(MemoryError):
        train(tiny_data, tmp_path, "eval_fails", "--val_set", "val")
    assert load_checkpoint(str(tmp_path / "output" / "eval_fails" / "checkpoint_last.pt"))["epoch"] == 1


def damage_image_data(path):
    """Zero the middle of an image file: its header and end still look right (so the dataset check
    passes it), but it no longer decodes."""
    content = path.read_bytes()
    path.write_bytes(content[:64] + bytes(len(content) - 80) + content[-16:])


def test_undecodable_validation_image_is_skipped_and_counted_in_training_and_test(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    val = json.loads((tmp_path / "data" / "val.json").read_text())
    damage_image_data(tmp_path / "data" / "images" / "val" / val["images"][0]["file_name"])
    run = train(data, tmp_path, "val_skip", "--val_set", "val")
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["val_skipped_images"] == 1 and "coco" in record
    assert "1 val images skipped" in (tmp_path / "log" / "val_skip.log").read_text()
    capsys.readouterr()
    test_script.main(["--coco_path", data, "--checkpoint_path", str(run / "model_final.pt"), "--set_name", "val",
                      "--output_dir", str(tmp_path / "results"), "--workers", "0", "--device", "cpu"])
    assert "1 of 4 images" in capsys.readouterr().out
    assert json.loads((tmp_path / "results" / "val_metrics.json").read_text())["skipped_images"] == 1


@pytest.mark.parametrize("annotations", ["missing", "empty"])
def test_training_set_without_boxes_is_refused_naming_the_file(tmp_path, capsys, annotations):
    data = make_data(tmp_path / "data")
    coco = json.loads((tmp_path / "data" / "train.json").read_text())
    if annotations == "missing":
        del coco["annotations"]
    else:
        coco["annotations"] = []
    (tmp_path / "data" / "train.json").write_text(json.dumps(coco))
    with pytest.raises(SystemExit) as info:
        run_script(lambda: train(data, tmp_path, "no_boxes"))
    assert info.value.code == 2
    assert f"error: {os.path.join(data, 'train.json')}: no boxes to train on" in capsys.readouterr().err
    assert not (tmp_path / "output").exists() and not (tmp_path / "log").exists()


def test_validation_set_without_annotations_disables_evaluation_with_a_warning(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    coco = json.loads((tmp_path / "data" / "val.json").read_text())
    del coco["annotations"]
    (tmp_path / "data" / "val.json").write_text(json.dumps(coco))
    run = train(data, tmp_path, "no_val_boxes", "--val_set", "val", "--eval_every", "1")
    assert f"{os.path.join(data, 'val.json')} has no annotations: evaluation disabled" in capsys.readouterr().err
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "coco" not in record and (run / "model_final.pt").exists()
