"""Feature pyramid (Lin et al., 2017) turning C3-C5 into P3-P7.

P3-P5: 1x1 lateral convolutions, top-down nearest upsampling and addition, then 3x3 smoothing.
P6: 3x3 stride-2 convolution on C5 (the paper), or on P5 (``p6_from='p5'``, torchvision's first
COCO RetinaNet). P7: ReLU then 3x3 stride-2 convolution on P6.
With ``norm='gn'`` every convolution is followed by GroupNorm (useful when training from scratch).
"""
import torch.nn.functional as F
from torch import nn


def conv_norm(in_channels, out_channels, kernel_size, stride, use_group_norm):
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=not use_group_norm)
    if not use_group_norm:
        return conv
    return nn.Sequential(conv, nn.GroupNorm(32, out_channels))


P6_SOURCES = ("c5", "p5")


class FeaturePyramid(nn.Module):
    def __init__(self, in_channels, channels=256, use_group_norm=False, init="uniform", p6_from="c5"):
        """in_channels: channels of (C3, C4, C5). init: ``uniform`` (Kaiming-uniform with a=1, as
        detectron2) or ``kaiming`` (He normal, fan-out). p6_from: ``c5`` or ``p5``."""
        super().__init__()
        if p6_from not in P6_SOURCES:
            raise ValueError(f"unknown p6_from {p6_from!r}; choose one of {P6_SOURCES}")
        c3, c4, c5 = in_channels
        self.p6_from = p6_from
        self.lateral = nn.ModuleList(conv_norm(c, channels, 1, 1, use_group_norm) for c in (c3, c4, c5))
        self.output = nn.ModuleList(conv_norm(channels, channels, 3, 1, use_group_norm) for _ in range(3))
        self.p6 = conv_norm(c5 if p6_from == "c5" else channels, channels, 3, 2, use_group_norm)
        self.p7 = conv_norm(channels, channels, 3, 2, use_group_norm)
        for module in self.modules():
            if not isinstance(module, nn.Conv2d):
                continue
            if init == "kaiming":
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.kaiming_uniform_(module.weight, a=1)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, features):
        """[C3, C4, C5] -> [P3, P4, P5, P6, P7], each (B, channels, H_l, W_l)."""
        c3, c4, c5 = features
        top_down = self.lateral[2](c5)
        p5 = self.output[2](top_down)
        top_down = self.lateral[1](c4) + F.interpolate(top_down, size=c4.shape[-2:], mode="nearest")
        p4 = self.output[1](top_down)
        top_down = self.lateral[0](c3) + F.interpolate(top_down, size=c3.shape[-2:], mode="nearest")
        p3 = self.output[0](top_down)
        p6 = self.p6(c5 if self.p6_from == "c5" else p5)
        p7 = self.p7(F.relu(p6))
        return [p3, p4, p5, p6, p7]
