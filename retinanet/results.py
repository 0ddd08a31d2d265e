"""What ``Detector.predict`` returns for one image: the detections and what to do with them.

    result = detector.predict("street.jpg")
    result                      # Detections(street.jpg: 3 detections, score >= 0.05: car 0.91, ...)
    result.boxes, result.scores, result.labels, result.class_names, result.category_ids
    result.save("street_detections.png")          # drawn as vis.py draws them
    result.to_coco(image_id=7)                    # COCO results entries

``Detections`` is a dict too, with the keys ``boxes``, ``scores``, ``labels``, ``class_names`` and
``category_ids``, so ``result["boxes"]`` works as it always did.
"""
import glob
import os

import numpy as np
import torch

from retinanet.data.loader import list_images
from retinanet.engine import detections_to_coco
from retinanet.visualize import draw_detections, save_png

GLOB_CHARACTERS = ("*", "?", "[")


class Detections(dict):
    """One image's detections, highest score first: ``boxes`` float32 (D, 4) x1 y1 x2 y2 in the
    image's pixels, ``scores`` float32 (D,), ``labels`` int64 (D,) contiguous, ``class_names`` (D
    names) and ``category_ids`` int64 (D,); ``image`` the RGB array they were found in, ``source``
    its path (or None), ``score_threshold`` the threshold applied and ``threshold_source`` where
    it came from when it is not the plain default."""

    def __init__(self, boxes, scores, labels, class_names, category_ids, *, image=None, source=None,
                 score_threshold=None, threshold_source=None):
        labels = np.asarray(labels, dtype=np.int64)
        super().__init__(boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                         scores=np.asarray(scores, dtype=np.float32), labels=labels,
                         class_names=[class_names[label] for label in labels],
                         category_ids=np.asarray([category_ids[label] for label in labels], dtype=np.int64))
        self.image, self.source, self.score_threshold = image, source, score_threshold
        self.threshold_source = threshold_source  # e.g. "best F1 on val", when not the plain default
        self._names = dict(zip(category_ids, class_names))
        self._label_to_category_id = list(category_ids)

    boxes = property(lambda self: self["boxes"])
    scores = property(lambda self: self["scores"])
    labels = property(lambda self: self["labels"])
    class_names = property(lambda self: self["class_names"])
    category_ids = property(lambda self: self["category_ids"])

    def __repr__(self):
        where = f"{os.path.basename(self.source)}: " if self.source else ""
        shown = ", ".join(f"{name} {score:.2f}" for name, score in zip(self.class_names[:5], self.scores[:5]))
        more = f", ... ({len(self.scores) - 5} more)" if len(self.scores) > 5 else ""
        threshold = f", score >= {self.score_threshold:.3g}" if self.score_threshold is not None else ""
        threshold += f" ({self.threshold_source})" if threshold and self.threshold_source else ""
        return f"Detections({where}{len(self.scores)} detections{threshold}{': ' if shown else ''}{shown}{more})"

    def to_coco(self, image_id):
        """COCO results entries ({image_id, category_id, bbox [x, y, w, h], score}), as test.py writes them."""
        tensors = {key: torch.from_numpy(self[key]) for key in ("boxes", "scores", "labels")}
        return detections_to_coco(tensors, image_id, self._label_to_category_id)

    def plot(self, ground_truth=None, title=None):
        """The image with the detections drawn as vis.py draws them (HxWx3 uint8 RGB); ground_truth:
        (boxes x, y, w, h, class names) to draw beside them."""
        if self.image is None:
            raise ValueError("these detections hold no image to draw on")
        title = title if title is not None else (os.path.basename(self.source) if self.source else "")
        layout = "side" if ground_truth is not None else "overlay"
        return draw_detections(self.image, self.to_coco(0), self._names, ground_truth, layout, title)

    def save(self, path, ground_truth=None):
        """Write ``plot()`` to ``path`` as PNG; returns the path."""
        save_png(path, self.plot(ground_truth))
        return path


def expand_inputs(images):
    """(the inputs of ``Detector.predict`` as a list, whether one result is wanted rather than a
    list): a folder or a glob pattern gives its image files, sorted; a list or tuple gives its
    items; anything else (a path, an array, a PIL image, a tensor) is one image."""
    if isinstance(images, (list, tuple)):
        return list(images), False
    if isinstance(images, (str, os.PathLike)):
        path = os.fspath(images)
        if os.path.isdir(path):
            return list_images([path]), False
        if not os.path.exists(path) and any(character in path for character in GLOB_CHARACTERS):
            found = sorted(glob.glob(path))
            if not found:
                raise ValueError(f"{path}: no file matches the pattern")
            return list_images(found), False
    return [images], True
