"""A run never damages another: a live run's folder is locked, automatic names are claimed
atomically, and neither a new run nor a resumed one writes over a folder that holds another run."""
import json
import os
import subprocess
import sys

import pytest

from retinanet.data.synthetic import generate_dataset
from retinanet.runs import run_dir
from retinanet.runs.run_dir import RunDir, RunDirError
from scripts import TINY_TRAIN_FLAGS, load_script, train_run

train_script = load_script("train")
TINY = TINY_TRAIN_FLAGS + ["--epochs", "1", "--val_set", "", "--eval_every", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(module_tmp):
    root = module_tmp("data")
    generate_dataset(str(root), num_train=8, num_val=2, num_test=0, min_size=96, max_size=128, seed=3)
    return str(root)


def train(data, tmp_path, name, *extra):
    return train_run(data, tmp_path, name, *TINY, *extra)


def dead_pid():
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def test_a_second_live_run_on_a_folder_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    first = RunDir(str(tmp_path / "output"), str(tmp_path / "log"), "shared")
    first.claim()
    try:
        with pytest.raises(RunDirError) as info:
            RunDir(str(tmp_path / "output"), str(tmp_path / "log"), "shared").claim()
        assert str(info.value).startswith(f"{first.path} is in use by another run") and str(os.getpid()) in str(info.value)
    finally:
        first.release()
    (tmp_path / "output" / "shared" / ".lock").write_text(f"{dead_pid()}\n")  # left by a killed run
    second = RunDir(str(tmp_path / "output"), str(tmp_path / "log"), "shared")
    second.claim()
    assert (tmp_path / "output" / "shared" / ".lock").read_text().strip() == str(os.getpid())
    second.release()


def test_train_refuses_a_folder_that_a_live_run_holds_without_writing(tiny_data, tmp_path):
    live = RunDir(str(tmp_path / "output"), str(tmp_path / "log"), "busy")
    live.claim()
    try:
        with pytest.raises(SystemExit) as info:
            train(tiny_data, tmp_path, "busy")
    finally:
        live.release()
    assert str(info.value).startswith(f"error: {live.path} is in use by another run"), info.value
    assert os.listdir(live.path) == []
    assert os.listdir(tmp_path / "log") == []  # the live run's log lock, removed as it ended; no log written


def test_automatic_run_names_are_claimed_atomically(tmp_path, monkeypatch):
    output, log = str(tmp_path / "output"), str(tmp_path / "log")
    first = run_dir.next_run_name(output, log, 18, 3, create=True)
    second = run_dir.next_run_name(output, log, 18, 3, create=True)
    assert (first, second) == ("train_depth18_epochs3_no1", "train_depth18_epochs3_no2")
    # Another process creates no3 between the listing and the mkdir: the next number is taken.
    real_listdir = os.listdir
    monkeypatch.setattr(run_dir.os, "listdir", lambda folder: [] if folder == output else real_listdir(folder))
    os.mkdir(os.path.join(output, "train_depth18_epochs3_no3"))
    assert run_dir.next_run_name(output, log, 18, 3, create=True) == "train_depth18_epochs3_no4"
    assert sorted(real_listdir(output)) == [f"train_depth18_epochs3_no{n}" for n in (1, 2, 3, 4)]


def test_a_new_run_never_takes_over_an_interrupted_runs_folder(tiny_data, tmp_path):
    folder = tmp_path / "output" / "stopped"
    folder.mkdir(parents=True)
    (folder / "checkpoint_interrupted.pt").write_bytes(b"the only copy of an interrupted run")
    (folder / "config.json").write_text('{"run_name": "stopped"}')
    with pytest.raises(SystemExit) as info:
        train(tiny_data, tmp_path, "stopped")
    message = str(info.value)
    assert f"{folder} already holds a run" in message and "pick another --run_name" in message
    assert f"--resume {folder / 'checkpoint_interrupted.pt'}" in message
    assert (folder / "checkpoint_interrupted.pt").read_bytes() == b"the only copy of an interrupted run"
    assert (folder / "config.json").read_text() == '{"run_name": "stopped"}'
    assert sorted(os.listdir(folder)) == ["checkpoint_interrupted.pt", "config.json"]


def test_resume_into_another_existing_run_is_refused_without_touching_it(tiny_data, tmp_path):
    source = train(tiny_data, tmp_path, "source")
    other = train(tiny_data, tmp_path, "other")
    before = {name: (other / name).read_bytes() for name in ("config.json", "metrics.jsonl", "checkpoint_last.pt")}
    with pytest.raises(SystemExit) as info:
        train_script.main(["--resume", str(source / "checkpoint_last.pt"), "--run_name", "other", "--epochs", "2"])
    assert f"{other} already holds another run (other)" in str(info.value), info.value
    assert {name: (other / name).read_bytes() for name in before} == before
    # A name that is free gives a new run that starts from the checkpoint.
    train_script.main(["--resume", str(source / "checkpoint_last.pt"), "--run_name", "branch", "--epochs", "2"])
    records = [json.loads(line) for line in (tmp_path / "output" / "branch" / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [2]


def test_a_killed_saves_temporaries_are_removed_when_the_run_continues(tmp_path):
    run = RunDir(str(tmp_path / "output"), str(tmp_path / "log"), "killed")
    os.makedirs(run.path)
    (tmp_path / "output" / "killed" / ".checkpoint_last.pt.0badf00d.tmp").write_bytes(b"0" * 5000)
    (tmp_path / "output" / "killed" / ".config.json.12345678.tmp").write_text("{")
    (tmp_path / "output" / "killed" / "notes.tmp").write_text("the user's own file")
    run.claim(resuming=True)
    try:
        assert run.stale_temporaries == [(".checkpoint_last.pt.0badf00d.tmp", 5000), (".config.json.12345678.tmp", 1)]
        assert sorted(os.listdir(run.path)) == [".lock", "notes.tmp"]
    finally:
        run.release()


def test_two_live_runs_of_one_name_cannot_share_a_log(tmp_path):
    first = RunDir(str(tmp_path / "a"), str(tmp_path / "log"), "same")
    first.claim()
    try:
        with pytest.raises(RunDirError) as info:
            RunDir(str(tmp_path / "b"), str(tmp_path / "log"), "same").claim()
        assert str(info.value).startswith(f"{tmp_path / 'log' / 'same.log'} is being written by another run of the "
                                          f"name same that is still going (pid {os.getpid()})"), info.value
        assert not (tmp_path / "b" / "same").exists()  # the refused claim left no folder behind
    finally:
        first.release()
    second = RunDir(str(tmp_path / "b"), str(tmp_path / "log"), "same")
    second.claim()
    second.release()
    assert os.listdir(tmp_path / "log") == []
