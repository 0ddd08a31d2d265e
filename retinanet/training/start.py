"""Where a new training run's weights come from, decided before anything is written.

- ``--pretrained``: the backbone only. ``auto`` (the default) takes torchvision's ImageNet weights
  for the chosen depth when they are cached or can be downloaded, and otherwise trains from
  scratch with a warning; ``imagenet`` insists on them; ``none`` trains from scratch; a path
  loads a local torchvision-layout ResNet file.
- ``--init_from``: a whole detector (``models.transfer``): a checkpoint of this project trained on
  any class list, a torchvision RetinaNet state dict, or ``torchvision-coco-v1`` / ``-v2`` by name.
  Its network options replace the command line's, since its weights only fit that network.

With weights to start from, the defaults become the fine-tuning ones: frozen BatchNorm in the
backbone (``--norm auto``) and the stem and first stage frozen (``--trainable_layers`` 3).
"""
import dataclasses
import os
import pickle

import torch

from retinanet.config import start_defaults
from retinanet.models.backbone import PretrainedWeightsError, check_pretrained_file, describe_load_error
from retinanet.models.retinanet import MODEL_ARG_NAMES, MODEL_OPTION_DEFAULTS, model_options
from retinanet.models.transfer import (TORCHVISION_SOURCE_NAMES, TransferError, convert_torchvision_state,
                                       is_torchvision_state, torchvision_weights)
from retinanet.models.checkpoint import CheckpointError, check_model_description
from retinanet.util.downloads import DownloadError, fetch

PRETRAINED_KEYWORDS = ("auto", "imagenet", "none")


class StartError(ValueError):
    """The requested start cannot be had; the message is one line naming the file or URL."""


@dataclasses.dataclass
class Start:
    """description: one line for the log and config.json; warning: a line to make prominent.
    backbone_file: ResNet weights to load; detector: a DetectorSource to transfer from."""
    description: str
    warning: str = None
    backbone_file: str = None
    detector: "DetectorSource" = None

    @property
    def from_weights(self):
        return self.backbone_file is not None or self.detector is not None


@dataclasses.dataclass
class DetectorSource:
    state: dict
    class_names: list
    options: dict
    description: str


def imagenet_url(depth):
    """The download address of torchvision's ImageNet weights for ResNet-``depth``."""
    from torchvision.models import get_model_weights
    return get_model_weights(f"resnet{depth}").IMAGENET1K_V1.url


def resolve_start(args, download=True):
    """The Start of a new run with train.py's flags ``args``; raises StartError."""
    if args.init_from:
        if args.pretrained not in (None, "auto", "none"):
            raise StartError(f"--init_from {args.init_from} already gives the backbone's weights; "
                             f"leave out --pretrained {args.pretrained}")
        source = read_detector_source(args.init_from, download)
        return Start(f"initialised from {source.description}", detector=source)
    spec = args.pretrained or "none"
    if spec == "none":
        return Start("random weights (--pretrained none)")
    if spec in ("auto", "imagenet"):
        url = imagenet_url(args.depth)
        try:
            path = fetch(url, download)
        except DownloadError as error:
            if spec == "imagenet":
                raise StartError(f"--pretrained imagenet: {error}") from None
            return Start("random weights (ImageNet weights unavailable)", warning=(
                f"WARNING: training from scratch, which on a small dataset gives a far weaker detector: ImageNet "
                f"weights for ResNet-{args.depth} are unavailable ({error}); pass --pretrained none to choose "
                f"scratch"))
        what = f"ImageNet weights for ResNet-{args.depth} from {path}"
    else:
        path, what = spec, f"backbone weights from {spec}"
    try:
        check_pretrained_file(path, args.depth, "frozen_bn")
    except PretrainedWeightsError as error:
        raise StartError(f"--pretrained {spec}: {error}") from None
    return Start(what, backbone_file=path)


def apply_start(args, start, defaults, typed=None):
    """Set the flags that depend on the start: the source detector's network options, ``--norm
    auto``, ``--trainable_layers`` when not given, and ``start`` (the description). Returns the
    log lines about options taken from the source.

    typed: the flags given on the command line (``options.explicit_flags``); None (a Namespace
    built in code) counts a flag as given when it differs from train.py's ``defaults``. A given
    network flag that disagrees with the source detector raises StartError naming both values:
    its weights only fit its own network, and ``--depth 50`` typed next to a ResNet-18 checkpoint
    must not silently train a ResNet-18."""
    lines = []
    if start.detector is not None:
        options = start.detector.options

        def given(name):
            return name in typed if typed is not None else getattr(args, name) != defaults[name]

        refused = [f"--{name} {getattr(args, name)} ({start.detector.description} has {options[name]})"
                   for name in MODEL_ARG_NAMES if name != "prior" and given(name)
                   and getattr(args, name) != options[name] and not (name == "norm" and args.norm == "auto")]
        if refused:
            raise StartError(f"--init_from sets the network, and these flags disagree with it: {'; '.join(refused)}; "
                             "leave them out")
        changed = [f"{name} {options[name]}" for name in model_option_names()
                   if getattr(args, name, None) != options[name]]
        for name in model_option_names():
            setattr(args, name, options[name])
        if changed:
            lines.append(f"network options from {start.detector.description}: {', '.join(changed)}")
    for name, value in start_defaults(vars(args), start.from_weights).items():
        setattr(args, name, value)
    args.start = start.description
    return lines


def model_option_names():
    """The options that shape the network, except the prior (which only initialises it)."""
    return [name for name in MODEL_ARG_NAMES if name != "prior"] + list(MODEL_OPTION_DEFAULTS)


def read_detector_source(spec, download=True):
    """A DetectorSource from ``--init_from``: a name in TORCHVISION_SOURCE_NAMES or a file."""
    if spec in TORCHVISION_SOURCE_NAMES:
        variant = TORCHVISION_SOURCE_NAMES[spec]
        try:
            path = fetch(torchvision_weights(variant).url, download)
        except DownloadError as error:
            raise StartError(f"--init_from {spec}: {error}") from None
    elif os.path.isfile(spec):
        path = spec
    else:
        names = ", ".join(TORCHVISION_SOURCE_NAMES)
        raise StartError(f"--init_from {spec}: no such file, and not one of {names}")
    data = _load_tensors(path)
    try:
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            options = model_options(check_model_description(data, path))
            return DetectorSource(data["model"], list(data["class_names"]), options,
                                  f"{path} ({len(data['class_names'])} classes)")
        if isinstance(data, dict) and is_torchvision_state(data):
            state, names, _, options = convert_torchvision_state(data)
            variant = "v2" if options["p6_from"] == "c5" else "v1"
            return DetectorSource(state, names, model_options(options),
                                  f"torchvision's COCO RetinaNet {variant}, {path} (80 classes)")
    except CheckpointError as error:  # its message names the file
        raise StartError(f"--init_from: {error}") from None
    except (TransferError, KeyError) as error:
        raise StartError(f"--init_from {path}: {error}") from None
    raise StartError(f"--init_from {path}: neither a checkpoint of this project nor a torchvision RetinaNet "
                     "state dict")


def _load_tensors(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise StartError(f"--init_from {path}: refused to load: the file holds Python objects other than tensors "
                         f"and plain data, or it is corrupt ({describe_load_error(error)})") from None
    except Exception as error:  # a damaged file fails in many ways (EOFError, zip errors...)
        raise StartError(f"--init_from {path}: not a readable weights file ({describe_load_error(error)})") from None
