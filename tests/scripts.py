"""Shared test helpers: the repository root, the root scripts as modules, a tiny training setup."""
import contextlib
import functools
import importlib.util
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A model and image size small enough that an epoch on a dozen images takes seconds on a CPU.
TINY_TRAIN_FLAGS = ["--depth", "18", "--fpn_channels", "64", "--min_side", "96", "--max_side", "128",
                    "--workers", "0", "--batch_size", "4", "--print_every", "0", "--amp", "off",
                    "--pretrained", "none"]


def load_script(name):
    """Import a root script by path (``test.py`` would otherwise clash with Python's own ``test``)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _train_script():
    return load_script("train")


def train_run(data, tmp_path, name, *flags):
    """train.py's main on the dataset ``data``, the run ``name`` writing output/ and log/ under
    ``tmp_path``, with ``flags``; returns the run folder."""
    _train_script().main(["--coco_path", str(data), "--output_path", str(tmp_path / "output"),
                          "--log_dir", str(tmp_path / "log"), "--run_name", name, *flags])
    return tmp_path / "output" / name


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block: tiny models gain nothing from several threads, and on
    a busy machine the threads contend."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def assert_same_detections(got, want, score_atol=1e-4, box_atol=0.01, count=None):
    """``got`` and ``want`` (boxes (N, 4), scores (N,), labels (N,), as arrays or tensors, in score
    order) are the same detections up to the order of those whose scores tie within ``score_atol``:
    two kernels that round differently may rank such a pair either way, which says nothing about
    either. The scores agree position by position; each detection of ``got`` is matched one-to-one
    with one of ``want`` of the same label, a score within ``score_atol`` and a box within
    ``box_atol``. ``count``: compare the first ``count`` of ``got`` against those of ``want`` that
    could rank among the first ``count`` (a tie may cross the cut)."""
    import numpy as np
    got_boxes, got_scores, got_labels = (np.asarray(value) for value in got)
    want_boxes, want_scores, want_labels = (np.asarray(value) for value in want)
    if count is not None:
        got_boxes, got_scores, got_labels = got_boxes[:count], got_scores[:count], got_labels[:count]
        reachable = want_scores >= want_scores[count - 1] - score_atol
        want_boxes, want_scores, want_labels = want_boxes[reachable], want_scores[reachable], want_labels[reachable]
        assert len(got_scores) == count <= len(want_scores)
    else:
        assert len(got_scores) == len(want_scores)
    np.testing.assert_allclose(got_scores, want_scores[:len(got_scores)], atol=score_atol, rtol=0)
    unused = list(range(len(want_scores)))
    for index in range(len(got_scores)):
        match = next((j for j in unused if got_labels[index] == want_labels[j]
                      and abs(got_scores[index] - want_scores[j]) <= score_atol
                      and np.abs(got_boxes[index] - want_boxes[j]).max() <= box_atol), None)
        assert match is not None, (f"detection {index} (label {got_labels[index]}, score {got_scores[index]:.6f}, "
                                   f"box {got_boxes[index].tolist()}) has no counterpart")
        unused.remove(match)


def tiny_checkpoint(path, layout="centred", min_side=128, max_side=192):
    """A random ResNet-18 detector whose scores cross the threshold often, saved as train.py saves one."""
    from retinanet.models.checkpoint import atomic_torch_save
    from retinanet.models.retinanet import build_model
    torch.manual_seed(0)
    args = {"depth": 18, "norm": "gn", "head_norm": "gn", "fpn_channels": 64, "prior": 0.3, "min_side": min_side,
            "max_side": max_side, "anchor_layout": layout}
    model = build_model(3, args)
    with torch.no_grad():
        model.classification_head.logits.bias.normal_(-1.0, 0.5)
    atomic_torch_save({"model": model.state_dict(), "args": args, "class_names": ["star", "ring", "disc"],
                       "category_ids": [2, 5, 9], "epoch": 1}, str(path))
    return str(path)
