"""Checkpoints of earlier versions resume and evaluate: their saved configuration (``args``) is
migrated to today's form (``config.migrate_saved_config``), and a newer one is refused by name."""
import json
import os

import pytest
import torch

from retinanet.config import CONFIG_VERSION, SavedConfigError, migrate_saved_config
from retinanet.data.synthetic import generate_dataset
from retinanet.models.checkpoint import load_checkpoint
from scripts import ROOT, load_script

train_script = load_script("train")
test_script = load_script("test")
SAVED = os.path.join(ROOT, "tests", "saved_configs")
FLAGS = ["--depth", "18", "--fpn_channels", "64", "--min_side", "96", "--max_side", "128", "--batch_size", "2",
         "--epochs", "1", "--pretrained", "none", "--amp", "off", "--workers", "0", "--val_set", "",
         "--print_every", "0"]
# What checkpoints of earlier versions did not hold.
NEWER_ENTRIES = ("train_data", "train_data_changes", "first_loss", "wall_seconds", "precision_fallback")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(module_tmp):
    root = module_tmp("data")
    generate_dataset(str(root), num_train=6, num_val=2, num_test=0, min_size=96, max_size=128, seed=8)
    return str(root)


def _saved(name, data):
    with open(os.path.join(SAVED, name), encoding="utf-8") as stream:
        return json.loads(stream.read().replace('"DATA"', json.dumps(data)))


def _checkpoint_of_an_earlier_version(data, tmp_path, fixture):
    """A run trained by today's code whose checkpoint is rewritten as an earlier version wrote it."""
    args = _saved(fixture, data)
    output = tmp_path / "output"
    train_script.main(["--coco_path", data, *FLAGS, "--output_path", str(output), "--log_dir", str(tmp_path / "log"),
                       "--run_name", args["run_name"]])
    path = output / args["run_name"] / "checkpoint_last.pt"
    state = {key: value for key, value in load_checkpoint(str(path)).items() if key not in NEWER_ENTRIES}
    state["args"] = args
    torch.save(state, path)
    return path


@pytest.mark.parametrize("fixture", ["v1_early.json", "v1_before_version.json"])
def test_a_checkpoint_of_an_earlier_version_resumes_and_evaluates(data, tmp_path, fixture, capsys):
    path = _checkpoint_of_an_earlier_version(data, tmp_path, fixture)
    train_script.main(["--resume", str(path), "--epochs", "2"])
    run = path.parent
    config = json.loads((run / "config.json").read_text())
    assert config["config_version"] == CONFIG_VERSION and config["epochs"] == 2 and config["milestones"] == [2]
    assert (config["amp"], config["trainable_layers"], config["pretrained"]) == ("off", 5, "none")
    final, last = (load_checkpoint(str(run / name)) for name in ("model_final.pt", "checkpoint_last.pt"))
    assert final["epoch"] == 2 and len(last["loss_history"]) == 2
    assert final["args"]["config_version"] == CONFIG_VERSION
    test_script.main(["--coco_path", data, "--set_name", "train", "--checkpoint_path", str(run / "model_final.pt"),
                      "--output_dir", str(tmp_path / "results"), "--workers", "0", "--amp", "off"])
    assert json.loads((tmp_path / "results" / "train_metrics.json").read_text())["stats"]["AP"] >= 0


def test_a_newer_configuration_is_refused_by_name(data, tmp_path):
    future = _saved("v99_future.json", data)
    with pytest.raises(SavedConfigError, match=r"x\.pt: written by a newer version of this project \(config version "
                                               f"99; this one reads up to {CONFIG_VERSION}\\)"):
        migrate_saved_config(future, "x.pt")
    path = _checkpoint_of_an_earlier_version(data, tmp_path, "v99_future.json")
    with pytest.raises(SystemExit) as info:
        train_script.main(["--resume", str(path), "--epochs", "2"])
    assert "written by a newer version of this project" in str(info.value.code) and str(path) in str(info.value.code)
    (tmp_path / "future.json").write_text(json.dumps(future))
    with pytest.raises(SystemExit) as info:
        train_script.main(["--config", str(tmp_path / "future.json")])
    assert info.value.code == 2


def test_the_early_forms_are_migrated():
    migrated = migrate_saved_config({"amp": True, "depth": 18}, "early.pt")
    assert (migrated["amp"], migrated["trainable_layers"], migrated["pretrained"]) == ("on", 5, "none")
    assert migrated["config_version"] == CONFIG_VERSION
    with pytest.raises(SavedConfigError, match="config_version 'two' is not a version number"):
        migrate_saved_config({"config_version": "two"}, "odd.pt")
