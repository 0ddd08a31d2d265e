"""The README is a short page whose links all lead somewhere, and its Python example runs as written."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from scripts import ROOT, single_thread, tiny_checkpoint

PAGES = ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                               if name.endswith(".md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading):
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # a '# comment' in a code block is no heading
    return {_slug(match.group(1)) for match in re.finditer(r"(?m)^#{1,6} (.+)$", text)}


@pytest.mark.parametrize("page", PAGES)
def test_every_link_leads_to_a_file_and_heading_that_exist(page):
    path = os.path.join(ROOT, page)
    text = re.sub(r"```.*?```", "", open(path, encoding="utf-8").read(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(destination):
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(destination):
            broken.append(f"{target}: no such heading")
    assert broken == [], broken


def test_the_readme_is_a_page_a_newcomer_reads_in_minutes():
    lines = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    assert len(lines) <= 200, len(lines)
    headings = [line[3:] for line in lines if line.startswith("## ")]
    for needed in ("Your own data", "Train", "Fine-tune", "Evaluate and draw", "Predict from Python", "Export"):
        assert needed in headings, headings
    linked = set(re.findall(r"\(docs/([a-z_]+\.md)", "\n".join(lines)))
    assert linked == {name for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md")}


def test_the_readmes_python_example_draws_and_saves_each_image_of_a_folder(tmp_path, monkeypatch):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    [example] = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if ".predict(" in block]
    assert len(example.strip().splitlines()) == 4
    checkpoint = tiny_checkpoint(tmp_path / "model_final.pt")
    photos = tmp_path / "my_photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.jpg": (120, 90), "b.png": (64, 150)}
    for name, (width, height) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photos / name)
    code = example.replace("output/<run>/model_final.pt", checkpoint).replace('"my_photos/"', repr(str(photos) + "/"))
    monkeypatch.chdir(tmp_path)
    with single_thread():
        exec(compile(code, "README.md", "exec"), {})
    from retinanet import Detector
    detector = Detector.from_checkpoint(checkpoint, device="cpu")
    # The same call (a GroupNorm model's detections depend on which images share a batch).
    with single_thread():
        results = {os.path.basename(result.source): result for result in detector.predict(str(photos) + "/")}
    for name, (width, height) in sizes.items():
        with Image.open(photos / f"{name}.detections.png") as drawn:
            pixels = np.asarray(drawn.convert("RGB"))
        want = results[name]
        assert len(want.scores) > 0 and pixels.shape[1] >= width and pixels.shape[0] > height  # titled above
        assert np.array_equal(pixels, want.plot())  # that image's detections, drawn
