"""The baseline evaluation, structured the way the original pytorch-retinanet evaluates.

One image at a time through the whole chain: scikit-image decoding and float64 resizing,
NumPy normalisation and padding, anchors rebuilt in NumPy for every image, a Python loop over
classes with one NMS each, no cap on detections per image (optionally ``max_detections``), a
Python loop building the result dicts, then pycocotools' COCOeval. It runs the same network
weights as ours, so the two paths differ only in how the work around the network is done.
Used by bench_eval.py as the reference to beat; not used by the package.
"""

import numpy as np
import skimage.color
import skimage.io
import skimage.transform
import torch
from torchvision.ops import nms

from retinanet.models import box_coding as box_ops
from retinanet.evaluation.coco_eval import evaluate_detections

MEAN = np.array([[[0.485, 0.456, 0.406]]])
STD = np.array([[[0.229, 0.224, 0.225]]])


def load_and_prepare(path, min_side, max_side):
    image = skimage.io.imread(path)
    if image.ndim == 2:
        image = skimage.color.gray2rgb(image)
    image = image[..., :3].astype(np.float32) / 255.0
    image = (image - MEAN) / STD
    rows, cols = image.shape[:2]
    scale = min_side / min(rows, cols)
    if max(rows, cols) * scale > max_side:
        scale = max_side / max(rows, cols)
    image = skimage.transform.resize(image, (int(round(rows * scale)), int(round(cols * scale))))
    rows, cols = image.shape[:2]
    padded = np.zeros((rows + (32 - rows % 32) % 32, cols + (32 - cols % 32) % 32, 3), dtype=np.float32)
    padded[:rows, :cols] = image
    return torch.from_numpy(padded).permute(2, 0, 1).unsqueeze(0), scale, (rows, cols)


def numpy_anchors(height, width):
    """All anchors for one padded image, rebuilt from scratch as the original does per call."""
    all_anchors = []
    for level in (3, 4, 5, 6, 7):
        stride, base = 2 ** level, 2 ** (level + 2)
        ratios, scales = np.array([0.5, 1, 2]), np.array([2 ** 0, 2 ** (1 / 3), 2 ** (2 / 3)])
        anchors = np.zeros((9, 4))
        anchors[:, 2:] = base * np.tile(scales, (2, 3)).T
        areas = anchors[:, 2] * anchors[:, 3]
        anchors[:, 2] = np.sqrt(areas / np.repeat(ratios, 3))
        anchors[:, 3] = anchors[:, 2] * np.repeat(ratios, 3)
        anchors[:, 0::2] -= np.tile(anchors[:, 2] * 0.5, (2, 1)).T
        anchors[:, 1::2] -= np.tile(anchors[:, 3] * 0.5, (2, 1)).T
        feature_h, feature_w = (height + stride - 1) // stride, (width + stride - 1) // stride
        shift_x, shift_y = np.meshgrid((np.arange(feature_w) + 0.5) * stride, (np.arange(feature_h) + 0.5) * stride)
        shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel())).T
        all_anchors.append((anchors.reshape(1, 9, 4) + shifts.reshape(-1, 1, 4)).reshape(-1, 4))
    return np.concatenate(all_anchors).astype(np.float32)


@torch.no_grad()
def evaluate(model, dataset, min_side, max_side, score_threshold=0.05, max_detections=None):
    """Returns (results, stats) for ``dataset`` (a retinanet.dataset.CocoDetection)."""
    model.eval()
    results = []
    for index in range(len(dataset)):
        info = dataset.images[index]
        image, scale, (rows, cols) = load_and_prepare(dataset.image_path(index), min_side, max_side)
        outputs = model(image)
        anchors = torch.from_numpy(numpy_anchors(image.shape[2], image.shape[3]))
        boxes = box_ops.clip_boxes(box_ops.decode(anchors, outputs["box_deltas"][0]), rows, cols)
        classification = torch.sigmoid(outputs["cls_logits"][0])
        final_scores, final_labels, final_boxes = [], [], []
        for class_index in range(classification.shape[1]):
            scores = classification[:, class_index]
            over = scores > score_threshold
            if over.sum() == 0:
                continue
            keep = nms(boxes[over], scores[over], 0.5)
            final_scores.append(scores[over][keep])
            final_labels.append(torch.full((len(keep),), class_index))
            final_boxes.append(boxes[over][keep])
        if not final_scores:
            continue
        scores, labels, image_boxes = torch.cat(final_scores), torch.cat(final_labels), torch.cat(final_boxes)
        if max_detections is not None:
            order = scores.argsort(descending=True)[:max_detections]
            scores, labels, image_boxes = scores[order], labels[order], image_boxes[order]
        image_boxes = image_boxes / scale
        image_boxes[:, 2] -= image_boxes[:, 0]
        image_boxes[:, 3] -= image_boxes[:, 1]
        for box_id in range(image_boxes.shape[0]):
            results.append({
                "image_id": info["id"],
                "category_id": dataset.label_to_category_id[int(labels[box_id])],
                "score": float(scores[box_id]),
                "bbox": image_boxes[box_id].tolist(),
            })
    evaluation = evaluate_detections(dataset.json_path, results, evaluator="pycocotools", per_class=False)
    return results, evaluation["stats"]
