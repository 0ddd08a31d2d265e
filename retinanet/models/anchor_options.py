"""The anchor and assignment options: defaults and the checks shared by the command line
(``cli/anchor_flags.py``), checkpoints and exported files. Kept free of torch, so that
tools/check_dataset.py parses its flags without loading it.

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
        raise ValueError(f"{name} {format_values(given[name])}: {problem}")


def anchor_option_rules(options):
    """(name, rule, whether ``options`` follows it) for each anchor option present in ``options`` (a
    saved model description): the form ``models.checkpoint`` and ``deploy.metadata`` check."""
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


def format_values(values):
    """Numbers as a flag would take them; anything else (a damaged saved value) as Python writes it."""
    if isinstance(values, (list, tuple)) and all(isinstance(value, (int, float)) for value in values):
        return " ".join(format_number(value) for value in values)
    return repr(values)


def anchor_flags(sizes, scales, ratios):
    """The train.py flags that give these anchors, shortest form: a single P3 size when the sizes
    double, a count when the scales are 2^(k/N)."""
    doubling = all(math.isclose(size, sizes[0] * 2 ** level, rel_tol=1e-9) for level, size in enumerate(sizes))
    size_text = format_number(sizes[0]) if doubling else format_values(sizes)
    powers = expand_scales([len(scales)])
    regular = all(math.isclose(scale, power, rel_tol=1e-9) for scale, power in zip(scales, powers))
    scale_text = str(len(scales)) if regular else format_values(scales)
    return f"--anchor_sizes {size_text} --anchor_scales {scale_text} --anchor_ratios {format_values(sorted(ratios))}"


def parse_anchor_flags(text):
    """(sizes, scales, ratios) that train.py builds from the anchor flags in ``text`` (the form
    ``anchor_flags`` writes), the others at their defaults; ValueError naming ``text`` for flags it
    would refuse."""
    expanders = {"anchor_sizes": expand_sizes, "anchor_scales": expand_scales, "anchor_ratios": list}
    given, name = {}, None
    for token in text.split():
        if token.startswith("--"):
            name = token[2:]
            if name not in expanders:
                raise ValueError(f"{text}: {token} is not an anchor flag")
            given[name] = []
        elif name is None:
            raise ValueError(f"{text}: {token!r} comes before any flag")
        else:
            try:
                given[name].append(float(token))
            except ValueError:
                raise ValueError(f"{text}: --{name} expects numbers, got {token!r}") from None
    values = {"anchor_sizes": list(DEFAULT_SIZES), "anchor_scales": list(DEFAULT_SCALES),
              "anchor_ratios": list(DEFAULT_RATIOS)}
    try:
        values.update({name: expanders[name](numbers) for name, numbers in given.items()})
        check_anchor_values(values["anchor_sizes"], values["anchor_scales"], values["anchor_ratios"])
    except ValueError as error:
        raise ValueError(f"{text}: {error}") from None
    return values["anchor_sizes"], values["anchor_scales"], values["anchor_ratios"]
