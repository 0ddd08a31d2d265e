"""The report of a dataset check: problem kinds, the problems found, and their readable text.

``DatasetReport`` collects ``Problem``s in ``errors`` (kinds in ``ERROR_KINDS``: the set is
unusable until they are fixed) or ``fixes`` (kinds in ``FIX_KINDS``: applied by the data
loader and only counted). ``DatasetError`` carries an unusable set's report.
"""
from dataclasses import dataclass, field

ERROR_KINDS = {
    "json_missing": "annotation file not found",
    "json_too_large": "annotation file larger than max_json_bytes",
    "json_invalid": "annotation file not readable as JSON",
    "json_structure": "top-level key missing or of the wrong type",
    "empty_set": "no images in the set",
    "image_entry_invalid": "image entry with a missing or wrong field",
    "duplicate_image_id": "image id used more than once",
    "category_entry_invalid": "category entry with a missing or wrong field",
    "duplicate_category_id": "category id used more than once",
    "duplicate_category_name": "category name used more than once",
    "annotation_entry_invalid": "annotation entry with a missing or wrong field",
    "duplicate_annotation_id": "annotation id used more than once",
    "unknown_image_id": "annotation of an image id not in 'images'",
    "unknown_category_id": "annotation of a category id not in 'categories'",
    "box_malformed": "bbox not four numbers",
    "box_not_finite": "bbox with NaN or infinity",
    "box_negative_size": "bbox with a negative width or height",
    "box_outside_image": "bbox entirely outside its image",
    "image_folder_missing": "image folder not found",
    "image_file_missing": "image file not found",
    "image_file_unreadable": "image file not an image, truncated or corrupt",
    "image_size_mismatch": "image size in the JSON differs from the file",
}
FIX_KINDS = {
    "box_clipped": "bbox partly outside its image: clipped to the image",
    "box_too_small": "bbox under 1 px wide or high after clipping: skipped",
    "crowd_skipped": "crowd region (iscrowd=1): skipped from training",
}


@dataclass(frozen=True)
class Problem:
    """One problem: the file it is in, the id of the item (None when it has none), why."""
    file: str
    item_id: object
    reason: str
    kind: str  # a key of ERROR_KINDS or FIX_KINDS

    def __str__(self):
        return f"{self.file}: {self.reason}"


@dataclass
class DatasetReport:
    """Everything check_dataset found in one set; ``ok`` when nothing makes it unusable."""
    set_name: str
    json_path: str
    errors: list = field(default_factory=list)  # Problems that make the set unusable
    fixes: list = field(default_factory=list)  # Problems the data loader fixes
    notes: list = field(default_factory=list)  # facts worth knowing, as sentences
    class_counts: dict = field(default_factory=dict)  # category name -> annotations, in id order
    num_images: int = 0
    num_annotations: int = 0
    images_without_annotations: int = 0

    @property
    def ok(self):
        return not self.errors

    def add(self, kind, file, item_id, reason):
        """Record a problem in ``errors`` or ``fixes``, as its kind says."""
        if kind not in ERROR_KINDS and kind not in FIX_KINDS:
            raise KeyError(f"unknown problem kind {kind!r}")
        (self.errors if kind in ERROR_KINDS else self.fixes).append(Problem(file, item_id, reason, kind))

    def format(self, max_lines=50):
        """Readable text: totals, class counts, notes, then problems grouped by kind.

        At most ``max_lines`` problems are quoted, shared between the kinds.
        """
        lines = [f"Set '{self.set_name}' ({self.json_path}): {self.num_images} images, "
                 f"{self.num_annotations} annotations, {len(self.class_counts)} categories"]
        if self.class_counts:
            counts = ", ".join(f"{name}: {count}" for name, count in self.class_counts.items())
            lines.append(f"  annotations per category: {counts}")
        lines += [f"  note: {note}" for note in self.notes]
        kinds = len({problem.kind for problem in self.errors + self.fixes})
        per_kind = max(1, max_lines // max(1, kinds))
        lines += _format_group(f"ERRORS ({len(self.errors)}, the set is unusable until they are fixed)",
                               self.errors, ERROR_KINDS, per_kind)
        lines += _format_group(f"FIXES ({len(self.fixes)}, applied by the data loader)",
                               self.fixes, FIX_KINDS, per_kind)
        plural = "" if len(self.errors) == 1 else "s"
        lines.append("Result: usable" if self.ok else f"Result: UNUSABLE ({len(self.errors)} error{plural})")
        return "\n".join(lines)


class DatasetError(ValueError):
    """A dataset has errors; ``report`` is the DatasetReport listing them."""

    def __init__(self, report):
        super().__init__(report.format())
        self.report = report


def _format_group(title, problems, descriptions, per_kind):
    if not problems:
        return []
    lines = [title + ":"]
    by_kind = {}
    for problem in problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    for kind, group in by_kind.items():
        lines.append(f"  {kind}: {len(group)} ({descriptions[kind]})")
        lines += [f"    {problem}" for problem in group[:per_kind]]
        if len(group) > per_kind:
            lines.append(f"    ... and {len(group) - per_kind} more")
    return lines
