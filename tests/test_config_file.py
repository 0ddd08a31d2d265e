"""--config, --print_config and retinanet.train: a configuration file, a run's own config.json and
Python all train exactly what the same flags on the command line train."""
import json

import pytest

import retinanet
from retinanet.data.synthetic import generate_dataset
from retinanet.api import TrainingConfigError
from scripts import load_script

train_script = load_script("train")
FLAGS = ["--depth", "18", "--fpn_channels", "64", "--min_side", "96", "--max_side", "128", "--batch_size", "4",
         "--pretrained", "none", "--amp", "off", "--workers", "0", "--val_set", "", "--print_every", "0"]
# What differs between two runs of one configuration: their names, where the flags came from, and
# how long the precision check took.
RUN_SPECIFIC = {"run_name", "config"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(module_tmp):
    root = module_tmp("data")
    generate_dataset(str(root), num_train=8, num_val=2, num_test=0, min_size=96, max_size=128, seed=4)
    return str(root)


def _places(tmp_path):
    return ["--output_path", str(tmp_path / "output"), "--log_dir", str(tmp_path / "log")]


def _record(tmp_path, name):
    run = tmp_path / "output" / name
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    return {key: value for key, value in config.items() if key not in RUN_SPECIFIC}, summary["epoch_loss_list"]


def test_a_printed_config_and_a_runs_config_json_train_what_the_flags_trained(data, tmp_path, capsys):
    flags = ["--coco_path", data, *FLAGS, *_places(tmp_path)]
    with pytest.raises(SystemExit) as info:
        train_script.main([*flags, "--epochs", "3", "--print_config"])
    printed = capsys.readouterr().out
    assert info.value.code == 0 and not (tmp_path / "output").exists()
    assert "milestones: null  # resolves to [3]" in printed and "depth: 18\n" in printed
    (tmp_path / "c.yaml").write_text(printed)
    train_script.main([*flags, "--epochs", "1", "--run_name", "flags"])
    # The file says 3 epochs; the command line's 1 wins, and the drop follows it as with flags alone.
    train_script.main(["--config", str(tmp_path / "c.yaml"), "--epochs", "1", "--run_name", "from_yaml"])
    train_script.main(["--config", str(tmp_path / "output" / "flags" / "config.json"), "--run_name", "from_json"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # a resumed run's configuration, printed without training
        train_script.main(["--resume", str(tmp_path / "output" / "flags" / "checkpoint_last.pt"), "--epochs", "3",
                           "--print_config"])
    printed = capsys.readouterr().out
    assert info.value.code == 0 and "epochs: 3\n" in printed and "milestones: null  # resolves to [3]" in printed
    assert "override: --epochs 3 (run had 1)" in printed and "--print_config" not in printed
    reference, losses = _record(tmp_path, "flags")
    assert reference["milestones"] == [1] and reference["epochs"] == 1
    for name in ("from_yaml", "from_json"):
        config, run_losses = _record(tmp_path, name)
        assert config == reference, {key: (value, reference.get(key)) for key, value in config.items()
                                     if reference.get(key) != value}
        assert run_losses == losses  # the same training, to the last digit


def test_python_trains_what_train_py_trains(data, tmp_path):
    train_script.main(["--coco_path", data, *FLAGS, *_places(tmp_path), "--epochs", "1", "--run_name", "script"])
    config = {"coco_path": data, "depth": 18, "fpn_channels": 64, "min_side": 96, "max_side": 128, "batch_size": 4,
              "pretrained": "none", "amp": "off", "workers": 0, "val_set": "", "print_every": 0, "epochs": 5}
    run = retinanet.train(config, epochs=1, run_name="python", output_path=str(tmp_path / "output"),
                          log_dir=str(tmp_path / "log"))
    assert run == str(tmp_path / "output" / "python")
    assert _record(tmp_path, "python") == _record(tmp_path, "script")


@pytest.mark.parametrize("text, message", [
    ("epochs: 0\n", "epochs: must be a positive integer"),
    ("epoch: 3\n", "'epoch' is not a flag of this script; did you mean epochs?"),
    ("depth: 19\n", "depth: 19 is not one of 18, 34, 50, 101, 152"),
    ("milestones: seven\n", "milestones: expected an integer, got 'seven'"),
    ("scale_jitter: [0.5]\n", "scale_jitter: expected 2 values, got 1"),
    ("drop_last: 1\n", "drop_last: must be true or false, got 1"),
    ("- depth\n", "expected a mapping of flag names to values, found list"),
    ("depth: [18\n", "not valid YAML or JSON"),
])
def test_a_bad_config_file_is_refused_naming_the_file_and_the_key(data, tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as info:
        train_script.main(["--config", str(path), "--coco_path", data, *_places(tmp_path)])
    error = capsys.readouterr().err.strip()
    assert info.value.code == 2 and error.startswith(f"error: {path}: ") and message in error, error
    assert len(error.splitlines()) == 1 and not (tmp_path / "output").exists()
    with pytest.raises(TrainingConfigError, match=message.split(":")[-1].strip()[:20]):
        retinanet.train(str(path), coco_path=data, output_path=str(tmp_path / "output"))


def test_what_only_the_command_line_may_say_is_refused_in_a_configuration(data, tmp_path, capsys):
    path = tmp_path / "resume.yaml"
    path.write_text("resume: output/run/checkpoint_last.pt\n")
    with pytest.raises(SystemExit) as info:
        train_script.main(["--config", str(path), "--coco_path", data, *_places(tmp_path)])
    error = capsys.readouterr().err
    assert info.value.code == 2 and f"error: {path}: 'resume' says what to do with a configuration" in error
    assert "give --resume on the command line" in error and not (tmp_path / "output").exists()
    with pytest.raises(TrainingConfigError, match="train\\(\\): 'resume' says what to do"):
        retinanet.train(coco_path=data, resume="output/run/checkpoint_last.pt")


def test_config_and_resume_do_not_mix(data, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("epochs: 2\n")
    (tmp_path / "run.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        train_script.main(["--config", str(tmp_path / "c.yaml"), "--resume", str(tmp_path / "run.pt")])
    assert info.value.code == 2 and "--config sets a new run's flags; --resume continues" in capsys.readouterr().err
    with pytest.raises(TrainingConfigError, match="depth"):
        retinanet.train(coco_path=data, depth=19)
