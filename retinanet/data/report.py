"""The report of a dataset check: problem kinds, the problems found, and their readable text.

``DatasetReport`` is a ``ProblemReport`` (``retinanet.util.problems``) whose problems are
``errors`` (kinds in ``ERROR_KINDS``: the set is unusable until they are fixed) or ``fixes``
(kinds in ``FIX_KINDS``: applied by the data loader and only counted). ``DatasetError``
carries an unusable set's report.
"""
from dataclasses import dataclass, field

from retinanet.util.problems import Problem, ProblemReport

__all__ = ["ERROR_KINDS", "FIX_KINDS", "DatasetError", "DatasetReport", "Problem"]

ERROR_KINDS = {
    "json_missing": "annotation file not found",
    "json_too_large": "annotation file larger than max_json_bytes",
    "json_invalid": "annotation file not readable as JSON",
    "json_structure": "top-level key missing or of the wrong type",
    "empty_set": "no images in the set",
    "image_entry_invalid": "image entry with a missing or wrong field",
    "duplicate_image_id": "image id used more than once",
    "image_path_outside": "image file_name absolute or leading out of images/{set}/",
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
    "box_far_outside": "bbox reaching beyond its image by more than the image's size",
    "image_folder_missing": "image folder not found",
    "image_file_missing": "image file not found",
    "image_file_unreadable": "image file not an image, truncated or corrupt",
    "image_size_mismatch": "image size in the JSON differs from the file",
    "image_in_another_set": "the same image file, or its content, in another set too",
}
FIX_KINDS = {
    "box_clipped": "bbox partly outside its image: clipped to the image",
    "box_too_small": "bbox under 1 px wide or high after clipping: skipped",
    "crowd_skipped": "crowd region (iscrowd=1): skipped from training",
    "duplicate_box": "the same box and class twice on an image: trained on once",
}


@dataclass
class DatasetReport(ProblemReport):
    """Everything check_dataset found in one set; ``ok`` when nothing makes it unusable.

    ``problems`` holds every Problem in the order found; ``errors`` are those of a kind in
    ERROR_KINDS (the set is unusable until they are fixed), ``fixes`` those the data loader fixes.
    """
    kinds = {**ERROR_KINDS, **FIX_KINDS}
    set_name: str
    json_path: str
    notes: list = field(default_factory=list)  # facts worth knowing, as sentences
    class_counts: dict = field(default_factory=dict)  # category name -> annotations, in id order
    num_images: int = 0
    num_annotations: int = 0
    # The set as read (data.layout.LoadedSet), for the dataset to take without reading it again;
    # None when the file could not be read or parsed.
    loaded: object = field(default=None, repr=False, compare=False)
    images_without_annotations: int = 0

    @property
    def errors(self):
        return [problem for problem in self.problems if problem.kind in ERROR_KINDS]

    @property
    def fixes(self):
        return [problem for problem in self.problems if problem.kind in FIX_KINDS]

    @property
    def ok(self):
        return not self.errors

    def add(self, kind, reason, file=None, item_id=None, index=None, field=None):
        """Record a Problem and return it; ``file`` defaults to the annotation file."""
        return super().add(kind, reason, file or self.json_path, item_id, index, field)

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
        per_kind = self.per_kind_limit(max_lines)
        errors, fixes = self.errors, self.fixes
        if errors:
            lines.append(f"ERRORS ({len(errors)}, the set is unusable until they are fixed):")
            lines += self.lines_by_kind(errors, per_kind)
        if fixes:
            lines.append(f"FIXES ({len(fixes)}, applied by the data loader):")
            lines += self.lines_by_kind(fixes, per_kind)
        plural = "" if len(errors) == 1 else "s"
        lines.append("Result: usable" if self.ok else f"Result: UNUSABLE ({len(errors)} error{plural})")
        return "\n".join(lines)


class DatasetError(ValueError):
    """A dataset has errors; ``report`` is the DatasetReport listing them."""

    def __init__(self, report):
        super().__init__(report.format())
        self.report = report

