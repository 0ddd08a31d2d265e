"""Decoding raw network outputs into detections in original-image coordinates.

Per image and pyramid level: keep scores above ``score_threshold``, at most ``top_k_per_level``
(1000) of them; decode those boxes; then class-aware NMS over all levels and keep the best
``max_detections`` (100, what COCOeval counts).
"""
import torch
from torchvision.ops import batched_nms

from retinanet.models import box_coding as box_ops


class PostProcessor:
    def __init__(self, score_threshold=0.05, nms_iou=0.5, top_k_per_level=1000, max_detections=100):
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.top_k_per_level = top_k_per_level
        self.max_detections = max_detections

    @torch.no_grad()
    def __call__(self, outputs, image_sizes, scales=None, original_sizes=None):
        """outputs: the model's dict; image_sizes: (height, width) of each resized image before
        padding; scales: resize factor per image (boxes are divided by it), or None;
        original_sizes: (height, width) of each file, to clip the scaled boxes to (the resized
        size is rounded, so it can reach up to half a resized pixel past the file's edge).

        Returns one dict per image: ``boxes`` (D, 4) xyxy, ``scores`` (D,), ``labels`` (D,).
        """
        cls_logits, box_deltas, anchors = outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"]
        level_sizes = outputs.get("level_sizes") or [anchors.shape[0]]
        num_classes = cls_logits.shape[-1]
        box_coding_std = outputs.get("box_coding_std", box_ops.BOX_CODING_STD)
        detections = []
        for index in range(cls_logits.shape[0]):
            image_boxes, image_scores, image_labels = [], [], []
            start = 0
            for size in level_sizes:
                logits = cls_logits[index, start:start + size].float().flatten()
                scores = torch.sigmoid(logits)
                keep = torch.nonzero(scores > self.score_threshold).squeeze(1)
                if keep.numel() > self.top_k_per_level:
                    top = scores[keep].topk(self.top_k_per_level).indices
                    keep = keep[top]
                anchor_index = keep // num_classes + start
                image_scores.append(scores[keep])
                image_labels.append(keep % num_classes)
                image_boxes.append(box_ops.decode(anchors[anchor_index], box_deltas[index, anchor_index].float(),
                                                  box_coding_std))
                start += size
            boxes = torch.cat(image_boxes)
            scores = torch.cat(image_scores)
            labels = torch.cat(image_labels)
            height, width = image_sizes[index]
            boxes = box_ops.clip_boxes(boxes, height, width)
            keep = batched_nms(boxes, scores, labels, self.nms_iou)[: self.max_detections]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            if scales is not None:
                boxes = boxes / scales[index]
            if original_sizes is not None and original_sizes[index] is not None:
                boxes = box_ops.clip_boxes(boxes, *original_sizes[index])
            detections.append({"boxes": boxes, "scores": scores, "labels": labels})
        return detections
