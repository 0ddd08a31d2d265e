"""The RetinaNet network: ResNet -> FPN (P3-P7) -> shared classification and regression heads.

The network returns raw per-anchor outputs; the loss (``losses.py``) and the decoding into
detections (``postprocess.py``) are separate, so training, evaluation and benchmarks share them.
"""
from torch import nn

from retinanet.models.anchors import AnchorGenerator
from retinanet.models.backbone import ResNet
from retinanet.models.fpn import FeaturePyramid
from retinanet.models.heads import ClassificationHead, RegressionHead

HEAD_NORM_CHOICES = ("none", "gn")


class RetinaNet(nn.Module):
    def __init__(self, num_classes, depth=50, norm="gn", head_norm="gn", fpn_channels=256, prior=0.01,
                 head_init="normal"):
        """head_init: ``normal`` (std 0.01 towers) or ``kaiming`` (He-initialised FPN and towers,
        zero output weights); it only sets the starting weights, so checkpoints need not record it."""
        super().__init__()
        if head_norm not in HEAD_NORM_CHOICES:
            raise ValueError(f"unknown head_norm {head_norm!r}; choose one of {HEAD_NORM_CHOICES}")
        use_group_norm = head_norm == "gn"
        self.num_classes = num_classes
        self.backbone = ResNet(depth, norm)
        self.fpn = FeaturePyramid(self.backbone.out_channels, fpn_channels, use_group_norm,
                                  init="kaiming" if head_init == "kaiming" else "uniform")
        self.anchor_generator = AnchorGenerator()
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
        anchors = self.anchor_generator(feature_sizes, images.device)
        num_anchors = self.anchor_generator.num_anchors
        return {
            "cls_logits": self.classification_head(features),
            "box_deltas": self.regression_head(features),
            "anchors": anchors,
            "level_sizes": [height * width * num_anchors for height, width in feature_sizes],
        }


# Everything needed to rebuild a model, as saved in checkpoints.
MODEL_ARG_NAMES = ("depth", "norm", "head_norm", "fpn_channels", "prior")


def build_model(num_classes, args):
    """Build a RetinaNet from parsed arguments (or a dict holding MODEL_ARG_NAMES, and optionally
    ``head_init``, which only matters for a model about to be trained)."""
    values = args if isinstance(args, dict) else vars(args)
    return RetinaNet(num_classes, **{name: values[name] for name in MODEL_ARG_NAMES},
                     head_init=values.get("head_init", "normal"))
