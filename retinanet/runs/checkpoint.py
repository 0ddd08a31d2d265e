"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded safely.

A training checkpoint holds ``model``, ``optimizer``, ``lr_scheduler``, ``scaler`` (when AMP is
used), ``epoch`` (the number of finished epochs), ``best_metric``, ``best_epoch``,
``loss_history``, ``rng_states``, ``args`` (everything needed to rebuild the model and resume),
``class_names`` and ``category_ids``. Files are read with ``torch.load(weights_only=True)``, so
a file that would run code when unpickled is refused instead of executed.
"""
import os
import pickle
import random

import numpy as np
import torch

from retinanet.models.retinanet import MODEL_ARG_NAMES, build_model
from retinanet.util.io import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unsafe, corrupt or does not fit."""


def atomic_torch_save(obj, path):
    """``torch.save`` through ``atomic_write``: a crash or Ctrl-C mid-write leaves the previous
    file intact, and no temporary file behind."""
    with atomic_write(path, "wb") as stream:
        torch.save(obj, stream)


def load_checkpoint(path):
    """Read a checkpoint dict safely (tensors and primitives only)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors and plain "
            f"data, and loading it could run code, or it is corrupt ({_unpickling_reason(error)})"
        ) from None
    except Exception as error:  # a damaged file fails in many ways (EOFError, KeyError, zip errors...)
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(f"{path}: not a checkpoint of this project (expected a dict with a 'model' entry)")
    return checkpoint


def _unpickling_reason(error):
    """The line of torch's weights-only error that says what was refused (e.g. 'Trying to load
    unsupported GLOBAL posix.system ...'), not its advice to retry with weights_only=False."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(("Weights only load failed", "Please file an issue",
                                                                "Check the documentation"))]
    return specific[0] if specific else (lines[0] if lines else type(error).__name__)


def model_from_checkpoint(checkpoint, path="checkpoint"):
    """Rebuild the model from the arguments saved with it and load its weights."""
    args = checkpoint.get("args", {})
    missing = [name for name in MODEL_ARG_NAMES if name not in args]
    if missing or "class_names" not in checkpoint:
        raise CheckpointError(f"{path}: lacks the model description ({', '.join(missing) or 'class_names'})")
    model = build_model(len(checkpoint["class_names"]), args)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the saved model description: {error}") from None
    return model


def capture_rng_states():
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states):
    random.setstate(states["python"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
