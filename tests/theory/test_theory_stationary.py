"""The numerical checks of appendix C: stationarity, root finding, infimum, signs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from logitscope.theory import appendix_c as ac
from logitscope.theory import stationary as st


def _ray_gradient_by_hand(beta: float, n: int, fv: float) -> float:
    """Projected gradient component of (3) on the ray f(1-y), derived independently:
    a [1 + (1-A) f + (1-A)(1/2 - A) f^2]."""
    a = 1.0 / (math.exp(beta) + n - 1)
    big_a = (n - 1) * a
    return a * (1 + (1 - big_a) * fv + (1 - big_a) * (0.5 - big_a) * fv**2)


def test_residual_of_paper_f_matches_hand_formula():
    n = 10
    res = [r for r in st.closed_form_residuals([1.0, 3.0, 6.0], n) if r.case == "correct"]
    assert len(res) == 6
    for r in res:
        comp = _ray_gradient_by_hand(r.beta, n, r.values[0])
        assert r.expansion_abs == pytest.approx(abs(comp) * math.sqrt(n - 1), rel=1e-10)


def test_ray_stationary_f_is_stationary_and_real_only_below_ln_2n_minus_2():
    n = 10
    edge = math.log(2 * (n - 1))
    for b in (0.5, 1.0, 2.0, edge - 0.05):
        for s in (1, -1):
            fv = float(st.ray_stationary_f(b, n, s))
            assert np.isfinite(fv)
            u = fv * (1 - np.eye(n)[0])
            grad = ac.expansion3_grad(b, u, 0, 0)[1:]
            assert np.linalg.norm(grad) < 1e-12 * st.first_order_norm(b, n, "correct")
    assert np.isnan(st.ray_stationary_f(edge + 0.05, n, 1))


def test_root_finding_recovers_the_symmetric_points():
    n, b = 10, 1.0
    pts = st.stationary_points(b, n, "correct", n_starts=24)
    symmetric = [p for p in pts if p.symmetric]
    assert symmetric
    want = {float(st.ray_stationary_f(b, n, s)) for s in (1, -1)}
    got = {p.u[1] for p in symmetric}
    for w in want:
        assert min(abs(w - g) for g in got) < 1e-8
    for p in pts:
        u = np.asarray(p.u)
        assert u[0] == 0.0
        assert np.linalg.norm(ac.expansion3_grad(b, u, 0, 0)[1:]) == pytest.approx(p.residual, abs=1e-15)


def test_morse_index_classifies_minima():
    n, b = 10, 1.0
    pts = st.stationary_points(b, n, "correct", n_starts=24)
    minima = [p for p in pts if p.morse_index == 0]
    assert minima
    rng = np.random.default_rng(0)
    for p in minima:
        u = np.asarray(p.u)
        base = float(ac.expansion3(b, u, 0, 0))
        for _ in range(20):
            d = rng.normal(size=n)
            d[0] = 0.0
            d *= 1e-3 / np.linalg.norm(d)
            assert float(ac.expansion3(b, u + d, 0, 0)) >= base - 1e-14
    saddles = [p for p in pts if p.morse_index > 0]
    for p in saddles:
        u = np.asarray(p.u)
        hess = ac.expansion3_hessian(b, u, 0)[1:, 1:]
        w, v = np.linalg.eigh(hess)
        d = np.concatenate([[0.0], v[:, 0]]) * 1e-3
        assert float(ac.expansion3(b, u + d, 0, 0)) < float(ac.expansion3(b, u, 0, 0))


def test_no_symmetric_correct_case_points_above_ln_2n_minus_2():
    # on the ray the stationarity condition is a quadratic with no real root there
    pts = st.stationary_points(5.0, 10, "correct", n_starts=12)
    assert not [p for p in pts if p.symmetric]


def test_exact_loss_gradient_never_vanishes_on_the_slice():
    rng = np.random.default_rng(1)
    n = 10
    for _ in range(200):
        beta = rng.uniform(0.5, 15)
        u = rng.uniform(-20, beta, size=n)
        u[0] = 0.0
        for lab in (0, 1):
            grad = ac.cross_entropy_grad(beta * np.eye(n)[0] + u, lab)
            others = np.delete(grad, [0, lab])
            assert np.all(others > 0)
            if lab == 1:
                assert grad[1] < 0


@pytest.mark.parametrize("case,inf", [("correct", 0.0), ("wrong", math.log(2.0))])
def test_exact_infimum(case, inf):
    for beta in (2.0, 5.0):
        r = st.exact_infimum(beta, 10, case)
        assert r.infimum == pytest.approx(inf)
        assert r.numeric_minimum >= r.box_minimum - 1e-12
        assert r.numeric_minimum == pytest.approx(r.box_minimum, abs=1e-8)
        # the box minimum tends to the infimum as the box opens up
        wider = st.exact_infimum(beta, 10, case, lower=-200.0, gap=1e-9)
        assert abs(wider.box_minimum - inf) <= abs(r.box_minimum - inf) + 1e-15
        assert wider.box_minimum == pytest.approx(inf, abs=1e-8)


def test_expansion_error_order_is_four():
    for case in ("correct", "wrong"):
        p, t, err = st.expansion_error_order(2.0, 7, case, seed=4)
        assert p == pytest.approx(4.0, abs=0.1)
        assert np.all(np.diff(err) > 0)


def test_eq9_from_eq8():
    rng = np.random.default_rng(2)
    avg, eq9 = st.eq9_from_eq8(rng.normal(size=(30, 7)) * 3, rng.uniform(size=30), 0.2)
    assert avg == pytest.approx(eq9, rel=1e-12)


def test_eq10_from_eq9_exact_matches_printed_does_not():
    r = st.eq10_from_eq9(5.0, 6.0, 10, 0.2, 1.0, 3.0, seed=1)
    assert r["exact"] == pytest.approx(r["eq9"], rel=1e-12)
    assert abs(r["printed"] - r["eq9"]) > 1e-6 * abs(r["eq9"])


def test_sign_checks_find_g_minus_psi_negative_on_plus_branch():
    out = st.sign_checks(10, n_grid=60)
    plus = out["+/unsquared"]
    assert plus["max_g_minus_psi"] < 0
    assert plus["min_g_minus_psi"] == pytest.approx(1 - math.sqrt(3), abs=1e-3)
    for stats in out.values():
        assert stats["fraction_positive_exact"] == 0.0
        assert stats["max_gap_change_exact"] < 0
