"""Stops as schedulers send them, with real loader worker processes: a signal to the whole process
group, a second signal while a checkpoint is written, a stop during evaluation. Each interrupted run,
resumed, must end with the weights of the uninterrupted one, bit for bit (float32)."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from retinanet.data.synthetic import generate_dataset
from retinanet.training import trainer as trainer_module
from retinanet.models.checkpoint import load_checkpoint
from retinanet.runs.run_dir import RunDir, RunLog
from scripts import ROOT, load_script

train_script = load_script("train")

FLAGS = ["--depth", "18", "--fpn_channels", "64", "--min_side", "96", "--max_side", "128", "--batch_size", "2",
         "--epochs", "2", "--amp", "off", "--pretrained", "none", "--workers", "2"]


@pytest.fixture(scope="module")
def data(module_tmp):
    root = module_tmp("data")
    generate_dataset(str(root), num_train=12, num_val=4, num_test=1, min_size=96, max_size=128, seed=21)
    return str(root)


@pytest.fixture(scope="module")
def straight(data, module_tmp):
    """The uninterrupted run (2 epochs of 6 steps, no evaluation) and its final weights."""
    out = module_tmp("straight")
    train_script.main(["--coco_path", data, "--output_path", str(out / "output"), "--log_dir", str(out / "log"),
                       "--run_name", "straight", "--val_set", "", "--print_every", "0", *FLAGS])
    return load_checkpoint(str(out / "output" / "straight" / "checkpoint_last.pt"))


def _argv(data, tmp_path, *extra):
    return ["--coco_path", data, "--output_path", str(tmp_path / "output"), "--log_dir", str(tmp_path / "log"),
            "--run_name", "run", *FLAGS, *extra]


def _assert_same_training(a, b):
    assert a["epoch"] == b["epoch"] == 2
    assert a["loss_history"] == b["loss_history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_sigterm_to_the_process_group_mid_epoch_resumes_exactly(data, straight, tmp_path):
    # What Slurm's scancel, docker stop and Kubernetes do: SIGTERM to every process of the group,
    # the loader's workers included, in the middle of the second epoch.
    process = subprocess.Popen([sys.executable, "train.py", *_argv(data, tmp_path, "--val_set", "",
                                                                   "--print_every", "1")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("epoch 2 step 2/"):
                os.killpg(process.pid, signal.SIGTERM)
                break
        output = "".join(lines) + process.stdout.read()
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert code == 128 + signal.SIGTERM, output
    assert "Traceback" not in output and "killed by signal" not in output, output
    interrupted = tmp_path / "output" / "run" / "checkpoint_interrupted.pt"
    state = load_checkpoint(str(interrupted))
    assert state["epoch"] == 1 and 2 <= state["partial_epoch"]["steps"] < 6
    train_script.main(["--resume", str(interrupted), "--print_every", "0"])
    log = (tmp_path / "log" / "run.log").read_text()
    steps = state["partial_epoch"]["steps"]
    assert f"{steps} steps into epoch 2" in log
    _assert_same_training(straight, load_checkpoint(str(tmp_path / "output" / "run" / "checkpoint_last.pt")))


def test_a_second_signal_while_a_checkpoint_is_written_waits_for_it(data, straight, tmp_path, monkeypatch, capsys):
    real_save = RunDir.save_checkpoint
    sent = []

    def save_under_two_signals(self, state, name):
        if name == "checkpoint_last.pt" and not sent:
            sent.append(name)
            os.kill(os.getpid(), signal.SIGTERM)  # the first: stop after this step
            os.kill(os.getpid(), signal.SIGTERM)  # the second, during the write
        return real_save(self, state, name)

    monkeypatch.setattr(RunDir, "save_checkpoint", save_under_two_signals)
    with pytest.raises(SystemExit) as info:
        train_script.main(_argv(data, tmp_path, "--val_set", "", "--print_every", "0"))
    assert info.value.code == 128 + signal.SIGTERM
    printed = capsys.readouterr().out
    assert "SIGTERM: a checkpoint is being written; stopping as soon as it is complete" in printed
    assert "disk is full" not in printed
    run = tmp_path / "output" / "run"
    last = load_checkpoint(str(run / "checkpoint_last.pt"))
    assert last["epoch"] == 1 and last["partial_epoch"] is None
    assert not (run / "checkpoint_interrupted.pt").exists()  # nothing after it to save: no second copy
    assert f"continue with: python train.py --resume {run / 'checkpoint_last.pt'}" in printed
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    monkeypatch.undo()
    train_script.main(["--resume", str(run / "checkpoint_last.pt"), "--print_every", "0"])
    _assert_same_training(straight, load_checkpoint(str(run / "checkpoint_last.pt")))


def test_a_stop_during_evaluation_keeps_the_epoch_and_its_record(data, straight, tmp_path, monkeypatch):
    real_detect = trainer_module.evaluate.__globals__["detect_batch"]
    calls = []

    def detect_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_detect(*args, **kwargs)

    monkeypatch.setitem(trainer_module.evaluate.__globals__, "detect_batch", detect_then_signal)
    started = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        train_script.main(_argv(data, tmp_path, "--print_every", "0", "--eval_batch_size", "1"))
    assert info.value.code == 128 + signal.SIGTERM
    assert len(calls) == 1  # evaluation stopped at the next batch, not after the whole set
    run = tmp_path / "output" / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r.get("evaluation")) for r in records] == [(1, "interrupted")]
    assert load_checkpoint(str(run / "checkpoint_last.pt"))["epoch"] == 1
    monkeypatch.undo()
    assert time.perf_counter() - started < 120
    train_script.main(["--resume", str(run / "checkpoint_last.pt"), "--print_every", "0"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and "coco" in records[1]
    _assert_same_training(straight, load_checkpoint(str(run / "checkpoint_last.pt")))


def test_a_run_with_worker_processes_exits_when_it_is_done(data, tmp_path):
    # The workers ignore SIGTERM, which multiprocessing's exit handler sends them: they must be shut
    # down before it, or the finished program waits for them for ever.
    process = subprocess.Popen([sys.executable, "train.py", *_argv(data, tmp_path, "--epochs", "1", "--val_set", "",
                                                                   "--print_every", "0")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, finished_at = "", None
        for line in process.stdout:
            output += line
            if line.startswith("finished in"):
                finished_at = time.perf_counter()
        code = process.wait(timeout=60)
        lingered = time.perf_counter() - finished_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert code == 0 and finished_at is not None, output
    assert lingered < 15, f"the process took {lingered:.0f} s to exit after finishing"


def test_more_workers_than_the_machine_can_run_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train_script.parse_args(["--coco_path", str(tmp_path), "--workers", "100000"])
    assert info.value.code == 2
    message = capsys.readouterr().err
    assert "--workers" in message and "100000 worker processes is more than this machine can run: at most" in message
    assert "per core with" in message


def test_a_loss_that_explodes_stops_the_run_with_the_rates_advice(data, tmp_path):
    # Rate 10 without warm-up: the loss grows by orders of magnitude and stays finite for a while.
    with pytest.raises(SystemExit) as info:
        train_script.main(_argv(data, tmp_path, "--learning_rate", "10", "--warmup_iters", "0", "--val_set", "",
                                "--print_every", "0", "--workers", "0", "--optimizer", "sgd", "--grad_clip", "0"))
    message = str(info.value.code)
    assert message.startswith("error: the loss exploded at epoch 1, step "), message
    assert "Try a lower --learning_rate" in message
    run = tmp_path / "output" / "run"
    assert not (run / "model_final.pt").exists() and not (run / "summary.json").exists()
    assert (run / "checkpoint_interrupted.pt").exists()


def test_a_finished_run_says_so_and_wall_time_adds_up_over_segments(data, tmp_path, capsys):
    argv = _argv(data, tmp_path, "--epochs", "1", "--val_set", "", "--print_every", "0", "--workers", "0")
    train_script.main(argv)
    run = tmp_path / "output" / "run"
    first = json.loads((run / "summary.json").read_text())
    before = (run / "summary.json").read_bytes()
    with pytest.raises(SystemExit) as info:
        train_script.main(["--resume", str(run / "checkpoint_last.pt")])
    assert "the run is finished (1 of 1 epochs" in str(info.value.code) and "--epochs 2" in str(info.value.code)
    with pytest.raises(SystemExit, match="a checkpoint for use .* resume from checkpoint_last.pt"):
        train_script.main(["--resume", str(run / "model_final.pt")])
    assert (run / "summary.json").read_bytes() == before  # nothing rewritten
    train_script.main(["--resume", str(run / "checkpoint_last.pt"), "--epochs", "2"])
    second = json.loads((run / "summary.json").read_text())
    saved = load_checkpoint(str(run / "checkpoint_last.pt"))
    assert second["wall_seconds"] > first["wall_seconds"] and saved["wall_seconds"] == pytest.approx(
        second["wall_seconds"], abs=1.0)


def test_a_resume_on_a_changed_training_set_is_refused_unless_allowed(data, tmp_path, capsys):
    own = tmp_path / "data"
    shutil.copytree(data, own)
    argv = ["--coco_path", str(own), "--output_path", str(tmp_path / "output"), "--log_dir", str(tmp_path / "log"),
            "--run_name", "run", *FLAGS, "--epochs", "1", "--val_set", "", "--print_every", "0", "--workers", "0"]
    train_script.main(argv)
    run = tmp_path / "output" / "run"
    assert json.loads((run / "config.json").read_text())["train_data"]["images"] == 12
    annotations = json.loads((own / "train.json").read_text())  # the same classes, half the images
    kept = {image["id"] for image in annotations["images"][:6]}
    annotations["images"] = [image for image in annotations["images"] if image["id"] in kept]
    annotations["annotations"] = [box for box in annotations["annotations"] if box["image_id"] in kept]
    (own / "train.json").write_text(json.dumps(annotations))
    config_before = (run / "config.json").read_bytes()
    with pytest.raises(SystemExit) as info:
        train_script.main(["--resume", str(run / "checkpoint_last.pt"), "--epochs", "2"])
    message = str(info.value.code)
    assert "the training set changed since its checkpoint" in message and "--allow_changed_data" in message
    assert "6 images" in message and "12 images" in message and str(own / "train.json") in message
    assert (run / "config.json").read_bytes() == config_before  # nothing rewritten
    train_script.main(["--resume", str(run / "checkpoint_last.pt"), "--epochs", "2", "--allow_changed_data"])
    assert "the training set changed since the checkpoint (--allow_changed_data)" in capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["num_train_images"] == 6 and config["allow_changed_data"] is True
    [change] = config["train_data_changes"]
    assert (change["after_epoch"], change["before"]["images"], change["after"]["images"]) == (1, 12, 6)
    assert change["before"]["sha256"] != change["after"]["sha256"]
    assert load_checkpoint(str(run / "checkpoint_last.pt"))["train_data_changes"] == [change]


class _FullDisk:
    """A log file on a disk that has just filled up."""

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device")  # its buffered line cannot be flushed either


def test_a_log_that_cannot_be_written_mid_epoch_saves_the_steps_and_resumes_exactly(data, straight, tmp_path,
                                                                                     monkeypatch, capsys):
    real_call = RunLog.__call__

    def fill_the_disk_at_step_3_of_epoch_2(log, *parts, **kwargs):
        if " ".join(map(str, parts)).startswith("epoch 2 step 3/"):
            log._file = _FullDisk()
        return real_call(log, *parts, **kwargs)

    monkeypatch.setattr(RunLog, "__call__", fill_the_disk_at_step_3_of_epoch_2)
    with pytest.raises(SystemExit) as info:
        train_script.main(_argv(data, tmp_path, "--val_set", "", "--print_every", "1"))
    monkeypatch.undo()
    log_path = tmp_path / "log" / "run.log"
    assert str(info.value.code) == f"error: could not write {log_path}: No space left on device" + \
        str(info.value.code).split("No space left on device", 1)[1]
    assert "\n" not in str(info.value.code) and " MB free there" in str(info.value.code)
    run = tmp_path / "output" / "run"
    saved = load_checkpoint(str(run / "checkpoint_interrupted.pt"))
    assert (saved["epoch"], saved["partial_epoch"]["steps"]) == (1, 3)
    assert f"continue with: python train.py --resume {run / 'checkpoint_interrupted.pt'}" in capsys.readouterr().out
    train_script.main(["--resume", str(run / "checkpoint_interrupted.pt")])
    _assert_same_training(load_checkpoint(str(run / "checkpoint_last.pt")), straight)


def test_a_plot_that_cannot_be_written_keeps_the_epochs_checkpoint(data, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def disk_full(figure, stream, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(SystemExit) as info:
        train_script.main(_argv(data, tmp_path, "--val_set", "", "--print_every", "0", "--workers", "0"))
    monkeypatch.undo()
    run = tmp_path / "output" / "run"
    assert str(info.value.code).startswith(f"error: could not write {run / 'curves.png'}: No space left on device")
    assert load_checkpoint(str(run / "checkpoint_last.pt"))["epoch"] == 1
    assert not (run / "checkpoint_interrupted.pt").exists()  # nothing trained after that checkpoint
    assert [name for name in os.listdir(run) if name.endswith(".tmp")] == []
    train_script.main(["--resume", str(run / "checkpoint_last.pt")])
    assert [record["epoch"] for record in RunDir(str(tmp_path / "output"), "", "run").read_metrics()] == [1, 2]
    assert (run / "curves.png").stat().st_size > 0
