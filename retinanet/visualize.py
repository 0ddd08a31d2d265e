"""Drawing ground truth and predictions, and tiling pictures into a grid (headless, OpenCV).

Boxes are COCO ``[x, y, w, h]`` in image pixels, as in results files and dataset JSON.
"""
import math

import cv2
import numpy as np

from retinanet.data.image_io import write_png

GROUND_TRUTH_COLOUR = (40, 200, 40)  # RGB
PREDICTION_COLOUR = (230, 40, 40)


def draw_boxes(image, boxes, labels, colour, scores=None, thickness=None, occupied=None):
    """Draw xywh ``boxes`` with text ``labels`` (and scores) on a copy of an RGB uint8 image.

    Labels are placed where no other label is (``place_label``): the most confident first, above
    each box, else inside its top, below it or inside its bottom. occupied: the label rectangles
    already on the picture (another call's, such as the ground truth's), extended with these."""
    canvas = np.ascontiguousarray(image).copy()
    thickness = thickness or max(1, round(min(canvas.shape[:2]) / 300))
    font_scale = max(0.35, min(canvas.shape[:2]) / 900)
    occupied = [] if occupied is None else occupied
    corners = [(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h))) for x, y, w, h in boxes]
    for x1, y1, x2, y2 in corners:
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
    texts = [str(label) + (f" {scores[index]:.2f}" if scores is not None else "") for index, label in enumerate(labels)]
    order = list(range(len(corners))) if scores is None else sorted(range(len(corners)), key=lambda i: -scores[i])
    placed = {}
    for index in order:  # the most confident choose first
        (text_w, text_h), baseline = cv2.getTextSize(texts[index], cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        placed[index] = place_label(corners[index], (text_w, text_h + baseline), canvas.shape[:2], occupied)
        occupied.append(placed[index])
    for index in reversed(order):  # ... and are drawn last, on top
        left, top, right, bottom = placed[index]
        cv2.rectangle(canvas, (left, top), (right, bottom), colour, -1)
        baseline = cv2.getTextSize(texts[index], cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[1]
        cv2.putText(canvas, texts[index], (left, bottom - baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def place_label(box, size, image_size, occupied):
    """Where a label of ``size`` (width, height) goes for ``box`` (x1, y1, x2, y2) on an image of
    ``image_size`` (height, width): the first of above the box, inside its top, below it and inside
    its bottom (each kept on the image) that overlaps no rectangle of ``occupied``, else the one that
    overlaps them least. Returns (left, top, right, bottom)."""
    (x1, y1, _, y2), (width, height) = box, size
    left = min(max(x1, 0), max(image_size[1] - width, 0))
    candidates = []
    for top in (y1 - height, y1, y2, y2 - height):
        top = min(max(top, 0), max(image_size[0] - height, 0))
        candidates.append((left, top, left + width, top + height))
    overlaps = [sum(_overlap(candidate, other) for other in occupied) for candidate in candidates]
    return candidates[overlaps.index(min(overlaps))]


def _overlap(first, second):
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    return max(width, 0) * max(height, 0)


def add_title(image, title):
    bar = np.full((24, image.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, title, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def side_by_side(left, right, gap=6):
    height = max(left.shape[0], right.shape[0])
    pad = lambda image: np.pad(image, ((0, height - image.shape[0]), (0, 0), (0, 0)), constant_values=255)
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([pad(left), spacer, pad(right)], axis=1)


def grid(images, columns=None, cell_width=480, gap=6):
    """Tile pictures (scaled to ``cell_width``) into one image, row by row."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    scaled = []
    for image in images:
        factor = cell_width / image.shape[1]
        scaled.append(cv2.resize(image, (cell_width, max(1, round(image.shape[0] * factor))), interpolation=cv2.INTER_AREA))
    rows = []
    for start in range(0, len(scaled), columns):
        row = scaled[start:start + columns]
        row += [np.full_like(row[0], 255)] * (columns - len(row))
        height = max(image.shape[0] for image in row)
        padded = [np.pad(image, ((0, height - image.shape[0] + gap), (0, gap), (0, 0)), constant_values=255) for image in row]
        rows.append(np.concatenate(padded, axis=1))
    return np.concatenate(rows, axis=0)


def draw_detections(image, predictions, names, ground_truth=None, layout="side", title=""):
    """One picture of an image's predictions and, when given, its ground truth.

    image: HxWx3 uint8 RGB. predictions: COCO result entries (``bbox``, ``score``,
    ``category_id``) to draw. names: {category_id: class name}. ground_truth: (boxes xywh,
    class names) or None. layout: "side" (ground truth left, predictions right) or "overlay".
    The lowest scores are drawn first, so the most confident box and label end up on top.
    """
    predictions = sorted(predictions, key=lambda entry: entry["score"])
    boxes = [entry["bbox"] for entry in predictions]
    labels = [names.get(entry["category_id"], str(entry["category_id"])) for entry in predictions]
    scores = [entry["score"] for entry in predictions]
    gt_boxes, gt_names = ground_truth if ground_truth is not None else ([], [])
    if layout == "overlay" or ground_truth is None:
        occupied = []  # the ground truth's labels stay visible: the predictions' go elsewhere
        canvas = draw_boxes(image, gt_boxes, gt_names, GROUND_TRUTH_COLOUR, occupied=occupied)
        return add_title(draw_boxes(canvas, boxes, labels, PREDICTION_COLOUR, scores, occupied=occupied), title)
    left = add_title(draw_boxes(image, gt_boxes, gt_names, GROUND_TRUTH_COLOUR), f"{title}: ground truth")
    right = add_title(draw_boxes(image, boxes, labels, PREDICTION_COLOUR, scores), f"{title}: predictions")
    return side_by_side(left, right)


def save_png(path, image):
    """Write an RGB uint8 image as PNG, atomically."""
    write_png(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
