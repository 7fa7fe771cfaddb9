"""The HTML report: files, CSV/JSON equal to the content, self-containment, claims, and a headless-browser check."""

import base64
import csv
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure as MplFigure

from logitscope.report.claims import verdict_counts
from logitscope.report.html import format_cell, render_html, render_report
from logitscope.report.model import Claim, Figure, Report, Section, Table

FIG_DPI = 150
FIG_INCHES = (6.0, 3.0)


def _draw(path: Path, seed: int) -> Path:
    fig = MplFigure(figsize=FIG_INCHES)
    ax = fig.add_subplot()
    ax.plot(np.random.default_rng(seed).normal(size=20).cumsum())
    fig.savefig(path, dpi=FIG_DPI)
    return path


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    return [_draw(folder / f"fig{i}.png", i) for i in range(3)]


def _report(pngs, figures=None, sections_extra=()):
    table1 = Table(
        "table1",
        "Table 1: accuracy",
        ["model", "metric", "paper", "this run"],
        [
            ["ST", "natural", "95.1%", "99.0% ± 0.2%"],
            ["AT", "PGD", "48.9%", 0.7213456789],
            ["AT", "AutoAttack", "44.0%", None],
        ],
        note="mean ± sd over 3 seeds",
    )
    table3 = Table(
        "table3",
        "Table 3: wall time",
        ["run kind", "paper (GPU h)", "this run (s)"],
        [["ST", 1.2, 35], ["AT <pgd>", float("nan"), 123456.5]],
    )
    claims = [
        Claim("smaller-max", "AT's max logit is smaller", "diff = -11.60", "holds", "", "AT lower", "figure 1"),
        Claim("gap-skew", "AT's gap is right-skewed", "skew = -0.20", "does not hold", "test set"),
        Claim("c100", "It holds on CIFAR-100", "—", "not measured", "no CIFAR-100 runs"),
        Claim("k-rising", "It rises with k", "slope 0.3% [-0.4%, 0.9%]", "inconclusive", to_decide="about 20 seeds"),
    ]
    if figures is None:
        figures = [Figure(f"fig{i}", f"Figure {i}: panel", p, caption=f"caption {i}") for i, p in enumerate(pngs)]
    sections = [
        Section("logits", "Logits", "First paragraph.\n\nSecond paragraph.", [table1], figures[:2], claims),
        Section("cost", "Cost", "", [table3], figures[2:], []),
        *sections_extra,
    ]
    return Report(
        "logitscope report",
        "a test",
        sections,
        {"torch": "2.13.0", "seeds": [0, 1, 2], "threads": np.int64(2)},
        {"st-seed0": {"method": "st", "lr": 0.05, "out": Path("runs/st")}, "at-seed0": {"method": "at", "eps": 0.2}},
        "2025-01-01 00:00 UTC",
    )


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _same_cell(text, cell):
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return text == ""
    if isinstance(cell, str):
        return text == cell
    return float(text) == cell


def test_render_writes_page_csvs_claims_and_json(pngs, tmp_path):
    report = _report(pngs)
    html_path = render_report(report, tmp_path / "out")
    out = tmp_path / "out"
    assert html_path == out / "index.html"
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["table1.csv", "table3.csv"]

    for table in report.tables:
        lines = _read_csv(out / "tables" / f"{table.id}.csv")
        assert lines[0] == table.columns
        assert len(lines) == 1 + len(table.rows)
        for text_row, row in zip(lines[1:], table.rows, strict=True):
            assert all(_same_cell(t, c) for t, c in zip(text_row, row, strict=True)), (text_row, row)

    claims = _read_csv(out / "claims.csv")
    assert claims[0] == ["section", "id", "statement", "where", "paper", "statistic", "verdict", "detail", "to decide"]
    assert [r[6] for r in claims[1:]] == ["holds", "does not hold", "not measured", "inconclusive"]
    assert [r[8] for r in claims[1:]] == ["", "", "", "about 20 seeds"]
    assert "to decide: about 20 seeds" in html_path.read_text()
    assert claims[1][:6] == [
        "logits",
        "smaller-max",
        "AT's max logit is smaller",
        "figure 1",
        "AT lower",
        "diff = -11.60",
    ]

    data = json.loads((out / "report.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    assert [s["id"] for s in data["sections"]] == ["logits", "cost"]
    assert data["sections"][0]["tables"][0]["rows"][1][3] == 0.7213456789
    assert data["sections"][1]["tables"][0]["rows"][1][1] is None  # NaN became null
    assert [f["caption"] for s in data["sections"] for f in s["figures"]] == ["caption 0", "caption 1", "caption 2"]
    assert data["verdicts"] == {"holds": 1, "does not hold": 1, "inconclusive": 1, "not measured": 1, "failed": 0}
    assert [c["to_decide"] for c in data["sections"][0]["claims"]] == ["", "", "", "about 20 seeds"]
    assert data["environment"]["threads"] == 2
    assert data["run_configs"]["st-seed0"]["out"] == "runs/st"


def test_page_is_self_contained_and_embeds_every_figure(pngs, tmp_path):
    html = render_report(_report(pngs), tmp_path).read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html, flags=re.I)
    assert refs and not [r for r in refs if re.match(r"(https?:)?//", r, flags=re.I)]
    assert not re.search(r"url\(|@import|<link\b", html, flags=re.I)
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert [base64.b64decode(u) for u in uris] == [p.read_bytes() for p in pngs]
    # 6 in at 150 dpi = 900 px; displayed at its physical size, 6 in x 96 css px/in = 576 px.
    assert html.count('width="576" height="288"') == 3
    assert html.count("<script") == 1


def test_page_shows_values_formatted_and_escaped(pngs, tmp_path):
    html = render_html(_report(pngs))
    assert "0.7213" in html and "0.7213456789" not in html
    assert "123,456" in html and "AT &lt;pgd&gt;" in html and "<pgd>" not in html
    assert "<p>First paragraph.</p>" in html and "<p>Second paragraph.</p>" in html
    assert html.count('class="verdict holds"') == 1
    assert html.count('class="verdict fails"') == 1
    assert html.count('class="verdict unmeasured"') == 1
    assert html.count("<details") == 2 and "lr: 0.05" in html


def test_missing_figure_is_a_one_line_error_and_writes_nothing(pngs, tmp_path):
    figures = [Figure("fig0", "Figure 0", pngs[0]), Figure("figB4", "Figure B.4", tmp_path / "absent.png")]
    with pytest.raises(ValueError, match=r"figB4.*absent\.png") as err:
        render_report(_report(pngs, figures=figures), tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_png_is_rejected(pngs, tmp_path):
    bad = tmp_path / "fig.png"
    bad.write_bytes(b"GIF89a not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        render_html(_report(pngs, figures=[Figure("fig0", "Figure 0", bad)]))


def test_missing_reason_renders_a_placeholder(pngs, tmp_path):
    figures = [
        Figure("fig0", "Figure 0", pngs[0]),
        Figure("figB4", "Figure B.4", tmp_path / "absent.png", missing_reason="needs the CIFAR-100 runs"),
    ]
    html = render_report(_report(pngs, figures=figures), tmp_path / "out").read_text()
    assert html.count("<img ") == 1
    assert 'id="fig-figB4"' in html and "Not drawn: needs the CIFAR-100 runs" in html
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["sections"][0]["figures"][1]["missing_reason"] == "needs the CIFAR-100 runs"


def test_rerender_removes_csvs_of_dropped_tables(pngs, tmp_path):
    render_report(_report(pngs), tmp_path)
    extra = Section("extra", "Extra", tables=[Table("table2", "Table 2", ["x", "this run"], [["a", 1.0]])])
    render_report(_report(pngs, sections_extra=[extra]), tmp_path)
    assert (tmp_path / "tables" / "table2.csv").exists()
    render_report(_report(pngs), tmp_path)
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["table1.csv", "table3.csv"]


def test_verdict_counts_lists_every_verdict():
    claims = [Claim(str(i), "s", "x", v) for i, v in enumerate(["holds", "holds", "inconclusive", "not measured"])]
    assert verdict_counts(claims) == {"holds": 2, "does not hold": 0, "inconclusive": 1, "not measured": 1, "failed": 0}


def test_format_cell():
    assert [format_cell(c) for c in (None, float("nan"), "", "74.0% ± 0.6%")] == ["—", "—", "—", "74.0% ± 0.6%"]
    assert [format_cell(c) for c in (0.72134, 35, 1234567, 123456.5, -0.000123, float("inf"))] == [
        "0.7213",
        "35",
        "1,234,567",
        "123,456",
        "-0.000123",
        "∞",
    ]


def test_table_filled_only_needs_some_value_in_each_this_run_column():
    assert Table("t", "t", ["paper", "this run"], [[None, 1.0], [2.0, None]]).filled
    assert not Table("t", "t", ["paper", "this run"], [[1.0, None], [2.0, "—"]]).filled
    assert not Table("t", "t", ["paper", "this run"], []).filled
    assert Table("t", "t", ["paper", "ours"], [[1.0, None]]).filled  # no "this run" column to check


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Table("t", "t", ["a", "b"], [[1.0]]), "row 0 has 1 cells; expected 2"),
        (lambda: Table("t", "t", ["a"], [[object()]]), "expected str, number or None"),
        (lambda: Table("t", "t", ["a"], [[True]]), "bool"),
        (lambda: Table("../t", "t", ["a"], []), "table id '../t'"),
        (lambda: Figure("fig 1", "t", Path("x.png")), "figure id 'fig 1'"),
        (lambda: Claim("c", "s", "1", "maybe"), "verdict 'maybe'"),
        (
            lambda: Report("t", "", [Section("s", "s", claims=[Claim("c", "s", "1", "holds")] * 2)], {}, {}, ""),
            "duplicate claim id 'c'",
        ),
    ],
)
def test_bad_content_is_a_one_line_error(make, match):
    with pytest.raises(ValueError, match=re.escape(match)) as err:
        make()
    assert "\n" not in str(err.value)


def test_numpy_cells_become_python_numbers():
    table = Table("t", "t", ["a", "b"], [[np.float32(0.5), np.int64(3)]])
    assert table.rows == [[0.5, 3]] and type(table.rows[0][1]) is int


# --- headless Chromium -------------------------------------------------------------------------


def _chromium():
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _dump_dom(html_path: Path, profile: Path) -> str:
    binary = _chromium()
    if binary is None:
        pytest.skip("chromium not installed: apt-get install chromium (CI installs it)")
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        html_path.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _DomTables(HTMLParser):
    """Collects the body's data-loaded attribute and every table as header + rows of cell text."""

    def __init__(self):
        super().__init__()
        self.loaded = None
        self.tables = []
        self._in_head = False
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.loaded = attrs.get("data-loaded")
        elif tag == "table":
            self.tables.append({"id": attrs.get("id"), "header": [], "rows": []})
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and not self._in_head:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th"):
            table = self.tables[-1]
            (table["header"] if self._in_head else table["rows"][-1]).append("".join(self._cell).strip())
            self._cell = None


def _parse(dom: str) -> _DomTables:
    parser = _DomTables()
    parser.feed(dom)
    return parser


def test_chromium_loads_every_figure_and_every_table_is_filled(pngs, tmp_path):
    html_path = render_report(_report(pngs), tmp_path / "out")
    dom = _parse(_dump_dom(html_path, tmp_path / "profile"))
    assert dom.loaded == "3/3"
    ids = [t["id"] for t in dom.tables]
    assert ids[:2] == ["table-table1", "claims-logits"] and "table-table3" in ids
    for table in dom.tables:
        assert table["rows"], f"{table['id']} has no row"
        for j, name in enumerate(table["header"]):
            if "this run" in name.lower():
                assert any(row[j] != "—" for row in table["rows"]), f"{table['id']}: column {name!r} is empty"
    data1 = next(t for t in dom.tables if t["id"] == "table-table1")
    assert data1["header"] == ["model", "metric", "paper", "this run"]
    assert [r[3] for r in data1["rows"]] == ["99.0% ± 0.2%", "0.7213", "—"]


def test_chromium_check_catches_an_image_that_does_not_decode(pngs, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(pngs[0].read_bytes()[:64])  # a PNG header, no image data
    figures = [Figure("fig0", "Figure 0", pngs[0]), Figure("fig1", "Figure 1", truncated)]
    html_path = render_report(_report(pngs, figures=figures), tmp_path / "out")
    assert _parse(_dump_dom(html_path, tmp_path / "profile")).loaded == "1/2"
