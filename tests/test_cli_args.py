"""Out-of-range command-line values are refused at parse time (argparse's exit code 2) with a
message that says what is allowed; no data is read and no model is built."""

import pytest

from scripts import load_script

train_script = load_script("train")
test_script = load_script("test")


def parse_error(parse_args, argv, capsys):
    """Parse ``argv``, expect argparse's exit code 2, return what was printed on stderr."""
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--depth", "20"], ["--depth", "invalid choice: 20", "18, 34, 50, 101, 152"]),
    (["--learning_rate", "-1"], ["--learning_rate", "must be a finite number greater than 0, got -1"]),
    (["--learning_rate", "0"], ["--learning_rate", "must be a finite number greater than 0, got 0"]),
    (["--batch_size", "0"], ["--batch_size", "must be a positive integer, got 0"]),
    (["--min_side", "800", "--max_side", "600"], ["--min_side 800 is larger than --max_side 600"]),
    (["--prior", "1.5"], ["--prior", "must be strictly between 0 and 1, got 1.5"]),
    (["--epochs", "0"], ["--epochs", "must be a positive integer, got 0"]),
    (["--fpn_channels", "48"], ["--fpn_channels 48", "must be a positive multiple of 32"]),
    (["--optimizer", "rmsprop"], ["--optimizer", "invalid choice: 'rmsprop'", "'adam', 'adamw', 'sgd'"]),
])
def test_train_refuses_out_of_range_values(tmp_path, capsys, argv, expected):
    stderr = parse_error(train_script.parse_args, ["--coco_path", str(tmp_path), *argv], capsys)
    for text in expected:
        assert text in stderr, stderr


def test_train_refuses_a_missing_dataset_folder(capsys):
    stderr = parse_error(train_script.parse_args, ["--coco_path", "/nonexistent"], capsys)
    assert "--coco_path /nonexistent: no such folder" in stderr


def test_train_refuses_a_missing_resume_checkpoint(tmp_path, capsys):
    stderr = parse_error(train_script.parse_args, ["--coco_path", str(tmp_path), "--resume", "/nonexistent.pt"],
                         capsys)
    assert "--resume /nonexistent.pt: no such file" in stderr


def test_train_accepts_the_values_it_documents(tmp_path):
    args = train_script.parse_args(["--coco_path", str(tmp_path), "--depth", "18", "--learning_rate", "1e-3",
                                    "--batch_size", "1", "--prior", "0.5", "--epochs", "9", "--fpn_channels", "64",
                                    "--optimizer", "sgd"])
    assert (args.depth, args.learning_rate, args.fpn_channels, args.optimizer) == (18, 1e-3, 64, "sgd")
    assert args.milestones == [8]


def test_test_script_refuses_a_missing_checkpoint(tmp_path, capsys):
    (tmp_path / "val.json").write_text("{}")
    missing = str(tmp_path / "missing.pt")
    stderr = parse_error(test_script.parse_args, ["--coco_path", str(tmp_path), "--checkpoint_path", missing], capsys)
    assert f"--checkpoint_path {missing}: no such file" in stderr


def test_test_script_refuses_an_unknown_set_and_lists_the_sets_found(tmp_path, capsys):
    for name in ("train", "val"):
        (tmp_path / f"{name}.json").write_text("{}")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    stderr = parse_error(test_script.parse_args, ["--coco_path", str(tmp_path), "--checkpoint_path", str(checkpoint),
                                                  "--set_name", "tset"], capsys)
    assert "--set_name tset" in stderr and str(tmp_path / "tset.json") in stderr
    assert "sets found: train, val" in stderr, stderr


def test_training_defaults_are_resolved_in_one_place_that_code_and_train_py_share(tmp_path):
    from argparse import Namespace

    from retinanet.config import resolve_training_args
    from_code = resolve_training_args(Namespace(epochs=9, coco_path=str(tmp_path)))
    from_flags = train_script.parse_args(["--epochs", "9", "--coco_path", str(tmp_path)])
    assert vars(from_code) == vars(from_flags)
    assert from_code.milestones == [8] and from_code.learning_rate == 1e-4
    assert from_code.norm == "auto"  # --pretrained auto: decided when the run finds (or not) ImageNet weights
    assert resolve_training_args(pretrained="none").norm == "gn"
    pretrained = resolve_training_args(pretrained="weights.pth", epochs=3)
    assert pretrained.norm == "frozen_bn" and pretrained.milestones == [3]
    assert resolve_training_args(milestones=[1], norm="bn").milestones == [1]


@pytest.mark.parametrize("cores, device, expected", [
    (2, "cpu", 0),      # the network keeps both cores busy: load in the main process
    (1, "cpu", 0),
    (16, "cpu", 8),     # enough cores to spare: one worker per core, at most 8
    (4, "cpu", 4),
    (2, "cuda", 2),     # a GPU runs the network: workers keep it fed
])
def test_inference_loader_workers_default_depends_on_cores_and_device(monkeypatch, cores, device, expected):
    from retinanet.cli import options
    monkeypatch.setattr(options.os, "cpu_count", lambda: cores)
    assert options.inference_workers(None, device) == expected
    assert options.inference_workers(3, device) == 3  # given on the command line: kept


def test_test_script_resolves_its_workers_default(tmp_path):
    from retinanet.cli import options
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"x")
    (tmp_path / "val.json").write_text("{}")
    args = test_script.parse_args(["--coco_path", str(tmp_path), "--checkpoint_path", str(checkpoint),
                                   "--device", "cpu"])
    assert args.workers == options.inference_workers(None, "cpu")
    args = test_script.parse_args(["--coco_path", str(tmp_path), "--checkpoint_path", str(checkpoint),
                                   "--workers", "1"])
    assert args.workers == 1
