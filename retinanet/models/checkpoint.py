"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded safely.

A training checkpoint (``checkpoint_last.pt``, ``checkpoint_interrupted.pt``, ``checkpoint_epochN.pt``)
holds ``model``, ``optimizer``, ``lr_scheduler``, ``scaler`` (when AMP is used), ``epoch`` (the
number of finished epochs), ``best_metric``, ``best_epoch``, ``loss_history``, ``rng_states``,
``args`` (everything needed to rebuild the model and resume), ``class_names`` and ``category_ids``.
A checkpoint for use (``model_final.pt``, ``checkpoint_best.pt``: ``model_checkpoint``) holds the
weights, ``args``, the class list and the epoch only. A finished run's ``checkpoint_last.pt`` keeps
everything but the weights, which are those of ``model_final.pt`` beside it: ``model_file`` names
that file and ``model_sha256`` its content, and ``load_checkpoint`` reads them back from it.
Files are read with ``torch.load(weights_only=True)``, so a file that would run code when
unpickled is refused instead of executed.
"""
import os
import pickle
import random

import numpy as np
import torch

from retinanet.models.anchor_options import anchor_option_rules
from retinanet.models.anchors import ANCHOR_LAYOUTS
from retinanet.models.backbone import NORM_CHOICES, RESNET_LAYOUTS, describe_load_error
from retinanet.models.fpn import P6_SOURCES
from retinanet.models.retinanet import (FPN_CHANNELS_RULE, HEAD_NORM_CHOICES, MODEL_ARG_NAMES, build_model,
                                        fpn_channels_ok)
from retinanet.util.io import atomic_write, file_sha256
from retinanet.util.values import describe, is_finite_number, is_integer


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
            f"data, and loading it could run code, or it is corrupt ({describe_load_error(error)})"
        ) from None
    except Exception as error:  # a damaged file fails in many ways (EOFError, KeyError, zip errors...)
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if isinstance(checkpoint, dict) and "model" not in checkpoint and "model_file" in checkpoint:
        checkpoint["model"] = _weights_beside(path, checkpoint)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(f"{path}: not a checkpoint of this project (expected a dict with a 'model' entry)")
    return checkpoint


# What a checkpoint for use keeps of a training checkpoint.
MODEL_CHECKPOINT_KEYS = ("model", "args", "class_names", "category_ids", "epoch", "best_metric", "best_epoch")


def model_checkpoint(state):
    """The checkpoint for use of a training checkpoint ``state``: its weights, ``args``, class list
    and epoch, without the optimiser, scheduler and RNG states that only resuming needs."""
    return {key: state[key] for key in MODEL_CHECKPOINT_KEYS if key in state}


def check_resumable(checkpoint, path):
    """Raise CheckpointError when ``checkpoint`` is one for use, without the optimiser state a run
    continues from."""
    if "optimizer" not in checkpoint:
        raise CheckpointError(f"{path}: a checkpoint for use (weights, flags and classes, no optimiser state), which "
                              "cannot continue its run: resume from checkpoint_last.pt (or checkpoint_interrupted.pt) "
                              f"of its run folder, or start a new run from its weights with --init_from {path}")


def training_state_beside(state, model_path):
    """``state`` without its weights, which are those saved in ``model_path`` (a file in the same
    folder): what a finished run keeps in checkpoint_last.pt so that its weights are stored once."""
    lean = {key: value for key, value in state.items() if key != "model"}
    lean.update(model_file=os.path.basename(model_path), model_sha256=file_sha256(model_path))
    return lean


def _weights_beside(path, checkpoint):
    """The weights a training checkpoint keeps in the file ``model_file`` of its own folder."""
    name, digest = checkpoint.get("model_file"), checkpoint.get("model_sha256")
    if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", "..") \
            or not isinstance(digest, str):
        raise CheckpointError(f"{path}: 'model_file' must name a file in the checkpoint's own folder, with its "
                              "'model_sha256'")
    model_path = os.path.join(os.path.dirname(path), name)
    if not os.path.isfile(model_path):
        raise CheckpointError(f"{path}: its weights are kept in {name} beside it, which is missing; copy or "
                              f"restore {model_path} next to it")
    found = file_sha256(model_path)
    if found != digest:
        raise CheckpointError(f"{path}: its weights are kept in {name} beside it, but that file changed since "
                              f"(SHA-256 {found[:12]}, expected {digest[:12]})")
    weights = load_checkpoint(model_path).get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{model_path}: holds no weights ('model') for {path}")
    return weights


def model_from_checkpoint(checkpoint, path="checkpoint"):
    """Rebuild the model from the arguments saved with it and load its weights.

    The saved description is checked first (``check_model_description``), so a damaged or
    crafted checkpoint gives a one-line CheckpointError, not an error from inside the model code.
    """
    args = check_model_description(checkpoint, path)
    model = build_model(len(checkpoint["class_names"]), args)
    load_model_weights(model, checkpoint["model"], path)
    return model


def check_model_description(checkpoint, path="checkpoint"):
    """Check what a checkpoint says about its model; return its ``args`` dict.

    Raises CheckpointError naming the first entry that is missing, of the wrong type or out of
    range: ``args`` (a dict), its MODEL_ARG_NAMES (depth in RESNET_LAYOUTS, norm in NORM_CHOICES,
    head_norm in HEAD_NORM_CHOICES, fpn_channels a positive multiple of 32, at least 64 with
    head_norm gn, prior in (0, 1)), ``min_side`` / ``max_side`` and MODEL_OPTION_DEFAULTS' names
    when present (positive integers; known choices, 4 positive numbers, an epsilon in [0, 1], anchor
    sizes, scales and ratios as ``anchor_options.anchor_value_problems`` accepts them),
    ``class_names`` (a non-empty list of strings) and ``category_ids`` when present (as many
    integers as there are names).
    """
    args = checkpoint.get("args")
    if not isinstance(args, dict):
        reason = "no 'args' entry" if args is None else f"'args' must be a dict, got {describe(args)}"
        raise CheckpointError(f"{path}: lacks the model description: {reason}")
    missing = [name for name in MODEL_ARG_NAMES if name not in args]
    if missing:
        raise CheckpointError(f"{path}: lacks the model description ({', '.join(missing)} missing from 'args')")
    for name, rule, follows in _model_arg_rules(args):
        if not follows:
            raise CheckpointError(f"{path}: saved model option {name} is {describe(args[name])}; it {rule}")
    names = checkpoint.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise CheckpointError(f"{path}: 'class_names' must be a non-empty list of strings, got {describe(names)}")
    category_ids = checkpoint.get("category_ids")
    if category_ids is not None and (not isinstance(category_ids, list) or len(category_ids) != len(names)
                                     or not all(is_integer(value) for value in category_ids)):
        raise CheckpointError(f"{path}: 'category_ids' must be a list of {len(names)} integers (one per class "
                              f"name), got {describe(category_ids)}")
    return args


def _model_arg_rules(args):
    """(name, rule as text, whether ``args`` follows it) for every checked model option."""
    depth, norm, head_norm = args["depth"], args["norm"], args["head_norm"]
    channels, prior = args["fpn_channels"], args["prior"]
    rules = [
        ("depth", f"must be one of {sorted(RESNET_LAYOUTS)}", is_integer(depth) and depth in RESNET_LAYOUTS),
        ("norm", f"must be one of {NORM_CHOICES}", isinstance(norm, str) and norm in NORM_CHOICES),
        ("head_norm", f"must be one of {HEAD_NORM_CHOICES}", isinstance(head_norm, str)
         and head_norm in HEAD_NORM_CHOICES),
        ("fpn_channels", FPN_CHANNELS_RULE, is_integer(channels) and fpn_channels_ok(int(channels), head_norm)),
        ("prior", "must be a number strictly between 0 and 1", is_finite_number(prior) and 0 < prior < 1),
    ]
    for name in ("min_side", "max_side"):
        if args.get(name) is not None:
            rules.append((name, "must be a positive integer", is_integer(args[name]) and args[name] > 0))
    optional = {
        "fpn_norm": (f"must be one of {HEAD_NORM_CHOICES}", lambda value: value in HEAD_NORM_CHOICES),
        "p6_from": (f"must be one of {P6_SOURCES}", lambda value: value in P6_SOURCES),
        "anchor_layout": (f"must be one of {ANCHOR_LAYOUTS}", lambda value: value in ANCHOR_LAYOUTS),
        "box_coding_std": ("must be a list of 4 positive numbers", lambda value: isinstance(value, (list, tuple))
                           and len(value) == 4 and all(is_finite_number(item) and item > 0 for item in value)),
        "bn_eps": ("must be a number from 0 to 1", lambda value: is_finite_number(value) and 0 <= value <= 1),
    }
    for name, (rule, follows) in optional.items():
        if args.get(name) is not None:
            value = args[name]
            rules.append((name, rule, (isinstance(value, str) or name in ("box_coding_std", "bn_eps"))
                          and follows(value)))
    return rules + anchor_option_rules(args)


def load_model_weights(model, state_dict, path="checkpoint"):
    """``model.load_state_dict(state_dict)``, with a one-line CheckpointError when they do not fit:
    the first tensor of another shape (saved vs expected), else the missing or unexpected names."""
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointError(f"{path}: 'model' must be a state dict of tensors, got {describe(state_dict)}")
    expected = model.state_dict()
    mismatched = [f"{name}: saved {tuple(tensor.shape)} vs expected {tuple(expected[name].shape)}"
                  for name, tensor in state_dict.items() if name in expected and tensor.shape != expected[name].shape]
    if mismatched:
        raise CheckpointError(f"{path}: weights do not fit the model ({len(mismatched)} tensors of another shape, "
                              f"first {mismatched[0]}); was it trained with another number of classes?")
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    if missing or unexpected:
        parts = [f"{len(names)} {what} (first {names[0]})"
                 for what, names in (("missing", missing), ("unexpected", unexpected)) if names]
        raise CheckpointError(f"{path}: weights do not fit the saved model description: {', '.join(parts)}")
    model.load_state_dict(state_dict)


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
