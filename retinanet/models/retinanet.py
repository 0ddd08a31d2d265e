"""The RetinaNet network: ResNet -> FPN (P3-P7) -> shared classification and regression heads.

The network returns raw per-anchor outputs; the loss (``loss.py``) and the decoding into
detections (``postprocess.py``) are separate, so training, evaluation and benchmarks share them.
"""
from torch import nn

from retinanet.models.anchor_options import DEFAULT_RATIOS, DEFAULT_SCALES, DEFAULT_SIZES
from retinanet.models.anchors import AnchorGenerator
from retinanet.models.backbone import ResNet
from retinanet.models.box_coding import BOX_CODING_STD
from retinanet.models.fpn import FeaturePyramid
from retinanet.models.heads import ClassificationHead, RegressionHead

HEAD_NORM_CHOICES = ("none", "gn")
FPN_CHANNELS_RULE = "must be a positive multiple of 32, at least 64 with head_norm gn"


def fpn_channels_ok(channels, head_norm):
    """Whether ``channels`` can be the FPN and head width (FPN_CHANNELS_RULE): the heads' GroupNorm
    has 32 groups of at least 2 channels."""
    return (isinstance(channels, int) and not isinstance(channels, bool) and channels > 0 and channels % 32 == 0
            and (head_norm != "gn" or channels >= 64))


class RetinaNet(nn.Module):
    def __init__(self, num_classes, depth=50, norm="gn", head_norm="gn", fpn_channels=256, prior=0.01,
                 head_init="normal", fpn_norm=None, p6_from="c5", anchor_layout="centred",
                 box_coding_std=BOX_CODING_STD, bn_eps=1e-5, anchor_sizes=DEFAULT_SIZES, anchor_scales=DEFAULT_SCALES,
                 anchor_ratios=DEFAULT_RATIOS):
        """head_init: ``normal`` (std 0.01 towers) or ``kaiming`` (He-initialised FPN and towers,
        zero output weights); it only sets the starting weights, so checkpoints need not record it.

        The other options shape the network and are saved with it (``MODEL_OPTION_DEFAULTS``):
        fpn_norm (``none`` or ``gn``; None: as ``head_norm``), p6_from (``c5`` or ``p5``),
        anchor_layout (``centred`` or ``torchvision``), box_coding_std (4 numbers), bn_eps (the
        backbone's BatchNorm epsilon) and anchor_sizes / anchor_scales / anchor_ratios (5 base
        sizes and the per-location shapes, ``anchor_options``; the heads predict
        len(ratios) x len(scales) anchors per location). Their defaults are this project's network; torchvision's
        COCO RetinaNets need other values (``models.transfer.TORCHVISION_VARIANTS``)."""
        super().__init__()
        fpn_norm = head_norm if fpn_norm is None else fpn_norm
        for name, value in (("head_norm", head_norm), ("fpn_norm", fpn_norm)):
            if value not in HEAD_NORM_CHOICES:
                raise ValueError(f"unknown {name} {value!r}; choose one of {HEAD_NORM_CHOICES}")
        use_group_norm = head_norm == "gn"
        self.num_classes = num_classes
        self.box_coding_std = tuple(float(value) for value in box_coding_std)
        self.backbone = ResNet(depth, norm, bn_eps)
        self.fpn = FeaturePyramid(self.backbone.out_channels, fpn_channels, fpn_norm == "gn",
                                  init="kaiming" if head_init == "kaiming" else "uniform", p6_from=p6_from)
        self.anchor_generator = AnchorGenerator(ratios=anchor_ratios, scales=anchor_scales, layout=anchor_layout,
                                                sizes=anchor_sizes)
        num_anchors = self.anchor_generator.num_anchors
        self.classification_head = ClassificationHead(fpn_channels, num_anchors, num_classes, prior, use_group_norm,
                                                      head_init)
        self.regression_head = RegressionHead(fpn_channels, num_anchors, use_group_norm, head_init)

    def forward(self, images):
        """images: (B, 3, H, W) normalised, H and W multiples of 32.

        Returns a dict with ``cls_logits`` (B, N, K), ``box_deltas`` (B, N, 4), ``anchors``
        (N, 4) in input pixels, N being the anchors over all levels, and ``level_sizes`` (the
        number of anchors on each level, in order).
        """
        features = self.fpn(self.backbone(images))
        feature_sizes = [tuple(f.shape[-2:]) for f in features]
        anchors = self.anchor_generator(feature_sizes, images.device, image_size=images.shape[-2:])
        num_anchors = self.anchor_generator.num_anchors
        return {
            "cls_logits": self.classification_head(features),
            "box_deltas": self.regression_head(features),
            "anchors": anchors,
            "level_sizes": [height * width * num_anchors for height, width in feature_sizes],
            "box_coding_std": self.box_coding_std,
        }


# Everything needed to rebuild a model, as saved in checkpoints: these names always...
MODEL_ARG_NAMES = ("depth", "norm", "head_norm", "fpn_channels", "prior")
# ...and these when they differ from the network this project trains (older checkpoints lack them).
MODEL_OPTION_DEFAULTS = {"fpn_norm": None, "p6_from": "c5", "anchor_layout": "centred",
                         "box_coding_std": list(BOX_CODING_STD), "bn_eps": 1e-5, "anchor_sizes": list(DEFAULT_SIZES),
                         "anchor_scales": list(DEFAULT_SCALES), "anchor_ratios": list(DEFAULT_RATIOS)}


def model_options(values):
    """{name: value} of every option that shapes the network, defaults filled in; ``values`` is a
    mapping holding MODEL_ARG_NAMES and any of MODEL_OPTION_DEFAULTS (train.py's flags as a dict,
    a checkpoint's ``args``, an exported file's options)."""
    options = {name: values[name] for name in MODEL_ARG_NAMES}
    options.update({name: default if values.get(name) is None else values[name]
                    for name, default in MODEL_OPTION_DEFAULTS.items()})
    if options["fpn_norm"] is None:
        options["fpn_norm"] = options["head_norm"]
    return options


def build_model(num_classes, values):
    """Build a RetinaNet from a mapping holding MODEL_ARG_NAMES, any of MODEL_OPTION_DEFAULTS, and
    optionally ``head_init``, which only matters for a model about to be trained."""
    return RetinaNet(num_classes, **model_options(values), head_init=values.get("head_init", "normal"))
