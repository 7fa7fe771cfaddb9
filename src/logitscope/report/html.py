"""Render a `Report` as one self-contained HTML page plus the same numbers as CSV and JSON.

Output layout under ``out_dir``::

    index.html          the page: inline CSS, figures as PNG data URIs, no external URL
    tables/<id>.csv     one file per table, numbers at full precision, "" for missing cells
    claims.csv          every claim: section, id, statement, where, paper, statistic, verdict, detail, to decide
    report.json         tables, claims, figure ids/titles/captions, environment, run configs

Everything is checked and rendered in memory first, so a bad report (a missing figure, say)
leaves the previous output untouched; every file is then written atomically.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import logging
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from logitscope.fileio.atomic import atomic_write_json, atomic_write_text
from logitscope.report.claims import verdict_counts
from logitscope.report.model import THIS_RUN, Cell, Figure, Report, Table, is_missing

log = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DASH = "—"
CLAIM_COLUMNS = ["section", "id", "statement", "where", "paper", "statistic", "verdict", "detail", "to decide"]
VERDICT_CLASS = {
    "holds": "holds",
    "does not hold": "fails",
    "inconclusive": "inconclusive",
    "not measured": "unmeasured",
    "failed": "failed",
}
_CSS_PX_PER_INCH = 96
_NUMERIC = re.compile(r"\s*[-+−±~≈<>]?\s*\.?\d")


@dataclass(frozen=True)
class _Image:
    """A figure ready for the template: a data URI and its display width in CSS pixels."""

    uri: str
    width: int
    height: int


def format_cell(cell: Cell) -> str:
    """How a table cell reads on the page: strings as given, numbers to 4 significant digits, "—" if missing."""
    if is_missing(cell):
        return DASH
    if isinstance(cell, str):
        return cell
    if isinstance(cell, int):
        return f"{cell:,}"
    if math.isinf(cell):
        return "∞" if cell > 0 else "−∞"
    if abs(cell) >= 1e4:
        return f"{cell:,.0f}"
    return f"{cell:.4g}"


def numeric_columns(table: Table) -> list[int]:
    """Columns to right-align: every present cell is a number or starts like one ("74.0% ± 0.6%")."""
    return [
        j
        for j in range(len(table.columns))
        if all(is_missing(row[j]) or not isinstance(row[j], str) or _NUMERIC.match(row[j]) for row in table.rows)
        and not all(is_missing(row[j]) for row in table.rows)
    ]


def _csv_cell(cell: Cell) -> str:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return ""
    if isinstance(cell, float):
        return repr(cell)
    return str(cell)


def _csv_text(columns: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def table_csv(table: Table) -> str:
    """The table as CSV text: header row, then one line per row."""
    return _csv_text(table.columns, [[_csv_cell(c) for c in row] for row in table.rows])


def _png_size(data: bytes, figure: Figure) -> tuple[int, int, float | None]:
    """Pixel width, height and resolution (dots per inch, None if unset) of a PNG."""
    if data[:8] != PNG_MAGIC or data[12:16] != b"IHDR":
        raise ValueError(f"figure {figure.id!r}: {figure.path} is not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    dpi = None
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"pHYs" and length == 9:
            ppx, _, unit = struct.unpack(">IIB", data[pos + 8 : pos + 17])
            if unit == 1 and ppx > 0:  # unit 1 = pixels per metre
                dpi = ppx * 0.0254
            break
        if kind == b"IDAT":  # pHYs must precede the image data
            break
        pos += 12 + length
    return width, height, dpi


def _embed(figure: Figure) -> _Image | None:
    """The figure as a data URI sized to its physical width, or None for an allowed placeholder."""
    if not figure.path.is_file():
        if figure.missing_reason:
            log.info("figure %s not drawn: %s", figure.id, figure.missing_reason)
            return None
        raise ValueError(f"figure {figure.id!r}: PNG {figure.path} does not exist and no missing_reason is set")
    data = figure.path.read_bytes()
    width, height, dpi = _png_size(data, figure)
    scale = _CSS_PX_PER_INCH / dpi if dpi else 1.0
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return _Image(uri, round(width * scale), round(height * scale))


def _plain(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (strict JSON), numpy scalars and paths become Python values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return _plain(obj.tolist())
    return str(obj)


def _as_text(value: Any) -> str:
    """An environment value for the page: strings as given, anything else as compact JSON."""
    value = _plain(value)
    return value if isinstance(value, str) else json.dumps(value)


def _config_yaml(config: dict) -> str:
    return yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True, default_flow_style=False)


def report_json(report: Report) -> dict:
    """The report's numbers and metadata as plain JSON-ready data (figures by id, title and caption)."""
    return _plain(
        {
            "title": report.title,
            "subtitle": report.subtitle,
            "generated": report.generated,
            "verdicts": verdict_counts(report.claims),
            "sections": [
                {
                    "id": s.id,
                    "title": s.title,
                    "text": s.text,
                    "tables": [
                        {"id": t.id, "title": t.title, "columns": t.columns, "rows": t.rows, "note": t.note}
                        for t in s.tables
                    ],
                    "figures": [
                        {
                            "id": f.id,
                            "title": f.title,
                            "caption": f.caption,
                            "file": f.path.name,
                            "missing_reason": None if f.path.is_file() else f.missing_reason,
                        }
                        for f in s.figures
                    ],
                    "claims": [
                        {
                            "id": c.id,
                            "statement": c.statement,
                            "statistic": c.statistic,
                            "verdict": c.verdict,
                            "detail": c.detail,
                            "paper": c.paper,
                            "where": c.where,
                            "to_decide": c.to_decide,
                        }
                        for c in s.claims
                    ],
                }
                for s in report.sections
            ],
            "environment": report.environment,
            "run_configs": report.run_configs,
        }
    )


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("logitscope.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = format_cell
    env.globals["numeric_columns"] = numeric_columns
    return env.get_template("report.html.j2")


def render_html(report: Report) -> str:
    """The page as one HTML string; raises ValueError for a figure whose PNG is missing or invalid."""
    images = {f.id: _embed(f) for f in report.figures}
    return _template().render(
        report=report,
        images=images,
        verdicts=verdict_counts(report.claims),
        verdict_class=VERDICT_CLASS,
        this_run=THIS_RUN,
        environment={str(k): _as_text(v) for k, v in report.environment.items()},
        configs={name: _config_yaml(cfg) for name, cfg in report.run_configs.items()},
    )


def render_report(report: Report, out_dir: str | Path) -> Path:
    """Write the page, the tables as CSV, the claims as CSV and the report as JSON under ``out_dir``.

    CSV files left in ``out_dir/tables`` by an earlier render of tables no longer in the report
    are removed, so the folder always matches the page.

    Args:
        report: the content.
        out_dir: created if needed.

    Returns:
        The path of ``out_dir/index.html``.
    """
    out_dir = Path(out_dir)
    page = render_html(report)
    tables_dir = out_dir / "tables"
    wanted = {f"{t.id}.csv" for t in report.tables}
    for table in report.tables:
        atomic_write_text(tables_dir / f"{table.id}.csv", table_csv(table))
    if tables_dir.is_dir():
        for stale in tables_dir.glob("*.csv"):
            if stale.name not in wanted:
                stale.unlink()
    claim_rows = [
        [s.id, c.id, c.statement, c.where, c.paper, c.statistic, c.verdict, c.detail, c.to_decide]
        for s in report.sections
        for c in s.claims
    ]
    atomic_write_text(out_dir / "claims.csv", _csv_text(CLAIM_COLUMNS, claim_rows))
    atomic_write_json(out_dir / "report.json", report_json(report))
    html_path = atomic_write_text(out_dir / "index.html", page)
    unfilled = [t.id for t in report.tables if not t.filled]
    if unfilled:
        log.warning("tables with no measurement in a %r column: %s", THIS_RUN, ", ".join(unfilled))
    log.info("report written to %s", html_path)
    return html_path
