"""Shared test helpers: the repository root, the root scripts as modules, a tiny training setup."""
import contextlib
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
