"""The anchor and assignment options: defaults, command-line flags and the checks shared by the
parser, checkpoints and exported files. Kept free of torch, so that tools/check_dataset.py parses
its flags without loading it.

- ``--anchor_sizes``: the base size of the anchors on P3-P7, five numbers, or one number (the P3
  size, each level doubling it). Default 32 64 128 256 512 (4 x the stride).
- ``--anchor_scales``: the sizes per octave, as factors of the base size; one whole number N means
  N scales 2^(k/N), k = 0..N-1. Default 3, i.e. 1 2^(1/3) 2^(2/3). (A single explicit factor s is
  ``--anchor_scales 1`` with the sizes multiplied by s.)
- ``--anchor_ratios``: anchor shapes as height / width. Default 0.5 1 2.
- ``--positive_iou`` / ``--negative_iou``: an anchor whose best IoU with a box is at least the
  first is trained on that box; under the second it is background; in between it is ignored.

A location gets len(ratios) * len(scales) anchors, the number of outputs per location of the heads.
"""
import argparse
import math

NUM_LEVELS = 5  # P3-P7
DEFAULT_SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)
DEFAULT_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
DEFAULT_RATIOS = (0.5, 1.0, 2.0)
DEFAULT_POSITIVE_IOU = 0.5
DEFAULT_NEGATIVE_IOU = 0.4
MAX_ANCHOR_SIZE = 8192.0  # the longest image side train.py accepts
MAX_SCALES = 8
MAX_RATIOS = 8
MAX_FACTOR = 64.0  # scales and ratios beyond [1/64, 64] would describe no box of a real image


# ----- the values --------------------------------------------------------------------------------
def expand_sizes(values):
    """One size (P3's; each level doubles it) or five sizes -> five floats; ValueError otherwise."""
    values = [float(value) for value in values]
    if len(values) == 1:
        return [values[0] * 2 ** level for level in range(NUM_LEVELS)]
    if len(values) != NUM_LEVELS:
        raise ValueError(f"expected 1 size (P3's, each level doubling it) or {NUM_LEVELS} sizes (P3-P7), "
                         f"got {len(values)}")
    return values


def expand_scales(values):
    """One whole number N -> the N scales 2^(k/N); anything else is taken as the scales themselves."""
    values = [float(value) for value in values]
    if len(values) == 1 and values[0].is_integer() and values[0] >= 1:
        count = int(values[0])
        if count > MAX_SCALES:
            raise ValueError(f"at most {MAX_SCALES} scales per octave, got {count}")
        return [2 ** (index / count) for index in range(count)]
    return values


def anchor_value_problems(sizes, scales, ratios):
    """[(option name, what is wrong)] for anchor values that cannot build anchors; [] when usable."""
    problems = []
    if not _numbers(sizes, NUM_LEVELS, NUM_LEVELS, lambda value: 0 < value <= MAX_ANCHOR_SIZE):
        problems.append(("anchor_sizes", f"must be {NUM_LEVELS} numbers above 0 and at most {MAX_ANCHOR_SIZE:g}"))
    for name, values, most in (("anchor_scales", scales, MAX_SCALES), ("anchor_ratios", ratios, MAX_RATIOS)):
        if not _numbers(values, 1, most, lambda value: 1 / MAX_FACTOR <= value <= MAX_FACTOR):
            problems.append((name, f"must be 1 to {most} numbers from 1/{MAX_FACTOR:g} to {MAX_FACTOR:g}"))
        elif len(set(values)) != len(values):
            problems.append((name, "must not repeat a value (a repeat adds identical anchors)"))
    return problems


def _numbers(values, fewest, most, in_range):
    """Whether ``values`` is a list or tuple of fewest..most finite numbers, each ``in_range``."""
    if not isinstance(values, (list, tuple)) or not fewest <= len(values) <= most:
        return False
    return all(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
               and in_range(value) for value in values)


def check_anchor_values(sizes, scales, ratios):
    """Raise ValueError naming the first unusable anchor option and its value."""
    given = {"anchor_sizes": sizes, "anchor_scales": scales, "anchor_ratios": ratios}
    problems = anchor_value_problems(sizes, scales, ratios)
    if problems:
        name, problem = problems[0]
        raise ValueError(f"{name} {_format_value(given[name])}: {problem}")


def anchor_option_rules(options):
    """(name, rule, whether ``options`` follows it) for each anchor option present in ``options`` (a
    saved model description): the form ``runs.checkpoint`` and ``deploy.metadata`` check."""
    present = {name: options[name] for name in ("anchor_sizes", "anchor_scales", "anchor_ratios")
               if options.get(name) is not None}
    values = {"sizes": present.get("anchor_sizes", DEFAULT_SIZES),
              "scales": present.get("anchor_scales", DEFAULT_SCALES),
              "ratios": present.get("anchor_ratios", DEFAULT_RATIOS)}
    broken = dict(anchor_value_problems(**values))
    return [(name, broken.get(name, ""), name not in broken) for name in present]


def iou_threshold_problem(positive_iou, negative_iou):
    """'' when the thresholds can be used together, else the reason."""
    if negative_iou > positive_iou:
        return (f"--negative_iou {negative_iou:g} is above --positive_iou {positive_iou:g}; anchors between "
                "them are ignored, so the negative threshold must not exceed the positive one")
    return ""


def format_number(value):
    """A number as short as it reads exactly enough for a flag: 32, 0.5, 1.2599."""
    return f"{value:.5g}"


def _format_value(values):
    """Numbers as a flag would take them; anything else (a damaged saved value) as Python writes it."""
    if isinstance(values, (list, tuple)) and all(isinstance(value, (int, float)) for value in values):
        return " ".join(format_number(value) for value in values)
    return repr(values)


def anchor_flags(sizes, scales, ratios):
    """The train.py flags that give these anchors, shortest form: a single P3 size when the sizes
    double, a count when the scales are 2^(k/N)."""
    doubling = all(math.isclose(size, sizes[0] * 2 ** level, rel_tol=1e-9) for level, size in enumerate(sizes))
    size_text = format_number(sizes[0]) if doubling else _format_value(sizes)
    powers = expand_scales([len(scales)])
    regular = all(math.isclose(scale, power, rel_tol=1e-9) for scale, power in zip(scales, powers))
    scale_text = str(len(scales)) if regular else _format_value(scales)
    return f"--anchor_sizes {size_text} --anchor_scales {scale_text} --anchor_ratios {_format_value(sorted(ratios))}"


# ----- the flags ---------------------------------------------------------------------------------
def _positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def iou_threshold(text):
    """argparse type: an IoU threshold, above 0 and at most 1."""
    value = _positive_number(text)
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
                raise argparse.ArgumentError(self, f"{problem}, got {_format_value(list(values))}")
        setattr(namespace, self.dest, expanded)


class _SizesAction(_AnchorValues):
    expand, option = staticmethod(expand_sizes), "sizes"


class _ScalesAction(_AnchorValues):
    expand, option = staticmethod(expand_scales), "scales"


class _RatiosAction(_AnchorValues):
    option = "ratios"


def add_anchor_arguments(group):
    """--anchor_sizes, --anchor_scales, --anchor_ratios on an argparse group (train.py's model options)."""
    group.add_argument("--anchor_sizes", type=_positive_number, nargs="+", action=_SizesAction,
                       default=list(DEFAULT_SIZES), metavar="SIZE",
                       help="anchor base size in pixels on P3-P7: 5 numbers, or 1 (P3's, each level doubling it); "
                            "saved with the model (default: 32 64 128 256 512)")
    group.add_argument("--anchor_scales", type=_positive_number, nargs="+", action=_ScalesAction,
                       default=list(DEFAULT_SCALES), metavar="SCALE",
                       help="anchor sizes per octave, as factors of the base size; one whole number N means the "
                            f"N scales 2^(k/N), at most {MAX_SCALES}; saved with the model (default: 3, i.e. 1 "
                            "2^(1/3) 2^(2/3))")
    group.add_argument("--anchor_ratios", type=_positive_number, nargs="+", action=_RatiosAction,
                       default=list(DEFAULT_RATIOS), metavar="RATIO",
                       help=f"anchor shapes as height/width, at most {MAX_RATIOS}; the heads predict "
                            "len(ratios) x len(scales) anchors per location; saved with the model (default: 0.5 1 2)")


def parse_anchor_flags(text):
    """(sizes, scales, ratios) that train.py takes from the anchor flags in ``text``, e.g. what
    ``anchor_flags`` writes; the others at their defaults. Raises ValueError for flags it refuses."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_anchor_arguments(parser)
    try:
        args = parser.parse_args(text.split())
    except argparse.ArgumentError as error:
        raise ValueError(f"{text}: {error}") from None
    return args.anchor_sizes, args.anchor_scales, args.anchor_ratios


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
