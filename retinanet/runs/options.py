"""Command-line options shared by the scripts, with checks that fail at parse time.

Each script builds one ``argparse`` parser from these groups (``parents=[...]``), so a flag
means the same thing everywhere and a bad value is refused before any work starts.
"""
import argparse
import copy
import os
import sys

from retinanet.cli.anchor_flags import add_anchor_arguments, add_assignment_arguments, add_low_quality_argument
from retinanet.cli.config_file import ConfigFileError, add_config_arguments, checked_values, config_defaults
from retinanet.data.augment import AUGMENT_CHOICES, DEFAULT_AUGMENT, augment_settings
from retinanet.data.check import DatasetError, validate_or_raise
from retinanet.data.layout import SetNotFoundError, resolve_set
from retinanet.data.transforms import (DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, MAX_MAX_SIDE, MAX_MIN_SIDE,
                                       image_size_problem)
from retinanet.models.backbone import NORM_CHOICES, RESNET_LAYOUTS, PretrainedWeightsError, check_pretrained_file
from retinanet.models.anchor_options import iou_threshold_problem
from retinanet.models.heads import HEAD_INIT_CHOICES
from retinanet.models.retinanet import HEAD_NORM_CHOICES, MODEL_OPTION_DEFAULTS
from retinanet.optim import OPTIMIZER_CHOICES, SCHEDULE_CHOICES
from retinanet.training.start import PRETRAINED_KEYWORDS
from retinanet.util.device import AMP_CHOICES, DEVICE_CHOICES, resolve_device
from retinanet.util.io import output_location_problem


def positive_int(text):
    value = _parse(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run_name(text):
    """An argparse type for --run_name: one folder name, so that the run stays inside --output_path."""
    if text in ("", ".", "..") or "/" in text or os.sep in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder name; a run name has no '/' and is not "
                                         "'.' or '..'")
    return text


def non_negative_int(text):
    value = _parse(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


# Each loader worker is a process holding PyTorch and the dataset: about 0.5 GB seen here.
WORKER_MEMORY_BYTES = 512 * 2**20
WORKERS_PER_CORE = 4


def worker_limit():
    """(most loader workers, why): WORKERS_PER_CORE per core this process may use, and no more than
    the available memory holds at WORKER_MEMORY_BYTES each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit, why = WORKERS_PER_CORE * cores, f"{cores} cores"
    available = _available_memory()
    if available is not None:
        by_memory = max(1, available // WORKER_MEMORY_BYTES)
        why += f" and {available / 2**30:.1f} GB of available memory (about 0.5 GB a worker)"
        limit = min(limit, by_memory)
    return limit, why


def _available_memory():
    """MemAvailable from /proc/meminfo in bytes, or None where there is none (macOS, Windows)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def worker_count(text):
    """--workers: 0 (load in the main process) up to ``worker_limit()``."""
    value = non_negative_int(text)
    limit, why = worker_limit()
    if value > limit:
        raise argparse.ArgumentTypeError(f"{value} worker processes is more than this machine can run: at most {limit} "
                                         f"({WORKERS_PER_CORE} per core with {why})")
    return value


MAX_SEED = 2**32 - 1  # NumPy seeds are 32-bit unsigned integers


def int_in_range(low, high, why=""):
    """An argparse type accepting integers from ``low`` to ``high``; ``why`` explains the bounds."""
    def parse(text):
        value = _parse(int, text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}{why}, got {text}")
        return value
    return parse


def positive_float(text):
    value = _parse(float, text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def non_negative_float(text):
    value = _parse(float, text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def probability(text):
    value = _parse(float, text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def unit_interval(text):
    value = _parse(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _parse(kind, text):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def device_parent(inference=False):
    """--device, --workers, --amp, --channels_last. inference: the --workers default of test.py and
    vis.py, resolved by ``inference_workers`` once the device is known."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("device")
    group.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                       help="where to run: auto picks cuda when a GPU is present, else cpu (default: auto)")
    if inference:
        group.add_argument("--workers", type=worker_count, default=None,
                           help="data-loading worker processes (default: the number of cores, at most 8; none, "
                                "loading in the main process, when the network runs on a CPU of 2 cores or fewer)")
    else:
        group.add_argument("--workers", type=worker_count, default=min(8, os.cpu_count() or 1),
                           help="data-loading worker processes (default: the number of cores, at most 8)")
    group.add_argument("--amp", nargs="?", const="on", default="auto", choices=AMP_CHOICES,
                       help="mixed precision: auto = bfloat16 where the hardware runs it natively (CUDA GPUs with "
                            "bfloat16, CPUs with AVX512-BF16 or AMX), float32 elsewhere; on (or a bare --amp) = "
                            "always (float16 with a gradient scaler on GPUs without bfloat16); off = float32. "
                            "Layers whose reduced precision is wrong on this machine run in float32 (checked at "
                            "start-up) (default: auto)")
    group.add_argument("--channels_last", action="store_true", help="use the channels-last memory format")
    return parser


def inference_workers(workers, device):
    """--workers of test.py and vis.py: as given, else the number of cores (at most 8), except on a
    CPU of 2 cores or fewer, where the network already keeps every core busy and worker processes
    only add their start-up and compete with it (0: load in the main process; measured 1.3x as fast
    for the whole evaluation of 100 images on 2 cores, bench/deploy_speed.py --workers 0 / 2)."""
    if workers is not None:
        return workers
    cores = os.cpu_count() or 1
    on_cpu = device == "cpu" or (device == "auto" and resolve_device("auto").type == "cpu")
    return 0 if on_cpu and cores <= 2 else min(8, cores)


def side_length(maximum):
    """An argparse type for an image side in pixels, from 1 to ``maximum``."""
    return int_in_range(1, maximum, " (pixels; larger images would need gigabytes of memory)")


def image_size_parent(min_side=DEFAULT_MIN_SIDE, max_side=DEFAULT_MAX_SIDE):
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("image size")
    group.add_argument("--min_side", type=side_length(MAX_MIN_SIDE), default=min_side,
                       help=f"resize so the short side has this length, at most {MAX_MIN_SIDE} (default: {min_side})")
    group.add_argument("--max_side", type=side_length(MAX_MAX_SIDE), default=max_side,
                       help=f"...unless the long side would exceed this, at most {MAX_MAX_SIDE} (default: {max_side})")
    return parser


def decoding_parent():
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("detection decoding")
    group.add_argument("--score_threshold", "--threshold", dest="score_threshold", type=unit_interval, default=0.05,
                       help="drop detections scoring below this (default: 0.05)")
    group.add_argument("--nms_iou", type=unit_interval, default=0.5, help="IoU for per-class NMS (default: 0.5)")
    group.add_argument("--max_detections", type=positive_int, default=100,
                       help="detections kept per image (default: 100, what COCOeval counts)")
    return parser


def model_parent():
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("model")
    group.add_argument("--depth", type=int, default=50, choices=sorted(RESNET_LAYOUTS),
                       help="ResNet depth (default: 50)")
    group.add_argument("--norm", default="auto", choices=("auto",) + NORM_CHOICES,
                       help="backbone normalisation: auto = frozen_bn when starting from pretrained weights, gn "
                            "from random weights (default: auto)")
    group.add_argument("--head_norm", default="gn", choices=HEAD_NORM_CHOICES,
                       help="GroupNorm in the FPN and heads, or none (default: gn)")
    group.add_argument("--head_init", default="normal", choices=HEAD_INIT_CHOICES,
                       help="initial weights of the FPN and head towers: normal (std 0.01, for towers with "
                            "GroupNorm) or kaiming (He, for towers without normalisation) (default: normal)")
    group.add_argument("--fpn_channels", type=positive_int, default=256,
                       help="channels of the FPN and heads, a multiple of 32 (default: 256)")
    group.add_argument("--prior", type=probability, default=0.01,
                       help="initial foreground probability of the classifier (default: 0.01)")
    add_anchor_arguments(group)
    group.add_argument("--pretrained", default="auto", metavar="auto|imagenet|none|PATH",
                       help="backbone start: auto = torchvision's ImageNet weights for --depth when cached or "
                            "downloadable (once, into $TORCH_HOME/hub/checkpoints), else random weights with a "
                            "warning; imagenet = those weights or an error; none = random weights; PATH = a local "
                            "torchvision ResNet file (default: auto)")
    group.add_argument("--init_from", default=None, metavar="SOURCE",
                       help="start from a whole detector: a checkpoint of this project (any classes; rows of "
                            "classes with the same name are carried over), a torchvision RetinaNet state dict, or "
                            "torchvision-coco-v1 / torchvision-coco-v2 (downloaded once); its network options "
                            "replace --depth, --norm, --head_norm, --fpn_channels and the --anchor_* options")
    group.add_argument("--trainable_layers", type=int_in_range(0, 5), default=None,
                       help="backbone stages that train, counted from the top (layer4, layer3, layer2, layer1, "
                            "stem): 3 when starting from pretrained weights, as torchvision, 5 (all) from "
                            "random weights")
    return parser


def training_parent():
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=positive_int, default=20, help="training epochs (default: 20)")
    group.add_argument("--batch_size", type=positive_int, default=2, help="images per batch (default: 2)")
    group.add_argument("--drop_last", action="store_true",
                       help="drop each aspect-ratio group's last incomplete batch every epoch")
    group.add_argument("--optimizer", default="adam", choices=OPTIMIZER_CHOICES, help="optimizer (default: adam)")
    group.add_argument("--learning_rate", "--lr", dest="learning_rate", type=positive_float, default=1e-4,
                       help="base learning rate (default: 1e-4)")
    group.add_argument("--weight_decay", type=non_negative_float, default=0.0,
                       help="weight decay (default: 0; try 1e-4 with sgd, 0.05 with adamw)")
    group.add_argument("--momentum", type=unit_interval, default=0.9, help="SGD momentum (default: 0.9)")
    group.add_argument("--lr_schedule", default="multistep", choices=SCHEDULE_CHOICES,
                       help="multistep: multiply by --lr_gamma at each milestone; cosine: decay to 0 (default: multistep)")
    group.add_argument("--milestones", type=positive_int, nargs="*", default=None,
                       help="epochs after which the learning rate drops; none given: a constant rate "
                            "(default: once, after 7/8 of --epochs)")
    group.add_argument("--lr_gamma", type=probability, default=0.1, help="factor at each milestone (default: 0.1)")
    group.add_argument("--warmup_iters", type=non_negative_int, default=100,
                       help="linear learning-rate warm-up iterations (default: 100; 0 disables)")
    group.add_argument("--grad_clip", type=non_negative_float, default=0.1,
                       help="clip the gradient norm to this (default: 0.1; 0 disables)")
    group.add_argument("--alpha", type=unit_interval, default=0.25, help="focal loss alpha (default: 0.25)")
    group.add_argument("--gamma", type=non_negative_float, default=2.0, help="focal loss gamma (default: 2.0)")
    add_low_quality_argument(group)
    add_assignment_arguments(group)
    add_augment_arguments(parser.add_argument_group("augmentation"))
    return parser


def add_augment_arguments(group):
    """--augment and the knobs that override its preset (``data.augment``); evaluation never augments."""
    group.add_argument("--augment", default=DEFAULT_AUGMENT, choices=AUGMENT_CHOICES,
                       help="training augmentation preset: off = none; flip = horizontal flip with probability "
                            "0.5; light = flip, multi-scale short sides (0.8 to 1.0 x --min_side) and photometric "
                            "jitter 0.2; strong = light with scale jitter 0.5-1.5 (crop or pad to the canvas), "
                            f"photometric jitter 0.4 and boxes under 2 px dropped (default: {DEFAULT_AUGMENT})")
    group.add_argument("--train_sides", type=side_length(MAX_MIN_SIDE), nargs="+", default=None, metavar="N",
                       help="multi-scale training: each training image gets a short side drawn from these, the "
                            "long side still capped at --max_side (default: the preset's: --min_side; light and "
                            "strong: 0.8, 0.85, 0.9, 0.95 and 1.0 x --min_side)")
    group.add_argument("--scale_jitter", type=positive_float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="resize each training image by a random factor from LOW to HIGH, then crop (factor > 1) "
                            "or pad (factor < 1) back to its unjittered size; boxes cut by the crop are clipped "
                            "(default: the preset's: 0.5 1.5 for strong, none otherwise)")
    group.add_argument("--photometric", type=unit_interval, default=None, metavar="S",
                       help="photometric jitter strength from 0 to 1: brightness, contrast and saturation factors "
                            "from 1-S to 1+S, hue shifted by up to S/4 of the colour circle (default: the preset's: "
                            "0.2 for light, 0.4 for strong, 0 otherwise)")
    group.add_argument("--vflip", action="store_true",
                       help="also flip training images vertically with probability 0.5 (overhead and microscope "
                            "images, where up and down carry no meaning)")
    group.add_argument("--rot90", action="store_true",
                       help="also rotate training images by a random multiple of 90 degrees (overhead and microscope "
                            "images); a batch turns by a quarter all its images or none, so non-square images keep "
                            "one shape per batch and are not padded to a square")
    group.add_argument("--min_box_size", type=non_negative_float, default=None, metavar="PX",
                       help="drop boxes narrower or shorter than PX pixels after augmentation, with their labels: "
                            "0 (keep every box; not with a --scale_jitter that crops) or at least 1 (default: the "
                            "preset's: 2 for strong, 0 otherwise)")


def check_image_sizes(parser, args):
    problem = image_size_problem(args.min_side, args.max_side)  # values restored from a checkpoint, too
    if problem:
        parser.error(f"--{problem}" + (f" (saved in {args.resume})" if getattr(args, "resume", None) else ""))
    if args.min_side > args.max_side:
        parser.error(f"--min_side {args.min_side} is larger than --max_side {args.max_side}")


def check_existing_dir(parser, path, flag):
    if not os.path.isdir(path):
        parser.error(f"{flag} {path}: no such folder")


def check_output_folder(parser, path, flag):
    """A folder that a script will write into can be: ``parser.error`` naming the flag if not."""
    problem = output_location_problem(path, "folder")
    if problem:
        parser.error(f"{flag} {path}: {problem}")


def check_output_file(parser, path, flag):
    """A file that a script will write can be (its folder can be made, it is not a folder)."""
    problem = output_location_problem(path, "file")
    if problem:
        parser.error(f"{flag} {path}: {problem}")


def check_existing_file(parser, path, flag):
    if path is not None and not os.path.isfile(path):
        parser.error(f"{flag} {path}: " + ("a folder, not a file" if os.path.isdir(path) else "no such file"))


# ----- ending a script on unusable input: the reason on stderr, exit status 2 -------------------
def fail(message):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def exit_with_report(error):
    """End with a DatasetError's full report (every problem, with file, id and reason) and exit status 2."""
    print(error.report.format(), file=sys.stderr)
    raise SystemExit(2)


def check_set_or_exit(root, set_name, json_path=None, image_dir=None):
    """The dataset check train.py runs, so a broken set is reported in full, not met mid-run."""
    try:
        return validate_or_raise(root, set_name, json_path=json_path, image_dir=image_dir)
    except DatasetError as error:
        exit_with_report(error)


# ----- the one set test.py and vis.py read: found under --coco_path, or given as explicit files -----
def set_files_parent():
    """--set_json, --set_images: explicit files of the set, for layouts not recognised under --coco_path."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("set files (for a layout not recognised under --coco_path, e.g. CVAT, "
                                      "Label Studio)")
    add_set_file_flags(group, "set", "the set's", "the JSON's", "--set_name")
    return parser


def add_set_file_flags(group, prefix, owner, json_owner, name_flag):
    """--{prefix}_json and --{prefix}_images: one set's annotation file and image folder, given explicitly."""
    group.add_argument(f"--{prefix}_json", default=None, metavar="JSON",
                       help=f"{owner} COCO annotation file, instead of finding {name_flag} under --coco_path")
    group.add_argument(f"--{prefix}_images", default=None, metavar="FOLDER",
                       help=f"the folder {json_owner} file_names are relative to (default: the layout's image "
                            f"folder, or the folder of --{prefix}_json)")


def resolve_set_or_error(parser, args):
    """SetFiles of --set_name under --coco_path, or of --set_json / --set_images (``data.layout.resolve_set``);
    ``parser.error`` naming every path looked for and the sets found."""
    check_existing_file(parser, args.set_json, "--set_json")
    if args.set_images is not None:
        check_existing_dir(parser, args.set_images, "--set_images")
    try:
        return resolve_set(args.coco_path, args.set_name, args.set_json, args.set_images)
    except SetNotFoundError as error:
        parser.error(f"--set_name {args.set_name}: {error}")


# ----- train.py's parser, and the one place its derived defaults are resolved --------------------
def build_train_parser(description=None):
    """train.py's parser: model, optimisation, image size, device and decoding groups, plus data and run."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[model_parent(), training_parent(), image_size_parent(), device_parent(), decoding_parent()])
    data = parser.add_argument_group("data")
    data.add_argument("--coco_path", default="./data",
                      help="dataset root: {set}.json and images/{set}/, COCO's annotations/instances_{set}.json and "
                           "{set}/, or Roboflow's {set}/_annotations.coco.json (default: ./data)")
    data.add_argument("--train_set", default="train", help="training set name (default: train)")
    data.add_argument("--val_set", default="val", help="validation set name; '' disables evaluation (default: val)")
    add_set_file_flags(data, "train", "the training set's", "the training JSON's", "--train_set")
    add_set_file_flags(data, "val", "the validation set's", "the validation JSON's", "--val_set")
    data.add_argument("--max_skipped_images", type=non_negative_int, default=10,
                      help="stop when more images than this fail to decode during training (default: 10)")
    data.add_argument("--skip_dataset_check", action="store_true",
                      help="do not validate the dataset files before training (not recommended)")
    data.add_argument("--allow_changed_data", action="store_true",
                      help="with --resume: continue although the training set's annotation file changed since "
                           "the checkpoint (the run records both versions); without it such a resume is refused")
    run = parser.add_argument_group("run")
    run.add_argument("--output_path", default="./output", help="folder for run folders with checkpoints (default: ./output)")
    run.add_argument("--log_dir", default="./log", help="folder for the run's console log (default: ./log)")
    run.add_argument("--run_name", type=run_name, default=None,
                     help="run name, a folder name (default: train_depth{D}_epochs{E}_no{N}, N the next free number)")
    run.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=3407,
                     help=f"random seed, 0 to {MAX_SEED} (default: 3407)")
    run.add_argument("--resume", default=None, metavar="PATH",
                     help="continue from a checkpoint (checkpoint_last.pt or checkpoint_interrupted.pt of a run)")
    run.add_argument("--eval_every", type=non_negative_int, default=1,
                     help="evaluate on the validation set every N epochs and at the end (default: 1; 0: only at the end)")
    run.add_argument("--eval_batch_size", type=positive_int, default=4,
                     help="images per batch during evaluation (default: 4)")
    run.add_argument("--save_every", type=non_negative_int, default=0,
                     help="also keep checkpoint_epoch{N}.pt every N epochs (default: 0, off)")
    run.add_argument("--evaluator", default="faster", choices=("faster", "pycocotools"),
                     help="COCO evaluator: faster-coco-eval or pycocotools (same numbers; default: faster)")
    run.add_argument("--print_every", type=non_negative_int, default=50,
                     help="log a loss line every N iterations when no progress bar is shown (default: 50)")
    run.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across processes (with --norm bn)")
    add_config_arguments(parser)
    return parser


def parse_train_flags(parser, argv=None):
    """(Namespace, the names of the flags set by the command line or --config) of train.py's
    ``parser``: a --config file's values become the defaults, so the command line overrides them."""
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv)
    if args.config is None:
        return args, typed
    if args.resume:
        parser.error("--config sets a new run's flags; --resume continues a run with its own (leave --config out)")
    check_existing_file(parser, args.config, "--config")
    try:
        values = config_file_values(parser, args.config)
    except ConfigFileError as error:
        fail(error)
    parser.set_defaults(**values)
    return parser.parse_args(argv), typed | set(values)


def config_file_values(parser, config):
    """The checked values of a configuration (a YAML/JSON file's path, or a dict of flags), without
    the derived ones that a run's record holds resolved; raises ConfigFileError."""
    values = config_defaults(parser, config) if isinstance(config, (str, os.PathLike)) else \
        checked_values(parser, dict(config), "the configuration")
    return _without_rederivable(values, parser)


# Flags whose default is derived from others: --milestones from --epochs, the augmentation knobs
# from --augment and --min_side.
DERIVED_FLAGS = ("milestones", "train_sides", "scale_jitter", "photometric", "min_box_size")


def _without_rederivable(values, parser):
    """``values`` of a configuration file without the derived flags that hold exactly what they
    derive to from the file's other values (a run's config.json records them resolved), so that
    they follow a changed --epochs or --min_side on the command line as they would have."""
    full = dict(vars(parser.parse_args([])), **values)
    derived = {"milestones": default_milestones(full["epochs"]),
               **augment_settings(dict(full, train_sides=None, scale_jitter=None, photometric=None,
                                       min_box_size=None))}
    return {name: value for name, value in values.items()
            if not (name in DERIVED_FLAGS and value is not None and _same(value, derived[name]))}


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_train_args(parser, args):
    """Checks that involve several flags or the file system; ``parser.error`` on the first failure."""
    check_image_sizes(parser, args)
    if args.workers is not None:  # also a value restored from a checkpoint made on a larger machine
        try:
            worker_count(str(args.workers))
        except argparse.ArgumentTypeError as error:
            parser.error(f"--workers: {error}")
    if args.train_json is None:  # with --train_json, --coco_path is only looked in for --val_set
        check_existing_dir(parser, args.coco_path, "--coco_path")
    check_set_paths(parser, args)
    check_output_folder(parser, args.output_path, "--output_path")
    check_output_folder(parser, args.log_dir, "--log_dir")
    check_existing_file(parser, args.resume, "--resume")
    pretrained_file = args.pretrained if args.pretrained not in PRETRAINED_KEYWORDS else None
    check_existing_file(parser, pretrained_file, "--pretrained")
    if args.fpn_channels % 32 or (args.head_norm == "gn" and args.fpn_channels < 64):
        parser.error(f"--fpn_channels {args.fpn_channels}: must be a multiple of 32, and at least 64 with "
                     "--head_norm gn (GroupNorm's 32 groups need 2 channels each)")
    if iou_threshold_problem(args.positive_iou, args.negative_iou):
        parser.error(iou_threshold_problem(args.positive_iou, args.negative_iou))
    try:
        augment_settings(vars(args))
    except ValueError as error:
        parser.error(str(error))
    if args.resume:  # a resumed run takes its weights from the checkpoint
        return
    if args.init_from and pretrained_file:
        parser.error(f"--init_from {args.init_from} already gives the backbone's weights; leave out --pretrained")
    if pretrained_file:
        try:
            check_pretrained_file(pretrained_file, args.depth, "frozen_bn" if args.norm == "auto" else args.norm)
        except PretrainedWeightsError as error:
            parser.error(f"--pretrained {error}")


def check_set_paths(parser, args):
    """--train_json, --train_images, --val_json, --val_images exist where given, and --val_set '' does
    not contradict them."""
    for flag in ("train_json", "val_json"):
        check_existing_file(parser, getattr(args, flag), f"--{flag}")
    for flag in ("train_images", "val_images"):
        if getattr(args, flag) is not None:
            check_existing_dir(parser, getattr(args, flag), f"--{flag}")
    if not args.val_set and (args.val_json or args.val_images):
        parser.error("--val_set '' disables evaluation, but --val_json or --val_images names a validation set; "
                     "leave one of them out")


def default_milestones(epochs):
    """One drop, after 7/8 of the epochs: the full rate for most of a short run and a last stretch
    at a tenth of it. In the recipe benchmark's 8 epochs, drops at 2/3 and 8/9 cost 0.04 AP against
    a constant rate, and the late drop gained 0.003 on it."""
    return [max(1, round(epochs * 7 / 8))]


def resolve_training_args(args=None, **overrides):
    """A complete training Namespace: train.py's defaults for anything ``args`` lacks, ``overrides``
    applied, then the derived defaults resolved (``--milestones`` from ``--epochs``, ``--norm auto``).

    train.py and ``Trainer`` both call this, so a Trainer built from code trains exactly what the
    same flags on the command line would."""
    values = vars(build_train_parser().parse_args([]))
    values.update(vars(args) if args is not None else {})
    values.update(overrides)
    if values["milestones"] is None:
        values["milestones"] = default_milestones(values["epochs"])
    values.update(augment_settings(values))  # the --augment preset fills the knobs not given
    for name, default in MODEL_OPTION_DEFAULTS.items():
        values.setdefault(name, default)
    if values["norm"] == "auto" and not values["init_from"]:
        # ``auto`` waits for the start (training.start.apply_start) when ImageNet weights may be found.
        if values["pretrained"] in (None, "none"):
            values["norm"] = "gn"
        elif values["pretrained"] != "auto":
            values["norm"] = "frozen_bn"
    return argparse.Namespace(**values)


# ----- resuming: the run's saved flags, and which of them a command line may change ------------
_NOT_GIVEN = object()

# A resumed run may change how long it trains and at what rate, where and how fast it computes,
# and how often it reports; every other flag is the run's own and must stay as it was.
RESUME_OVERRIDABLE = frozenset({
    "epochs", "milestones", "learning_rate", "lr_gamma", "lr_schedule", "warmup_iters", "grad_clip",
    "workers", "device", "amp", "channels_last", "sync_bn", "eval_every", "eval_batch_size", "save_every",
    "print_every", "evaluator", "max_skipped_images", "skip_dataset_check", "score_threshold", "nms_iou",
    "max_detections", "output_path", "log_dir", "run_name", "resume", "allow_changed_data"})
_RESUME_FIXED_REASONS = (
    (("depth", "norm", "head_norm", "head_init", "fpn_channels", "prior", "pretrained", "init_from",
      "trainable_layers", "anchor_sizes", "anchor_scales", "anchor_ratios"), "a model option"),
    (("coco_path", "train_set", "val_set", "train_json", "train_images", "val_json", "val_images"), "the dataset"),
    (("min_side", "max_side"), "an image size"),
    (("batch_size", "drop_last", "seed"), "the batch order"),
    (("optimizer", "weight_decay", "momentum"), "the optimizer, whose state is restored"),
    (("alpha", "gamma", "low_quality_matches", "positive_iou", "negative_iou"), "the loss"),
    (("augment", "train_sides", "scale_jitter", "photometric", "vflip", "rot90", "min_box_size"), "the augmentation"),
)


def explicit_flags(parser, argv=None):
    """The destinations of the flags given on the command line ``argv`` (``sys.argv[1:]`` when None).

    ``argv`` is parsed a second time by a copy of ``parser`` whose defaults are all a sentinel, so
    a flag given with its default value still counts as given."""
    probe = copy.deepcopy(parser)
    probe.set_defaults(**{dest: _NOT_GIVEN for dest in vars(probe.parse_args([]))})
    return {dest for dest, value in vars(probe.parse_args(argv)).items() if value is not _NOT_GIVEN}


def restore_resumed_args(args, given, checkpoint, checkpoint_path):
    """train.py's flags for ``--resume``: the run's saved flags, with the flags given on the command
    line (``given``, from ``explicit_flags``) applied where a resumed run may change them.

    Returns (Namespace, override lines to print). Raises ValueError naming every refused flag."""
    saved = checkpoint.get("args")
    if not isinstance(saved, dict):
        raise ValueError(f"{checkpoint_path}: holds no saved flags ('args'), so its run cannot be continued")
    values = vars(build_train_parser().parse_args([]))
    values.update({name: _saved_value(name, value) for name, value in saved.items() if name in values})
    values.update({name: saved[name] for name in (*MODEL_OPTION_DEFAULTS, "start") if name in saved})
    if values["trainable_layers"] is None:  # runs from before --trainable_layers trained every stage
        values["trainable_layers"] = 5
    if saved.get("pretrained") is None:  # ...and had no --pretrained auto
        values["pretrained"] = "none"
    values["run_name"] = saved.get("run_name")
    run_folder = os.path.dirname(os.path.abspath(checkpoint_path))
    if values["run_name"] and os.path.basename(run_folder) == values["run_name"]:
        values["output_path"] = os.path.dirname(run_folder)  # the run continues where its checkpoint lies
    values["allow_changed_data"] = False  # allows one resume, the one it is given to
    refused, overrides = [], []
    for name in sorted(given):
        new, old = getattr(args, name), values[name]
        if (name == "norm" and new == "auto") or (name == "trainable_layers" and new is None):
            new = old  # the run's own resolved value
        values[name] = new
        if name in ("resume", "allow_changed_data") or new == old:
            continue
        if name in RESUME_OVERRIDABLE:
            overrides.append(f"override: --{name} {_format_flag(new)} (run had {_format_flag(old)})")
        else:
            refused.append(f"--{name} {_format_flag(new)} (run had {_format_flag(old)}) would change {_why_fixed(name)}")
    overrides += _rederive_milestones(values, saved, given)
    done = checkpoint.get("epoch", 0)
    if isinstance(done, int) and values["epochs"] < done:
        refused.append(f"--epochs {values['epochs']}: the run has already trained {done} epochs")
    if refused:
        raise ValueError(f"cannot resume {checkpoint_path} with {'; '.join(refused)}; "
                         "leave these flags out, or start a new run")
    if values["epochs"] == done and os.path.isfile(os.path.join(run_folder, "summary.json")):
        raise ValueError(f"{checkpoint_path}: the run is finished ({done} of {done} epochs, its summary.json "
                         f"written); to train it longer, give a larger --epochs (for example --epochs {2 * done})")
    return argparse.Namespace(**values), overrides


def _rederive_milestones(values, saved, given):
    """A run whose learning-rate drop came from --epochs (the default) keeps that rule when --epochs
    changes on resume: the drop moves with the new total, and a line says from where to where.
    Milestones typed for the run, or given now, stay as they are. Returns the lines to print."""
    old_epochs, old_milestones = saved.get("epochs"), saved.get("milestones")
    if ("epochs" not in given or "milestones" in given or values["epochs"] == old_epochs
            or not isinstance(old_epochs, int) or list(old_milestones or []) != default_milestones(old_epochs)):
        return []
    values["milestones"] = default_milestones(values["epochs"])
    if values["milestones"] == list(old_milestones):
        return []
    return [f"override: --milestones {_format_flag(values['milestones'])} (run had {_format_flag(old_milestones)}): "
            f"the learning-rate drop follows --epochs {values['epochs']} as it followed --epochs {old_epochs}; "
            "give --milestones to place it yourself"]


def _saved_value(name, value):
    if name == "amp" and isinstance(value, bool):  # checkpoints from before --amp took a value
        return "on" if value else "off"
    return value


def _why_fixed(name):
    for names, reason in _RESUME_FIXED_REASONS:
        if name in names:
            return reason
    return "the run"


def _format_flag(value):
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return repr(value) if value == "" else str(value)
