"""report.html: written after each evaluation, rebuilt by tools/report.py, linked by the summary table,
and opened in a real headless browser (Chromium) with every image displayed and no error."""
import argparse
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest

from retinanet.data.synthetic import generate_dataset
from retinanet.runs import tables
from scripts import ROOT, TINY_TRAIN_FLAGS, load_script

# A class name that would run script and show a broken image if the page did not escape it.
HOSTILE_NAME = '<img src=x onerror="document.title=1">'
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Put first in <head>: records load and script errors, then writes the images' state into the title,
# which --dump-dom prints once the page has loaded.
PROBE = """<script>
window.probeErrors = [];
window.addEventListener("error", function (event) {
  var target = event.target || {};
  window.probeErrors.push(event.message || ("failed to load " + (target.src || target.tagName)).slice(0, 200));
}, true);
window.addEventListener("load", function () {
  var top = function (element) { return element ? element.getBoundingClientRect().top : null; };
  document.title = JSON.stringify({errors: window.probeErrors, images: Array.from(document.images).map(
    function (image) { return {complete: image.complete, width: image.naturalWidth, alt: image.alt,
                               top: top(image)}; }),
    headline: top(document.getElementById("headline")), settings: top(document.getElementById("settings")),
    screen: window.innerHeight});
});
</script>"""


@pytest.fixture(scope="module")
def trained_run(module_tmp):
    """A one-epoch run on generated data whose first class has a hostile name; (run folder, data root)."""
    root = module_tmp("report")
    data = root / "data"
    generate_dataset(str(data), num_train=8, num_val=4, num_test=1, min_size=96, max_size=128, seed=11)
    for set_name in ("train", "val"):
        coco = json.loads((data / f"{set_name}.json").read_text())
        coco["categories"][0]["name"] = HOSTILE_NAME
        (data / f"{set_name}.json").write_text(json.dumps(coco))
    # --prior 0.1: an untrained classifier already scores 0.1 everywhere, so there are detections to analyse.
    load_script("train").main(["--coco_path", str(data), "--output_path", str(root / "output"), "--log_dir",
                               str(root / "log"), "--run_name", "page", *TINY_TRAIN_FLAGS, "--epochs", "1",
                               "--prior", "0.1"])
    return root / "output" / "page", data


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_writes_the_page_and_the_tools_use_it(trained_run, capsys, one_thread):
    run, data = trained_run
    for name in ("report.html", "val_analysis.json", "val_pr_curves.png", "val_f1_threshold.png",
                 "val_confusion_matrix.png", "val_ap_by_size.png", "val_predictions.png"):
        assert (run / name).stat().st_size > 1000, name
    page = (run / "report.html").read_text()
    assert HOSTILE_NAME not in page and html.escape(HOSTILE_NAME) in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # nothing fetched or run
    assert page.count("<img src=\"data:image/png;base64,") == 6  # curves, 4 analysis plots, predictions
    analysis = json.loads((run / "val_analysis.json").read_text())
    assert analysis["source"]["epoch"] == 1 and analysis["num_detections"] > 0
    threshold = analysis["f1"]["best"]["threshold"]

    # vis.py draws from the analysis' best-F1 threshold when none is given, and says so.
    capsys.readouterr()
    load_script("vis").main(["--coco_path", str(data), "--set_name", "val", "--checkpoint_path",
                             str(run / "model_final.pt"), "--num_images", "1", "--output_dir", str(run / "vis"),
                             "--workers", "0", "--amp", "off"])
    assert f"score threshold {threshold:.3f}: the best F1 in {run / 'val_analysis.json'}" in capsys.readouterr().out

    # tools/report.py rebuilds the page, drawing the predictions again with the checkpoint.
    os.remove(run / "report.html")
    _load_tool("report").main([str(run), "--redraw", "--num_images", "2"])
    printed = capsys.readouterr().out
    assert "val_predictions.png: 2 val images predicted with" in printed and str(run / "report.html") in printed
    assert (run / "report.html").exists()

    # The summary table links the run to its page.
    (row,) = tables.summary_rows([str(run)])
    assert tables.format_markdown_table([row]).splitlines()[2].startswith(f"| [page]({run / 'report.html'}) |")


def _browser():
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip(f"chromium not installed: apt-get install chromium (looked for {', '.join(BROWSERS)})")


def test_page_loads_in_a_headless_browser_with_every_image_shown(trained_run, tmp_path):
    browser = _browser()
    run, _ = trained_run
    probed = tmp_path / "report_probed.html"
    probed.write_text((run / "report.html").read_text().replace("<head>", "<head>\n" + PROBE, 1))
    opened = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=10000",
                             "--window-size=1400,900",
                             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probed.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert opened.returncode == 0, opened.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", opened.stdout, re.S)
    assert title is not None, opened.stdout[:500]
    state = json.loads(html.unescape(title.group(1)))
    assert state["errors"] == []
    assert len(state["images"]) == 6
    assert all(image["complete"] and image["width"] > 0 for image in state["images"]), state["images"]
    # The first screen (1400 x 900) shows the headline AP and the training curves; the settings come last.
    curves = state["images"][0]
    assert curves["alt"] == "loss and learning rate by step, loss and validation AP per epoch"
    assert 0 <= state["headline"] < curves["top"] < state["screen"] <= 900, state
    assert state["settings"] > max(image["top"] for image in state["images"])


def test_report_tool_finds_the_validation_set_where_training_did(tmp_path):
    """The run's --val_json / --val_images first, a --coco_path given to the tool in any layout, and a
    line naming what was looked for when the set is nowhere."""
    report_tool = _load_tool("report")
    explicit = tmp_path / "cvat" / "valid.json"
    explicit.parent.mkdir()
    explicit.write_text("{}")
    roboflow = tmp_path / "roboflow" / "valid" / "_annotations.coco.json"
    roboflow.parent.mkdir(parents=True)
    roboflow.write_text("{}")
    config = {"val_set": "valid", "coco_path": str(tmp_path / "nowhere"), "val_json": str(explicit),
              "val_images": str(tmp_path / "cvat" / "images")}
    files = report_tool.validation_files(argparse.Namespace(coco_path=None), config)
    assert (files.json_path, files.image_dir, files.layout) == (str(explicit), str(tmp_path / "cvat" / "images"),
                                                                "explicit")
    files = report_tool.validation_files(argparse.Namespace(coco_path=str(tmp_path / "roboflow")), config)
    assert (files.json_path, files.layout) == (str(roboflow), "roboflow")
    missing = report_tool.validation_files(argparse.Namespace(coco_path=None), dict(config, val_json=None))
    assert isinstance(missing, str) and str(tmp_path / "nowhere" / "valid.json") in missing
    assert missing.endswith("(give --coco_path)")
