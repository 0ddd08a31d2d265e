"""The shared problem report (kinds, counts, quoting) and the value tests the checkers share."""
import math

import numpy as np
import pytest

from retinanet.data.convert.common import ProblemLog
from retinanet.data.report import DatasetReport
from retinanet.evaluation.results_check import CheckReport
from retinanet.util.problems import Problem, ProblemReport
from retinanet.util.values import describe, is_finite_number, is_integer, is_number, short_repr


class FruitReport(ProblemReport):
    kinds = {"bruised": "fruit with a bruise", "missing": "fruit not in the box"}


def test_problem_text_names_the_file_then_the_entry():
    assert str(Problem("missing", "not found", file="a.json")) == "a.json: not found"
    assert str(Problem("missing", "score is missing", index=3, field="score")) == "entry 3: score is missing"
    assert str(Problem("missing", "no id", file="b.json", index=0)) == "b.json: entry 0: no id"
    assert str(Problem("missing", "listed twice")) == "listed twice"


def test_report_counts_by_kind_in_the_order_found():
    report = FruitReport()
    assert report.ok and report.format() == "no problems found"
    report.add("missing", "apple 1 not in the box", item_id=1)
    for number in range(2, 5):
        report.add("bruised", f"pear {number}: bruised", item_id=number)
    problem = report.add("missing", "plum 5 not in the box", file="box.json", item_id=5)
    assert problem == Problem("missing", "plum 5 not in the box", "box.json", 5)
    assert not report.ok
    assert report.count_by_kind() == {"missing": 2, "bruised": 3}
    with pytest.raises(KeyError, match="rotten"):
        report.add("rotten", "a rotten one")


def test_format_groups_by_kind_and_shares_the_line_limit():
    report = FruitReport()
    for number in range(5):
        report.add("bruised", f"pear {number}: bruised")
    report.add("missing", "apple 9 not in the box")
    assert report.format(max_lines=4).splitlines() == [
        "6 problems found:",
        "  bruised: 5 (fruit with a bruise)",
        "    pear 0: bruised",
        "    pear 1: bruised",
        "    ... and 3 more",
        "  missing: 1 (fruit not in the box)",
        "    apple 9 not in the box",
    ]


def test_problems_can_be_listed_in_the_order_found():
    report = FruitReport()
    for number in range(4):
        report.add("bruised" if number % 2 else "missing", f"fruit {number}", index=number)
    assert report.problem_lines(max_lines=3, by_kind=False) == [
        "4 problems found:", "  entry 0: fruit 0", "  entry 1: fruit 1", "  entry 2: fruit 2", "  ... and 1 more"]


def test_the_three_reports_share_the_problem_type():
    dataset = DatasetReport("val", "data/val.json")
    dataset.add("unknown_image_id", "annotation 4: image_id 9 does not exist", item_id=4)
    dataset.add("box_clipped", "annotation 5: clipped", item_id=5)
    results = CheckReport(gt_name="val.json")
    results.add("out_of_range", "score 2 is outside [0, 1]", index=0, field="score")
    conversion = ProblemLog()
    conversion.add("degenerate_box", "zero size", file="a.xml: object 1 ('dog')")
    for report in (dataset, results, conversion):
        assert all(type(problem) is Problem for problem in report.problems)
    assert str(dataset.errors[0]) == "data/val.json: annotation 4: image_id 9 does not exist"
    assert [problem.kind for problem in dataset.fixes] == ["box_clipped"]
    assert str(results.problems[0]) == "entry 0: score 2 is outside [0, 1]"
    assert conversion.count_by_kind() == {"degenerate_box": 1}
    assert not dataset.ok and not results.ok


@pytest.mark.parametrize("value, integer, number, finite", [
    (3, True, True, True),
    (np.int64(3), True, True, True),
    (3.0, False, True, True),
    (np.float32(0.5), False, True, True),
    (True, False, False, False),
    ("3", False, False, False),
    (None, False, False, False),
    (math.nan, False, True, False),
    (-math.inf, False, True, False),
    (10 ** 400, True, True, False),  # finite as an int, but no float can hold it
])
def test_value_tests(value, integer, number, finite):
    assert (is_integer(value), is_number(value), is_finite_number(value)) == (integer, number, finite)


def test_descriptions_are_short():
    assert describe("3") == "str '3'"
    assert describe(None) == "NoneType None"
    text = describe(list(range(100)))
    assert text.startswith("list [0, 1, 2") and text.endswith("...") and len(text) == len("list ") + 60
    assert short_repr([1, 2]) == "[1, 2]"
