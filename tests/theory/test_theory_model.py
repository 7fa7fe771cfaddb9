"""write_theory: the files, the JSON, and verdicts consistent with the numbers behind them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from logitscope.theory import appendix_c as ac
from logitscope.theory.model import VERDICTS, write_theory
from logitscope.theory.stored import load_gap_results


def _fake_gap_results():
    rng = np.random.default_rng(0)
    out = {}
    for name, slope in (("ST", -0.02), ("AT", -0.005)):
        gap = rng.uniform(0.1, 10, size=200)
        out[name] = {
            "fit_slope": np.asarray(slope),
            "fit_r2": np.asarray(0.9),
            "linear_fit_r2": np.asarray(0.8),
            "power_exponent": np.asarray(2.0 if name == "ST" else 0.5),
            "gap_before": gap,
            "change": slope * gap**2 + (0.5 if name == "AT" else 0.0),
            "correct": np.ones(200, dtype=bool),
        }
    return out


@pytest.fixture(scope="module")
def theory(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    return out, write_theory(out, 10, gap_results=_fake_gap_results())


def test_files_written(theory):
    out, result = theory
    # data only: the report draws the figures (report.figures_theory)
    assert sorted(p.name for p in out.iterdir()) == ["fgsm_gap.npz", "theory.json"]
    on_disk = json.loads((out / "theory.json").read_text())
    assert on_disk == result
    json.dumps(result, allow_nan=False)
    stored = load_gap_results(out / "fgsm_gap.npz")
    fake = _fake_gap_results()
    assert list(stored) == list(fake)
    for name, res in fake.items():
        assert set(stored[name]) == set(res)
        for key, val in res.items():
            np.testing.assert_array_equal(stored[name][key], val)


def test_no_gap_results_removes_a_stale_file(tmp_path):
    (tmp_path / "fgsm_gap.npz").write_bytes(b"old")
    result = write_theory(tmp_path, 10, betas=(3.5,), n_starts=2)
    assert not (tmp_path / "fgsm_gap.npz").exists()
    assert result["fgsm_gap_fits"] == {}
    assert not any(s["statement"].startswith("Beyond the paper") for s in result["statements"])


def test_statements_are_well_formed(theory):
    _, result = theory
    statements = result["statements"]
    assert len(statements) >= 15
    for s in statements:
        assert set(s) == {"id", "statement", "verdict", "evidence"}
        assert s["verdict"] in VERDICTS
        assert s["evidence"]
    verdicts = {s["verdict"] for s in statements}
    assert verdicts == set(VERDICTS)


def _find(result, prefix):
    hits = [s for s in result["statements"] if s["statement"].startswith(prefix)]
    assert len(hits) == 1, prefix
    return hits[0]


def test_threshold_verdict_follows_the_numbers(theory):
    _, result = theory
    table = result["thresholds_n10_vs_paper"]
    assert set(table) == {f"wrong+/{a}/{k}" for a in ac.ADMISSIBILITY_READINGS for k in ac.KAPPA_READINGS}
    for entry in table.values():
        assert entry["paper"] == 3.5
    for name, entry in table.items():
        assert entry["ours"] == pytest.approx(ac.thresholds(10)[name].threshold, abs=1e-9)
    mag = [table[f"wrong+/magnitude/{k}"]["ours"] for k in ac.KAPPA_READINGS]
    lit = [table[f"wrong+/literal/{k}"]["ours"] for k in ac.KAPPA_READINGS]
    expected = "partly" if all(abs(v - 3.5) < 0.05 for v in mag) and not any(abs(v - 3.5) < 0.05 for v in lit) else None
    assert _find(result, "For 10 classes")["verdict"] == expected
    assert result["threshold_grid_refinement_max_change"] < 1e-6


def test_residuals_in_json_recompute(theory):
    _, result = theory
    n = result["n_classes"]
    for r in result["stationarity_residuals"]:
        u = ac.closed_form_u(r["beta"], n, r["case"], r["sign"], r["kappa_reading"] or "unsquared")
        if not np.all(np.isfinite(u)):
            continue
        lab = ac.case_label(r["case"])
        g3 = np.linalg.norm(ac.expansion3_grad(r["beta"], u, 0, lab)[1:])
        assert r["expansion_abs"] == pytest.approx(g3, rel=1e-12)
    # the paper's closed forms are not stationary for (3): every residual is far from 0
    rel = [r["expansion_rel"] for r in result["stationarity_residuals"] if r["expansion_rel"] is not None]
    assert min(rel) > 1e-3
    assert _find(result, "(4)")["verdict"] == "not confirmed"
    assert _find(result, "(5)")["verdict"] == "not confirmed"


def test_root_finding_points_are_stationary(theory):
    _, result = theory
    count = 0
    for case, per_beta in result["root_finding"].items():
        lab = ac.case_label(case)
        for beta, entry in per_beta.items():
            for p in entry["points"]:
                u = np.asarray(p["u"])
                grad = ac.expansion3_grad(float(beta), u, 0, lab)[1:]
                assert np.linalg.norm(grad) <= 1e-9
                count += 1
    assert count > 0


def test_infimum_and_sign_sections(theory):
    _, result = theory
    for inf in result["infimum"]:
        want = 0.0 if inf["case"] == "correct" else math.log(2.0)
        assert inf["infimum"] == pytest.approx(want)
        assert inf["numeric_minimum"] >= want - 1e-12
    for stats in result["sign_checks"].values():
        assert stats["fraction_positive_exact"] == 0.0


def test_gap_statement_uses_the_fits(theory):
    _, result = theory
    s = _find(result, "Beyond the paper: a sample")
    # ST follows the square law (exponent 2), AT does not (0.5): partly
    assert s["verdict"] == "partly"
    assert "ST" in s["evidence"] and "AT" in s["evidence"]
    assert result["fgsm_gap_fits"]["ST"]["fit_slope"] == pytest.approx(-0.02)
    # ST's fake changes are all negative, AT's all positive (gap <= 10): one model of two
    shrink = _find(result, "Beyond the paper: one FGSM step")
    assert shrink["verdict"] == "partly"
    assert "ST 1," in shrink["evidence"] and "AT 0 " in shrink["evidence"]
    assert result["fgsm_gap_fits"]["AT"]["power_exponent"] == pytest.approx(0.5)


@pytest.mark.slow
def test_other_class_counts(tmp_path):
    result = write_theory(tmp_path, 3, betas=(2.0, 6.0), n_starts=4)
    assert result["n_classes"] == 3
    assert result["thresholds"]["wrong+/literal/unsquared"]["threshold"] == pytest.approx(math.log(2), abs=1e-9)
    # the comparison with the paper stays at 10 classes
    assert result["thresholds_n10_vs_paper"]["wrong+/magnitude/unsquared"]["ours"] == pytest.approx(3.5049, abs=1e-3)
