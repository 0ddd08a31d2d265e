"""Box geometry: IoU and the RetinaNet box coding.

All boxes are (x1, y1, x2, y2) in pixels. Deltas follow the usual RetinaNet/Faster R-CNN
parameterisation, divided by ``BOX_CODING_STD`` = (0.1, 0.1, 0.2, 0.2) so that they have
roughly unit variance (a model can use others: torchvision's RetinaNets use (1, 1, 1, 1)).
"""
import math

import torch

BOX_CODING_STD = (0.1, 0.1, 0.2, 0.2)
# Exponentiated width/height deltas are clamped so that a wild prediction cannot overflow.
MAX_LOG_SCALE = math.log(1000.0 / 16)


def box_area(boxes):
    """(..., 4) -> (...)"""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def pairwise_iou(boxes_a, boxes_b):
    """IoU between every pair: (..., N, 4) x (..., M, 4) -> (..., N, M). Leading dims broadcast."""
    top_left = torch.maximum(boxes_a[..., :, None, :2], boxes_b[..., None, :, :2])
    bottom_right = torch.minimum(boxes_a[..., :, None, 2:], boxes_b[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    intersection = wh[..., 0] * wh[..., 1]
    union = box_area(boxes_a)[..., :, None] + box_area(boxes_b)[..., None, :] - intersection
    return intersection / union.clamp(min=1e-6)


def _centre_size(boxes):
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


def encode(anchors, boxes, std=BOX_CODING_STD):
    """Regression targets of ``boxes`` relative to ``anchors``; both (..., 4) -> (..., 4)."""
    anchor_x, anchor_y, anchor_w, anchor_h = _centre_size(anchors)
    box_x, box_y, box_w, box_h = _centre_size(boxes)
    std = torch.tensor(std, dtype=boxes.dtype, device=boxes.device)
    deltas = torch.stack(
        (
            (box_x - anchor_x) / anchor_w,
            (box_y - anchor_y) / anchor_h,
            torch.log(box_w.clamp(min=1e-6) / anchor_w),
            torch.log(box_h.clamp(min=1e-6) / anchor_h),
        ),
        dim=-1,
    )
    return deltas / std


def decode(anchors, deltas, std=BOX_CODING_STD):
    """Inverse of :func:`encode`: anchors (..., 4) and deltas (..., 4) -> boxes (..., 4)."""
    std = torch.tensor(std, dtype=deltas.dtype, device=deltas.device)
    deltas = deltas * std
    anchor_x, anchor_y, anchor_w, anchor_h = _centre_size(anchors)
    centre_x = anchor_x + deltas[..., 0] * anchor_w
    centre_y = anchor_y + deltas[..., 1] * anchor_h
    half_w = 0.5 * anchor_w * torch.exp(deltas[..., 2].clamp(max=MAX_LOG_SCALE))
    half_h = 0.5 * anchor_h * torch.exp(deltas[..., 3].clamp(max=MAX_LOG_SCALE))
    return torch.stack((centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h), dim=-1)


def clip_boxes(boxes, height, width):
    """Clip (..., 4) boxes to an image of the given size."""
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def xyxy_to_xywh(boxes):
    """(N, 4) corners -> COCO (x, y, width, height); a tensor or numpy array, returned as a new one."""
    converted = boxes.clone() if isinstance(boxes, torch.Tensor) else boxes.copy()
    converted[:, 2:] -= converted[:, :2]
    return converted
