"""Focal loss for classification and smooth-L1 loss for boxes, with IoU anchor assignment.

Assignment: an anchor whose best IoU with a ground-truth box is >= ``positive_iou`` (0.5,
``--positive_iou``) is a positive for that box; below ``negative_iou`` (0.4, ``--negative_iou``)
it is background; in between it is ignored.
Both losses are summed per image, divided by that image's number of positives (at least 1),
then averaged over the batch. An image without boxes therefore trains classification as all
background and contributes exactly zero box loss. Everything is vectorised over the batch.
"""
import torch
import torch.nn.functional as F
from torch import nn

from retinanet.models import box_coding as box_ops
from retinanet.models.anchor_options import iou_threshold_problem


def focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Element-wise sigmoid focal loss (Lin et al., 2017): same shape as ``logits``."""
    probabilities = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probabilities * targets + (1 - probabilities) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * cross_entropy


def pad_targets(targets, device):
    """List of per-image targets -> (boxes (B, M, 4), labels (B, M), valid (B, M)), M >= 1."""
    max_boxes = max(1, max(len(t["boxes"]) for t in targets))
    batch = len(targets)
    boxes = torch.zeros(batch, max_boxes, 4, device=device)
    labels = torch.zeros(batch, max_boxes, dtype=torch.long, device=device)
    valid = torch.zeros(batch, max_boxes, dtype=torch.bool, device=device)
    for index, target in enumerate(targets):
        count = len(target["boxes"])
        boxes[index, :count] = target["boxes"].to(device, non_blocking=True)
        labels[index, :count] = target["labels"].to(device, non_blocking=True)
        valid[index, :count] = True
    return boxes, labels, valid


def assign_anchors(anchors, gt_boxes, gt_valid, positive_iou=0.5, negative_iou=0.4, low_quality_matches=False):
    """anchors (N, 4), gt_boxes (B, M, 4), gt_valid (B, M) ->
    matched index (B, N) into M, positive mask (B, N), negative mask (B, N).

    ``low_quality_matches``: also make positive, for every box, the anchor(s) with its highest
    IoU even when that is under ``positive_iou``, so that boxes smaller or thinner than every
    anchor still get trained (as detectron2 does); off by default, as in the paper."""
    iou = box_ops.pairwise_iou(anchors[None], gt_boxes)  # (B, N, M)
    iou = iou.masked_fill(~gt_valid[:, None, :], -1.0)
    best_iou, matched = iou.max(dim=2)
    positive = best_iou >= positive_iou
    negative = best_iou < negative_iou
    if low_quality_matches:
        best_per_box = iou.max(dim=1, keepdim=True).values  # (B, 1, M)
        is_best = (iou == best_per_box) & (best_per_box > 0) & gt_valid[:, None, :]
        # An anchor takes the box it is the best anchor for (highest IoU if several).
        rescued = is_best.any(dim=2) & ~positive
        matched = torch.where(rescued, (iou * is_best).argmax(dim=2), matched)
        positive = positive | rescued
        negative = negative & ~rescued
    return matched, positive, negative


class RetinaNetLoss(nn.Module):
    def __init__(self, alpha=0.25, gamma=2.0, positive_iou=0.5, negative_iou=0.4, smooth_l1_beta=1.0 / 9,
                 low_quality_matches=False):
        super().__init__()
        problem = iou_threshold_problem(positive_iou, negative_iou)
        if problem:
            raise ValueError(problem)
        self.low_quality_matches = low_quality_matches
        self.alpha = alpha
        self.gamma = gamma
        self.positive_iou = positive_iou
        self.negative_iou = negative_iou
        self.smooth_l1_beta = smooth_l1_beta

    def forward(self, outputs, targets):
        """outputs: the model's dict; targets: list of dicts with ``boxes`` (M_i, 4) xyxy and
        ``labels`` (M_i,). Returns {'cls_loss', 'box_loss', 'loss'} scalar tensors."""
        cls_logits = outputs["cls_logits"].float()
        box_deltas = outputs["box_deltas"].float()
        anchors = outputs["anchors"].float()
        gt_boxes, gt_labels, gt_valid = pad_targets(targets, cls_logits.device)
        matched, positive, negative = assign_anchors(
            anchors, gt_boxes, gt_valid, self.positive_iou, self.negative_iou, self.low_quality_matches
        )
        num_positive = positive.sum(dim=1).clamp(min=1).float()  # (B,)

        matched_labels = torch.gather(gt_labels, 1, matched)  # (B, N)
        cls_targets = torch.zeros_like(cls_logits)
        cls_targets[positive, matched_labels[positive]] = 1.0
        counted = (positive | negative).unsqueeze(-1).to(cls_logits.dtype)
        per_anchor = focal_loss(cls_logits, cls_targets, self.alpha, self.gamma) * counted
        cls_loss = (per_anchor.sum(dim=(1, 2)) / num_positive).mean()

        matched_boxes = torch.gather(gt_boxes, 1, matched[..., None].expand(-1, -1, 4))  # (B, N, 4)
        regression_targets = box_ops.encode(anchors[None].expand_as(matched_boxes), matched_boxes,
                                            outputs.get("box_coding_std", box_ops.BOX_CODING_STD))
        box_error = F.smooth_l1_loss(box_deltas, regression_targets, beta=self.smooth_l1_beta, reduction="none")
        box_error = box_error.sum(dim=2) * positive.to(box_error.dtype)
        box_loss = (box_error.sum(dim=1) / num_positive).mean()
        return {"cls_loss": cls_loss, "box_loss": box_loss, "loss": cls_loss + box_loss}
