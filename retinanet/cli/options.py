"""Command-line options shared by the scripts, with checks that fail at parse time.

train.py's flags are declared once, in ``retinanet.config``, and its parser is generated from
them (``cli.flags``); test.py and vis.py take the device and decoding groups from the same fields.
A bad value is refused before any work starts.
"""
import argparse
import copy
import os
import sys

from retinanet.cli.config_file import ConfigFileError, checked_values, config_defaults
from retinanet.cli.flags import add_options, worker_count
from retinanet.config import (RESUMABLE, default_milestones, migrate_saved_config, options as config_options,
                              resume_policy)
from retinanet.data.augment import augment_settings
from retinanet.data.check import DatasetError, validate_or_raise
from retinanet.data.layout import SetNotFoundError, resolve_set
from retinanet.data.transforms import image_size_problem
from retinanet.models.anchor_options import iou_threshold_problem
from retinanet.models.backbone import PretrainedWeightsError, check_pretrained_file
from retinanet.models.retinanet import FPN_CHANNELS_RULE, MODEL_OPTION_DEFAULTS, fpn_channels_ok
from retinanet.training.start import PRETRAINED_KEYWORDS
from retinanet.util.device import resolve_device
from retinanet.util.io import output_location_problem

def device_parent(inference=False):
    """--device, --workers, --amp, --channels_last (``config.RunConfig``). inference: test.py's and
    vis.py's --workers, whose default is resolved by ``inference_workers`` once the device is known."""
    parser = argparse.ArgumentParser(add_help=False)
    group = add_options(parser, ("device", "amp", "channels_last") if inference else DEVICE_OPTIONS)["device"]
    if inference:
        group.add_argument("--workers", type=worker_count, default=None,
                           help="data-loading worker processes (default: the number of cores, at most 8; none, "
                                "loading in the main process, when the network runs on a CPU of 2 cores or fewer)")
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


DEVICE_OPTIONS = ("device", "workers", "amp", "channels_last")
DECODING_OPTIONS = ("score_threshold", "nms_iou", "max_detections")


def decoding_parent():
    """--score_threshold, --nms_iou, --max_detections (``config.RunConfig``), as train.py takes them."""
    parser = argparse.ArgumentParser(add_help=False)
    add_options(parser, DECODING_OPTIONS)
    return parser


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
    """train.py's parser, generated from ``retinanet.config``: one --help section per stage."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser)
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
    if not fpn_channels_ok(args.fpn_channels, args.head_norm):
        parser.error(f"--fpn_channels {args.fpn_channels}: {FPN_CHANNELS_RULE} (--head_norm {args.head_norm}; "
                     "GroupNorm's 32 groups need 2 channels each)")
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


# ----- resuming: the run's saved flags, and which of them a command line may change ------------
_NOT_GIVEN = object()

# A resumed run may change how long it trains and at what rate, where and how fast it computes,
# and how often it reports; every other option is the run's own and must stay as it was. Each
# option's ``config`` field says which, and why (``config.resume_policy``).
RESUME_POLICY = {field.name: resume_policy(field, group) for field, group in config_options()}
RESUME_OVERRIDABLE = frozenset(name for name, policy in RESUME_POLICY.items() if policy == RESUMABLE)


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
    saved = migrate_saved_config(saved, checkpoint_path)  # SavedConfigError (a ValueError) for a newer one
    values = vars(build_train_parser().parse_args([]))
    values.update({name: value for name, value in saved.items() if name in values})
    values.update({name: saved[name] for name in (*MODEL_OPTION_DEFAULTS, "start") if name in saved})
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
        if name in ("resume", "allow_changed_data", "print_config") or new == old:
            continue
        if name in RESUME_OVERRIDABLE:
            overrides.append(f"override: --{name} {_format_flag(new)} (run had {_format_flag(old)})")
        else:
            refused.append(f"--{name} {_format_flag(new)} (run had {_format_flag(old)}) would change "
                           f"{RESUME_POLICY.get(name, 'the run')}")
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


def _format_flag(value):
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return repr(value) if value == "" else str(value)
