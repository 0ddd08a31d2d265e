"""The training configuration: every option of train.py, declared once.

Frozen dataclasses grouped as the pipeline is (``ModelConfig``, ``DataConfig``, ``AugmentConfig``,
``OptimConfig``, ``ScheduleConfig``, ``RunConfig``; ``TrainConfig`` holds one of each). Each field
carries its default and, in its metadata (``option``), its help text, the kind of value it takes
(a name the command line turns into a parser with the range, ``cli/flags.py``), its choices, and
whether ``--resume`` may change it or why not. train.py's parser, ``--help`` included, is generated
from these fields, so are the resume policy and ``--print_config``; a test walks both and checks
that they agree.

The rest of the package still reads a flat namespace of these names (``TrainConfig.flat``); the
derived defaults (``norm auto``, the milestones, the augmentation knobs) are resolved by
``cli.options.resolve_training_args``.
"""
import argparse
import dataclasses
import os

from retinanet.data.augment import AUGMENT_CHOICES, DEFAULT_AUGMENT, augment_settings
from retinanet.data.transforms import DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, MAX_MAX_SIDE, MAX_MIN_SIDE
from retinanet.models.anchor_options import (DEFAULT_NEGATIVE_IOU, DEFAULT_POSITIVE_IOU, DEFAULT_RATIOS,
                                              DEFAULT_SCALES, DEFAULT_SIZES, MAX_RATIOS, MAX_SCALES)
from retinanet.models.backbone import NORM_CHOICES, RESNET_LAYOUTS
from retinanet.models.heads import HEAD_INIT_CHOICES
from retinanet.models.retinanet import HEAD_NORM_CHOICES, MODEL_OPTION_DEFAULTS
from retinanet.optim import OPTIMIZER_CHOICES, SCHEDULE_CHOICES
from retinanet.runs.trackers import LOGGER_CHOICES
from retinanet.util.device import AMP_CHOICES, DEVICE_CHOICES

MAX_SEED = 2**32 - 1  # NumPy seeds are 32-bit unsigned integers
# The version of the saved configuration (checkpoints' ``args`` and config.json), stored with it
# as ``config_version``. 1: everything written before the number was (no ``config_version``);
# 2: the options of ``TrainConfig``. ``migrate_saved_config`` reads every version up to this one.
CONFIG_VERSION = 2
RESUMABLE = "resumable"  # the ``resume`` of an option a resumed run may change
# --help's sections, in order; an option is in its group's ``section`` unless it names another.
SECTIONS = ("model", "data", "image size", "augmentation", "optimisation", "schedule", "device",
            "detection decoding", "run", "configuration file")


def option(default, help, *, kind=None, choices=None, nargs=None, const=None, metavar=None, aliases=(),
           switch=False, section=None, resume=None):
    """A configuration field. kind: the value's parser (``cli.flags.KINDS``: "positive_int",
    ("int_range", low, high), ("side", maximum), ...); switch: a flag without a value (store_true);
    section: its --help section when not its group's; resume: RESUMABLE when --resume may change
    it, else why not (default: the group's reason)."""
    metadata = {"help": help, "kind": kind, "choices": choices, "nargs": nargs, "const": const, "metavar": metavar,
                "aliases": tuple(aliases), "switch": switch, "section": section, "resume": resume}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network and where its weights start. A resumed run keeps all of these."""
    section, resume_reason = "model", "a model option"
    depth: int = option(50, "ResNet depth (default: 50)", kind="int", choices=sorted(RESNET_LAYOUTS))
    norm: str = option("auto", "backbone normalisation: auto = frozen_bn when starting from pretrained weights, gn "
                       "from random weights (default: auto)", choices=("auto",) + NORM_CHOICES)
    head_norm: str = option("gn", "GroupNorm in the FPN and heads, or none (default: gn)", choices=HEAD_NORM_CHOICES)
    head_init: str = option("normal", "initial weights of the FPN and head towers: normal (std 0.01, for towers with "
                            "GroupNorm) or kaiming (He, for towers without normalisation) (default: normal)",
                            choices=HEAD_INIT_CHOICES)
    fpn_channels: int = option(256, "channels of the FPN and heads, a multiple of 32 (default: 256)",
                               kind="positive_int")
    prior: float = option(0.01, "initial foreground probability of the classifier (default: 0.01)", kind="probability")
    anchor_sizes: list = option(DEFAULT_SIZES, "anchor base size in pixels on P3-P7: 5 numbers, or 1 (P3's, each level "
                                "doubling it); saved with the model (default: 32 64 128 256 512)",
                                kind="anchor_sizes", nargs="+", metavar="SIZE")
    anchor_scales: list = option(DEFAULT_SCALES, "anchor sizes per octave, as factors of the base size; one whole "
                                 f"number N means the N scales 2^(k/N), at most {MAX_SCALES}; saved with the model "
                                 "(default: 3, i.e. 1 2^(1/3) 2^(2/3))", kind="anchor_scales", nargs="+",
                                 metavar="SCALE")
    anchor_ratios: list = option(DEFAULT_RATIOS, f"anchor shapes as height/width, at most {MAX_RATIOS}; the heads "
                                 "predict len(ratios) x len(scales) anchors per location; saved with the model "
                                 "(default: 0.5 1 2)", kind="anchor_ratios", nargs="+", metavar="RATIO")
    pretrained: str = option("auto", "backbone start: auto = torchvision's ImageNet weights for --depth when cached "
                             "or downloadable (once, into $TORCH_HOME/hub/checkpoints), else random weights with a "
                             "warning; imagenet = those weights or an error; none = random weights; PATH = a local "
                             "torchvision ResNet file (default: auto)", metavar="auto|imagenet|none|PATH")
    init_from: str = option(None, "start from a whole detector: a checkpoint of this project (any classes; rows of "
                            "classes with the same name are carried over), a torchvision RetinaNet state dict, or "
                            "torchvision-coco-v1 / torchvision-coco-v2 (downloaded once); its network options "
                            "replace --depth, --norm, --head_norm, --fpn_channels and the --anchor_* options",
                            metavar="SOURCE")
    trainable_layers: int = option(None, "backbone stages that train, counted from the top (layer4, layer3, layer2, "
                                   "layer1, stem): 3 when starting from pretrained weights, as torchvision, 5 (all) "
                                   "from random weights", kind=("int_range", 0, 5))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The datasets and the image size."""
    section, resume_reason = "data", "the dataset"
    coco_path: str = option("./data", "dataset root: {set}.json and images/{set}/, COCO's "
                            "annotations/instances_{set}.json and {set}/, or Roboflow's {set}/_annotations.coco.json "
                            "(default: ./data)")
    train_set: str = option("train", "training set name (default: train)")
    val_set: str = option("val", "validation set name; '' disables evaluation (default: val)")
    train_json: str = option(None, "the training set's COCO annotation file, instead of finding --train_set under "
                             "--coco_path", metavar="JSON")
    train_images: str = option(None, "the folder the training JSON's file_names are relative to (default: the "
                               "layout's image folder, or the folder of --train_json)", metavar="FOLDER")
    val_json: str = option(None, "the validation set's COCO annotation file, instead of finding --val_set under "
                           "--coco_path", metavar="JSON")
    val_images: str = option(None, "the folder the validation JSON's file_names are relative to (default: the "
                             "layout's image folder, or the folder of --val_json)", metavar="FOLDER")
    max_skipped_images: int = option(10, "stop when more images than this fail to decode during training "
                                     "(default: 10)", kind="non_negative_int", resume=RESUMABLE)
    skip_dataset_check: bool = option(False, "do not validate the dataset files before training (not recommended)",
                                      switch=True, resume=RESUMABLE)
    allow_changed_data: bool = option(False, "with --resume: continue although the training set's annotation file "
                                      "changed since the checkpoint (the run records both versions); without it "
                                      "such a resume is refused", switch=True, resume=RESUMABLE)
    min_side: int = option(DEFAULT_MIN_SIDE, f"resize so the short side has this length, at most {MAX_MIN_SIDE} "
                           f"(default: {DEFAULT_MIN_SIDE})", kind=("side", MAX_MIN_SIDE), section="image size",
                           resume="an image size")
    max_side: int = option(DEFAULT_MAX_SIDE, f"...unless the long side would exceed this, at most {MAX_MAX_SIDE} "
                           f"(default: {DEFAULT_MAX_SIDE})", kind=("side", MAX_MAX_SIDE), section="image size",
                           resume="an image size")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation: a preset and the knobs that override it (``data.augment``)."""
    section, resume_reason = "augmentation", "the augmentation"
    augment: str = option(DEFAULT_AUGMENT, "training augmentation preset: off = none; flip = horizontal flip with "
                          "probability 0.5; light = flip, multi-scale short sides (0.8 to 1.0 x --min_side) and "
                          "photometric jitter 0.2; strong = light with scale jitter 0.5-1.5 (crop or pad to the "
                          "canvas), photometric jitter 0.4 and boxes under 2 px dropped "
                          f"(default: {DEFAULT_AUGMENT})", choices=AUGMENT_CHOICES)
    train_sides: list = option(None, "multi-scale training: each training image gets a short side drawn from these, "
                               "the long side still capped at --max_side (default: the preset's: --min_side; light "
                               "and strong: 0.8, 0.85, 0.9, 0.95 and 1.0 x --min_side)", kind=("side", MAX_MIN_SIDE),
                               nargs="+", metavar="N")
    scale_jitter: list = option(None, "resize each training image by a random factor from LOW to HIGH, then crop "
                                "(factor > 1) or pad (factor < 1) back to its unjittered size; boxes cut by the crop "
                                "are clipped (default: the preset's: 0.5 1.5 for strong, none otherwise)",
                                kind="positive_float", nargs=2, metavar=("LOW", "HIGH"))
    photometric: float = option(None, "photometric jitter strength from 0 to 1: brightness, contrast and saturation "
                                "factors from 1-S to 1+S, hue shifted by up to S/4 of the colour circle (default: the "
                                "preset's: 0.2 for light, 0.4 for strong, 0 otherwise)", kind="unit_interval",
                                metavar="S")
    vflip: bool = option(False, "also flip training images vertically with probability 0.5 (overhead and microscope "
                         "images, where up and down carry no meaning)", switch=True)
    rot90: bool = option(False, "also rotate training images by a random multiple of 90 degrees (overhead and "
                         "microscope images); a batch turns by a quarter all its images or none, so non-square "
                         "images keep one shape per batch and are not padded to a square", switch=True)
    min_box_size: float = option(None, "drop boxes narrower or shorter than PX pixels after augmentation, with their "
                                 "labels: 0 (keep every box; not with a --scale_jitter that crops) or at least 1 "
                                 "(default: the preset's: 2 for strong, 0 otherwise)", kind="non_negative_float",
                                 metavar="PX")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Batches, the optimiser and the loss."""
    section, resume_reason = "optimisation", "the loss"
    batch_size: int = option(2, "images per batch (default: 2)", kind="positive_int", resume="the batch order")
    drop_last: bool = option(False, "drop each aspect-ratio group's last incomplete batch every epoch", switch=True,
                             resume="the batch order")
    optimizer: str = option("adam", "optimizer (default: adam)", choices=OPTIMIZER_CHOICES,
                            resume="the optimizer, whose state is restored")
    learning_rate: float = option(1e-4, "base learning rate (default: 1e-4)", kind="positive_float", aliases=("--lr",),
                                  resume=RESUMABLE)
    weight_decay: float = option(0.0, "weight decay (default: 0; try 1e-4 with sgd, 0.05 with adamw)",
                                 kind="non_negative_float", resume="the optimizer, whose state is restored")
    momentum: float = option(0.9, "SGD momentum (default: 0.9)", kind="unit_interval",
                             resume="the optimizer, whose state is restored")
    grad_clip: float = option(0.1, "clip the gradient norm to this (default: 0.1; 0 disables)",
                              kind="non_negative_float", resume=RESUMABLE)
    alpha: float = option(0.25, "focal loss alpha (default: 0.25)", kind="unit_interval")
    gamma: float = option(2.0, "focal loss gamma (default: 2.0)", kind="non_negative_float")
    low_quality_matches: bool = option(True, "on: also train each box's best-overlapping anchor when its IoU is under "
                                       "--positive_iou, so that boxes smaller or thinner than every anchor are learnt "
                                       "too (as torchvision and detectron2); off: the paper's rule (default: on; a "
                                       "bare flag means on)", kind="on_off", nargs="?", const=True, metavar="on|off")
    positive_iou: float = option(DEFAULT_POSITIVE_IOU, "an anchor whose best IoU with a box reaches this is trained on "
                                 f"that box (default: {DEFAULT_POSITIVE_IOU})", kind="iou")
    negative_iou: float = option(DEFAULT_NEGATIVE_IOU, "an anchor whose best IoU stays under this is background; in "
                                 f"between, ignored; at most --positive_iou (default: {DEFAULT_NEGATIVE_IOU})",
                                 kind="iou")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How long and at what rate: a resumed run may change all of it."""
    section, resume_reason = "schedule", RESUMABLE
    epochs: int = option(20, "training epochs (default: 20)", kind="positive_int")
    lr_schedule: str = option("multistep", "multistep: multiply by --lr_gamma at each milestone; cosine: decay to 0 "
                              "(default: multistep)", choices=SCHEDULE_CHOICES)
    milestones: list = option(None, "epochs after which the learning rate drops; none given: a constant rate "
                              "(default: once, after 7/8 of --epochs)", kind="positive_int", nargs="*")
    lr_gamma: float = option(0.1, "factor at each milestone (default: 0.1)", kind="probability")
    warmup_iters: int = option(100, "linear learning-rate warm-up iterations (default: 100; 0 disables)",
                               kind="non_negative_int")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where and how the run computes, reports and saves; a resumed run may change these, except the
    seed and where its flags came from."""
    section, resume_reason = "run", RESUMABLE
    device: str = option("auto", "where to run: auto picks cuda when a GPU is present, else cpu (default: auto)",
                         choices=DEVICE_CHOICES, section="device")
    workers: int = option(min(8, os.cpu_count() or 1), "data-loading worker processes (default: the number of cores, "
                          "at most 8)", kind="worker_count", section="device")
    amp: str = option("auto", "mixed precision: auto = bfloat16 where the hardware runs it natively (CUDA GPUs with "
                      "bfloat16, CPUs with AVX512-BF16 or AMX), float32 elsewhere; on (or a bare --amp) = always "
                      "(float16 with a gradient scaler on GPUs without bfloat16); off = float32. Layers whose "
                      "reduced precision is wrong on this machine run in float32 (checked at start-up) "
                      "(default: auto)", choices=AMP_CHOICES, nargs="?", const="on", section="device")
    channels_last: bool = option(False, "use the channels-last memory format", switch=True, section="device")
    score_threshold: float = option(0.05, "drop detections scoring below this (default: 0.05)", kind="unit_interval",
                                    aliases=("--threshold",), section="detection decoding")
    nms_iou: float = option(0.5, "IoU for per-class NMS (default: 0.5)", kind="unit_interval",
                            section="detection decoding")
    max_detections: int = option(100, "detections kept per image (default: 100, what COCOeval counts)",
                                 kind="positive_int", section="detection decoding")
    output_path: str = option("./output", "folder for run folders with checkpoints (default: ./output)")
    log_dir: str = option("./log", "folder for the run's console log (default: ./log)")
    run_name: str = option(None, "run name, a folder name (default: train_depth{D}_epochs{E}_no{N}, N the next free "
                           "number)", kind="run_name")
    seed: int = option(3407, f"random seed, 0 to {MAX_SEED} (default: 3407)", kind=("int_range", 0, MAX_SEED),
                       resume="the batch order")
    resume: str = option(None, "continue from a checkpoint (checkpoint_last.pt or checkpoint_interrupted.pt of a "
                         "run)", metavar="PATH")
    eval_every: int = option(1, "evaluate on the validation set every N epochs and at the end (default: 1; 0: only "
                             "at the end)", kind="non_negative_int")
    eval_batch_size: int = option(4, "images per batch during evaluation (default: 4)", kind="positive_int")
    save_every: int = option(0, "also keep checkpoint_epoch{N}.pt every N epochs (default: 0, off)",
                             kind="non_negative_int")
    evaluator: str = option("faster", "COCO evaluator: faster-coco-eval or pycocotools (same numbers; default: "
                            "faster)", choices=("faster", "pycocotools"))
    print_every: int = option(50, "log a loss line every N iterations when no progress bar is shown (default: 50)",
                              kind="non_negative_int")
    logger: list = option([], "experiment trackers besides steps.csv and metrics.jsonl, which are always written: "
                          "tensorboard (event files in the run folder's tensorboard/), mlflow (to MLflow's tracking "
                          "URI); each needs its package installed (default: none)", choices=LOGGER_CHOICES, nargs="*")
    sync_bn: bool = option(False, "SyncBatchNorm across processes (with --norm bn)", switch=True)
    config: str = option(None, "read flags from a YAML or JSON file of {flag: value} (a run's config.json too); flags "
                         "on the command line override it", metavar="FILE", section="configuration file",
                         resume="where a new run's flags come from")
    print_config: bool = option(False, "print the resolved flags as YAML (a valid --config file) and exit without "
                                "training", switch=True, section="configuration file")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything train.py takes, one group per stage of the pipeline."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def flat(self):
        """{option name: value} over all groups: the namespace train.py's flags give."""
        return {name: value for group in self._groups() for name, value in dataclasses.asdict(group).items()}

    @classmethod
    def from_flat(cls, values):
        """The configuration of a flat {option name: value} (names of no option are ignored)."""
        groups = {}
        for field in dataclasses.fields(cls):
            names = {option.name for option in dataclasses.fields(field.type)}
            groups[field.name] = field.type(**{name: values[name] for name in names if name in values})
        return cls(**groups)

    def _groups(self):
        return [getattr(self, field.name) for field in dataclasses.fields(self)]


def options():
    """[(dataclasses.Field, its group's class)] of every option, in declaration order."""
    return [(option, field.type) for field in dataclasses.fields(TrainConfig) for option in dataclasses.fields(field.type)]


def default_of(field):
    """The default value of an option (a fresh list for list defaults)."""
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def section_of(field, group):
    """The --help section of an option of ``group``: its own, or its group's."""
    return field.metadata["section"] or group.section


def resume_policy(field, group):
    """RESUMABLE when --resume may change the option, else why not (what it would change)."""
    return field.metadata["resume"] or group.resume_reason


def default_milestones(epochs):
    """One drop, after 7/8 of the epochs: the full rate for most of a short run and a last stretch
    at a tenth of it. In the recipe benchmark's 8 epochs, drops at 2/3 and 8/9 cost 0.04 AP against
    a constant rate, and the late drop gained 0.003 on it."""
    return [max(1, round(epochs * 7 / 8))]


def resolve_training_args(args=None, **overrides):
    """A complete training Namespace: train.py's defaults for anything ``args`` lacks, ``overrides``
    applied, then the derived defaults resolved (``--milestones`` from ``--epochs``, ``--norm auto``).

    train.py and ``Trainer`` both call this, so a Trainer built from code trains exactly what the
    same flags on the command line would. Where the start is known from the flags alone, ``--norm
    auto`` and ``--trainable_layers`` are settled too (``start_defaults``); with --pretrained auto
    or --init_from they wait for the start (``training.start.apply_start``, the same rule).)"""
    values = TrainConfig().flat()
    values.update(vars(args) if args is not None else {})
    values.update(overrides)
    if values["milestones"] is None:
        values["milestones"] = default_milestones(values["epochs"])
    values.update(augment_settings(values))  # the --augment preset fills the knobs not given
    for name, default in MODEL_OPTION_DEFAULTS.items():
        values.setdefault(name, default)
    if not values["init_from"] and values["pretrained"] != "auto":
        # Otherwise whether the run starts from weights waits for the start (training.start).
        values.update(start_defaults(values, from_weights=values["pretrained"] not in (None, "none")))
    return argparse.Namespace(**values)


FINE_TUNING_TRAINABLE_LAYERS = 3  # torchvision's default when starting from pretrained weights
ALL_LAYERS = 5


def start_defaults(values, from_weights):
    """The options whose default depends on whether the run starts from pretrained weights, as
    {name: value} for those left to it: ``--norm auto`` becomes frozen_bn (the pretrained statistics
    kept) or gn (from scratch), and an unset ``--trainable_layers`` 3 (stem and first stage frozen)
    or 5 (every stage trains)."""
    settled = {}
    if values.get("norm", "auto") == "auto":
        settled["norm"] = "frozen_bn" if from_weights else "gn"
    if values.get("trainable_layers") is None:
        settled["trainable_layers"] = FINE_TUNING_TRAINABLE_LAYERS if from_weights else ALL_LAYERS
    return settled


class SavedConfigError(ValueError):
    """A saved configuration this version cannot read (written by a newer one, or damaged)."""


def migrate_saved_config(saved, source):
    """The options of a saved configuration (a checkpoint's ``args`` or a config.json), in today's
    form: {option name: value} for the names it holds (the caller fills the rest with defaults).
    Version 1 files from before an option existed get the value those runs had: ``amp`` as a
    boolean, no ``trainable_layers`` (every stage trained), no ``pretrained`` (random weights).
    Raises SavedConfigError naming ``source`` for a newer version."""
    version = saved.get("config_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SavedConfigError(f"{source}: config_version {version!r} is not a version number")
    if version > CONFIG_VERSION:
        raise SavedConfigError(f"{source}: written by a newer version of this project (config version {version}; "
                               f"this one reads up to {CONFIG_VERSION}): update it to use this file")
    values = dict(saved)
    if isinstance(values.get("amp"), bool):  # before --amp took a value
        values["amp"] = "on" if values["amp"] else "off"
    if values.get("trainable_layers") is None:  # before --trainable_layers every stage trained
        values["trainable_layers"] = 5
    if values.get("pretrained") is None:  # ...and there was no --pretrained auto
        values["pretrained"] = "none"
    values["config_version"] = CONFIG_VERSION
    return values
