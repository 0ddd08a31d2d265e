"""Anchor coverage: which ground-truth boxes can the anchors reach at the positive IoU threshold?

A box is covered when its best anchor, over the anchors that exist for its resized, padded image
(the real P3-P7 grids, ``AnchorGenerator``'s cells and offsets), has IoU >= ``--positive_iou``. An
uncovered box gets no positive anchor with ``--low_quality_matches off`` and is never learnt; with
it on, it is trained on its best anchor anyway, at a lower IoU. The grid is that of the image
alone (padded to a multiple of 32); in a batch, padding to a larger image only adds anchors
beyond its right and bottom edges.

The best IoU is exact, computed without enumerating anchors: for one anchor shape the
intersection is (overlap along x) x (overlap along y), each depending only on that axis' grid
position, so both maximise independently; and the overlap of two intervals, as one slides, rises,
stays flat while they are centred on each other, then falls, so the best grid position along an
axis is one of the two around the box's centre (clamped to the grid). Cost: N boxes x levels x
anchor shapes, not x grid positions.

Missed boxes are classified by what could reach them (t = the positive threshold):
- small: area under t x the smallest anchor's, so IoU < t with every anchor;
- large: area over the largest anchor's / t, likewise;
- thin: h/w too far from every ratio q: a perfectly centred and sized anchor of ratio q reaches
  IoU u / (2 - u), u = sqrt(min(r/q, q/r)), which is under t when max(r/q, q/r) > ((1 + t) / 2t)^2;
- other: reachable in shape and size, missed between anchor sizes or grid positions.

``propose`` searches anchor options that raise the coverage: from the current ones, smaller
sizes (for small misses), larger ones (large), more scales per octave (any), and ratios a factor
2 and 4 beyond the extreme ones (thin); each candidate is scored on a sample of the boxes, the
best for each number of anchors per location are scored on every box, and those that beat the
current coverage are returned, best first. Candidates are made from the flags that are printed,
so pasting a proposal's flags into train.py gives exactly the coverage shown.
"""
import dataclasses
import math

import numpy as np

from retinanet.models.anchor_options import MAX_RATIOS, MAX_SCALES, anchor_flags, expand_scales, parse_anchor_flags
from retinanet.models.anchors import AnchorGenerator

COVERAGE_TARGET = 0.95  # below this share of covered boxes the report proposes other anchors
CHUNK_BOXES = 32768  # boxes per vectorised step: memory stays near CHUNK_BOXES x anchor shapes x 8 bytes x 10
MISS_KINDS = ("small", "thin", "large", "other")
SEARCH_SAMPLE = 10000  # boxes each candidate is first scored on
SMALLER_SIZES = (2 ** -0.5, 0.5, 2 ** -1.5, 0.25)  # factors tried on --anchor_sizes for small misses
LARGER_SIZES = (2 ** 0.5, 2.0)  # ...and for large misses
MAX_PROPOSALS = 4


@dataclasses.dataclass(frozen=True)
class AnchorSetting:
    """One choice of anchor options (tuples of floats) and the layout they are placed in."""
    sizes: tuple
    scales: tuple
    ratios: tuple
    layout: str = "centred"

    @classmethod
    def from_options(cls, options):
        """From train.py's flags or a model-options dict, as a mapping (missing anchor options take their
        defaults)."""
        generator = AnchorGenerator.from_options(options)
        return cls(generator.sizes, generator.scales, generator.ratios, options.get("anchor_layout") or "centred")

    def generator(self):
        return AnchorGenerator(ratios=self.ratios, scales=self.scales, layout=self.layout, sizes=self.sizes)

    @property
    def anchors_per_location(self):
        return len(self.scales) * len(self.ratios)

    def flags(self):
        return anchor_flags(self.sizes, self.scales, self.ratios)

    @classmethod
    def from_flags(cls, text, layout="centred"):
        """The setting train.py builds from the flags ``text`` (``flags()``'s form)."""
        sizes, scales, ratios = parse_anchor_flags(text)
        return cls(tuple(sizes), tuple(scales), tuple(ratios), layout)


# ----- the best IoU of each box ------------------------------------------------------------------
def best_anchor_iou(boxes, padded_sizes, generator):
    """boxes float (N, 4) xyxy in input pixels; padded_sizes (N, 2) the (height, width) of the padded
    input each box is in -> float64 (N,): each box's highest IoU with any anchor of that input."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    padded_sizes = np.asarray(padded_sizes, dtype=np.float64).reshape(-1, 2)
    cells = [cell.double().numpy() for cell in generator.cells]
    best = np.zeros(len(boxes))
    for start in range(0, len(boxes), CHUNK_BOXES):
        chunk, sizes = boxes[start:start + CHUNK_BOXES], padded_sizes[start:start + CHUNK_BOXES]
        best[start:start + len(chunk)] = np.max(
            [_level_best_iou(chunk, sizes, cell, stride, generator.offset)
             for cell, stride in zip(cells, generator.strides)], axis=0)
    return best


def _level_best_iou(boxes, padded_sizes, cells, stride, offset):
    """(n,) best IoU of each box over one level's anchors: cells (A, 4), grid ceil(size / stride),
    placed every ``stride`` pixels, or (the torchvision layout, ``offset`` 0) every size // grid."""
    columns, rows = np.ceil(padded_sizes[:, 1] / stride), np.ceil(padded_sizes[:, 0] / stride)
    stride_x = stride_y = np.full((len(boxes), 1), float(stride))
    if offset == 0.0:  # as AnchorGenerator.level_strides places them
        stride_x, stride_y = np.floor(padded_sizes[:, 1] / columns)[:, None], np.floor(padded_sizes[:, 0] / rows)[:, None]
    overlap_x = _best_axis_overlap(boxes[:, 0], boxes[:, 2], cells[:, 0], cells[:, 2], columns, stride_x, offset)
    overlap_y = _best_axis_overlap(boxes[:, 1], boxes[:, 3], cells[:, 1], cells[:, 3], rows, stride_y, offset)
    intersection = overlap_x * overlap_y  # (n, A)
    box_area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[:, None]
    cell_area = ((cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1]))[None, :]
    return (intersection / np.maximum(box_area + cell_area - intersection, 1e-12)).max(axis=1)


def _best_axis_overlap(low, high, cell_low, cell_high, count, stride, offset):
    """(n, A): the longest overlap of [low, high] with [cell_low, cell_high] + (j + offset) * stride,
    j = 0 .. count - 1 (stride (n, 1), per box): at the grid position just below or just above the
    one centring them."""
    centring = ((low + high)[:, None] - (cell_low + cell_high)[None, :]) / 2  # the shift that centres them
    below = np.floor(centring / stride - offset)
    last = (count - 1)[:, None]
    best = np.zeros_like(centring)
    for step in (0.0, 1.0):
        shift = (np.clip(below + step, 0, last) + offset) * stride
        overlap = (np.minimum(high[:, None], cell_high[None, :] + shift)
                   - np.maximum(low[:, None], cell_low[None, :] + shift))
        best = np.maximum(best, overlap)
    return best


# ----- why boxes are missed ----------------------------------------------------------------------
@dataclasses.dataclass
class Reach:
    """What the anchors of a setting can reach at IoU ``threshold``: box sizes (sqrt area) from
    ``min_size`` to ``max_size`` and shapes with h/w from ``min_ratio`` to ``max_ratio``."""
    threshold: float
    min_size: float
    max_size: float
    min_ratio: float
    max_ratio: float
    cell_ratios: np.ndarray  # h/w of the anchor shapes
    ratio_slack: float  # ((1 + t) / 2t)^2

    @classmethod
    def of(cls, generator, threshold):
        cells = np.concatenate([cell.double().numpy() for cell in generator.cells])
        widths, heights = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
        areas, ratios = widths * heights, heights / widths
        slack = ((1 + threshold) / (2 * threshold)) ** 2
        return cls(threshold, math.sqrt(threshold * areas.min()), math.sqrt(areas.max() / threshold),
                   ratios.min() / slack, ratios.max() * slack, np.unique(ratios), slack)

    def miss_kinds(self, boxes):
        """(N,) index into MISS_KINDS of the first reason each box cannot be reached (3: other)."""
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        sizes, ratios = np.sqrt(widths * heights), heights / widths
        mismatch = np.maximum(ratios[:, None] / self.cell_ratios[None], self.cell_ratios[None] / ratios[:, None])
        kinds = np.full(len(boxes), MISS_KINDS.index("other"))
        for kind, unreachable in (("large", sizes > self.max_size), ("thin", mismatch.min(axis=1) > self.ratio_slack),
                                  ("small", sizes < self.min_size)):
            kinds[unreachable] = MISS_KINDS.index(kind)  # the first reason in MISS_KINDS wins
        return kinds


# ----- the report --------------------------------------------------------------------------------
@dataclasses.dataclass
class Coverage:
    """The coverage of one setting on a set of boxes."""
    setting: AnchorSetting
    positive_iou: float
    best_iou: np.ndarray  # (N,)
    reach: Reach

    @classmethod
    def of(cls, boxes, padded_sizes, setting, positive_iou):
        """Coverage of boxes (N, 4) in inputs of padded_sizes (N, 2) (see ``best_anchor_iou``)."""
        generator = setting.generator()
        best = best_anchor_iou(boxes, padded_sizes, generator)
        return cls(setting, positive_iou, best, Reach.of(generator, positive_iou))

    @property
    def covered(self):
        return self.best_iou >= self.positive_iou

    @property
    def fraction(self):
        return float(self.covered.mean()) if len(self.best_iou) else 1.0

    def fraction_by_class(self, labels, class_names):
        """{class name: covered fraction of its boxes, or None when it has none}; labels (N,)."""
        return {name: float(self.covered[labels == label].mean()) if (labels == label).any() else None
                for label, name in enumerate(class_names)}

    def miss_counts(self, boxes):
        """{kind: number of uncovered boxes} over MISS_KINDS."""
        kinds = self.reach.miss_kinds(boxes[~self.covered])
        return {kind: int((kinds == index).sum()) for index, kind in enumerate(MISS_KINDS)}


def percent(fraction):
    """A share as a percentage with one decimal, rounded down, so that only a full share reads 100.0%."""
    return f"{math.floor(fraction * 1000 + 1e-9) / 10:.1f}%"


def describe_setting(setting):
    sizes = "-".join(f"{size:g}" for size in (setting.sizes[0], setting.sizes[-1]))
    return (f"anchors {sizes} px on P3-P7, {len(setting.scales)} scales x {len(setting.ratios)} ratios = "
            f"{setting.anchors_per_location} per location")


def coverage_lines(coverage, boxes, low_quality_matches):
    """The overall coverage line and, when boxes are missed, why and what happens to them."""
    count, missed = len(coverage.best_iou), int((~coverage.covered).sum())
    lines = [(f"anchor coverage: {percent(coverage.fraction)} of {count} boxes have an anchor at IoU >= "
              f"{coverage.positive_iou:g} ({describe_setting(coverage.setting)})")]
    if not missed:
        return lines
    counts, reach = coverage.miss_counts(boxes), coverage.reach
    reasons = {"small": f"under {reach.min_size:.1f} px, smaller than any anchor can match",
               "thin": f"h/w too far from every anchor ratio, reachable about {reach.min_ratio:.2g} to "
                       f"{reach.max_ratio:.2g}",
               "large": f"over {reach.max_size:.0f} px, larger than any anchor can match",
               "other": "between anchor sizes or grid positions"}
    lines.append(f"  missed {missed}: " + "; ".join(f"{counts[kind]} {kind} ({reasons[kind]})"
                                                     for kind in MISS_KINDS if counts[kind]))
    median = float(np.median(coverage.best_iou[~coverage.covered]))
    if low_quality_matches:
        lines.append(f"  with --low_quality_matches on these {missed} boxes still train on their best anchor "
                     f"(median IoU {median:.2f}); off, they would have no positive anchor")
    else:
        lines.append(f"  with --low_quality_matches off these {missed} boxes have no positive anchor and are "
                     f"never learnt (median best IoU {median:.2f})")
    return lines


def proposal_lines(proposals, current):
    """The proposals (``anchor_search.propose``) as ready-to-paste flags, best first."""
    if not proposals:
        return ["  no anchor options in the search raise the coverage"]
    lines = ["  anchor options that raise it (coverage on these boxes, best first):"]
    for proposal in proposals:
        per_location = proposal.setting.anchors_per_location
        cost = "" if per_location == current.anchors_per_location else \
            f", {per_location / current.anchors_per_location:.2g}x the heads' outputs"
        missed = int((~proposal.covered).sum())
        lines.append(f"    {percent(proposal.fraction):>6} ({missed} missed)  {proposal.setting.flags()}  "
                     f"({per_location} anchors per location{cost})")
    return lines


# ----- the search --------------------------------------------------------------------------------
def propose(boxes, padded_sizes, current, seed=0):
    """Anchor settings that raise ``current``'s coverage (a Coverage of these boxes): a list of
    Coverage on every box, best first, at most MAX_PROPOSALS, each the best found for its number of
    anchors per location and better than any with fewer."""
    candidates = candidate_settings(current.setting, current.miss_counts(boxes))
    sample = np.random.default_rng(seed).permutation(len(boxes))[:SEARCH_SAMPLE]
    scored = [(Coverage.of(boxes[sample], padded_sizes[sample], setting, current.positive_iou).fraction,
               setting.anchors_per_location, setting) for setting in candidates]
    exact = [Coverage.of(boxes, padded_sizes, setting, current.positive_iou)
             for setting in _frontier(scored)[:2 * MAX_PROPOSALS]]
    better = [(coverage.fraction, coverage.setting.anchors_per_location, coverage) for coverage in exact
              if coverage.fraction > current.fraction]
    return _frontier(better)[:MAX_PROPOSALS]


def _frontier(scored):
    """[(fraction, anchors per location, item)] -> the items that no other beats with as many anchors
    per location or fewer, best first (ties: the first in ``scored``)."""
    kept, best = [], -1.0
    for fraction, _, item in sorted(scored, key=lambda entry: (entry[1], -entry[0])):
        if fraction > best:
            kept.append(item)
            best = fraction
    return kept[::-1]


def candidate_settings(setting, miss_counts):
    """The settings ``propose`` tries, made from their flags: every combination of the size, scale
    and ratio options below that differs from ``setting``."""
    sizes = [setting.sizes]
    if miss_counts["small"] or miss_counts["other"]:
        sizes += [_scaled_sizes(setting.sizes, factor) for factor in SMALLER_SIZES]
    if miss_counts["large"]:
        sizes += [_scaled_sizes(setting.sizes, factor) for factor in LARGER_SIZES]
    scales = [setting.scales] + [tuple(expand_scales([count])) for count in
                                 (len(setting.scales) + 1, len(setting.scales) + 2) if count <= MAX_SCALES]
    ratios = [setting.ratios]
    if miss_counts["thin"]:
        low, high = min(setting.ratios), max(setting.ratios)
        for added in ((low / 2, high * 2), (low / 4, low / 2, high * 2, high * 4)):
            extended = tuple(sorted(set(setting.ratios) | {ratio for ratio in added if 1 / 64 <= ratio <= 64}))
            if len(extended) <= MAX_RATIOS:
                ratios.append(extended)
    texts = {AnchorSetting(size, scale, ratio, setting.layout).flags()
             for size in sizes for scale in scales for ratio in ratios} - {setting.flags()}
    return [AnchorSetting.from_flags(text, setting.layout) for text in sorted(texts)]


def _scaled_sizes(sizes, factor):
    """``sizes`` x ``factor`` in whole pixels (at least 2); doubling sizes stay doubling."""
    if all(math.isclose(size, sizes[0] * 2 ** level, rel_tol=1e-9) for level, size in enumerate(sizes)):
        base = max(2, round(sizes[0] * factor))
        return tuple(float(base * 2 ** level) for level in range(len(sizes)))
    return tuple(float(max(2, round(size * factor))) for size in sizes)
