"""Validation of a COCO-format dataset, and the box rule the data loader shares with it.

``check_dataset(root, set_name)`` reads the set's COCO JSON and its images, found under ``root`` in
any layout of ``data.layout`` (ours: ``{root}/{set_name}.json`` and ``{root}/images/{set_name}/``)
or given as explicit paths, and returns a DatasetReport listing every problem it finds, each
naming the file, the id and the reason. Problems are of two classes:

- errors make the set unusable until the dataset is fixed: a JSON file that is missing (in every
  layout: the problem names each path looked for and the sets found), too large or unparsable,
  missing keys or wrong types, duplicate or unknown ids, an empty set, image files that are
  missing, damaged or of another size than the JSON says, file names that are absolute or lead
  out of the set's image folder (sub-folders inside it are fine), and boxes that are not four
  finite numbers, have a negative size, lie entirely outside the image or reach beyond it by more
  than the image's own width or height (clipping those would invent a box);
- fixes are applied by the data loader and only counted: boxes partly outside the image are
  clipped to it, boxes under 1 px wide or high after clipping are skipped, and crowd regions
  (``iscrowd=1``) are skipped from training.

``check_box`` holds the box rule; ``sanitize_box`` is the part the data loader calls, so
loader and checker always agree. Boxes are COCO ``[x, y, width, height]`` in pixels; a box
covers ``x <= u <= x + width``, and clipping is to ``[0, image width] x [0, image height]``.

The report classes (``DatasetReport``, ``Problem``, ``DatasetError`` and the kind tables) live
in ``retinanet.data.report`` and are importable from here too.
"""
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from retinanet.data.image_io import ImageReadError, verify_image_file
from retinanet.data.layout import LoadedSet, SetNotFoundError, placeholder_categories, placeholder_note, resolve_set
from retinanet.data.report import ERROR_KINDS, FIX_KINDS, DatasetError, DatasetReport, Problem
from retinanet.util.io import read_json_and_sha256
from retinanet.util.values import describe, is_finite_number, is_integer, is_number, short_repr

__all__ = ["ERROR_KINDS", "FIX_KINDS", "MAX_JSON_BYTES", "MIN_BOX_SIZE", "BoxCheck", "DatasetError", "DatasetReport",
           "Problem", "check_box", "check_coco_dict", "check_dataset", "sanitize_box", "validate_or_raise"]

MIN_BOX_SIZE = 1.0  # pixels, after clipping; smaller boxes are skipped
# A dataset JSON larger than this is refused before parsing (COCO's train2017 is about 450 MiB).
MAX_JSON_BYTES = 2 * 2**30


class BoxCheck(NamedTuple):
    """The verdict on one box."""
    box: tuple  # (x1, y1, x2, y2) clipped to the image, or None when the box is not used
    kind: str  # None when the box is used as it is, else a key of ERROR_KINDS or FIX_KINDS
    reason: str  # "" when kind is None


def check_box(bbox_xywh, width, height):
    """Judge one COCO box ``[x, y, w, h]`` against a ``width`` x ``height`` image; return a BoxCheck."""
    image = f"the {width}x{height} image" if math.isfinite(width) and math.isfinite(height) else "the image"
    if (isinstance(bbox_xywh, (str, bytes)) or not hasattr(bbox_xywh, "__len__")
            or len(bbox_xywh) != 4 or not all(is_number(value) for value in bbox_xywh)):
        return BoxCheck(None, "box_malformed", f"bbox must be four numbers [x, y, w, h], got {describe(bbox_xywh)}")
    if not all(is_finite_number(value) for value in bbox_xywh):
        return BoxCheck(None, "box_not_finite", f"bbox {short_repr(list(bbox_xywh))} is not finite")
    x, y, w, h = (float(value) for value in bbox_xywh)
    described = f"bbox [{x:g}, {y:g}, {w:g}, {h:g}]"
    if w < 0 or h < 0:
        return BoxCheck(None, "box_negative_size", f"{described} has a negative width or height")
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if w > 0 and h > 0 and (x2 <= x1 or y2 <= y1):
        return BoxCheck(None, "box_outside_image", f"{described} lies entirely outside {image}")
    beyond = max(-x / width, -y / height, (x + w) / width - 1, (y + h) / height - 1) if width and height else 0
    if beyond > 1:  # clipping would turn it into a box its annotator never drew
        return BoxCheck(None, "box_far_outside", f"{described} reaches beyond {image} by more than the image's own "
                                                 "size: most likely a wrong unit or a broken export")
    if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:
        return BoxCheck(None, "box_too_small", f"{described} is {max(x2 - x1, 0):g} x {max(y2 - y1, 0):g} px "
                                               f"inside the image, under {MIN_BOX_SIZE:g} px: skipped")
    if (x1, y1, x2, y2) != (x, y, x + w, y + h):
        return BoxCheck((x1, y1, x2, y2), "box_clipped", f"{described} extends outside {image}: "
                                                         f"clipped to [{x1:g}, {y1:g}, {x2:g}, {y2:g}] (xyxy)")
    return BoxCheck((x1, y1, x2, y2), None, "")


def sanitize_box(bbox_xywh, width, height):
    """Return the box ``(x1, y1, x2, y2)`` to train on, clipped to the image, or None to skip it.

    None for boxes that are malformed, not finite, of negative size, outside the image or
    under 1 px wide or high once clipped (check_dataset reports the first four as errors).
    """
    return check_box(bbox_xywh, width, height).box


def check_dataset(root, set_name, check_images=True, max_json_bytes=MAX_JSON_BYTES, num_threads=16,
                  json_path=None, image_dir=None, files=None):
    """Check the set ``set_name`` under ``root`` (or the explicit ``json_path`` and ``image_dir``,
    as ``data.layout.resolve_set`` finds them, or the SetFiles ``files`` already found) and its
    images; return a DatasetReport of every problem, whose ``loaded`` is the parsed set.

    ``check_images=False`` skips the image files. Image headers are read by ``num_threads``
    threads; files are decoded only when their end marker is missing or their format has none.
    """
    try:
        files = files or resolve_set(root, set_name, json_path, image_dir)
    except SetNotFoundError as error:
        report = DatasetReport(set_name, error.looked_for[0])
        report.add("json_missing", "annotation file not found" if json_path is not None else
                   f"annotation file not found in any known layout under {root}; {error.search}")
        return report
    report = DatasetReport(set_name, files.json_path)
    data, sha256 = _load_json(files.json_path, max_json_bytes, report)
    if data is None:
        return report
    report.loaded = LoadedSet(files, data, sha256)
    images = check_coco_dict(data, report, files.image_dir)
    if check_images and images:
        _check_image_files(files.image_dir, images, report, num_threads)
    return report


def check_coco_dict(data, report, image_dir=None):
    """Check a parsed COCO dict's lists and entries into ``report`` (no image file is read).

    ``image_dir``: the folder the file names are relative to, named in messages when given.
    Returns {image id: (file_name, width, height)} of the images with a valid id, or None
    when there is no ``images`` list.
    """
    images = _check_image_entries(_top_level_list(data, "images", report), report, image_dir)
    category_entries = _top_level_list(data, "categories", report)
    categories = _check_categories(category_entries, report)
    annotations = data.get("annotations")
    placeholders = placeholder_categories(category_entries or [], annotations if isinstance(annotations, list) else [])
    for name in placeholders.values():  # not a class: neither counted nor listed as without annotations
        report.class_counts.pop(name, None)
    if placeholders:
        report.notes.append(f"category {placeholder_note(placeholders)}")
    if "annotations" not in data:
        report.notes.append("no 'annotations' key: a set without ground truth (for prediction only)")
    else:
        _check_annotations(_top_level_list(data, "annotations", report), images, categories, report)
        if category_entries == [] and report.num_annotations:
            report.add("json_structure", "'categories' is empty but there are annotations")
    return images


def validate_or_raise(root, set_name, check_images=True, max_json_bytes=MAX_JSON_BYTES, num_threads=16,
                      json_path=None, image_dir=None, files=None):
    """Run check_dataset; raise DatasetError when the set is unusable, else return the report."""
    report = check_dataset(root, set_name, check_images, max_json_bytes, num_threads, json_path, image_dir, files)
    if not report.ok:
        raise DatasetError(report)
    return report


class _ImageEntry(NamedTuple):
    file_name: str  # None when missing or invalid
    width: int  # None when missing or invalid
    height: int


def _load_json(json_path, max_json_bytes, report):
    """(the parsed top-level object, the file's SHA-256), or (None, None) with the problem reported."""
    if not os.path.isfile(json_path):
        report.add("json_missing", "annotation file not found")
        return None, None
    size = os.path.getsize(json_path)
    if size > max_json_bytes:
        report.add("json_too_large",
                   f"file is {size} bytes, over the limit of {max_json_bytes} bytes (max_json_bytes)")
        return None, None
    try:
        data, sha256 = read_json_and_sha256(json_path)
    except (OSError, ValueError) as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        report.add("json_invalid", f"not valid JSON: {error}")
        return None, None
    except RecursionError:  # arrays or objects nested thousands deep exhaust the parser's stack
        report.add("json_invalid", "not valid JSON for a dataset: nested too deeply")
        return None, None
    if not isinstance(data, dict):
        report.add("json_structure", f"top level must be a JSON object, got {type(data).__name__}")
        return None, None
    return data, sha256


def _top_level_list(data, key, report):
    """Return ``data[key]`` when it is a list, else report it and return None."""
    if key not in data:
        report.add("json_structure", f"missing required key '{key}'")
        return None
    if not isinstance(data[key], list):
        kind_name = type(data[key]).__name__
        report.add("json_structure", f"'{key}' must be a list, got {kind_name}")
        return None
    return data[key]


def _check_image_entries(entries, report, image_dir=None):
    """Return {image id: _ImageEntry} of the images with a valid id, or None without a list."""
    if entries is None:
        return None
    report.num_images = len(entries)
    if not entries:
        report.add("empty_set", "'images' is empty: the set has no images")
    images = {}
    for index, entry in enumerate(entries):
        image_id = _entry_id(entry, f"images[{index}]", "image_entry_invalid", report)
        if image_id is None:
            continue
        if image_id in images:
            report.add("duplicate_image_id", f"image {image_id}: id used again by images[{index}]", item_id=image_id)
            continue
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            report.add("image_entry_invalid",
                       f"image {image_id}: file_name must be a non-empty string, got {describe(file_name)}",
                       item_id=image_id)
            file_name = None
        elif _leaves_image_folder(file_name):
            report.add("image_path_outside",
                       f"image {image_id}: file_name {short_repr(file_name)} is absolute or leaves "
                       f"{os.path.join(image_dir, '') if image_dir else 'the image folder'}; names must be relative "
                       "paths inside it (sub-folders are fine)", item_id=image_id)
            file_name = None
        sizes = []
        for key in ("width", "height"):
            value = entry.get(key)
            if is_finite_number(value) and value > 0 and value == int(value):
                sizes.append(int(value))
            else:
                report.add("image_entry_invalid",
                           f"image {image_id}: {key} must be a positive integer, got {describe(value)}",
                           item_id=image_id)
        width, height = sizes if len(sizes) == 2 else (None, None)
        images[image_id] = _ImageEntry(file_name, width, height)
    return images


def _leaves_image_folder(file_name):
    """True for an absolute name, or one whose ``..`` parts climb out of the set's image folder."""
    if os.path.isabs(file_name) or os.path.splitdrive(file_name)[0]:
        return True
    return os.path.normpath(file_name).split(os.sep)[0] == os.pardir


def _check_categories(entries, report):
    """Return {category id: name} of the valid categories, or None without a list."""
    if entries is None:
        return None
    names = {}
    seen_ids = set()
    for index, entry in enumerate(entries):
        category_id = _entry_id(entry, f"categories[{index}]", "category_entry_invalid", report)
        if category_id is None:
            continue
        name = entry.get("name")
        if category_id in seen_ids:
            report.add("duplicate_category_id",
                       f"category {category_id}: id used again by categories[{index}]", item_id=category_id)
        elif not isinstance(name, str) or not name:
            report.add("category_entry_invalid",
                       f"category {category_id}: name must be a non-empty string, got {describe(name)}",
                       item_id=category_id)
        elif name in names.values():
            report.add("duplicate_category_name",
                       f"category {category_id}: name '{name}' is also used by another category", item_id=category_id)
        else:
            names[category_id] = name
        seen_ids.add(category_id)
    report.class_counts = {names[category_id]: 0 for category_id in sorted(names)}
    return names


def _check_annotations(entries, images, categories, report):
    """Check ids, references, iscrowd and boxes of every annotation; count them per category."""
    if entries is None:
        return
    report.num_annotations = len(entries)
    if not entries:
        report.notes.append("'annotations' is empty: the set has no ground truth boxes")
    seen_ids, seen_boxes = set(), {}
    annotated_images = set()
    for index, entry in enumerate(entries):
        annotation_id = _entry_id(entry, f"annotations[{index}]", "annotation_entry_invalid", report)
        label = f"annotation {annotation_id}" if annotation_id is not None else f"annotations[{index}]"
        if not isinstance(entry, dict):
            continue  # reported by _entry_id
        if annotation_id in seen_ids:
            report.add("duplicate_annotation_id",
                       f"{label}: id used again by annotations[{index}]", item_id=annotation_id)
        elif annotation_id is not None:
            seen_ids.add(annotation_id)
        image_id = _annotation_reference(entry, "image_id", images, "unknown_image_id", label, annotation_id, report)
        category_id = _annotation_reference(entry, "category_id", categories, "unknown_category_id",
                                            label, annotation_id, report)
        if category_id is not None:
            report.class_counts[categories[category_id]] += 1
        if image_id is not None:
            annotated_images.add(image_id)
        found = len(report.problems)
        _check_annotation_box(entry, images[image_id] if image_id is not None else None, label, annotation_id, report)
        box, usable = entry.get("bbox"), all(problem.kind not in ERROR_KINDS for problem in report.problems[found:])
        if usable and image_id is not None and category_id is not None and isinstance(box, list):
            first = seen_boxes.setdefault((image_id, category_id, tuple(box)), label)
            if first is not label:
                report.add("duplicate_box", f"{label}: the same box and class as {first} on image {image_id}",
                           item_id=annotation_id)
    if images is not None:
        report.images_without_annotations = len(images.keys() - annotated_images)
        if entries and report.images_without_annotations:
            report.notes.append(f"{report.images_without_annotations} of {len(images)} images have no annotations")
    empty = [name for name, count in report.class_counts.items() if count == 0]
    if entries and empty:
        report.notes.append(f"categories without annotations: {', '.join(empty)}")


def _annotation_reference(entry, key, known, unknown_kind, label, annotation_id, report):
    """Return ``entry[key]`` when it is an id found in ``known``, else report it and return None."""
    value = entry.get(key)
    if not is_integer(value):
        report.add("annotation_entry_invalid",
                   f"{label}: {key} must be an integer, got {describe(value)}", item_id=annotation_id)
        return None
    if known is None:
        return None  # the list it refers to is itself missing, which is reported already
    if value not in known:
        report.add(unknown_kind, f"{label}: {key} {value} does not exist", item_id=annotation_id)
        return None
    return value


def _check_annotation_box(entry, image, label, annotation_id, report):
    """Check iscrowd and bbox of one annotation; ``image`` is its _ImageEntry, or None if unknown."""
    iscrowd = entry.get("iscrowd", 0)
    if not is_integer(iscrowd) or iscrowd not in (0, 1):
        report.add("annotation_entry_invalid",
                   f"{label}: iscrowd must be 0 or 1, got {describe(iscrowd)}", item_id=annotation_id)
    if "bbox" not in entry:
        report.add("box_malformed", f"{label}: has no bbox", item_id=annotation_id)
        return
    if image is None or image.width is None:
        width = height = math.inf  # unknown size: check the numbers only
    else:
        width, height = image.width, image.height
    verdict = check_box(entry["bbox"], width, height)
    if verdict.kind in ERROR_KINDS:
        report.add(verdict.kind, f"{label}: {verdict.reason}", item_id=annotation_id)
    elif iscrowd == 1:
        report.add("crowd_skipped", f"{label}: iscrowd=1, skipped from training", item_id=annotation_id)
    elif verdict.kind is not None:
        report.add(verdict.kind, f"{label}: {verdict.reason}", item_id=annotation_id)


def _check_image_files(image_dir, images, report, num_threads):
    """Check that every listed image exists, is complete and has the size the JSON gives."""
    if not os.path.isdir(image_dir):
        report.add("image_folder_missing", f"image folder {image_dir} not found", file=image_dir)
        return
    listed = [(image_id, entry) for image_id, entry in images.items() if entry.file_name is not None]
    paths = [os.path.join(image_dir, entry.file_name) for _, entry in listed]
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        results = list(pool.map(_probe_image_file, paths))
    for (image_id, entry), path, (header, kind, reason) in zip(listed, paths, results):
        if kind is not None:
            report.add(kind, f"image {image_id}: {reason}", file=path, item_id=image_id)
        elif entry.width is not None and (header.width, header.height) != (entry.width, entry.height):
            hint = ""
            if header.orientation >= 5 and (header.height, header.width) == (entry.width, entry.height):
                hint = f" (the JSON gives the size before the EXIF rotation, orientation {header.orientation})"
            report.add("image_size_mismatch",
                       f"image {image_id}: JSON gives {entry.width}x{entry.height} but the file is "
                       f"{header.width}x{header.height}{hint}", file=path, item_id=image_id)


def _probe_image_file(path):
    """Return (ImageHeader, None, None) for a good image, (None, error kind, reason) for a bad one."""
    if not os.path.isfile(path):
        return None, "image_file_missing", "image file not found"
    try:
        return verify_image_file(path), None, None
    except ImageReadError as failure:
        return None, "image_file_unreadable", failure.reason  # the caller records it in the report


def _entry_id(entry, where, invalid_kind, report):
    """Return the integer id of a JSON entry, or report why there is none and return None."""
    if not isinstance(entry, dict):
        report.add(invalid_kind, f"{where} must be an object, got {describe(entry)}")
        return None
    value = entry.get("id")
    if "id" not in entry:
        report.add(invalid_kind, f"{where} has no id")
        return None
    if not is_integer(value):
        report.add(invalid_kind, f"{where}: id must be an integer, got {describe(value)}")
        return None
    return value
