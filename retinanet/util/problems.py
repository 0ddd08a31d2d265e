"""One shape for the problems the checkers and converters find, and the report that collects them.

A ``Problem`` says where it is (``file``, the item's ``item_id`` or list ``index``, the
``field``), what ``kind`` it is and why (``reason``). A ``ProblemReport`` keeps problems in
the order found, accepts only the kinds in its ``kinds`` table (kind -> description), counts
them by kind and quotes a limited number of them, grouped by kind or in order.

The dataset check (``data.report.DatasetReport``), the results-file check
(``evaluation.results_check.CheckReport``) and the dataset converters
(``data.convert.common.ProblemLog``) subclass ``ProblemReport`` and add their own facts.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem: its kind, why, and where (any of file, item id, list index, field)."""
    kind: str  # a key of the report's ``kinds``
    reason: str  # a sentence, without the place when ``file`` or ``index`` gives it
    file: str | None = None  # the file it is in, as messages name it: a path, 'path:line', ...
    item_id: object = None  # the id of the item it concerns (an image or annotation id)
    index: int | None = None  # the item's position in its list, for items found by position
    field: str | None = None  # the item's field at fault

    @property
    def where(self):
        """``file``, then ``entry {index}``, joined by ': '; '' when neither is known."""
        parts = [self.file] if self.file else []
        if self.index is not None:
            parts.append(f"entry {self.index}")
        return ": ".join(parts)

    def __str__(self):
        return f"{self.where}: {self.reason}" if self.where else self.reason


@dataclasses.dataclass
class ProblemReport:
    """Problems in the order found. ``ok`` when there are none; subclasses set ``kinds``."""
    kinds = {}  # kind -> description (a class attribute, not a field)
    problems: list = dataclasses.field(default_factory=list, kw_only=True)

    @property
    def ok(self):
        return not self.problems

    def add(self, kind, reason, file=None, item_id=None, index=None, field=None):
        """Record a Problem of ``kind`` (a key of ``kinds``) and return it."""
        if kind not in self.kinds:
            raise KeyError(f"unknown problem kind {kind!r}")
        problem = Problem(kind, reason, file, item_id, index, field)
        self.problems.append(problem)
        return problem

    def count_by_kind(self, problems=None):
        """{kind: number of problems} of ``problems`` (default: all), kinds in the order found."""
        counts = {}
        for problem in self.problems if problems is None else problems:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        return counts

    def per_kind_limit(self, max_lines):
        """How many problems of each kind to quote so that ``max_lines`` are shared by all kinds."""
        return max(1, max_lines // max(1, len(self.count_by_kind())))

    def lines_by_kind(self, problems=None, per_kind=50, indent="  "):
        """For each kind: ``{kind}: {count} ({description})``, then at most ``per_kind`` problems."""
        groups = {}
        for problem in self.problems if problems is None else problems:
            groups.setdefault(problem.kind, []).append(problem)
        lines = []
        for kind, group in groups.items():
            lines.append(f"{indent}{kind}: {len(group)} ({self.kinds[kind]})")
            lines += _quote(group, per_kind, indent * 2)
        return lines

    def lines_in_order(self, problems=None, limit=50, indent="  "):
        """The first ``limit`` problems in the order found, one a line."""
        return _quote(self.problems if problems is None else problems, limit, indent)

    def problem_lines(self, max_lines=50, by_kind=True):
        """``no problems found``, or ``{n} problems found:`` and at most ``max_lines`` quoted."""
        if not self.problems:
            return ["no problems found"]
        header = f"{len(self.problems)} problem{'' if len(self.problems) == 1 else 's'} found:"
        if by_kind:
            return [header] + self.lines_by_kind(per_kind=self.per_kind_limit(max_lines))
        return [header] + self.lines_in_order(limit=max_lines)

    def format(self, max_lines=50):
        """Readable text: the problems grouped by kind, at most ``max_lines`` quoted."""
        return "\n".join(self.problem_lines(max_lines))


def _quote(problems, limit, indent):
    lines = [f"{indent}{problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"{indent}... and {len(problems) - limit} more")
    return lines
