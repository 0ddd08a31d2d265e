"""The anchor and assignment flags (``models/anchor_options.py`` holds their values and checks):
--anchor_sizes, --anchor_scales, --anchor_ratios, --low_quality_matches, --positive_iou and
--negative_iou, as train.py, tools/lr_find.py and tools/check_dataset.py take them."""
import argparse
import math

from retinanet.models.anchor_options import (DEFAULT_NEGATIVE_IOU, DEFAULT_POSITIVE_IOU, DEFAULT_RATIOS,
                                              DEFAULT_SCALES, DEFAULT_SIZES, MAX_RATIOS, MAX_SCALES,
                                              anchor_value_problems, expand_scales, expand_sizes, format_values)


def anchor_number(text):
    """argparse type: a finite number above 0 (an anchor size, scale or ratio)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def iou_threshold(text):
    """argparse type: an IoU threshold, above 0 and at most 1."""
    value = anchor_number(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be an IoU above 0 and at most 1, got {text}")
    return value


class _AnchorValues(argparse.Action):
    """Stores the flag's numbers through ``expand`` and refuses what ``anchor_value_problems`` refuses."""

    expand = staticmethod(list)
    option = None  # the keyword of anchor_value_problems this flag fills

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            expanded = self.expand(values)
        except ValueError as error:
            raise argparse.ArgumentError(self, str(error)) from None
        given = {"sizes": DEFAULT_SIZES, "scales": DEFAULT_SCALES, "ratios": DEFAULT_RATIOS, self.option: expanded}
        for name, problem in anchor_value_problems(**given):
            if name == self.dest:
                raise argparse.ArgumentError(self, f"{problem}, got {format_values(list(values))}")
        setattr(namespace, self.dest, expanded)


class _SizesAction(_AnchorValues):
    expand, option = staticmethod(expand_sizes), "sizes"


class _ScalesAction(_AnchorValues):
    expand, option = staticmethod(expand_scales), "scales"


class _RatiosAction(_AnchorValues):
    option = "ratios"


def add_anchor_arguments(group):
    """--anchor_sizes, --anchor_scales, --anchor_ratios on an argparse group (train.py's model options)."""
    group.add_argument("--anchor_sizes", type=anchor_number, nargs="+", action=_SizesAction,
                       default=list(DEFAULT_SIZES), metavar="SIZE",
                       help="anchor base size in pixels on P3-P7: 5 numbers, or 1 (P3's, each level doubling it); "
                            "saved with the model (default: 32 64 128 256 512)")
    group.add_argument("--anchor_scales", type=anchor_number, nargs="+", action=_ScalesAction,
                       default=list(DEFAULT_SCALES), metavar="SCALE",
                       help="anchor sizes per octave, as factors of the base size; one whole number N means the "
                            f"N scales 2^(k/N), at most {MAX_SCALES}; saved with the model (default: 3, i.e. 1 "
                            "2^(1/3) 2^(2/3))")
    group.add_argument("--anchor_ratios", type=anchor_number, nargs="+", action=_RatiosAction,
                       default=list(DEFAULT_RATIOS), metavar="RATIO",
                       help=f"anchor shapes as height/width, at most {MAX_RATIOS}; the heads predict "
                            "len(ratios) x len(scales) anchors per location; saved with the model (default: 0.5 1 2)")


def on_off(text):
    """``on`` / ``off`` (also true/false, yes/no, 1/0) -> bool."""
    value = str(text).strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def add_low_quality_argument(group, effect=""):
    """--low_quality_matches [on|off] on an argparse group (a bare flag means on); ``effect`` ends its help."""
    group.add_argument("--low_quality_matches", nargs="?", const=True, default=True, type=on_off, metavar="on|off",
                       help="on: also train each box's best-overlapping anchor when its IoU is under "
                            "--positive_iou, so that boxes smaller or thinner than every anchor are learnt too (as "
                            "torchvision and detectron2); off: the paper's rule (default: on; a bare flag means on)"
                            + effect)


def add_assignment_arguments(group):
    """--positive_iou and --negative_iou on an argparse group (train.py's loss options)."""
    group.add_argument("--positive_iou", type=iou_threshold, default=DEFAULT_POSITIVE_IOU,
                       help="an anchor whose best IoU with a box reaches this is trained on that box "
                            f"(default: {DEFAULT_POSITIVE_IOU})")
    group.add_argument("--negative_iou", type=iou_threshold, default=DEFAULT_NEGATIVE_IOU,
                       help="an anchor whose best IoU stays under this is background; in between, ignored; at most "
                            f"--positive_iou (default: {DEFAULT_NEGATIVE_IOU})")


# The actions of the anchor options, by configuration name (``cli.flags``).
ANCHOR_ACTIONS = {"anchor_sizes": _SizesAction, "anchor_scales": _ScalesAction, "anchor_ratios": _RatiosAction}
