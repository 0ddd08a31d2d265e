"""COCO-format detection data.

Files: a COCO instances JSON and the folder its ``file_name``s are relative to, found under a
dataset root in any layout of ``data.layout`` (ours: ``{root}/{set_name}.json`` with images in
``{root}/images/{set_name}/``; COCO's own; Roboflow's) or given as explicit paths.

The data contract, used everywhere in this package. A sample is ``(image, target)``:
- ``image``: float32 tensor (3, H, W), resized (``transforms.py``; training also augments, ``augment.py``)
  and ImageNet-normalised;
- ``target``: dict with ``boxes`` float32 (N, 4) xyxy in resized-image pixels, ``labels`` int64
  (N,) contiguous in [0, num_classes), ``image_id`` (the COCO id), ``orig_size`` (height, width)
  of the file, ``size`` (height, width) after resizing and ``scale`` (resized / original).
:func:`retinanet.data.loader.collate` pads a batch to a common size, a multiple of 32, giving
(B, 3, H, W) and a list of targets. Contiguous labels map to COCO category ids in ascending id order
(``label_to_category_id``), so ids need not start at 1 or be contiguous.
Boxes are cleaned by one rule shared with the dataset checker (``data.check.sanitize_box``):
clipped to the image, dropped when under 1 px wide or high; ``iscrowd`` regions are not trained on.
"""
import os
import sys

import numpy as np
import torch
from torch.utils.data import Dataset

from retinanet.data.check import MAX_JSON_BYTES, sanitize_box
from retinanet.data.image_io import ImageReadError, load_image_rgb
from retinanet.data.layout import DatasetLoadError, LoadedSet, placeholder_categories, placeholder_note, resolve_set
from retinanet.util.io import read_json_and_sha256

__all__ = ["CocoDetection", "DatasetLoadError", "read_set"]


class CocoDetection(Dataset):
    """The set ``set_name`` under ``root`` (any layout of ``data.layout``), or the explicit ``json_path``
    and ``image_dir``; or ``loaded``, a set the dataset check has already read (``DatasetReport.loaded``),
    taken as it is. ``json_sha256`` is the annotation file's SHA-256. Raises DatasetLoadError
    (SetNotFoundError when no layout holds the set)."""

    def __init__(self, root, set_name, transform, skip_unreadable=False, max_json_bytes=MAX_JSON_BYTES,
                 json_path=None, image_dir=None, loaded=None):
        self.root = root
        self.set_name = set_name
        if loaded is None:
            loaded = read_set(resolve_set(root, set_name, json_path, image_dir), max_json_bytes)
        self.json_path, self.image_dir, self.layout = loaded.files
        self.json_sha256 = loaded.sha256
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        coco = loaded.data
        self.placeholders = placeholder_categories(coco["categories"], coco.get("annotations") or [])
        if self.placeholders:
            print(f"note: {self.json_path}: category {placeholder_note(self.placeholders)}", file=sys.stderr)
        categories = sorted((category for category in coco["categories"] if category["id"] not in self.placeholders),
                            key=lambda category: category["id"])
        self.label_to_category_id = [int(category["id"]) for category in categories]
        self.category_id_to_label = {cid: label for label, cid in enumerate(self.label_to_category_id)}
        self.class_names = [str(category["name"]) for category in categories]
        self.images = sorted(coco["images"], key=lambda image: image["id"])
        self.has_annotations = bool(coco.get("annotations"))
        self._boxes, self._labels = self._index_annotations(coco.get("annotations") or [])

    @property
    def num_classes(self):
        return len(self.class_names)

    def _index_annotations(self, annotations):
        by_image = {image["id"]: ([], []) for image in self.images}
        seen = set()  # (image, category, box as written): an exact duplicate is trained on once
        sizes = {image["id"]: (image["width"], image["height"]) for image in self.images}
        for annotation in annotations:
            if annotation.get("iscrowd", 0):
                continue
            key = (annotation["image_id"], annotation["category_id"], tuple(annotation["bbox"]))
            if key in seen:
                continue
            seen.add(key)
            width, height = sizes[annotation["image_id"]]
            box = sanitize_box(annotation["bbox"], width, height)
            if box is None:
                continue
            boxes, labels = by_image[annotation["image_id"]]
            boxes.append(box)
            labels.append(self.category_id_to_label[annotation["category_id"]])
        all_boxes, all_labels = [], []
        for image in self.images:
            boxes, labels = by_image[image["id"]]
            all_boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
            all_labels.append(np.asarray(labels, dtype=np.int64))
        return all_boxes, all_labels

    def __len__(self):
        return len(self.images)

    def aspect_ratios(self):
        """Width / height of every image, from the JSON (no image is decoded)."""
        return [image["width"] / image["height"] for image in self.images]

    def ground_truth(self, index):
        """Cleaned boxes (N, 4) xyxy in original pixels and contiguous labels (N,) of one image."""
        return self._boxes[index], self._labels[index]

    def restrict_to(self, image_ids):
        """Keep only the given image ids (in that order)."""
        position = {image["id"]: index for index, image in enumerate(self.images)}
        keep = [position[image_id] for image_id in image_ids]
        self.images = [self.images[i] for i in keep]
        self._boxes = [self._boxes[i] for i in keep]
        self._labels = [self._labels[i] for i in keep]

    def image_path(self, index):
        return os.path.join(self.image_dir, self.images[index]["file_name"])

    def __getitem__(self, key):
        """key: an index, or (index, sample seed[, batch seed]) as the batch sampler yields."""
        index, seed, batch_seed = (*key, None, None)[:3] if isinstance(key, tuple) else (key, None, None)
        info = self.images[index]
        try:
            image = load_image_rgb(self.image_path(index))
        except ImageReadError as error:
            if not self.skip_unreadable:
                raise
            print(f"warning: skipping image id {info['id']}: {error}", file=sys.stderr)
            return None
        rng = np.random.default_rng(seed) if seed is not None else None
        boxes, labels = self._boxes[index], self._labels[index]
        if getattr(self.transform, "takes_labels", False):  # augmentation may drop boxes; their labels go too
            batch_rng = np.random.default_rng(batch_seed) if batch_seed is not None else None  # batch-wide draws
            tensor, boxes, labels, scale = self.transform(image, boxes, labels, rng, batch_rng)
        else:
            tensor, boxes, scale = self.transform(image, boxes, rng)
        target = {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "labels": torch.from_numpy(labels),
            "image_id": int(info["id"]),
            "orig_size": tuple(image.shape[:2]),
            "size": tuple(tensor.shape[-2:]),
            "scale": float(scale),
        }
        return tensor, target


def read_set(files, max_json_bytes=MAX_JSON_BYTES):
    """The LoadedSet of the SetFiles ``files``, for a set the dataset check has not read."""
    size = os.path.getsize(files.json_path)
    if size > max_json_bytes:
        raise DatasetLoadError(f"{files.json_path}: {size} bytes, more than the {max_json_bytes} allowed")
    try:
        data, sha256 = read_json_and_sha256(files.json_path)
    except RecursionError:  # arrays nested thousands deep exhaust the parser's stack
        raise DatasetLoadError(f"{files.json_path}: not valid JSON for a dataset: nested too deeply") from None
    return LoadedSet(files, data, sha256)
