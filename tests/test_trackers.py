"""steps.csv on every run, --logger tensorboard read back with TensorBoard's own reader, and the
curves by step."""
import json
import math

import pytest
from PIL import Image

from retinanet.data.synthetic import generate_dataset
from retinanet.runs import trackers
from retinanet.runs.trackers import MissingTrackerError, check_loggers, read_steps
from retinanet.training.setup import TrainingError
from scripts import TINY_TRAIN_FLAGS, load_script, single_thread, train_run

train_script = load_script("train")


@pytest.fixture(scope="module")
def data(module_tmp):
    root = module_tmp("tracked")
    generate_dataset(str(root), num_train=10, num_val=3, num_test=1, min_size=96, max_size=128, seed=11)
    return str(root)


def _train(data, tmp_path, name, *extra):
    with single_thread():
        return train_run(data, tmp_path, name, *TINY_TRAIN_FLAGS, "--warmup_iters", "4", *extra)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_events_hold_steps_epochs_evaluations_the_picture_and_the_config(data, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="tensorboard is not installed (pip install tensorboard)")
    run = _train(data, tmp_path, "tb", "--epochs", "2", "--logger", "tensorboard")
    steps = read_steps(str(run / "steps.csv"))
    epochs = _metrics(run)
    per_epoch = len(steps) // 2
    assert per_epoch >= 2 and [row["iteration"] for row in steps] == list(range(1, 2 * per_epoch + 1))
    # The rows are the steps the epoch records average: the same mean loss, the same last rate.
    for record in epochs:
        rows = [row for row in steps if row["epoch"] == record["epoch"]]
        assert math.isclose(sum(row["loss"] for row in rows) / len(rows), record["loss"], rel_tol=1e-9)
        assert rows[-1]["lr"] == record["lr"]
    assert steps[0]["lr"] < steps[4]["lr"]  # the warm-up is in the rate column

    reader = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    tags = reader.Tags()
    assert {"train/loss", "train/cls_loss", "train/box_loss", "train/lr", "epoch/loss", "val/AP",
            "val/AP50"} <= set(tags["scalars"])
    loss_events = reader.Scalars("train/loss")
    assert [event.step for event in loss_events] == [row["iteration"] for row in steps]
    assert all(math.isclose(event.value, row["loss"], rel_tol=1e-6) for event, row in zip(loss_events, steps))
    assert [(event.step, round(event.value, 6)) for event in reader.Scalars("val/AP")] == [
        (record["epoch"], round(record["coco"]["AP"], 6)) for record in epochs]
    assert "val/predictions" in tags["images"] and len(reader.Images("val/predictions")) == 2
    config_tags = [tag for tag in tags["tensors"] if tag.startswith("config")]
    assert config_tags, tags
    text = reader.Tensors(config_tags[0])[0].tensor_proto.string_val[0].decode()
    assert '"logger": [' in text and '"tensorboard"' in text
    # The curves gain the step panel: three panels side by side.
    with Image.open(run / "curves.png") as picture:
        assert picture.size == (1350, 350)


def test_a_resumed_run_continues_steps_and_events_without_duplicates(data, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    common = ["--val_set", "", "--logger", "tensorboard"]
    run = _train(data, tmp_path, "resumed", "--epochs", "1", *common)
    first = read_steps(str(run / "steps.csv"))
    # Steps written after the checkpoint, as by a run killed before its next save: dropped on resume.
    with open(run / "steps.csv", "a") as stream:
        stream.write(f"{len(first) + 1},2,1,99.0,50.0,49.0,0.01,1.0\n")
    _train(data, tmp_path, "resumed", "--epochs", "2", "--resume", str(run / "checkpoint_last.pt"), *common)
    steps = read_steps(str(run / "steps.csv"))
    assert [row["iteration"] for row in steps] == list(range(1, 2 * len(first) + 1))
    assert steps[:len(first)] == first and 99.0 not in [row["loss"] for row in steps]
    reader = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    reader.Reload()
    assert [event.step for event in reader.Scalars("train/loss")] == [row["iteration"] for row in steps]
    assert [event.step for event in reader.Scalars("epoch/loss")] == [1, 2]


def test_every_run_writes_steps_csv_and_no_tracker_folder_unasked(data, tmp_path):
    run = _train(data, tmp_path, "plain", "--epochs", "1", "--val_set", "")
    steps = read_steps(str(run / "steps.csv"))
    assert steps and all(math.isfinite(row["loss"]) and row["lr"] > 0 for row in steps)
    assert not (run / "tensorboard").exists()


def test_a_tracker_that_is_not_installed_is_a_one_line_error_before_the_run(data, tmp_path, monkeypatch):
    real = trackers.importlib.import_module

    def without_tensorboard(name, *args):
        if "tensorboard" in name:
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)
    monkeypatch.setattr(trackers.importlib, "import_module", without_tensorboard)
    with pytest.raises(MissingTrackerError, match=r"--logger tensorboard needs the tensorboard package.*"
                                                  r"pip install tensorboard"):
        check_loggers(["tensorboard"])
    with pytest.raises(TrainingError, match="pip install tensorboard"):
        from retinanet.training.trainer import Trainer
        Trainer(train_script.parse_args(["--coco_path", data, "--output_path", str(tmp_path / "output"),
                                         "--log_dir", str(tmp_path / "log"), "--logger", "tensorboard",
                                         *TINY_TRAIN_FLAGS]))
    assert not (tmp_path / "output").exists()
    with pytest.raises(SystemExit):
        train_script.parse_args(["--coco_path", data, "--logger", "wandb"])


def test_mlflow_receives_the_flags_the_scalars_and_the_picture(data, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local store without a database
    run = _train(data, tmp_path, "tracked", "--epochs", "2", "--logger", "mlflow")
    client = mlflow.tracking.MlflowClient()
    [found] = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert found.info.run_name == "tracked" and found.info.status == "FINISHED"
    assert found.data.params["depth"] == "18" and found.data.params["logger"] == "['mlflow']"
    steps = read_steps(str(run / "steps.csv"))
    history = client.get_metric_history(found.info.run_id, "train_loss")
    assert [(point.step, point.value) for point in history] == [(row["iteration"], row["loss"]) for row in steps]
    ap = client.get_metric_history(found.info.run_id, "val_AP")
    assert [(point.step, round(point.value, 6)) for point in ap] == [
        (record["epoch"], round(record["coco"]["AP"], 6)) for record in _metrics(run)]
    pictures = [entry.path for entry in client.list_artifacts(found.info.run_id, "predictions/epoch2")]
    assert pictures and pictures[0].endswith(".png")


def test_a_tracker_that_cannot_start_is_a_one_line_error_and_the_run_folder_is_released(data, tmp_path,
                                                                                       monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setattr(trackers.MlflowTracker, "__init__", lambda *args: (_ for _ in ()).throw(
        RuntimeError("the tracking server refused the run")))
    with pytest.raises(SystemExit, match="^error: --logger mlflow could not start: RuntimeError: the tracking server"):
        _train(data, tmp_path, "refused", "--epochs", "1", "--logger", "mlflow")
    # The folder is not held: the same run starts at once without the tracker.
    run = _train(data, tmp_path, "refused", "--epochs", "1", "--val_set", "")
    assert read_steps(str(run / "steps.csv"))
