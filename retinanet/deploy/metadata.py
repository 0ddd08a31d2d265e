"""What an exported file carries besides the network, in its ONNX ``metadata_props``.

Keys (values are strings; lists and dicts are JSON):
- ``format``: ``retinanet-onnx-1``, so that files of this project are recognised;
- ``class_names``, ``category_ids``: one entry per contiguous label;
- ``min_side``, ``max_side``: the resize used in training (``data.transforms``);
- ``mean``, ``std``: the per-channel normalisation of RGB values scaled to [0, 1];
- ``model_options``: ``models.retinanet.model_options`` of the checkpoint (the anchor layout,
  sizes, scales and ratios and the box coding are needed to decode; the rest documents the
  network); files from before the anchor options lack those, which then take their defaults;
- ``source_sha256``: the checkpoint's SHA-256, so that a cached export of a changed checkpoint is redone;
- ``precision``: ``float32`` or ``int8``; an int8 file also has ``calibration`` (JSON: the set,
  number of images, seed and image sizes it was calibrated with) and ``float_sha256``, the SHA-256
  of the float32 file it was quantised from.
"""
import json

from retinanet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, image_size_problem
from retinanet.deploy.extras import import_extras
from retinanet.models.anchor_options import anchor_option_rules

FORMAT = "retinanet-onnx-1"
END_TO_END_FORMAT = "retinanet-onnx-end-to-end-1"  # deploy.end_to_end: an image in, detections out
JSON_KEYS = ("class_names", "category_ids", "mean", "std", "model_options", "calibration")
REQUIRED_KEYS = ("format", "class_names", "category_ids", "min_side", "max_side", "mean", "std", "model_options",
                 "source_sha256", "precision")


class ExportedModelError(ValueError):
    """An exported file cannot be used: unreadable, not written by this project, or inconsistent."""


def build_metadata(class_names, category_ids, min_side, max_side, model_options, source_sha256):
    """The metadata of a float32 export, as {key: string}."""
    values = {
        "format": FORMAT,
        "class_names": list(class_names),
        "category_ids": [int(value) for value in category_ids],
        "min_side": int(min_side),
        "max_side": int(max_side),
        "mean": [float(value) for value in IMAGENET_MEAN],
        "std": [float(value) for value in IMAGENET_STD],
        "model_options": dict(model_options),
        "source_sha256": source_sha256,
        "precision": "float32",
    }
    return encode(values)


def encode(values):
    """{key: value} -> {key: string}, JSON for the keys in JSON_KEYS."""
    return {key: json.dumps(value) if key in JSON_KEYS else str(value) for key, value in values.items()}


def set_metadata(proto, metadata):
    """Replace the ``metadata_props`` of an ``onnx.ModelProto`` with ``metadata`` ({key: string})."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path):
    """The decoded metadata of an exported file: lists and dicts for the JSON keys, ints for the sizes.

    Raises ExportedModelError when the file is not ONNX or lacks this project's metadata.
    """
    onnx, = import_extras("export", f"reading {path}")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends: report the file, not the parser
        raise ExportedModelError(f"{path}: not a readable ONNX file ({type(error).__name__}: {error})") from error
    return decode({entry.key: entry.value for entry in proto.metadata_props}, path)


def decode(raw, path):
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if raw.get("format") == END_TO_END_FORMAT:
        raise ExportedModelError(f"{path}: an end-to-end file (a uint8 image in, detections out) for programs of "
                                 "their own (see the example in docs/deploy.md); the scripts run the network-only export: "
                                 "give them the checkpoint, or export with tools/export.py --raw")
    if missing or raw.get("format") != FORMAT:
        raise ExportedModelError(f"{path}: not a detector exported by tools/export.py "
                                 f"(metadata lacks {', '.join(missing) or 'format ' + FORMAT})")
    values = dict(raw)
    try:
        for key in JSON_KEYS:
            if key in values:
                values[key] = json.loads(values[key])
        values["min_side"], values["max_side"] = int(values["min_side"]), int(values["max_side"])
    except ValueError as error:
        raise ExportedModelError(f"{path}: damaged metadata ({error})") from error
    problem = image_size_problem(values["min_side"], values["max_side"])
    if problem:
        raise ExportedModelError(f"{path}: damaged metadata: {problem}")
    if len(values["class_names"]) != len(values["category_ids"]):
        raise ExportedModelError(f"{path}: metadata has {len(values['class_names'])} class names but "
                                 f"{len(values['category_ids'])} category ids")
    check_model_options(values["model_options"], path)
    return values


def check_model_options(options, path):
    """Refuse model_options that are not a dict, or whose anchor options could not rebuild the anchors."""
    if not isinstance(options, dict):
        raise ExportedModelError(f"{path}: metadata model_options must be a JSON object, got {type(options).__name__}")
    for name, rule, follows in anchor_option_rules(options):
        if not follows:
            raise ExportedModelError(f"{path}: metadata model_options {name} is {options[name]!r}; it {rule}")


