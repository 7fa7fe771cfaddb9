"""Layers where MFTMA is undefined are recorded, summarised and drawn as such, never as NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest

from logitscope.manifolds import mftma
from logitscope.manifolds.geometry import (
    layer_geometry,
    mftma_undefined,
    undefined_layers,
    undefined_note,
)
from logitscope.report import figures_manifolds

LOGITS_REASON = mftma_undefined(40, 10, 20)


def _manifolds(p: int, n: int, m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 3 * rng.standard_normal((p, n, 1)) + 0.5 * rng.standard_normal((p, n, m))


def test_the_paper_logits_layer_is_undefined_with_both_reasons():
    assert LOGITS_REASON == (
        "undefined: 40 manifolds in 10 dimensions (MFTMA needs N >= P: the centres would span every "
        "feature); 20 points per manifold in 10 dimensions (MFTMA needs M < N)"
    )


@pytest.mark.parametrize(
    ("p", "n", "m", "clauses"),
    [
        (40, 10, 8, ["40 manifolds in 10 dimensions"]),
        (40, 39, 20, ["40 manifolds in 39 dimensions"]),
        (40, 64, 64, ["64 points per manifold in 64 dimensions"]),
        (2, 50, 4, ["2 manifolds (the centre-correlation removal needs P >= 3)"]),
        (40, 40, 20, []),
        (40, 128, 20, []),
        (3, 5, 4, []),
    ],
)
def test_undefined_conditions(p, n, m, clauses):
    reason = mftma_undefined(p, n, m)
    if not clauses:
        assert reason is None
    else:
        assert reason.startswith("undefined: ") and reason.count("(") == len(clauses)
        assert all(c in reason for c in clauses)


def test_undefined_rule_covers_mftma_precondition():
    """What mftma refuses (M >= N, P < 3) the rule calls undefined; where the rule says defined
    (N = P, the boundary), mftma returns finite measures."""
    for p, n, m in [(6, 8, 8), (6, 8, 9), (2, 8, 4)]:
        assert mftma_undefined(p, n, m) is not None
        with pytest.raises(ValueError):
            mftma(_manifolds(p, n, m), n_t=10)
    r = mftma(_manifolds(8, 8, 4), n_t=20)
    assert mftma_undefined(8, 8, 4) is None
    assert all(np.isfinite([r.capacity, r.radius, r.dimension, r.center_corr]))


@pytest.mark.parametrize("simulate", [False, True])
def test_layer_geometry_records_undefined_layers(simulate):
    acts = {
        "input": _manifolds(8, 20, 4, seed=1),
        "logits": _manifolds(8, 6, 4, seed=2),  # N < P
        "tiny": _manifolds(8, 4, 4, seed=3),  # N < P and M >= N
        "dead": np.ones((8, 20, 4)),  # every manifold the same point: mftma rejects it
    }
    rows = layer_geometry(acts, n_t=20, seed=0, simulate=simulate, n_dichotomies=4)
    json.dumps(rows, allow_nan=False)  # no NaN anywhere
    ok = rows["input"]
    assert ok["defined"] is True and "undefined" not in ok
    assert (ok["features"], ok["manifolds"], ok["points"]) == (20, 8, 4)
    assert all(isinstance(ok[k], float) for k in ("capacity", "radius", "dimension", "center_corr"))
    assert isinstance(ok["K"], int) and ok["seconds"] >= 0
    assert ("simulated_capacity" in ok) == simulate
    for name in ("logits", "tiny", "dead"):
        row = rows[name]
        assert row["defined"] is False and row["undefined"].startswith("undefined: ")
        assert all(row[k] is None for k in ("capacity", "radius", "dimension", "center_corr", "K"))
        assert row.get("simulated_capacity", "absent") is (None if simulate else "absent")
    assert rows["logits"]["undefined"] == mftma_undefined(8, 6, 4)
    assert "8 manifolds in 4 dimensions" in rows["tiny"]["undefined"]
    assert "4 points per manifold in 4 dimensions" in rows["tiny"]["undefined"]
    assert "center" in rows["dead"]["undefined"]
    assert undefined_layers({"m": {"layers": rows}}) == {
        "m": {n: rows[n]["undefined"] for n in ("logits", "tiny", "dead")}
    }


def _layer(capacity: float, radius: float, simulated: float | None = None) -> dict:
    row = {"defined": True, "capacity": capacity, "radius": radius, "dimension": 2.0, "center_corr": 0.1}
    if simulated is not None:
        row["simulated_capacity"] = simulated
    return row


def _logits(simulate: bool = False) -> dict:
    row = {"defined": False, "undefined": LOGITS_REASON, "capacity": None, "radius": None}
    row.update(dimension=None, center_corr=None)
    if simulate:
        row["simulated_capacity"] = None
    return row


def _results(simulate: bool = False) -> dict:
    def model(c1: float, c2: float, r1: float) -> dict:
        return {
            "layers": {
                "input": _layer(1.0, 1.0, 0.9 if simulate else None),
                "conv1": _layer(c1, r1, c1 * 0.9 if simulate else None),
                "fc1": _layer(c2, 1.0, c2 * 0.95 if simulate else None),
                "logits": _logits(simulate),
            }
        }

    return {
        "ST teacher": model(0.3, 0.20, 1.3),
        "AT teacher": model(0.5, 0.60, 1.1),
        "hybrid student": model(0.4, 0.25, 1.2),
    }


def test_note_groups_models():
    results = _results()
    assert undefined_note(results) == f"logits (every model): {LOGITS_REASON}"
    results["AT teacher"]["layers"]["logits"] = _layer(0.5, 0.5)
    assert undefined_note(results) == f"logits (ST teacher, hybrid student): {LOGITS_REASON}"
    assert undefined_note({"a": {"layers": {"input": _layer(1.0, 1.0)}}}) == ""


@pytest.fixture
def captured(monkeypatch, tmp_path):
    figs = []

    def save(fig, path):
        figs.append(fig)
        return tmp_path / "fig.png"

    monkeypatch.setattr(figures_manifolds, "save_figure", save)
    return figs


def test_fig5_marks_undefined_layers(captured, tmp_path):
    results = _results()
    figures_manifolds.fig5_geometry(results, tmp_path / "fig5.png")
    fig = captured[0]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["input", "conv1", "fc1", "logits\n(undefined)"]
    for line in ax.get_lines():  # a line per model, no point at the undefined layer
        y = np.asarray(line.get_ydata(), dtype=float)
        assert len(y) == 4 and np.isfinite(y[:3]).all() and np.isnan(y[3])
    assert any(t.get_text() == "MFTMA undefined" for t in ax.texts)
    notes = [t.get_text().replace("\n", " ") for t in fig.texts]  # the supxlabel under the panels
    assert notes == [f"logits: {LOGITS_REASON}"]


def test_figA8_leaves_undefined_layers_out(captured, tmp_path):
    figures_manifolds.figA8_capacity(_results(simulate=True), tmp_path / "figA8.png")
    ax = captured[0].axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 9
    assert ax.get_title() == "left out, undefined: 3 model layers (logits)"


@pytest.mark.slow
def test_analyze_models_says_where_mftma_is_undefined(tmp_path, tiny_config):
    """End to end on a 1-epoch digits run: P = 12 manifolds, so the 10 logits are undefined."""
    from logitscope.manifolds.geometry import measure_geometry
    from logitscope.training.engine import train

    run = train(tiny_config("st", epochs=1), out=tmp_path / "runs", progress=False)
    out = tmp_path / "manifolds"
    summary = measure_geometry(
        {"ST teacher": (run.dir, None)},
        0.1,
        n_manifolds=12,
        n_points=4,
        n_t=20,
        max_features=40,
        out_dir=out,
        simulate=False,
    )
    reason = mftma_undefined(12, 10, 4)
    layers = summary["models"]["ST teacher"]["layers"]
    assert layers["logits"]["defined"] is False and layers["logits"]["undefined"] == reason
    assert all(v["defined"] for n, v in layers.items() if n != "logits")
    assert summary["undefined"] == {"ST teacher": {"logits": reason}}
    saved = json.loads((out / "manifolds.json").read_text())
    assert saved["models"]["ST teacher"]["layers"]["logits"]["capacity"] is None
    assert "NaN" not in (out / "manifolds.json").read_text()
    text = (out / "summary.txt").read_text()
    assert f"logits (every model): {reason}" in text and "MFTMA is undefined at" in text
    assert not list(out.glob("*.png"))  # the stage stores numbers; the report draws
    from logitscope.report.build import manifold_figures

    drawn, _ = manifold_figures(saved, tmp_path / "figures")  # from the stored JSON alone
    assert set(drawn) == {"fig5"} and drawn["fig5"].stat().st_size > 0


def test_simulated_capacity_only_for_the_models_asked(tmp_path, tiny_config):
    """``simulate_models``: figure A.8's simulated capacity for those labels only, said in the
    summary; an unknown label is a one-line error naming it."""
    from logitscope.manifolds.geometry import measure_geometry
    from logitscope.training.engine import train

    run = train(tiny_config("st", epochs=1), out=tmp_path / "runs", progress=False)
    models = {"ST teacher": (run.dir, None), "AT teacher": (run.dir, None)}
    common = {"n_manifolds": 12, "n_points": 4, "n_t": 20, "max_features": 40, "n_dichotomies": 3}
    summary = measure_geometry(models, 0.1, out_dir=tmp_path / "m", simulate_models=["AT teacher"], **common)
    at, st = (summary["models"][k]["layers"] for k in ("AT teacher", "ST teacher"))
    assert all("simulated_capacity" in v for v in at.values())
    assert not any("simulated_capacity" in v for v in st.values())
    assert summary["simulated_models"] == ["AT teacher"] and summary["n_dichotomies"] == 3
    assert "Simulated capacity (figure A.8) of the AT teacher" in (tmp_path / "m" / "summary.txt").read_text()
    from logitscope.report.build import manifold_figures

    drawn, _ = manifold_figures(json.loads((tmp_path / "m" / "manifolds.json").read_text()), tmp_path / "figures")
    assert set(drawn) == {"fig5", "figA8"} and drawn["figA8"].is_file()
    with pytest.raises(ValueError, match="'student' is not a model here"):
        measure_geometry(models, 0.1, out_dir=tmp_path / "m2", simulate_models=["student"], **common)
