"""Classification and box-regression subnets, shared across pyramid levels.

Each is four 3x3 conv (+ optional GroupNorm) + ReLU layers and a final 3x3 conv. Outputs are
flattened to (B, sum_l H_l * W_l * A, K) and (B, sum_l H_l * W_l * A, 4) in anchor order.

Initialisation (``init``): ``normal`` draws the tower weights with std 0.01 (the paper's
choice, made for towers with normalisation); ``kaiming`` uses He initialisation, std
sqrt(2 / (9 * channels)), which keeps the signal's scale through four unnormalised layers
(std 0.01 shrinks it about threefold per layer at 256 channels).
"""
import math

import torch
from torch import nn


HEAD_INIT_CHOICES = ("normal", "kaiming")


def init_tower(tower, init):
    for module in tower.modules():
        if isinstance(module, nn.Conv2d):
            if init == "kaiming":
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif init == "normal":
                nn.init.normal_(module.weight, std=0.01)
            else:
                raise ValueError(f"unknown head init {init!r}; choose one of {HEAD_INIT_CHOICES}")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _tower(channels, use_group_norm, num_convs=4):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, 3, 1, 1, bias=not use_group_norm))
        if use_group_norm:
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _flatten(outputs, width):
    """[(B, A * width, H, W)] -> (B, sum H * W * A, width), location-major then anchor."""
    flat = []
    for output in outputs:
        batch, _, height, width_px = output.shape
        output = output.view(batch, -1, width, height, width_px).permute(0, 3, 4, 1, 2)
        flat.append(output.reshape(batch, -1, width))
    return torch.cat(flat, dim=1)


class ClassificationHead(nn.Module):
    def __init__(self, channels, num_anchors, num_classes, prior=0.01, use_group_norm=False, init="normal"):
        super().__init__()
        self.num_classes = num_classes
        self.tower = _tower(channels, use_group_norm)
        self.logits = nn.Conv2d(channels, num_anchors * num_classes, 3, 1, 1)
        init_tower(self.tower, init)
        if init == "kaiming":
            nn.init.zeros_(self.logits.weight)  # every anchor starts exactly at the prior
        else:
            nn.init.normal_(self.logits.weight, std=0.01)
        # Start every anchor at foreground probability ``prior`` so that the many easy negatives
        # do not swamp the loss in the first iterations (focal loss paper, section 4.1).
        nn.init.constant_(self.logits.bias, -math.log((1 - prior) / prior))

    def forward(self, features):
        return _flatten([self.logits(self.tower(feature)) for feature in features], self.num_classes)


class RegressionHead(nn.Module):
    def __init__(self, channels, num_anchors, use_group_norm=False, init="normal"):
        super().__init__()
        self.tower = _tower(channels, use_group_norm)
        self.deltas = nn.Conv2d(channels, num_anchors * 4, 3, 1, 1)
        init_tower(self.tower, init)
        # Zero output: every anchor initially predicts itself.
        nn.init.zeros_(self.deltas.weight)
        nn.init.zeros_(self.deltas.bias)

    def forward(self, features):
        return _flatten([self.deltas(self.tower(feature)) for feature in features], 4)
