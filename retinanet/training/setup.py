"""What a training run is built from, in one place for ``Trainer`` and the learning-rate range test:
the device, the datasets (checked), the loaders, the model with its start (--pretrained,
--init_from) or a resumed run's checks, the precision, the loss, the optimiser and the scaler.

``set_up_training`` builds them in the order both use, so that the range test trains exactly the
step ``train.py`` trains; the small functions it calls are the building blocks.
"""
import dataclasses
import os
import sys

import torch

from retinanet.data.augment import TrainAugmentation, resolved_settings
from retinanet.data.check import validate_or_raise
from retinanet.data.leakage import check_shared_images
from retinanet.data.report import DatasetError
from retinanet.data.coco import CocoDetection, read_set
from retinanet.data.layout import SetNotFoundError, find_sets, resolve_set
from retinanet.data.loader import build_loader
from retinanet.data.transforms import EvalTransform
from retinanet.engine import DeviceConfig
from retinanet.models.backbone import freeze_stages, load_pretrained_backbone
from retinanet.models.loss import RetinaNetLoss
from retinanet.models.precision import check_input_sizes, settle_precision
from retinanet.models.retinanet import build_model, model_options
from retinanet.models.transfer import TransferError, transfer_weights
from retinanet.optim import build_optimizer
from retinanet.models.checkpoint import model_from_checkpoint
from retinanet.config import resolve_training_args
from retinanet.training.start import StartError, apply_start, resolve_start
from retinanet.util.device import resolve_device as resolve_device_name


class TrainingError(Exception):
    """A run that cannot start or go on: unusable data, a start or resume that does not fit, a file
    that cannot be written. The message is one line naming the file or flag; train.py prints it
    with "error: " and exits with status 2."""


@dataclasses.dataclass
class TrainingSetUp:
    """The parts of a training run (``set_up_training``). ``model`` is the network itself,
    ``trained`` the one the steps run (DistributedDataParallel around it with several processes);
    ``start`` is None for a resumed run, whose ``train_data_change`` is the change of its training
    set that --allow_changed_data let through (None when there was none)."""
    train_set: object
    train_loader: object
    val_loader: object
    train_data: dict
    train_data_change: dict
    start: object
    start_lines: list
    weight_lines: list
    model: torch.nn.Module
    trained: torch.nn.Module
    device_config: DeviceConfig
    precision: str
    precision_check: object
    criterion: RetinaNetLoss
    optimizer: torch.optim.Optimizer
    scaler: object


def set_up_training(args, device, *, rank=0, world_size=1, resume_state=None, typed_flags=None, learning_rate=None,
                    precision_fallback=None):
    """Build a run's parts from train.py's resolved flags ``args`` on ``device``: check the datasets
    (in the main process, unless --skip_dataset_check), load them, start the model (or check that
    ``resume_state`` fits it), settle the precision, and make the loss, the optimiser (at
    ``learning_rate``, default --learning_rate, over the parameters that train) and the gradient
    scaler (float16 only). Nothing is written; an unusable part raises TrainingError.
    typed_flags: the flags given on the command line (see training.start.apply_start);
    precision_fallback: the reason an earlier segment of the run switched to float32."""
    torch.manual_seed(args.seed)
    loaded = load_datasets(args, check=rank == 0 and not args.skip_dataset_check)
    train_set, train_loader, val_loader = build_data(args, device, rank, world_size, loaded)
    train_data, change = training_set_record(train_set), None
    if resume_state is not None:
        check_resumable(args, resume_state, train_set)
        change = check_training_set(args, resume_state, train_data)
        start, start_lines = None, []
    else:
        start, start_lines = resolve_start_or_exit(args, typed_flags)
    # Weights are loaded before any run folder is claimed, so a source that does not fit writes nothing.
    model, weight_lines = build_start_model(train_set.class_names, args, start)
    model, trained = place_model(model, args, device, world_size)
    datasets = [train_set] + ([val_loader.dataset] if val_loader is not None else [])
    device_config, precision, check = settle_training_precision(model, args, device, datasets, precision_fallback)
    criterion = RetinaNetLoss(args.alpha, args.gamma, args.positive_iou, args.negative_iou,
                              low_quality_matches=args.low_quality_matches)
    trainable = [parameter for parameter in trained.parameters() if parameter.requires_grad]
    optimizer = build_optimizer(trainable, args.optimizer, learning_rate or args.learning_rate, args.weight_decay,
                                args.momentum)
    scaler = torch.amp.GradScaler(device.type) if device_config.amp_dtype == torch.float16 else None
    return TrainingSetUp(train_set, train_loader, val_loader, train_data, change, start, start_lines, weight_lines,
                         model, trained, device_config, precision, check, criterion, optimizer, scaler)


def settle_training_precision(model, args, device, datasets, fallback=None):
    """(DeviceConfig, the precision sentence, PrecisionCheck or None) of a training run: --amp's
    choice, checked layer by layer at the sizes the run's images take (models.precision); float32
    when an earlier segment of the run fell back to it (``fallback``, its reason)."""
    if fallback:
        return DeviceConfig(device, None, args.channels_last), f"float32 (the run switched to it: {fallback})", None
    settings = resolved_settings(vars(args))
    image_sizes = [(image["width"], image["height"]) for dataset in datasets for image in dataset.images]
    sizes = check_input_sizes(args.min_side, args.max_side, image_sizes, settings["train_sides"] + [args.min_side],
                              rot90=settings["rot90"])
    amp_dtype, precision, check = settle_precision(model, device, args.amp, sizes, training=True,
                                                   channels_last=args.channels_last)
    return DeviceConfig(device, amp_dtype, args.channels_last), precision, check


def resolve_device(name):
    """The torch.device of --device ``name``; TrainingError when it cannot be had."""
    try:
        return resolve_device_name(name)
    except ValueError as error:
        raise TrainingError(f"--device: {error}") from None



def load_datasets(args, check=True):
    """{"train": LoadedSet, "val": LoadedSet or None}: each set found once (data.layout) and its
    annotation file read once, by the dataset check train.py runs before anything is written when
    ``check`` (DatasetError for an unusable set; the fixes the loader will make are printed), else
    directly. No validation set when --val_set is '' or, with a warning, names no set."""
    sets = {"train": (args.train_set, args.train_json, args.train_images, None)}
    if args.val_set:
        files = None if args.val_json else _find_set(args.coco_path, args.val_set, args.val_images)
        if args.val_json or files:
            sets["val"] = (args.val_set, args.val_json, args.val_images, files)
        else:
            print(f"warning: no validation set '{args.val_set}' under {args.coco_path} (sets found: "
                  f"{', '.join(find_sets(args.coco_path)) or 'none'}): evaluation disabled; name one with --val_set or "
                  "--val_json", file=sys.stderr)
    loaded, reports = {"val": None}, []
    for role, (set_name, json_path, image_dir, files) in sets.items():
        if check:
            report = validate_or_raise(args.coco_path, set_name, json_path=json_path, image_dir=image_dir, files=files)
            if report.fixes:
                print(report.format(max_lines=10))
            loaded[role] = report.loaded
            reports.append(report)
        else:
            loaded[role] = read_set(files or resolve_set(args.coco_path, set_name, json_path, image_dir))
    if check_shared_images(reports):  # a validation image that is also a training image
        raise DatasetError(next(report for report in reports if not report.ok))
    return loaded


def _find_set(root, set_name, image_dir):
    """SetFiles of ``set_name`` under ``root`` in any layout, or None."""
    try:
        return resolve_set(root, set_name, image_dir=image_dir)
    except SetNotFoundError:
        return None


def build_data(args, device, rank, world_size, loaded=None):
    """(training set, training loader, validation loader or None) of the sets ``load_datasets`` read
    (read here, unchecked, when ``loaded`` is None)."""
    loaded = loaded or load_datasets(args, check=False)
    train_set = CocoDetection(args.coco_path, args.train_set, TrainAugmentation.from_options(vars(args)),
                              skip_unreadable=True, loaded=loaded["train"])
    pin_memory = device.type == "cuda"
    train_loader = build_loader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=args.drop_last,
                                seed=args.seed, workers=args.workers, pin_memory=pin_memory, rank=rank,
                                world_size=world_size)
    if not train_set.has_annotations:
        raise TrainingError(f"{train_set.json_path}: no boxes to train on (no 'annotations', or an empty list)")
    if len(train_loader) == 0:
        raise TrainingError(f"{train_set.json_path}: no full batch of {args.batch_size} images "
                         "(lower --batch_size or drop --drop_last)")
    return train_set, train_loader, build_val_loader(args, train_set, loaded["val"], pin_memory, rank, world_size)


def build_val_loader(args, train_set, loaded, pin_memory, rank, world_size):
    """The validation loader of the LoadedSet ``loaded``, or None (with a warning when the set has
    no annotations). A validation set whose categories differ from the training set's ends the
    program, since its scores would mean nothing."""
    if loaded is None:
        return None
    val_set = CocoDetection(args.coco_path, args.val_set, EvalTransform(args.min_side, args.max_side),
                            skip_unreadable=True, loaded=loaded)
    if (val_set.class_names, val_set.label_to_category_id) != (train_set.class_names, train_set.label_to_category_id):
        raise TrainingError(f"{val_set.json_path} has categories {_categories(val_set)}, but the training set "
                         f"{train_set.json_path} has {_categories(train_set)}; validate on a set of the same classes")
    if not val_set.has_annotations:
        print(f"warning: {val_set.json_path} has no annotations: evaluation disabled", file=sys.stderr)
        return None
    return build_loader(val_set, batch_size=args.eval_batch_size, seed=args.seed, workers=min(args.workers, 2),
                        pin_memory=pin_memory, rank=rank, world_size=world_size)


def _categories(dataset):
    """'[1 cat, 2 dog]': a set's category ids and names, for messages."""
    return "[" + ", ".join(f"{category_id} {name}" for category_id, name in
                           zip(dataset.label_to_category_id, dataset.class_names)) + "]"



def check_resumable(args, state, train_set):
    """Refuse a checkpoint of another model or of other classes before anything is written."""
    saved = state.get("args", {})
    for key, current in (("class_names", list(train_set.class_names)),
                         ("category_ids", list(train_set.label_to_category_id))):
        if key in state and list(state[key]) != current:
            raise TrainingError(f"{train_set.json_path} has {key} {current}, but {args.resume or 'the checkpoint'} "
                             f"was trained on {list(state[key])}; resume on the run's own dataset, or start a new run")
    saved_options, options = model_options(saved), model_options(vars(args))
    different = [f"--{name} {saved_options[name]} (checkpoint) vs {options[name]}" for name in options
                 if saved_options[name] != options[name]]
    if different:
        raise TrainingError(f"{args.resume} was trained with another model: {'; '.join(different)}")
    model_from_checkpoint(state, args.resume)  # validates the weights against the description


def training_set_record(train_set):
    """What identifies the training set in a checkpoint: its annotation file, that file's SHA-256
    and its number of images."""
    return {"json": os.path.abspath(train_set.json_path), "sha256": train_set.json_sha256,
            "images": len(train_set)}


def check_training_set(args, state, current):
    """None when the resumed run trains on the data its checkpoint was trained on (or the checkpoint
    predates the record); the change, to be recorded, when the annotation file's content changed
    and --allow_changed_data allows it; otherwise the run is refused before anything is written."""
    saved = state.get("train_data")
    if not isinstance(saved, dict) or saved.get("sha256") in (None, current["sha256"]):
        return None
    what = (f"{current['json']} now has SHA-256 {current['sha256'][:12]} and {current['images']} images; the run "
            f"was trained on {saved.get('json')} with SHA-256 {str(saved['sha256'])[:12]} and {saved.get('images')} images")
    if not args.allow_changed_data:
        raise TrainingError(f"cannot resume {args.resume}: the training set changed since its checkpoint: {what}. "
                         "Resume on the run's own data, give --allow_changed_data to continue on the changed set "
                         "(the run records both), or start a new run")
    return {"after_epoch": state.get("epoch", 0), "before": saved, "after": current,
            "message": f"the training set changed since the checkpoint (--allow_changed_data): {what}"}


def resolve_start_or_exit(args, typed_flags=None):
    """(Start, log lines) of a new run, its flags updated (training.start); a start that cannot be had
    ends the program with one line before anything is written. typed_flags: the flags given on the
    command line, None for flags set in code (see training.start.apply_start)."""
    try:
        start = resolve_start(args)
        return start, apply_start(args, start, vars(resolve_training_args()), typed_flags)
    except StartError as error:
        raise TrainingError(f"{error}") from None


def build_start_model(class_names, args, start):
    """(model with the start's weights and frozen stages, log lines); ``start`` None for a resumed run."""
    model = build_model(len(class_names), vars(args))
    lines = []
    if start is not None and start.backbone_file:
        missing, unexpected = load_pretrained_backbone(model.backbone, start.backbone_file)
        lines.append(f"loaded backbone weights from {start.backbone_file}: {len(missing)} missing keys"
                     f"{' ' + str(missing[:5]) if missing else ''}, {len(unexpected)} unexpected keys"
                     f"{' ' + str(unexpected[:5]) if unexpected else ''}")
    if start is not None and start.detector:
        source = start.detector
        try:
            carried = transfer_weights(model, source.state, source.class_names, class_names)
        except TransferError as error:
            raise TrainingError(f"--init_from {args.init_from}: {error}") from None
        fresh = [name for name in class_names if name not in {target for target, _ in carried}]
        lines.append(f"classes carried over from {source.description}: {len(carried)} of {len(class_names)}"
                     + (f" ({', '.join(t if t == s else f'{t} <- {s}' for t, s in carried)})" if carried else "")
                     + (f"; initialised at the prior: {', '.join(fresh)}" if fresh else ""))
    freeze_stages(model.backbone, 5 if args.trainable_layers is None else args.trainable_layers)
    return model, lines


def place_model(model, args, device, world_size):
    """(model on ``device``, the same wrapped for DistributedDataParallel or itself in one process)."""
    if args.sync_bn and world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if world_size == 1:
        return model, model
    device_ids = [device.index] if device.type == "cuda" else None
    return model, torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
