"""Run tables, mean/std over seeds, curve PNGs and the seed sweep, on run folders written by hand."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from retinanet.runs import tables as summary
from retinanet.experiments import sweep
from retinanet.runs.plots import plot_run_curves, plot_runs_overlay

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BASE_CONFIG = {
    "depth": 18, "optimizer": "adam", "learning_rate": 1e-4, "batch_size": 2, "drop_last": False,
    "prior": 0.01, "alpha": 0.25, "gamma": 2.0, "seed": 1, "epochs": 3, "milestones": [2], "lr_schedule": "multistep",
    "min_side": 256, "max_side": 384, "norm": "gn", "head_norm": "gn", "fpn_channels": 64, "device": "auto",
    "world_size": 1, "class_names": ["circle", "square"],
}


def coco(ap, ap50, ap75=0.2, aps=-1.0, apm=0.3, apl=0.4):
    stats = dict.fromkeys(("AR1", "AR10", "AR100", "ARs", "ARm", "ARl"), 0.5)
    return dict(stats, AP=ap, AP50=ap50, AP75=ap75, APs=aps, APm=apm, APl=apl)


def epoch_record(epoch, loss, seconds=60.0, evaluation=None):
    record = {"epoch": epoch, "loss": loss, "cls_loss": loss * 0.6, "box_loss": loss * 0.4, "lr": 1e-4,
              "seconds": seconds, "images_per_second": 10.0, "images": 600, "skipped_images": 0}
    if evaluation is not None:
        record["coco"] = evaluation
    return record


def write_run(output, name, records, config=None, summary_json=None, extra_lines=()):
    run_dir = output / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(dict(BASE_CONFIG, run_name=name, **(config or {}))))
    lines = [json.dumps(record) for record in records] + list(extra_lines)
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if summary_json is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary_json))
    return str(run_dir)


def finished_run(output, name="train_depth18_epochs3_no1"):
    records = [epoch_record(1, 1.5), epoch_record(2, 1.0, evaluation=coco(0.30, 0.55)),
               epoch_record(3, 0.8, evaluation=coco(0.25, 0.60))]
    summary_json = {"best_metric": 0.30, "best_epoch": 2, "wall_seconds": 754.2, "final_loss": 0.8,
                    "epoch_loss_list": [1.5, 1.0, 0.8], "final_coco": coco(0.25, 0.60)}
    return write_run(output, name, records, summary_json=summary_json)


def table_cells(table, row_index):
    """The cells of one body row of a Markdown table, keyed by header."""
    lines = table.splitlines()
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = [cell.strip() for cell in lines[2 + row_index].strip("|").split("|")]
    return dict(zip(headers, cells))


# ----- per-run table -----------------------------------------------------------------------
def test_finished_run_row_uses_the_best_epoch_and_the_last_loss(tmp_path):
    run_dir = finished_run(tmp_path)
    run = summary.load_run(run_dir)
    assert run["status"] == summary.FINISHED
    (row,) = summary.summary_rows([run])
    assert row["best_epoch"] == 2 and row["AP"] == 0.30 and row["AP50"] == 0.55  # epoch 3 has the higher AP50
    assert row["final_loss"] == 0.8 and row["APs"] is None
    cells = table_cells(summary.format_markdown_table([row]), 0)
    assert cells == {
        "run": "train_depth18_epochs3_no1", "depth": "18", "optimizer": "adam", "lr": "0.0001", "batch": "2",
        "drop_last": "no", "prior": "0.01", "alpha": "0.25", "gamma": "2", "seed": "1", "epochs": "3/3",
        "final loss": "0.8000", "AP": "0.300", "AP50": "0.550", "AP75": "0.200", "APs": "-", "APm": "0.300",
        "APl": "0.400", "best epoch": "2", "wall time": "12m34s",
    }


def test_unfinished_run_sums_epoch_seconds_and_shows_dashes(tmp_path):
    run_dir = write_run(tmp_path, "crashed", [epoch_record(1, 2.0, 30.0), epoch_record(2, 1.7, 45.6)],
                        config={"epochs": 10})
    run = summary.load_run(run_dir)
    assert run["status"] == summary.UNFINISHED and run["summary"] is None
    cells = table_cells(summary.format_markdown_table(summary.summary_rows([run])), 0)
    assert cells["epochs"] == "2/10" and cells["final loss"] == "1.7000" and cells["wall time"] == "1m16s"
    assert [cells[name] for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "best epoch")] == ["-"] * 7


def test_run_without_epochs_or_settings(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"depth": 50}))
    (run_dir / "metrics.jsonl").write_text("")
    cells = table_cells(summary.format_markdown_table(summary.summary_rows([str(run_dir)])), 0)
    assert cells["epochs"] == "0/-" and cells["depth"] == "50"
    assert cells["optimizer"] == cells["final loss"] == cells["wall time"] == cells["seed"] == "-"


def test_format_duration():
    assert summary.format_duration(754.2) == "12m34s"
    assert summary.format_duration(5) == "0m05s"
    assert summary.format_duration(59.6) == "1m00s"
    assert summary.format_duration(3723) == "1h02m03s"
    assert summary.format_duration(None) == "-"


def test_torn_last_line_is_ignored(tmp_path):
    records = [epoch_record(1, 1.2), epoch_record(2, 1.1)]
    run_dir = write_run(tmp_path, "torn", records, extra_lines=['{"epoch": 3, "lo'])
    (row,) = summary.summary_rows([run_dir])
    assert row["epochs_done"] == 2 and row["final_loss"] == 1.1


def test_torn_middle_line_raises_naming_file_and_line(tmp_path):
    run_dir = tmp_path / "broken"
    write_run(tmp_path, "broken", [])
    (run_dir / "metrics.jsonl").write_text(
        json.dumps(epoch_record(1, 1.2)) + "\n" + '{"epoch": 2, "lo\n' + json.dumps(epoch_record(3, 1.0)) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        summary.load_run(str(run_dir))


def test_broken_config_names_the_file(tmp_path):
    run_dir = write_run(tmp_path, "bad_config", [epoch_record(1, 1.0)])
    with open(os.path.join(run_dir, "config.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        summary.load_run(run_dir)


def test_sort_rows_puts_best_ap_first_and_unknown_last(tmp_path):
    finished_run(tmp_path, "good")
    write_run(tmp_path, "no_eval", [epoch_record(1, 1.0)])
    write_run(tmp_path, "better", [epoch_record(1, 1.0, evaluation=coco(0.4, 0.7))])
    rows = summary.summary_rows(summary.find_runs([str(tmp_path)]))
    assert [row["run"] for row in summary.sort_rows(rows, "AP")] == ["better", "good", "no_eval"]
    assert [row["run"] for row in summary.sort_rows(rows, "final loss")] == ["good", "better", "no_eval"]
    with pytest.raises(ValueError, match="unknown column"):
        summary.sort_rows(rows, "colour")


# ----- finding runs ------------------------------------------------------------------------
def test_find_runs_in_output_and_log_folders(tmp_path):
    output, log = tmp_path / "output", tmp_path / "log"
    first = finished_run(output, "run_a")
    second = write_run(output, "run_b", [epoch_record(1, 1.0)])
    (output / "not_a_run").mkdir()
    log.mkdir()
    (log / "run_b.log").write_text("epoch 1\n")
    (log / "gone.log").write_text("epoch 1\n")
    notes = []
    assert summary.find_runs([str(output)], note=notes.append) == [first, second]
    assert summary.find_runs([str(log)], note=notes.append) == [os.path.join(str(output), "run_b")]
    assert len(notes) == 1 and "gone.log" in notes[0] and "skipped" in notes[0]
    both = summary.find_runs([second, str(output), str(log)], note=notes.append)
    assert both == [second, first]  # each run once, in the order found
    assert summary.select_runs(both, ["run_a"]) == [first]
    with pytest.raises(ValueError, match="no run named run_c"):
        summary.select_runs(both, ["run_c"])
    with pytest.raises(FileNotFoundError, match="missing"):
        summary.find_runs([str(tmp_path / "missing")])


# ----- mean and std over seeds -------------------------------------------------------------
def test_aggregate_over_seeds_matches_numpy(tmp_path):
    aps, ap50s, losses = [0.31, 0.35, 0.28], [0.52, 0.58, 0.50], [0.91, 0.85, 0.97]
    for seed, ap, ap50, loss in zip((1, 2, 3), aps, ap50s, losses):
        write_run(tmp_path, f"sweep_lr0.0001_seed{seed}", [epoch_record(1, loss, evaluation=coco(ap, ap50))],
                  config={"seed": seed}, summary_json={"wall_seconds": 60.0})
    write_run(tmp_path, "sweep_lr0.0003_seed1", [epoch_record(1, 0.7, evaluation=coco(0.4, 0.6))],
              config={"seed": 1, "learning_rate": 3e-4})
    write_run(tmp_path, "bigger_images", [epoch_record(1, 0.7, evaluation=coco(0.4, 0.6))],
              config={"seed": 1, "min_side": 512})
    rows = summary.summary_rows(summary.find_runs([str(tmp_path)]))
    groups = summary.aggregate(rows)
    assert len(groups) == 3  # lr 1e-4 (3 seeds), lr 3e-4, min_side 512
    (seeds,) = [group for group in groups if len(group["runs"]) == 3]
    assert seeds["seeds"] == [1, 2, 3] and seeds["unfinished"] == 0
    assert seeds["settings"]["lr"] == 1e-4 and seeds["settings"]["min_side"] == 256
    for key, values in (("AP", aps), ("AP50", ap50s), ("final_loss", losses)):
        assert seeds[f"{key}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert seeds[f"{key}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert seeds["AP75_std"] == pytest.approx(0.0, abs=1e-12)
    singles = [group for group in groups if len(group["runs"]) == 1]
    assert all(group["AP_std"] is None and group["unfinished"] == 1 for group in singles)
    table = summary.format_aggregate_table(groups)
    cells = table_cells(table, [group["runs"] for group in groups].index(seeds["runs"]))
    assert cells["runs"] == "3" and cells["seeds"] == "1, 2, 3" and cells["lr"] == "0.0001"
    assert cells["AP mean"] == f"{np.mean(aps):.3f}" and cells["AP std"] == f"{np.std(aps, ddof=1):.3f}"
    lone = table_cells(table, [group["runs"] for group in groups].index(["sweep_lr0.0003_seed1"]))
    assert lone["runs"] == "1 (1 unfinished)" and lone["AP std"] == "-" and lone["lr"] == "0.0003"
    assert "Mean and sample standard deviation" in summary.format_report(rows)
    by_depth = summary.aggregate(rows, group_by=["depth"])
    assert len(by_depth) == 1 and len(by_depth[0]["runs"]) == 5


def test_report_without_repeats_has_one_table(tmp_path):
    rows = summary.summary_rows([finished_run(tmp_path)])
    assert "Mean and sample" not in summary.format_report(rows)
    assert "Mean and sample" in summary.format_report(rows, always_aggregate=True)


def test_summarize_script_prints_tables_and_writes_csv(tmp_path):
    output = tmp_path / "output"
    for seed, ap in ((1, 0.3), (2, 0.4)):
        write_run(output, f"run_seed{seed}", [epoch_record(1, 1.0, evaluation=coco(ap, 0.5))], config={"seed": seed})
    csv_path = tmp_path / "runs.csv"
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "summarize.py"), str(output),
                             "--sort", "AP", "--csv", str(csv_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("| run_seed2 ") < result.stdout.index("| run_seed1 ")
    assert "Mean and sample standard deviation" in result.stdout
    csv_lines = csv_path.read_text().splitlines()
    assert csv_lines[0].startswith("run,status,depth") and len(csv_lines) == 3
    missing = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "summarize.py"), str(output),
                              "--runs", "nope"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no run named nope" in missing.stderr


# ----- curves ------------------------------------------------------------------------------
def assert_png(path, width=900, height=350):
    from matplotlib.image import imread
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    assert 0 < os.path.getsize(path) < 100_000
    assert imread(path).shape[:2] == (height, width)


def test_plot_run_curves_writes_a_small_png(tmp_path):
    records = [epoch_record(1, 1.5), epoch_record(2, 1.0, evaluation=coco(0.3, 0.5)), epoch_record(3, 0.8)]
    png_path = tmp_path / "plots" / "curves.png"
    plot_run_curves(records, str(png_path), title="run")
    assert_png(png_path)
    plot_run_curves(records[:1], str(png_path))  # no evaluation yet: replaced in place
    assert_png(png_path)
    plot_run_curves([], str(png_path))
    assert_png(png_path)
    assert os.listdir(png_path.parent) == ["curves.png"]  # no temporary file left behind


def test_plot_runs_overlay(tmp_path):
    runs = {f"seed{seed}": [epoch_record(epoch, 2.0 / epoch + seed * 0.1, evaluation=coco(0.1 * epoch, 0.5))
                            for epoch in (1, 2, 3)] for seed in (1, 2, 3)}
    png_path = tmp_path / "compare.png"
    plot_runs_overlay(runs, str(png_path), metric="AP50")
    assert_png(png_path)
    plot_runs_overlay({"no_eval": [epoch_record(1, 1.0)]}, str(png_path), metric="cls_loss")
    assert_png(png_path)
    with pytest.raises(ValueError, match="unknown metric"):
        plot_runs_overlay(runs, str(png_path), metric="accuracy")


# ----- sweep -------------------------------------------------------------------------------
FAKE_TRAIN = '''
import json, os, sys
flags = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print("fake training", flags["--run_name"])
if flags.get("--fail_seed") == flags.get("--seed"):
    sys.exit(1)
run_dir = os.path.join(flags.get("--output_path", "output"), flags["--run_name"])
os.makedirs(run_dir)
seed, lr = int(flags["--seed"]), float(flags.get("--learning_rate", "1e-4"))
with open(os.path.join(run_dir, "config.json"), "w") as handle:
    json.dump({"depth": 18, "optimizer": "adam", "learning_rate": lr, "seed": seed, "epochs": 1}, handle)
with open(os.path.join(run_dir, "metrics.jsonl"), "w") as handle:
    handle.write(json.dumps({"epoch": 1, "loss": 1.0 / seed, "seconds": 2.0,
                             "coco": {"AP": 0.1 * seed, "AP50": 0.2, "AP75": 0.1}}) + "\\n")
'''


def fake_train_script(tmp_path):
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE_TRAIN)
    return str(path)


def test_sweep_commands():
    flags = ["--epochs", "2", "--output_path=out"]
    commands = sweep.sweep_commands(flags, seeds=[1, 2], learning_rates=["1e-4", "3e-4"], name="sweep_x",
                                    python="python")
    assert [name for name, _ in commands] == ["sweep_x_lr1e-4_seed1", "sweep_x_lr1e-4_seed2",
                                              "sweep_x_lr3e-4_seed1", "sweep_x_lr3e-4_seed2"]
    assert commands[1][1] == ["python", "train.py", "--epochs", "2", "--output_path=out", "--seed", "2",
                              "--learning_rate", "1e-4", "--run_name", "sweep_x_lr1e-4_seed2"]
    seeds_only = sweep.sweep_commands(["--lr", "0.01"], seeds=[7], python="python")
    assert seeds_only == [("sweep_seed7", ["python", "train.py", "--lr", "0.01", "--seed", "7",
                                           "--run_name", "sweep_seed7"])]
    assert sweep.output_path_from_flags(flags) == "out"
    assert sweep.output_path_from_flags(["--output_path", "a", "--output_path", "b"]) == "b"
    assert sweep.output_path_from_flags([]) == "./output"
    assert sweep.split_train_flags(["--seeds", "1", "--", "--epochs", "2", "--"]) == (
        ["--seeds", "1"], ["--epochs", "2", "--"])
    with pytest.raises(ValueError, match="--seed"):
        sweep.sweep_commands(["--seed", "3"], seeds=[1])
    with pytest.raises(ValueError, match="--lr"):
        sweep.sweep_commands(["--lr=0.1"], learning_rates=["1e-3"])
    with pytest.raises(ValueError, match="more than once"):
        sweep.sweep_commands([], seeds=[1, 1])


def test_sweep_dry_run_prints_commands(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "sweep.py"), "--seeds", "1", "2", "--learning_rates",
         "1e-4", "--name", "sweep_x", "--dry_run", "--", "--epochs", "2", "--output_path", str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith(
        f"train.py --epochs 2 --output_path {tmp_path} --seed 1 --learning_rate 1e-4 --run_name sweep_x_lr1e-4_seed1")
    assert os.listdir(tmp_path) == []


def test_failing_run_stops_the_sweep_naming_it(tmp_path):
    script = fake_train_script(tmp_path)
    flags = ["--output_path", str(tmp_path / "out"), "--fail_seed", "2"]
    commands = sweep.sweep_commands(flags, seeds=[1, 2, 3], name="s", train_script=script)
    with pytest.raises(sweep.SweepRunFailed, match="run s_seed2 exited with status 1"):
        sweep.run_sweep(commands, log=lambda text: None)
    assert sorted(os.listdir(tmp_path / "out")) == ["s_seed1"]  # seed 3 never started
    for name in os.listdir(tmp_path / "out"):
        (tmp_path / "out" / name / "config.json").unlink()
        (tmp_path / "out" / name / "metrics.jsonl").unlink()
        (tmp_path / "out" / name).rmdir()
    assert sweep.run_sweep(commands, keep_going=True, log=lambda text: None) == ["s_seed2"]
    assert sorted(os.listdir(tmp_path / "out")) == ["s_seed1", "s_seed3"]


def test_sweep_script_runs_then_prints_tables(tmp_path):
    script = fake_train_script(tmp_path)
    command = [sys.executable, os.path.join(REPO_ROOT, "tools", "sweep.py"), "--seeds", "1", "2", "--name", "s",
               "--train_script", script, "--", "--output_path", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "fake training s_seed1" in result.stdout and "| s_seed2 " in result.stdout
    assert "Mean and sample standard deviation" in result.stdout
    assert f"| {np.mean([0.1, 0.2]):.3f} | {np.std([0.1, 0.2], ddof=1):.3f} |" in result.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)  # same names: refused
    assert again.returncode != 0 and "already exist" in again.stderr
    failing = subprocess.run(command[:-3] + ["--name", "f", "--", "--output_path", str(tmp_path / "out"),
                                             "--fail_seed", "1"], capture_output=True, text=True, timeout=60)
    assert failing.returncode != 0 and "error: run f_seed1 exited with status 1" in failing.stderr


def test_runs_of_one_configuration_group_together_whatever_their_precision_check_took(tmp_path):
    # What train.py records besides the flags differs between seeds of one configuration: the
    # precision check's timings and cache hits, the configuration file's path.
    for seed, seconds in ((1, 0.62), (2, 0.09)):
        check = {"bound": 0.05, "checked": 78, "from_cache": 0 if seed == 1 else 78, "seconds": seconds}
        write_run(tmp_path, f"seed{seed}", [epoch_record(1, 1.0, evaluation=coco(0.3, 0.5))],
                  config={"seed": seed, "precision": f"bfloat16 autocast; checked in {seconds} s",
                          "precision_check": check, "config": f"copy{seed}.yaml", "print_config": False})
    groups = summary.aggregate(summary.summary_rows(summary.find_runs([str(tmp_path)])))
    assert [group["runs"] for group in groups] == [["seed1", "seed2"]]


def test_a_failed_run_is_named_and_one_seed_repeated_is_not_called_a_spread_over_seeds(tmp_path):
    output = tmp_path / "output"
    for index, ap in enumerate((0.30, 0.32)):
        write_run(output, f"repeat_{index}", [epoch_record(1, 0.9, evaluation=coco(ap, 0.5))], config={"seed": 3407},
                  summary_json={"wall_seconds": 60.0})
    failed = output / "crashed_run"
    failed.mkdir()
    (failed / "config.json").write_text(json.dumps({"seed": 3407}))  # stopped before its first epoch
    notes = []
    runs = summary.find_runs([str(output)], note=notes.append)
    assert [os.path.basename(run) for run in runs] == ["repeat_0", "repeat_1"]
    assert notes == [f"{failed}: a run that finished no epoch (config.json without metrics.jsonl); left out"]
    report = summary.format_report(summary.summary_rows(runs))
    assert "ran 2 times with one seed (3407): their std measures run-to-run nondeterminism only" in report
    for seed, name in ((1, "seeded_1"), (2, "seeded_2")):
        write_run(tmp_path / "seeds", name, [epoch_record(1, 0.9, evaluation=coco(0.3, 0.5))], config={"seed": seed},
                  summary_json={"wall_seconds": 60.0})
    seeded = summary.format_report(summary.summary_rows(summary.find_runs([str(tmp_path / "seeds")])))
    assert "Mean and sample standard deviation" in seeded and "one seed" not in seeded
