import json

import pytest

from retinanet.runs import run_dir as experiment
from retinanet.optim import LearningRateFactor


def test_run_names_follow_the_convention_and_take_the_next_free_number(tmp_path):
    output, log = tmp_path / "output", tmp_path / "log"
    assert experiment.next_run_name(str(output), str(log), 50, 20) == "train_depth50_epochs20_no1"
    (output / "train_depth50_epochs20_no1").mkdir(parents=True)
    log.mkdir()
    (log / "train_depth50_epochs20_no3.log").write_text("")
    (output / "train_depth18_epochs20_no7").mkdir()  # another configuration does not count
    assert experiment.next_run_name(str(output), str(log), 50, 20) == "train_depth50_epochs20_no4"
    assert experiment.next_run_name(str(output), str(log), 18, 20) == "train_depth18_epochs20_no8"
    (output / "demo_train_depth18_epochs20_no2").mkdir()
    assert experiment.next_run_name(str(output), str(log), 18, 20, prefix="demo_") == "demo_train_depth18_epochs20_no3"


def test_run_log_writes_console_lines_to_the_file(tmp_path, capsys):
    log = experiment.RunLog(str(tmp_path / "log" / "run.log"))
    log("epoch 1", "loss", 0.5)
    log.close()
    assert capsys.readouterr().out == "epoch 1 loss 0.5\n"
    assert (tmp_path / "log" / "run.log").read_text() == "epoch 1 loss 0.5\n"


def test_metrics_truncation_drops_epochs_a_resumed_run_redoes(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    for epoch in (1, 2, 3):
        experiment.append_metrics(path, {"epoch": epoch, "loss": 1.0 / epoch})
    experiment.truncate_metrics(path, 2)
    assert [record["epoch"] for record in experiment.read_metrics(path)] == [1, 2]
    with open(path, "a") as handle:
        handle.write('{"epoch": 3, "lo')  # a crash mid-write
    assert [record["epoch"] for record in experiment.read_metrics(path)] == [1, 2]


@pytest.mark.parametrize("iteration, expected", [(0, 0.001), (50, 0.5005), (100, 1.0), (399, 1.0), (400, 0.1),
                                                 (799, 0.1), (800, 0.01)])
def test_multistep_schedule_with_warm_up(iteration, expected):
    factor = LearningRateFactor(iters_per_epoch=100, epochs=10, schedule="multistep", milestones=[4, 8],
                                lr_gamma=0.1, warmup_iters=100, warmup_factor=0.001)
    assert factor(iteration) == pytest.approx(expected)


def test_cosine_schedule_decays_to_zero():
    factor = LearningRateFactor(iters_per_epoch=10, epochs=10, schedule="cosine")
    assert factor(0) == pytest.approx(1.0)
    assert factor(50) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)


def test_write_json_is_atomic_and_readable(tmp_path):
    path = str(tmp_path / "config.json")
    experiment.write_json(path, {"depth": 50, "milestones": [6, 8]})
    assert json.loads(open(path).read()) == {"depth": 50, "milestones": [6, 8]}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
