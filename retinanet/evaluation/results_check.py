"""Strict checks of a COCO detection results file before it is scored or submitted.

A results file is a JSON list of entries
``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}``:
``image_id`` and ``category_id`` must exist in the ground-truth set, the four box numbers
must be finite with ``w, h >= 0``, and ``score`` a finite number in [0, 1]. JSON booleans
are not numbers. Extra keys are allowed. ``check_results`` reports every problem at once,
each naming the entry index and the field.
"""
import json
import os
from dataclasses import dataclass, field

from retinanet.util.problems import Problem, ProblemReport
from retinanet.util.values import describe, is_finite_number, is_integer

__all__ = ["DEFAULT_MAX_BYTES", "MAX_DETECTIONS_PER_IMAGE", "RESULT_PROBLEM_KINDS", "CheckReport", "Problem",
           "SubmissionError", "check_results", "load_results_file"]

# COCOeval keeps only the 100 highest-scoring detections per image (maxDets=100).
MAX_DETECTIONS_PER_IMAGE = 100
DEFAULT_MAX_BYTES = 512 * 2**20


class SubmissionError(ValueError):
    """A results file cannot be read: missing, too large, or not JSON."""


def load_results_file(path, max_bytes=DEFAULT_MAX_BYTES):
    """Parse the JSON results file at ``path`` (as data only) and return its top-level value.

    Raises SubmissionError naming the file when it is missing, unreadable, larger than
    ``max_bytes`` or not valid JSON. The shape of the value is left to ``check_results``.
    """
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise SubmissionError(f"{path}: cannot open results file ({error.strerror or error})") from error
    if size > max_bytes:
        raise SubmissionError(f"{path}: results file is {size} bytes, larger than the limit of {max_bytes} bytes")
    try:
        with open(path, "rb") as handle:
            content = handle.read(max_bytes + 1)
    except OSError as error:
        raise SubmissionError(f"{path}: cannot read results file ({error.strerror or error})") from error
    if len(content) > max_bytes:
        raise SubmissionError(f"{path}: results file grew past the limit of {max_bytes} bytes while being read")
    try:
        return json.loads(content)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise SubmissionError(f"{path}: not valid JSON: {error.msg} at {where}") from error
    except UnicodeDecodeError as error:
        raise SubmissionError(f"{path}: not valid JSON: the file is not UTF-8 text ({error.reason})") from error
    except RecursionError as error:
        raise SubmissionError(f"{path}: not valid JSON for results: nested too deeply") from error


# Every kind of problem a results file can have.
RESULT_PROBLEM_KINDS = {
    "not_a_list": "the top level is not a JSON list of detections",
    "not_an_object": "an entry is not a JSON object",
    "missing_field": "a required field is missing",
    "wrong_type": "a field of the wrong type",
    "unknown_id": "an image or category id not in the ground truth",
    "out_of_range": "a box with a negative width or height, or a score outside [0, 1]",
}


@dataclass
class CheckReport(ProblemReport):
    """Everything ``check_results`` found. ``ok`` is True when there is no problem.

    problems: Problems in entry order, each with the entry ``index`` (None for the file as a
        whole) and the ``field`` at fault.
    images_without_detections: GT image ids no valid entry refers to, sorted.
    images_over_limit: {image_id: number of entries} for images with more than 100 entries,
        a warning only: COCOeval scores the 100 highest-scoring ones.
    """
    kinds = RESULT_PROBLEM_KINDS
    gt_name: str
    num_entries: int = 0
    num_images: int = 0
    images_without_detections: list = field(default_factory=list)
    images_over_limit: dict = field(default_factory=dict)

    def format(self, max_problems=50):
        """Human-readable summary: counts, warnings, then at most ``max_problems`` problems in entry order."""
        lines = [
            f"{self.num_entries} detections; {len(self.images_without_detections)} of the "
            f"{self.num_images} images in {self.gt_name} have no detections",
        ]
        if self.images_over_limit:
            shown = ", ".join(f"{image_id} ({count})" for image_id, count in list(self.images_over_limit.items())[:10])
            more = len(self.images_over_limit) - 10
            lines.append(
                f"warning: {len(self.images_over_limit)} image(s) have more than {MAX_DETECTIONS_PER_IMAGE} "
                f"detections; COCOeval scores only the {MAX_DETECTIONS_PER_IMAGE} highest-scoring of each: "
                f"{shown}" + (f" ... and {more} more" if more > 0 else "")
            )
        return "\n".join(lines + self.problem_lines(max_problems, by_kind=False))


def _check_id(report, index, entry, field_name, known_ids, noun):
    """Check an id field; return the id when it is valid, else None."""
    if field_name not in entry:
        report.add("missing_field", f"{field_name} is missing", index=index, field=field_name)
        return None
    value = entry[field_name]
    if not is_integer(value):
        report.add("wrong_type", f"{field_name} must be an integer, got {describe(value)}",
                   index=index, field=field_name)
        return None
    if value not in known_ids:
        report.add("unknown_id", f"{field_name} {value} is not {noun} of {report.gt_name}",
                   index=index, field=field_name)
        return None
    return value


def _check_bbox(report, index, entry):
    if "bbox" not in entry:
        report.add("missing_field", "bbox is missing", index=index, field="bbox")
        return
    bbox = entry["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        report.add("wrong_type", f"bbox must be a list of 4 numbers [x, y, w, h], got {describe(bbox)}",
                   index=index, field="bbox")
        return
    for position, name in enumerate(("x", "y", "w", "h")):
        value = bbox[position]
        if not is_finite_number(value):
            report.add("wrong_type", f"bbox {name} (item {position}) must be a finite number, got {describe(value)}",
                       index=index, field="bbox")
        elif name in ("w", "h") and value < 0:
            report.add("out_of_range", f"bbox {name} (item {position}) is {value}, must be >= 0",
                       index=index, field="bbox")


def _check_score(report, index, entry):
    if "score" not in entry:
        report.add("missing_field", "score is missing", index=index, field="score")
        return
    score = entry["score"]
    if not is_finite_number(score):
        report.add("wrong_type", f"score must be a finite number, got {describe(score)}", index=index, field="score")
    elif not 0 <= score <= 1:
        report.add("out_of_range", f"score {score} is outside [0, 1]", index=index, field="score")


def check_results(results, gt_dict, gt_name="the ground truth"):
    """Check a parsed results file against the COCO dict of its set; return a CheckReport.

    results: the value parsed from the results file (should be a list of entry dicts).
    gt_dict: COCO instances dict of the set (``images`` and ``categories`` are used).
    gt_name: how messages name the set, e.g. "val.json".
    """
    image_ids = {image["id"] for image in gt_dict["images"]}
    category_ids = {category["id"] for category in gt_dict["categories"]}
    report = CheckReport(gt_name=gt_name, num_images=len(image_ids))
    if not isinstance(results, list):
        # The parsed list carries no file name: "results" names the file as a whole.
        report.add("not_a_list", f"top level must be a JSON list of detections, got {describe(results)}",
                   file="results")
        report.images_without_detections = sorted(image_ids)
        return report
    report.num_entries = len(results)
    detections_per_image = {}
    for index, entry in enumerate(results):
        if not isinstance(entry, dict):
            report.add("not_an_object", f"must be a JSON object, got {describe(entry)}", index=index)
            continue
        image_id = _check_id(report, index, entry, "image_id", image_ids, "an image")
        _check_id(report, index, entry, "category_id", category_ids, "a category")
        _check_bbox(report, index, entry)
        _check_score(report, index, entry)
        if image_id is not None:
            detections_per_image[image_id] = detections_per_image.get(image_id, 0) + 1
    report.images_without_detections = sorted(image_ids - detections_per_image.keys())
    report.images_over_limit = {
        image_id: count
        for image_id, count in sorted(detections_per_image.items())
        if count > MAX_DETECTIONS_PER_IMAGE
    }
    return report
