"""The learning-rate range test: its smoothing and suggestion rules, and a real run on generated data."""
import importlib.util
import json
import os

import numpy as np
import pytest

from retinanet.data.synthetic import generate_dataset
from retinanet.training.lr_find import (DIVERGENCE_FACTOR, exponential_rates, lowest_index, settled_index, smooth,
                                    suggest_index)
from scripts import ROOT, TINY_TRAIN_FLAGS


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rates_grow_by_a_constant_factor():
    rates = exponential_rates(1e-6, 1.0, 7)
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
    assert rates[1:] / rates[:-1] == pytest.approx(np.full(6, 10.0))


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # no pull towards 0 at the start
    # (0.95 * 0.05 * 2 + 0.05 * 0) / (1 - 0.95 ** 2) = 0.095 / 0.0975
    assert smooth([2.0, 0.0]) == pytest.approx([2.0, 0.095 / 0.0975])


def test_suggestion_is_a_tenth_of_the_rate_at_the_minimum():
    log_rates = np.linspace(-6, 0, 61)  # one step per 0.1 decade
    # Falls fastest at 1e-4 (index 20), lowest at 1e-2 (index 40), then rises.
    smoothed = np.where(log_rates <= -2, 2 - np.tanh(2 * (log_rates + 4)), 2 - np.tanh(4) + (log_rates + 2) ** 2)
    rates = 10 ** log_rates
    assert lowest_index(list(smoothed)) == 40
    assert suggest_index(rates, list(smoothed)) == 30  # 1e-3, a decade below the minimum
    assert suggest_index(rates, list(np.linspace(1, 2, 61))) is None  # a loss that only rises: no suggestion
    # A low first value (one lucky batch) is not taken as the minimum: the first tenth is settling.
    assert lowest_index([0.1] + list(smoothed[1:])) == 40 and settled_index(61) == 6
    # A minimum within a decade of the start: the suggestion is the first settled step.
    assert suggest_index(rates[32:], list(smoothed[32:])) == settled_index(29) == 2


def test_range_test_on_generated_data_suggests_a_rate_on_the_descent(tmp_path, one_thread, capsys):
    # Four images in batches of four: every step sees the same images, so the curve is mostly the rate's doing.
    data = tmp_path / "data"
    generate_dataset(str(data), num_train=4, num_val=1, num_test=1, min_size=96, max_size=128, seed=11)
    png = tmp_path / "plots" / "lr.png"
    tool = _load_tool("lr_find")
    tool.main(["--coco_path", str(data), *TINY_TRAIN_FLAGS, "--num_steps", "50", "--start_lr", "1e-5",
               "--end_lr", "1000", "--output", str(png), "--output_path", str(tmp_path / "runs"),
               "--log_dir", str(tmp_path / "logs")])
    curve = json.loads(png.with_suffix(".json").read_text())
    smoothed, rates, index = np.array(curve["smoothed"]), np.array(curve["learning_rates"]), curve["suggested_index"]
    # Adam blows the loss up somewhere past a rate of 0.1 (where exactly depends on the processor's
    # kernels), far before --end_lr 1000: the test stops when it happens, and not before.
    assert curve["stop_reason"].startswith(("diverged", "the loss was not finite")) and len(smoothed) < 50
    if curve["stop_reason"].startswith("diverged"):
        assert smoothed[-1] > DIVERGENCE_FACTOR * smoothed.min()
    assert all(smoothed[i] <= DIVERGENCE_FACTOR * smoothed[:i + 1].min() for i in range(len(smoothed) - 1))
    assert rates == pytest.approx(exponential_rates(1e-5, 1000, 50)[:len(rates)])
    lowest = lowest_index(list(smoothed))
    assert settled_index(len(smoothed)) <= index < lowest
    assert np.gradient(smoothed, np.log10(rates))[index] < 0  # descending where it points
    assert smoothed[index] > smoothed[lowest]
    assert curve["suggested_lr"] == pytest.approx(rates[index])
    printed = capsys.readouterr().out
    assert f"suggested --learning_rate {rates[index]:.2g} (a tenth of the rate at the lowest" in printed
    assert png.stat().st_size > 10_000
    # Nothing of a training run is written.
    assert sorted(os.listdir(tmp_path)) == ["data", "plots"]


def test_range_test_refuses_resume_and_an_empty_range(tmp_path, capsys):
    tool = _load_tool("lr_find")
    for argv, message in ((["--resume", "x.pt"], "--resume: the range test trains a new run's model"),
                          (["--start_lr", "1", "--end_lr", "0.1"], "--start_lr 1 must be lower than --end_lr 0.1")):
        with pytest.raises(SystemExit):
            tool.parse_args(["--coco_path", str(tmp_path), *argv])
        assert message in capsys.readouterr().err
