"""The report's content as plain frozen dataclasses: tables, figures, claims, sections.

The lead assembles a `Report` from the analyses; `logitscope.report.html.render_report` turns
it into one self-contained HTML page plus the same numbers as CSV and JSON. Nothing here does
I/O, so a report can be built and checked by hand in a test.

Ids name files (``tables/<id>.csv``) and HTML anchors, so they are restricted to letters,
digits, ``.``, ``_`` and ``-``.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Cell = str | float | int | None
Verdict = Literal["holds", "does not hold", "inconclusive", "not measured", "failed"]

# "inconclusive": the effect is within its interval's uncertainty (`logitscope.report.claims`);
# "failed": the stage that measures the claim raised; the statistic says why.
VERDICTS: tuple[str, ...] = ("holds", "does not hold", "inconclusive", "not measured", "failed")
THIS_RUN = "this run"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid id (file name and HTML anchor), else raise ValueError."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"{kind} id {value!r} is not valid: expected letters, digits, '.', '_' or '-'")
    return value


def is_missing(cell: Cell) -> bool:
    """True for a cell that renders as "—": None, NaN, or the dash itself."""
    if cell is None:
        return True
    if isinstance(cell, float):
        return math.isnan(cell)
    return isinstance(cell, str) and cell.strip() in ("", "—")


def _plain_cell(cell: object, where: str) -> Cell:
    if cell is None or isinstance(cell, str):
        return cell
    if isinstance(cell, bool):
        raise ValueError(f"{where}: got a bool {cell!r}; expected str, number or None")
    if isinstance(cell, numbers.Integral):
        return int(cell)
    if isinstance(cell, numbers.Real):
        return float(cell)
    raise ValueError(f"{where}: got {type(cell).__name__} {cell!r}; expected str, number or None")


@dataclass(frozen=True)
class Table:
    """A table of the report, e.g. the paper's Table 1 as "paper | this run".

    Attributes:
        id: file name stem of ``tables/<id>.csv`` and HTML anchor.
        title: shown above the table.
        columns: header row.
        rows: one list per row, ``len(columns)`` cells each; a cell is a preformatted string
            ("74.0% ± 0.63%"), a number (formatted for the page, written in full to the CSV)
            or None (shown as "—").
        note: small print under the table.
    """

    id: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""

    def __post_init__(self) -> None:
        check_id("table", self.id)
        columns = [str(c) for c in self.columns]
        if not columns:
            raise ValueError(f"table {self.id!r} has no columns")
        rows = []
        for i, row in enumerate(self.rows):
            if len(row) != len(columns):
                raise ValueError(f"table {self.id!r} row {i} has {len(row)} cells; expected {len(columns)}")
            rows.append([_plain_cell(c, f"table {self.id!r} row {i}") for c in row])
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "rows", rows)

    @property
    def this_run_columns(self) -> list[int]:
        """Indices of the columns holding our measurements (header contains "this run")."""
        return [j for j, c in enumerate(self.columns) if THIS_RUN in c.lower()]

    @property
    def filled(self) -> bool:
        """At least one row, and no "this run" column that is entirely missing."""
        if not self.rows:
            return False
        return not any(all(is_missing(row[j]) for row in self.rows) for j in self.this_run_columns)


@dataclass(frozen=True)
class Figure:
    """A figure of the report: a PNG on disk, embedded into the page as a data URI.

    Attributes:
        id: HTML anchor, e.g. "fig1" or "figB4".
        title: bold lead of the caption.
        path: the PNG. A missing file is an error at render time unless ``missing_reason``
            is set, in which case a placeholder shows the reason instead.
        caption: text after the title.
        missing_reason: why the figure may be absent (e.g. "needs the CIFAR-100 runs").
    """

    id: str
    title: str
    path: Path
    caption: str = ""
    missing_reason: str | None = None

    def __post_init__(self) -> None:
        check_id("figure", self.id)
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class Claim:
    """One finding of the paper checked on this run.

    Attributes:
        id: short anchor, e.g. "at-smaller-max-logit".
        statement: the paper's finding (its sentence, quoted).
        statistic: what we measured, with its interval ("... effect -11.6 [-13.0, -10.1]").
        verdict: one of `VERDICTS` (see `logitscope.report.claims`); "failed": the stage
            that measures it raised (``statistic`` gives the reason).
        detail: how the check was made (the effect and the test), or why it could not be.
        paper: the paper's number; ``where``: the figure or table and section it is in.
        to_decide: for an inconclusive verdict, the seeds per group that would likely decide
            it, projected from this run's spreads (`logitscope.report.claims.Predicate.to_decide`).
    """

    id: str
    statement: str
    statistic: str
    verdict: Verdict
    detail: str = ""
    paper: str = ""
    where: str = ""
    to_decide: str = ""

    def __post_init__(self) -> None:
        check_id("claim", self.id)
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id!r} has verdict {self.verdict!r}; expected one of {VERDICTS}")


@dataclass(frozen=True)
class Section:
    """A section of the page: free text (paragraphs split on blank lines), then tables, figures, claims."""

    id: str
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_id("section", self.id)

    @property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in re.split(r"\n\s*\n", self.text) if p.strip()]


@dataclass(frozen=True)
class Report:
    """The whole page.

    Attributes:
        title, subtitle: page heading.
        sections: in page order.
        environment: name -> value (versions, device, seeds); shown as a table.
        run_configs: run name -> its resolved config; shown in collapsible blocks.
        generated: when the report was made (a preformatted timestamp).
    """

    title: str
    subtitle: str
    sections: list[Section]
    environment: dict
    run_configs: dict[str, dict]
    generated: str

    def __post_init__(self) -> None:
        for kind, ids in (
            ("section", [s.id for s in self.sections]),
            ("table", [t.id for s in self.sections for t in s.tables]),
            ("figure", [f.id for s in self.sections for f in s.figures]),
            ("claim", [c.id for s in self.sections for c in s.claims]),
        ):
            seen: set[str] = set()
            for i in ids:
                if i in seen:
                    raise ValueError(f"duplicate {kind} id {i!r} in the report; ids must be unique")
                seen.add(i)

    @property
    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]

    @property
    def claims(self) -> list[Claim]:
        return [c for s in self.sections for c in s.claims]
