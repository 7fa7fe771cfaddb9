"""Eq. (13), lambda* and the Jacobian formulas against hand solutions, mpmath and autograd."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch

from logitscope.theory import fyodorov as fy


def _problem(seed: int = 0, m: int = 9, feats: int = 5, n: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, feats))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, rng.normal(size=(m, n)) * 2.0, rng


def test_identity_inputs_hand_solution():
    # X = 1: X^T X = 1, Tr((1-lam)^-2 M) = c^2 F N  =>  lam = 1 - sqrt(Tr M / (c^2 F N))
    rng = np.random.default_rng(1)
    m, n, c, sigma0 = 6, 3, 0.8, 0.4
    z = rng.normal(size=(m, n))
    lam = fy.lagrange_multiplier(np.eye(m), z, c, sigma0)
    trace_m = np.sum(z**2) + sigma0**2 * n * m
    assert lam == pytest.approx(1 - math.sqrt(trace_m / (c**2 * m * n)), rel=1e-12)
    noise = sigma0 * rng.normal(size=(m, n))
    np.testing.assert_allclose(fy.omega(np.eye(m), z, lam, noise), (z - noise) / (1 - lam), rtol=1e-12)


def test_diagonal_inputs_against_mpmath_root():
    # X = diag(s1, s2), one class: s1^2 z1^2/(s1^2-l)^2 + s2^2 z2^2/(s2^2-l)^2 = 2 c^2
    s1, s2, z1, z2, c = 1.5, 0.6, 2.0, -1.0, 0.9
    x = np.diag([s1, s2])
    z = np.array([[z1], [z2]])
    lam = fy.lagrange_multiplier(x, z, c)
    mp.mp.dps = 40
    eq = lambda lam_: s1**2 * z1**2 / (s1**2 - lam_) ** 2 + s2**2 * z2**2 / (s2**2 - lam_) ** 2 - 2 * c**2  # noqa: E731
    want = mp.findroot(eq, (mp.mpf(-20), mp.mpf(s2**2) - mp.mpf("1e-9")), solver="bisect")
    assert lam == pytest.approx(float(want), abs=1e-12)
    assert lam < s2**2


def test_lambda_star_below_smallest_eigenvalue_and_unique():
    x, z, _ = _problem()
    for c in (0.3, 1.0, 3.0):
        lam = fy.lagrange_multiplier(x, z, c, sigma0=0.2)
        lam_min = fy.smallest_eigenvalue(x)
        assert lam < lam_min
        target = c**2 * x.shape[1] * z.shape[1]
        assert fy.trace_condition(lam, x, z, 0.2) == pytest.approx(target, rel=1e-10)
        grid = np.linspace(lam - 50, lam_min - 1e-6, 400)
        vals = np.array([fy.trace_condition(g, x, z, 0.2) for g in grid])
        assert np.all(np.diff(vals) > 0)


def test_trace_condition_matches_direct_matrix_formula():
    x, z, _ = _problem(2)
    lam, sigma0 = -0.7, 0.5
    a = np.linalg.inv(x.T @ x - lam * np.eye(x.shape[1]))
    for noise, factor in (("expectation", z.shape[1]), ("printed", 1.0)):
        direct = np.trace(x @ a @ a @ x.T @ (z @ z.T + sigma0**2 * factor * np.eye(x.shape[0])))
        assert fy.trace_condition(lam, x, z, sigma0, noise) == pytest.approx(direct, rel=1e-12)


def test_infeasible_rank_deficient_raises():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 6))
    z = rng.normal(size=(3, 2))
    with pytest.raises(ValueError, match="no lambda"):
        fy.lagrange_multiplier(x, z, c=0.5)
    assert fy.lagrange_multiplier(x, z, c=0.01) < fy.smallest_eigenvalue(x)


def test_omega_minimises_energy_by_autograd():
    x, z, rng = _problem(4)
    lam = fy.lagrange_multiplier(x, z, 1.0, sigma0=0.3)
    noise = 0.3 * rng.normal(size=z.shape)
    w = fy.omega(x, z, lam, noise)
    wt = torch.as_tensor(w).requires_grad_(True)
    xt, rt = torch.as_tensor(x), torch.as_tensor(z - noise)
    e = ((xt @ wt - rt) ** 2).sum() - lam * (wt**2).sum()
    (grad,) = torch.autograd.grad(e, wt)
    assert float(grad.abs().max()) < 1e-10
    base = fy.energy(w, x, z, lam, noise)
    assert base == pytest.approx(float(e.detach()), rel=1e-12)
    for _ in range(10):
        assert fy.energy(w + 1e-2 * rng.normal(size=w.shape), x, z, lam, noise) > base


def test_expected_norm_needs_the_factor_n():
    x, z, rng = _problem(5, m=12, feats=6, n=4)
    c, sigma0, draws = 1.0, 2.0, 3000
    target = c**2 * x.shape[1] * z.shape[1]
    means = {}
    for noise in ("expectation", "printed"):
        lam = fy.lagrange_multiplier(x, z, c, sigma0, noise)
        vals = np.array([np.sum(fy.omega(x, z, lam, sigma0 * rng.normal(size=z.shape)) ** 2) for _ in range(draws)])
        means[noise] = (vals.mean(), vals.std(ddof=1) / math.sqrt(draws))
    m_exp, se_exp = means["expectation"]
    m_pr, se_pr = means["printed"]
    assert abs(m_exp - target) < 4 * se_exp
    assert abs(m_pr - target) > 10 * se_pr


@pytest.mark.parametrize("mu", [0, 4])
def test_jacobian_against_autograd(mu):
    x, z, _ = _problem(6)
    lam = fy.lagrange_multiplier(x, z, 1.0)
    jac = fy.jacobian(x, z, lam, mu)
    assert jac.shape == (z.shape[1], x.shape[1])
    np.testing.assert_allclose(jac, fy.jacobian_autograd(x, z, lam, mu), atol=1e-12 * np.abs(jac).max())
    # by finite differences of z^mu = Z~^T X A x^mu, A fixed
    a = np.linalg.inv(x.T @ x - lam * np.eye(x.shape[1]))

    def logits(row):
        xx = x.copy()
        xx[mu] = row
        return z.T @ xx @ a @ row

    step = 1e-6
    fd = np.stack(
        [(logits(x[mu] + step * e) - logits(x[mu] - step * e)) / (2 * step) for e in np.eye(x.shape[1])], axis=1
    )
    np.testing.assert_allclose(jac, fd, atol=1e-7 * np.abs(jac).max())
    # the paper's "A held fixed" matters: recomputing A changes the Jacobian
    full = fy.jacobian_autograd(x, z, lam, mu, hold_resolvent=False)
    assert np.abs(full - jac).max() > 1e-3 * np.abs(jac).max()


def test_gram_formula_needs_z_tilde():
    x, z, _ = _problem(7)
    lam = fy.lagrange_multiplier(x, z, 1.0)
    for mu in (1, 5):
        jac = fy.jacobian(x, z, lam, mu)
        np.testing.assert_allclose(fy.jacobian_gram(x, z, lam, mu), jac @ jac.T, atol=1e-12 * np.abs(jac @ jac.T).max())
        printed = fy.jacobian_gram(x, z, lam, mu, reading="printed")
        assert np.abs(printed - jac @ jac.T).max() > 1e-3 * np.abs(jac @ jac.T).max()


def test_response_kernel_is_symmetric_psd():
    x, z, _ = _problem(8)
    lam = fy.lagrange_multiplier(x, z, 1.0)
    om = fy.response_kernel(x, lam)
    np.testing.assert_allclose(om, om.T, atol=1e-13)
    assert np.linalg.eigvalsh(om).min() > -1e-12
    a = np.linalg.inv(x.T @ x - lam * np.eye(x.shape[1]))
    np.testing.assert_allclose(om, x @ a @ a @ x.T, atol=1e-12)
