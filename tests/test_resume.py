"""--resume continues the run it names: its saved flags come back, a command-line flag overrides
them only where that is safe, and a refused resume leaves every file of the run as it was."""
import json
import shutil

import pytest

from retinanet.data.synthetic import generate_dataset
from retinanet.cli import options
from retinanet.models.checkpoint import load_checkpoint
from scripts import TINY_TRAIN_FLAGS, load_script

train_script = load_script("train")


pytestmark = pytest.mark.usefixtures("one_thread")


def train_base(root):
    """A finished one-epoch run on its own data: (data folder, run folder, log file)."""
    data = root / "data"
    generate_dataset(str(data), num_train=8, num_val=2, num_test=0, min_size=96, max_size=128, seed=7)
    train_script.main(["--coco_path", str(data), "--output_path", str(root / "output"), "--log_dir",
                       str(root / "log"), "--run_name", "base", *TINY_TRAIN_FLAGS, "--epochs", "1", "--val_set", "",
                       "--milestones", "10"])
    return data, root / "output" / "base", root / "log" / "base.log"


@pytest.fixture(scope="module")
def trained(module_tmp):
    return train_base(module_tmp("resume"))


def run_files(run, log):
    return {path.name: path.read_bytes() for path in (run / "config.json", run / "metrics.jsonl", log)}


def copy_run(trained, tmp_path):
    """A copy of the trained run (its data stays shared), to be resumed without touching the original."""
    data, run, log = trained
    shutil.copytree(run, tmp_path / "output" / "base")
    (tmp_path / "log").mkdir()
    shutil.copy(log, tmp_path / "log" / "base.log")
    return data, tmp_path / "output" / "base", tmp_path / "log" / "base.log"


def test_explicit_flags_are_those_on_the_command_line_even_at_their_default():
    parser = options.build_train_parser()
    given = options.explicit_flags(parser, ["--epochs", "20", "--lr", "1e-3", "--drop_last", "--amp"])
    assert given == {"epochs", "learning_rate", "drop_last", "amp"}
    assert options.explicit_flags(parser, []) == set()
    assert parser.parse_args([]).epochs == 20  # the parser itself keeps its defaults


def test_resume_alone_restores_the_runs_flags_and_prints_each_override(trained, tmp_path, capsys):
    data, run, log = copy_run(trained, tmp_path)
    # Only the checkpoint, the longer run and the log folder: dataset, sizes and model come from the run.
    train_script.main(["--resume", str(run / "checkpoint_last.pt"), "--epochs", "2", "--log_dir", str(tmp_path / "log")])
    out = capsys.readouterr().out
    assert "override: --epochs 2 (run had 1)" in out, out
    config = json.loads((run / "config.json").read_text())
    assert config["coco_path"] == str(data) and config["run_name"] == "base"
    assert (config["depth"], config["min_side"], config["max_side"], config["batch_size"]) == (18, 96, 128, 4)
    assert config["milestones"] == [10] and config["epochs"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2] and records[1]["images"] == 8
    assert load_checkpoint(str(run / "model_final.pt"))["epoch"] == 2
    assert log.read_text().count("resumed from") == 1


@pytest.mark.parametrize("flags, expected", [
    (["--batch_size", "2"], "--batch_size 2 (run had 4) would change the batch order"),
    (["--min_side", "112"], "--min_side 112 (run had 96) would change an image size"),
    (["--depth", "34"], "--depth 34 (run had 18) would change a model option"),
    (["--seed", "1"], "--seed 1 (run had 3407) would change the batch order"),
    (["--train_set", "val"], "--train_set val (run had train) would change the dataset"),
    (["--epochs", "2", "--optimizer", "sgd"], "--optimizer sgd (run had adam)"),
])
def test_resume_refuses_flags_that_would_break_the_run_and_touches_nothing(trained, flags, expected):
    data, run, log = trained
    before = run_files(run, log)
    with pytest.raises(SystemExit) as info:
        train_script.main(["--resume", str(run / "checkpoint_last.pt"), *flags])
    message = str(info.value)
    assert message.startswith(f"error: cannot resume {run / 'checkpoint_last.pt'} with ") and expected in message
    assert "\n" not in message
    assert run_files(run, log) == before


def test_flags_repeated_with_the_runs_own_values_are_accepted(trained, tmp_path, capsys):
    data, run, log = copy_run(trained, tmp_path)
    train_script.main(["--resume", str(run / "checkpoint_last.pt"), "--coco_path", str(data), "--log_dir",
                       str(tmp_path / "log"), *TINY_TRAIN_FLAGS, "--epochs", "2", "--norm", "auto"])
    overrides = [line for line in capsys.readouterr().out.splitlines() if line.startswith("override:")]
    assert [line.split()[1] for line in overrides] == ["--epochs", "--log_dir"], overrides


@pytest.mark.parametrize("change", ["class_names", "category_ids"])
def test_resume_on_a_dataset_with_other_classes_is_refused_with_both_lists(tmp_path, change):
    data, run, log = train_base(tmp_path)
    coco = json.loads((data / "train.json").read_text())
    before_names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    if change == "class_names":  # the same number of classes, one renamed
        coco["categories"][0]["name"] = "renamed"
    else:
        for category in coco["categories"]:
            category["id"] += 100
        for annotation in coco["annotations"]:
            annotation["category_id"] += 100
    (data / "train.json").write_text(json.dumps(coco))
    before = run_files(run, log)
    with pytest.raises(SystemExit) as info:
        train_script.main(["--resume", str(run / "checkpoint_last.pt"), "--epochs", "2"])
    message = str(info.value)
    saved = load_checkpoint(str(run / "checkpoint_last.pt"))[change]
    assert str(data / "train.json") in message and change in message
    assert str(saved) in message, message
    if change == "class_names":
        assert "renamed" in message and str(before_names) in message
    assert run_files(run, log) == before


def test_a_finished_run_stores_its_weights_once_and_its_checkpoints_for_use_are_lean(trained, tmp_path):
    import io
    import os

    import torch

    data = trained[0]
    train_script.main(["--coco_path", str(data), "--output_path", str(tmp_path / "output"), "--log_dir",
                       str(tmp_path / "log"), "--run_name", "lean", *TINY_TRAIN_FLAGS, "--epochs", "1"])
    run = tmp_path / "output" / "lean"
    final, best, last = (run / name for name in ("model_final.pt", "checkpoint_best.pt", "checkpoint_last.pt"))
    assert os.stat(final).st_ino == os.stat(best).st_ino  # the best epoch is the last: one file, two names
    use = torch.load(final, weights_only=True)
    assert sorted(use) == sorted(["model", "args", "class_names", "category_ids", "epoch", "best_metric", "best_epoch"])
    raw_last = torch.load(last, weights_only=True)
    assert "model" not in raw_last and raw_last["model_file"] == "model_final.pt" and "optimizer" in raw_last
    restored = load_checkpoint(str(last))  # the weights come back from model_final.pt
    assert all(torch.equal(restored["model"][key], value) for key, value in use["model"].items())
    full = io.BytesIO()
    torch.save(restored, full)
    stored = sum(os.stat(path).st_size for path in {os.stat(p).st_ino: p for p in run.glob("*.pt")}.values())
    assert stored <= 1.02 * len(full.getvalue())  # weights and optimiser state once, not three times

    with pytest.raises(SystemExit, match="checkpoint for use .* resume from checkpoint_last.pt"):
        train_script.main(["--resume", str(best), "--epochs", "2"])
    train_script.main(["--resume", str(last), "--epochs", "2"])  # a finished run extended from its weights
    extended = load_checkpoint(str(last))
    assert extended["epoch"] == 2 and torch.load(last, weights_only=True)["model_file"] == "model_final.pt"
    assert os.stat(best).st_ino != os.stat(final).st_ino or load_checkpoint(str(best))["epoch"] == 2

    final.write_bytes(best.read_bytes() if os.stat(best).st_ino != os.stat(final).st_ino else b"changed")
    with pytest.raises(Exception, match="checkpoint_last.pt: its weights are kept in model_final.pt beside it, but "
                                        "that file changed"):
        load_checkpoint(str(last))
    final.unlink()
    with pytest.raises(Exception, match="model_final.pt beside it, which is missing"):
        load_checkpoint(str(last))
