import json
import os

import pytest

from retinanet.runs import run_dir
from retinanet.optim import LearningRateFactor


def test_run_names_follow_the_convention_and_take_the_next_free_number(tmp_path):
    output, log = tmp_path / "output", tmp_path / "log"
    assert run_dir.next_run_name(str(output), str(log), 50, 20) == "train_depth50_epochs20_no1"
    (output / "train_depth50_epochs20_no1").mkdir(parents=True)
    log.mkdir()
    (log / "train_depth50_epochs20_no3.log").write_text("")
    (output / "train_depth18_epochs20_no7").mkdir()  # another configuration does not count
    assert run_dir.next_run_name(str(output), str(log), 50, 20) == "train_depth50_epochs20_no4"
    assert run_dir.next_run_name(str(output), str(log), 18, 20) == "train_depth18_epochs20_no8"
    (output / "demo_train_depth18_epochs20_no2").mkdir()
    assert run_dir.next_run_name(str(output), str(log), 18, 20, prefix="demo_") == "demo_train_depth18_epochs20_no3"


def test_run_log_writes_console_lines_to_the_file(tmp_path, capsys):
    log = run_dir.RunLog(str(tmp_path / "log" / "run.log"))
    log("epoch 1", "loss", 0.5)
    log.close()
    assert capsys.readouterr().out == "epoch 1 loss 0.5\n"
    assert (tmp_path / "log" / "run.log").read_text() == "epoch 1 loss 0.5\n"


def test_metrics_truncation_drops_epochs_a_resumed_run_redoes(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    for epoch in (1, 2, 3):
        run_dir.append_metrics(path, {"epoch": epoch, "loss": 1.0 / epoch})
    run_dir.truncate_metrics(path, 2)
    assert [record["epoch"] for record in run_dir.read_metrics(path)] == [1, 2]
    with open(path, "a") as handle:
        handle.write('{"epoch": 3, "lo')  # a crash mid-write
    assert [record["epoch"] for record in run_dir.read_metrics(path)] == [1, 2]


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


def test_run_dir_owns_the_run_files(tmp_path):
    run = run_dir.RunDir(str(tmp_path / "output"), str(tmp_path / "log"), "exp")
    assert not run.holds_a_run() and run.read_metrics() == []
    run.check_writable()
    assert os.listdir(run.path) == []  # the probe file is gone
    run.write_config({"depth": 50, "milestones": [6, 8]})
    for epoch in (1, 2, 3):
        run.append_metrics({"epoch": epoch, "loss": 1.0 / epoch})
    assert run.holds_a_run() and [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]
    run.truncate_metrics(2)
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    run.write_summary({"best_metric": 0.5})
    run.plot_curves()
    path = run.save_checkpoint({"epoch": 2}, "checkpoint_last.pt")
    assert path == os.path.join(run.path, "checkpoint_last.pt")
    assert sorted(os.listdir(run.path)) == ["checkpoint_last.pt", "config.json", "curves.png", "metrics.jsonl",
                                            "summary.json"]
    assert json.loads(open(run.config_path).read()) == {"depth": 50, "milestones": [6, 8]}
    run.remove("checkpoint_last.pt")
    run.remove("checkpoint_last.pt")  # removing what is not there is not an error
    assert not os.path.exists(path)
