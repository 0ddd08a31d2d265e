"""The optional packages behind --backend onnxruntime / openvino and --int8 (``pip install -e '.[deploy]'``).

They are imported only when asked for, so the PyTorch path never needs them; a missing one gives
a one-line ``MissingExtraError`` saying how to install it.
"""
import importlib

# What each use needs, in import order.
NEEDS = {
    "export": ("onnx",),
    "onnxruntime": ("onnx", "onnxruntime"),
    "openvino": ("onnx", "openvino"),
    "int8": ("onnx", "onnxruntime"),
    "end_to_end": ("onnxruntime",),  # running an end-to-end file needs ONNX Runtime alone
}
INSTALL_HINT = "pip install -e '.[deploy]'"


class MissingExtraError(ImportError):
    """An optional package that a backend needs is not installed; the message says how to install it."""


def import_extras(use, purpose=None):
    """Import the packages ``NEEDS[use]`` lists; return them as a tuple of modules.

    purpose: how the message names the request (default ``--backend {use}``). Raises
    MissingExtraError naming every missing package and the pip command that installs them.
    """
    names = NEEDS[use]
    modules, missing = [], []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        needed = ("the optional packages " if len(names) > 1 else "the optional package ") + " and ".join(names)
        raise MissingExtraError(f"{purpose or '--backend ' + use} needs {needed} "
                                f"({', '.join(missing)} missing): {INSTALL_HINT} (or pip install {' '.join(missing)})")
    return tuple(modules)
