"""Shared test helpers: the repository root, the root scripts as modules, a tiny training setup."""
import importlib.util
import os

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
