"""The report page's picture of validation predictions: ``{run}/{set}_predictions.png``.

A few validation images (enlarged to at least 320 px wide), each drawn twice side by side
(ground truth in green, predictions in red with class and score, ``retinanet.visualize``), tiled
two pictures per row. The images are a seeded sample of the set (as ``vis.py`` picks them), so
successive reports of a run show the same images. Predictions come from a COCO results list:
the evaluation's own during training, or a checkpoint run on just those images
(``predictions_from_checkpoint``) for a finished run.
"""
import os
import random
import sys

import cv2

from retinanet.data.coco import CocoDetection
from retinanet.data.image_io import ImageReadError, load_image_rgb
from retinanet.data.loader import build_loader
from retinanet.models.box_coding import xyxy_to_xywh
from retinanet.models.postprocess import PostProcessor
from retinanet.visualize import draw_detections, grid, save_png

NUM_IMAGES = 6
SEED = 3407
COLUMNS = 2
MIN_DRAWN_WIDTH = 320  # smaller images are enlarged first, so that labels and titles fit
DECODE_THRESHOLD, NMS_IOU = 0.05, 0.5  # test.py's decoding; the drawing threshold is applied afterwards
CHECKPOINT_NAMES = ("model_final.pt", "checkpoint_best.pt", "checkpoint_last.pt")


def grid_path(run_path, set_name):
    return os.path.join(run_path, f"{set_name}_predictions.png")


def sample_image_ids(dataset, num_images=NUM_IMAGES, seed=SEED):
    """``num_images`` image ids of the set, a seeded sample in increasing order."""
    ids = sorted(image["id"] for image in dataset.images)
    return sorted(random.Random(seed).sample(ids, min(num_images, len(ids))))


def draw_predictions_grid(dataset, results, png_path, score_threshold, image_ids=None):
    """Draw ``image_ids`` (default: ``sample_image_ids``) of a CocoDetection with the ``results``
    scoring at least ``score_threshold``; write ``png_path`` and return it. An image that cannot be
    decoded is left out with a warning (the evaluation skipped it too); None when none is left."""
    image_ids = image_ids if image_ids is not None else sample_image_ids(dataset)
    names = dict(zip(dataset.label_to_category_id, dataset.class_names))
    by_image = {}
    for entry in results:
        if entry["score"] >= score_threshold:
            by_image.setdefault(entry["image_id"], []).append(entry)
    position = {image["id"]: index for index, image in enumerate(dataset.images)}
    pictures = []
    for image_id in image_ids:
        index = position[image_id]
        try:
            image = load_image_rgb(dataset.image_path(index))
        except ImageReadError as error:
            print(f"warning: {png_path}: image id {image_id} left out: {error}", file=sys.stderr)
            continue
        boxes, labels = dataset.ground_truth(index)
        factor = max(1.0, MIN_DRAWN_WIDTH / image.shape[1])
        image = cv2.resize(image, (round(image.shape[1] * factor), round(image.shape[0] * factor)))
        ground_truth = ((xyxy_to_xywh(boxes) * factor).tolist(), [dataset.class_names[label] for label in labels])
        predictions = [dict(entry, bbox=[value * factor for value in entry["bbox"]])
                       for entry in by_image.get(image_id, [])]
        pictures.append(draw_detections(image, predictions, names, ground_truth, "side", f"image {image_id}"))
    if not pictures:
        return None
    save_png(png_path, grid(pictures, columns=min(COLUMNS, len(pictures))))
    return png_path


def find_checkpoint(run_path):
    """The run's model to draw with: model_final.pt, else checkpoint_best.pt, else checkpoint_last.pt; or None."""
    for name in CHECKPOINT_NAMES:
        if os.path.isfile(os.path.join(run_path, name)):
            return os.path.join(run_path, name)
    return None


def predictions_from_checkpoint(checkpoint_path, coco_path, set_name, device="auto", num_images=NUM_IMAGES,
                                json_path=None, image_dir=None):
    """(the set's CocoDetection restricted to ``sample_image_ids``, the checkpoint's COCO results on them).

    The set is found under ``coco_path`` in any layout of ``data.layout``, or read from the explicit
    ``json_path`` / ``image_dir`` (a run's --val_json / --val_images). Runs only those images, so it
    takes seconds on a CPU. Raises CheckpointError, DatasetLoadError (SetNotFoundError when no
    layout holds the set) or ImageReadError with the file named."""
    from retinanet.detector import Detector  # loads the model code only when a picture is drawn this way

    detector = Detector.from_checkpoint(checkpoint_path, device)
    dataset = CocoDetection(coco_path, set_name, detector.transform, json_path=json_path, image_dir=image_dir)
    dataset.restrict_to(sample_image_ids(dataset, num_images))
    loader = build_loader(dataset, batch_size=2)
    results = detector.predict_loader(loader, PostProcessor(DECODE_THRESHOLD, NMS_IOU, max_detections=100))
    return dataset, results
