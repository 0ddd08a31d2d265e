"""Where a set's annotation file and images lie: the dataset layouts that are recognised.

A set is found under a dataset root in one of these layouts, tried in this order (the first
that holds the set's annotation file wins, so a root that fits several reads as ours):

- ``ours``: ``{root}/{set}.json`` with the images in ``{root}/images/{set}/``;
- ``coco``: COCO's own, ``{root}/annotations/instances_{set}.json`` with the images in
  ``{root}/{set}/`` (``--set_name val2017`` reads ``instances_val2017.json`` and ``val2017/``);
- ``roboflow``: ``{root}/{set}/_annotations.coco.json`` with the images beside it (Roboflow's
  validation set is called ``valid``).

Anything else (CVAT, Label Studio) is read from explicit paths: an annotation file, and an image
folder that defaults to the annotation file's own folder. A ``file_name`` in the JSON is relative
to the image folder and may hold sub-folders, but must not lead out of it (``data.check``).

Nothing here reads a JSON file or imports torch, so the dataset checker can use it cheaply.
"""
import os
from typing import NamedTuple

__all__ = ["LAYOUTS", "DatasetLoadError", "LoadedSet", "SetFiles", "SetNotFoundError", "candidate_files", "find_sets",
           "resolve_set"]

LAYOUTS = ("ours", "coco", "roboflow")
ROBOFLOW_JSON = "_annotations.coco.json"
COCO_PREFIX = "instances_"


class DatasetLoadError(ValueError):
    """A dataset file cannot be loaded at all (not found, too large, nested too deeply); the message names it."""


class SetNotFoundError(DatasetLoadError):
    """No layout under a root holds a set; the message names the root, the set, every path looked
    for and the sets that are there. ``looked_for`` and ``sets_found`` give the same as lists."""

    def __init__(self, message, looked_for=(), sets_found=()):
        super().__init__(message)
        self.looked_for = list(looked_for)
        self.sets_found = list(sets_found)

    @property
    def search(self):
        """'looked for A, B; sets found: x, y': for messages that name the missing file their own way."""
        return _search_text(self.looked_for, self.sets_found)


class SetFiles(NamedTuple):
    """A set's files: its COCO annotation file, the folder its ``file_name``s are relative to,
    and how they were found (a name in LAYOUTS, or ``explicit``)."""
    json_path: str
    image_dir: str
    layout: str


class LoadedSet(NamedTuple):
    """A set read once: its SetFiles, its parsed annotation file and that file's SHA-256 (hex).
    The dataset check makes one (``DatasetReport.loaded``) for the dataset to take as it is."""
    files: SetFiles
    data: dict
    sha256: str


def placeholder_categories(categories, annotations):
    """{id: name} of the placeholder category a Roboflow COCO export adds: one without annotations
    whose name is the supercategory of every other category ('shapes' over 'star', 'ring' ...).
    Entries that are not well-formed are left to the dataset check."""
    valid = [entry for entry in categories if isinstance(entry, dict) and type(entry.get("id")) is int]
    used = {entry.get("category_id") for entry in annotations if isinstance(entry, dict)
            and type(entry.get("category_id")) is int}
    return {entry["id"]: entry.get("name") for entry in valid if len(valid) > 1 and entry["id"] not in used
            and all(other.get("supercategory") == entry.get("name") for other in valid if other is not entry)}


def placeholder_note(placeholders):
    """The one line saying which placeholder categories are dropped."""
    return ", ".join(f"'{name}' (id {category_id})" for category_id, name in placeholders.items()) + (
        ": no annotations, and the supercategory of every other category (the placeholder a Roboflow export "
        "adds): dropped, not a class")


def candidate_files(root, set_name):
    """SetFiles of ``set_name`` in every layout of LAYOUTS, in order, whether they exist or not."""
    return [
        SetFiles(os.path.join(root, f"{set_name}.json"), os.path.join(root, "images", set_name), "ours"),
        SetFiles(os.path.join(root, "annotations", f"{COCO_PREFIX}{set_name}.json"), os.path.join(root, set_name),
                 "coco"),
        SetFiles(os.path.join(root, set_name, ROBOFLOW_JSON), os.path.join(root, set_name), "roboflow"),
    ]


def resolve_set(root, set_name, json_path=None, image_dir=None):
    """SetFiles of the set ``set_name`` under ``root``.

    Explicit paths win: ``json_path`` is used as given (its image folder defaults to the JSON's own
    folder), and ``image_dir`` replaces the image folder of whichever annotation file is used.
    Otherwise the first layout of LAYOUTS whose annotation file exists is taken; the image folder
    need not exist yet, so that the dataset check can name it. Raises SetNotFoundError when an
    explicit ``json_path`` is not a file or no layout holds the set.
    """
    if json_path is not None:
        if not os.path.isfile(json_path):
            raise SetNotFoundError(f"{json_path}: annotation file of set '{set_name}' not found", [json_path])
        return SetFiles(json_path, image_dir or os.path.dirname(json_path) or ".", "explicit")
    candidates = candidate_files(root, set_name)
    for found in candidates:
        if os.path.isfile(found.json_path):
            return found._replace(image_dir=image_dir, layout="explicit") if image_dir else found
    raise _not_found(root, set_name, [candidate.json_path for candidate in candidates])


def _not_found(root, set_name, looked_for):
    """The SetNotFoundError of a set no layout holds: root, set, paths looked for, sets found."""
    sets_found = find_sets(root)
    problem = "no such folder" if not os.path.isdir(root) else "no such set in any known layout"
    return SetNotFoundError(f"{root}: set '{set_name}': {problem}; {_search_text(looked_for, sets_found)}",
                            looked_for, sets_found)


def _search_text(looked_for, sets_found):
    """'looked for A, B; sets found: x, y' (or 'none')."""
    return f"looked for {', '.join(looked_for)}; sets found: {', '.join(sets_found) or 'none'}"


def find_sets(root):
    """Names of the sets under ``root`` in any layout, sorted; [] when ``root`` is not a folder.

    ``ours`` counts every ``*.json`` directly in ``root``, ``coco`` every
    ``annotations/instances_*.json``, ``roboflow`` every sub-folder holding ``_annotations.coco.json``."""
    if not os.path.isdir(root):
        return []
    names = set()
    for entry in os.scandir(root):
        if entry.is_file() and entry.name.endswith(".json"):
            names.add(entry.name[:-len(".json")])
        elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, ROBOFLOW_JSON)):
            names.add(entry.name)
    annotations = os.path.join(root, "annotations")
    if os.path.isdir(annotations):
        names.update(name[len(COCO_PREFIX):-len(".json")] for name in os.listdir(annotations)
                     if name.startswith(COCO_PREFIX) and name.endswith(".json"))
    return sorted(names)
