"""Anchor boxes for pyramid levels P3-P7.

Level ``l`` has stride ``2**l`` and a base size, by default ``4 * 2**l`` (32 on P3 ... 512 on P7;
``sizes`` / ``--anchor_sizes``); every location gets ``len(ratios) * len(scales)`` anchors (9 by
default). The defaults and the flags that change them are in ``anchor_options.py``. Anchors are ordered level
by level, then row-major over locations, then anchor index (ratio-major, then scale): the
same order in which the heads flatten their outputs.

Two layouts (``layout``):
- ``centred``: anchors centred on each cell, at ((j + 0.5) * stride, (i + 0.5) * stride), with
  exact sizes base * 2**(k/3).
- ``torchvision``: what torchvision's RetinaNets use, so that their weights predict the boxes
  they were trained to: sizes truncated to integers (32, 40, 50, 64, 80, 101 ...), corners
  rounded to whole pixels, centres at (j * stride, i * stride), where a level's stride on each
  axis is the padded input's side // the feature map's (torchvision's rule: 800 // 7 = 114 on P7
  of an 800-pixel side, not 128). On sides divisible by 128 the two strides agree.
"""
import math

import torch
from torch import nn

from retinanet.models.anchor_options import (DEFAULT_RATIOS, DEFAULT_SCALES, DEFAULT_SIZES, NUM_LEVELS,
                                            check_anchor_values)

DEFAULT_LEVELS = (3, 4, 5, 6, 7)
ANCHOR_LAYOUTS = ("centred", "torchvision")


def cell_anchors(base_size, ratios, scales):
    """Anchors centred on (0, 0) for one level: (len(ratios) * len(scales), 4)."""
    shapes = []
    for ratio in ratios:  # ratio = height / width
        for scale in scales:
            area = (base_size * scale) ** 2
            width = math.sqrt(area / ratio)
            height = width * ratio
            shapes.append((-width / 2, -height / 2, width / 2, height / 2))
    return torch.tensor(shapes, dtype=torch.float32)


def torchvision_cell_anchors(base_size, ratios, scales):
    """torchvision's cell anchors: integer sizes, corners rounded, computed in float32 as it does."""
    sizes = torch.tensor([int(base_size * scale) for scale in scales], dtype=torch.float32)
    height_ratios = torch.sqrt(torch.tensor(ratios, dtype=torch.float32))
    widths = ((1 / height_ratios)[:, None] * sizes[None, :]).view(-1)
    heights = (height_ratios[:, None] * sizes[None, :]).view(-1)
    return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """Builds (and caches) the anchors for a set of feature-map sizes.

    sizes: one base size per level (default 4 x the stride: 32 ... 512); ratios (height / width)
    and scales as in ``anchor_options``; ``cells`` holds each level's (A, 4) anchors centred on its
    cell's origin and ``offset`` where, in strides, a cell's anchors are centred."""

    def __init__(self, levels=DEFAULT_LEVELS, ratios=DEFAULT_RATIOS, scales=DEFAULT_SCALES, layout="centred",
                 sizes=None):
        super().__init__()
        if layout not in ANCHOR_LAYOUTS:
            raise ValueError(f"unknown anchor layout {layout!r}; choose one of {ANCHOR_LAYOUTS}")
        self.levels = tuple(levels)
        self.strides = tuple(2 ** level for level in self.levels)
        self.sizes = tuple(float(size) for size in sizes) if sizes is not None else tuple(4.0 * s for s in self.strides)
        self.ratios, self.scales = tuple(float(r) for r in ratios), tuple(float(s) for s in scales)
        if len(self.sizes) != len(self.levels):
            raise ValueError(f"anchor_sizes: {len(self.sizes)} sizes for {len(self.levels)} levels")
        if len(self.levels) == NUM_LEVELS:  # the P3-P7 pyramid that the anchor options describe
            check_anchor_values(list(self.sizes), list(self.scales), list(self.ratios))
        self.num_anchors = len(self.ratios) * len(self.scales)
        make_cell = torchvision_cell_anchors if layout == "torchvision" else cell_anchors
        self.cells = [make_cell(size, self.ratios, self.scales) for size in self.sizes]
        self.offset = 0.0 if layout == "torchvision" else 0.5
        self._cache = {}

    @classmethod
    def from_options(cls, options):
        """The generator of a model-options dict (``models.retinanet.model_options``, or an exported
        file's metadata); anchor options it lacks take their defaults, as for older checkpoints."""
        def get(name, default):
            return default if options.get(name) is None else options[name]
        return cls(ratios=get("anchor_ratios", DEFAULT_RATIOS), scales=get("anchor_scales", DEFAULT_SCALES),
                   layout=get("anchor_layout", "centred"), sizes=get("anchor_sizes", DEFAULT_SIZES))

    def level_strides(self, feature_sizes, image_size=None):
        """(stride_y, stride_x) of each level: the nominal 2**l, or, with the torchvision layout
        and the padded input's (height, width) ``image_size``, that size // the feature map's."""
        if self.offset != 0.0 or image_size is None:
            return [(stride, stride) for stride in self.strides]
        return [(image_size[0] // height, image_size[1] // width) for height, width in feature_sizes]

    def forward(self, feature_sizes, device, dtype=torch.float32, image_size=None):
        """feature_sizes: one (height, width) per level; image_size: the padded input's (height,
        width), which places the torchvision layout's anchors -> anchors (sum_l H_l * W_l * A, 4)."""
        feature_sizes = [tuple(int(side) for side in size) for size in feature_sizes]
        strides = self.level_strides(feature_sizes, None if image_size is None else tuple(int(s) for s in image_size))
        key = (tuple(feature_sizes), tuple(strides), str(device), dtype)
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = torch.cat(
                [self._level_anchors(cell, stride, size, device, dtype, self.offset)
                 for cell, stride, size in zip(self.cells, strides, feature_sizes)]
            )
            if len(self._cache) > 64:  # many distinct image sizes: keep memory bounded
                self._cache.clear()
            self._cache[key] = anchors
        return anchors

    @staticmethod
    def _level_anchors(cell, stride, size, device, dtype, offset):
        (height, width), (stride_y, stride_x) = size, stride
        shift_x = (torch.arange(width, device=device, dtype=dtype) + offset) * stride_x
        shift_y = (torch.arange(height, device=device, dtype=dtype) + offset) * stride_y
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
        shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=-1).reshape(-1, 1, 4)
        return (shifts + cell.to(device=device, dtype=dtype)[None]).reshape(-1, 4)


def num_anchors_for_image(height, width, levels=DEFAULT_LEVELS, anchors_per_location=9):
    """Anchors a padded (height, width) input gets: ceil-divided feature sizes per level."""
    sizes = feature_sizes_for_image(height, width, levels)
    return [h * w * anchors_per_location for h, w in sizes]


def feature_sizes_for_image(height, width, levels=DEFAULT_LEVELS):
    """Feature-map sizes that the backbone and FPN produce for an input of this size."""
    sizes = []
    for level in levels:
        stride = 2 ** level
        sizes.append((math.ceil(height / stride), math.ceil(width / stride)))
    return sizes
