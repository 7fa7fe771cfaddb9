"""MFTMA capacity against closed forms: points (zero radius) and L2 balls (spheres).

Oracles: the point capacity of Gardner, alpha_0(kappa)^-1 = int_{-kappa}^inf Dt (t + kappa)^2,
and the capacity of D-dimensional L2 balls of radius R (Chung, Lee & Sompolinsky 2016/2018),
per Gaussian sample T = (t, t0) with t = |t|:
    0                                 if t0 + kappa < -R t            (interior)
    (R t + t0 + kappa)^2 / (1 + R^2)  if t0 + kappa < t / R           (touching)
    t^2 + (t0 + kappa)^2              otherwise                       (embedded),
integrated numerically with SciPy. A manifold of two points at +-R is exactly a 1-D ball; a
regular polygon lies between the balls of its inradius and circumradius.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from threadpoolctl import threadpool_limits

from logitscope.manifolds import manifold_geometry, mftma, remove_center_correlation
from logitscope.manifolds.mftma import anchor_points


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The suite shares few cores with PyTorch's threads; BLAS threads would only contend."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def point_capacity(kappa: float) -> float:
    inv, _ = integrate.quad(lambda t: (t + kappa) ** 2 * stats.norm.pdf(t), -kappa, np.inf)
    return 1 / inv


def ball_contribution(t: np.ndarray, t0: np.ndarray, R: float, kappa: float) -> np.ndarray:
    """|T - v|^2 for an L2 ball of radius R; t = norm of the ball-space part of T."""
    touch = (R * t + t0 + kappa) ** 2 / (1 + R**2)
    embedded = t**2 + (t0 + kappa) ** 2
    return np.where(t0 + kappa < -R * t, 0.0, np.where(t0 + kappa < t / R, touch, embedded))


def gaussian_square_moment(u: float, a: float, b: float) -> float:
    """int_a^b (u + x)^2 phi(x) dx, from the Gaussian partial moments."""
    phi, Phi = stats.norm.pdf, stats.norm.cdf
    a_phi = a * phi(a) if np.isfinite(a) else 0.0
    b_phi = b * phi(b) if np.isfinite(b) else 0.0
    mass = Phi(b) - Phi(a)
    return u**2 * mass + 2 * u * (phi(a) - phi(b)) + mass + a_phi - b_phi


def ball_capacity(R: float, D: int, kappa: float) -> float:
    """alpha_Ball(R, D, kappa): t0 integrated in closed form, t ~ chi_D numerically."""

    def inner(t: float) -> float:
        lo, mid = -kappa - R * t, -kappa + t / R
        touch = gaussian_square_moment(kappa + R * t, lo, mid) / (1 + R**2)
        embedded = t**2 * stats.norm.sf(mid) + gaussian_square_moment(kappa, mid, np.inf)
        return (touch + embedded) * stats.chi.pdf(t, D)

    inv, _ = integrate.quad(inner, 0, np.inf, limit=200)
    return 1 / inv


def test_ball_capacity_oracle_limits():
    """Small balls approach points; the closed-form t0 integral equals direct quadrature."""
    assert ball_capacity(1e-4, 3, 0.0) == pytest.approx(2.0, rel=1e-3)
    R, t, kappa = 0.7, 1.3, 0.2
    direct, _ = integrate.quad(lambda x: (R * t + x + kappa) ** 2 * stats.norm.pdf(x), -kappa - R * t, t / R - kappa)
    assert gaussian_square_moment(kappa + R * t, -kappa - R * t, t / R - kappa) == pytest.approx(direct, rel=1e-10)


def per_sample(sD1: np.ndarray, T: np.ndarray, kappa: float) -> np.ndarray:
    """(T.s + kappa)_+^2 / |s|^2 for each sample: the capacity is 1 / its mean."""
    s = anchor_points(sD1, T, kappa).anchors[0]
    gap = np.maximum(np.einsum("dt,dt->t", T, s) + kappa, 0.0)
    return gap**2 / np.einsum("dt,dt->t", s, s)


def polygon_coords(M: int, R: float) -> np.ndarray:
    """(M+1, M) coordinates of M points on a circle of radius R (center coordinate last)."""
    angles = 2 * np.pi * np.arange(M) / M
    A = np.zeros((M + 1, M))
    A[0], A[1], A[M] = R * np.cos(angles), R * np.sin(angles), 1.0
    return A


def test_point_capacity_oracle_is_two_at_zero_margin():
    assert point_capacity(0.0) == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize("kappa", [0.0, 0.5])
def test_tiny_gaussian_manifolds_have_the_point_capacity(kappa):
    """Random Gaussian manifolds shrunk to radius 1e-7 of their center norm: capacity -> alpha_0."""
    rng = np.random.default_rng(1)
    P, N, M, n_t = 20, 60, 5, 2000
    centers = rng.standard_normal((P, N, 1))
    X = centers + 1e-7 * np.linalg.norm(centers, axis=1, keepdims=True) * rng.standard_normal((P, N, M)) / np.sqrt(N)
    t_vecs = rng.standard_normal((P, M + 1, n_t))
    res = mftma(X, kappa=kappa, K=0, t_vecs=t_vecs)
    # same samples: 1 / mean((t0 + kappa)_+^2), exact up to the radius
    expected = 1 / np.mean(np.maximum(t_vecs[:, -1] + kappa, 0) ** 2, axis=1)
    np.testing.assert_allclose(res.capacities, expected, rtol=1e-5)
    assert res.radius < 1e-5
    # closed form: 40,000 samples pooled, standard error ~1.1%
    assert res.capacity == pytest.approx(point_capacity(kappa), rel=0.045)


@pytest.mark.parametrize("R,kappa", [(0.3, 0.0), (1.0, 0.0), (2.5, 0.0), (0.7, 0.4)])
def test_two_points_are_a_one_dimensional_ball(R, kappa):
    rng = np.random.default_rng(2)
    sD1 = np.array([[R, -R], [0.0, 0.0], [1.0, 1.0]])
    T = rng.standard_normal((3, 40000))
    got = per_sample(sD1, T, kappa)
    np.testing.assert_allclose(got, ball_contribution(np.abs(T[0]), T[2], R, kappa), rtol=1e-10, atol=1e-12)
    cap = manifold_geometry(sD1, T, kappa).capacity[0]
    assert cap == pytest.approx(1 / got.mean(), rel=1e-12)
    assert cap == pytest.approx(ball_capacity(R, 1, kappa), rel=0.03)  # standard error ~0.7%


@pytest.mark.parametrize("R,kappa", [(0.5, 0.0), (1.5, 0.0), (0.8, 0.3)])
def test_polygon_lies_between_the_balls_of_its_in_and_circumradius(R, kappa):
    """Per sample; a polygon's constraints are many points, several active at once."""
    rng = np.random.default_rng(3)
    M = 24
    T = rng.standard_normal((M + 1, 5000))
    got = per_sample(polygon_coords(M, R), T, kappa)
    t, t0 = np.linalg.norm(T[:2], axis=0), T[M]
    inner = ball_contribution(t, t0, R * np.cos(np.pi / M), kappa)
    outer = ball_contribution(t, t0, R, kappa)
    assert np.all(got >= inner - 1e-10)
    assert np.all(got <= outer + 1e-10)
    cap = 1 / got.mean()
    assert 1 / outer.mean() <= cap <= 1 / inner.mean()
    assert cap == pytest.approx(ball_capacity(R, 2, kappa), rel=0.04)


def test_capacity_falls_with_radius_and_margin():
    rng = np.random.default_rng(4)
    T = rng.standard_normal((25, 3000))
    caps = [
        manifold_geometry(polygon_coords(24, R), T, kappa).capacity[0] for R in (0.2, 0.5, 1.0) for kappa in (0, 0.5)
    ]
    assert caps[0] > caps[2] > caps[4]
    assert caps[1] > caps[3] > caps[5]
    assert all(a > b for a, b in zip(caps[::2], caps[1::2], strict=True))


def sphere_manifolds(P: int, N: int, D: int, half: int, R: float, seed: int) -> np.ndarray:
    """P random spheres: random centers (mean zero), each a random D-dim sphere orthogonal to
    its center, of radius R times the center norm, sampled at ``half`` random points and their
    antipodes (so each manifold's mean is its center)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((P, N))
    centers -= centers.mean(axis=0)
    X = np.empty((P, N, 2 * half))
    for i, c in enumerate(centers):
        basis = np.linalg.qr(np.column_stack([c, rng.standard_normal((N, D))]))[0][:, 1:]
        u = rng.standard_normal((D, half))
        u /= np.linalg.norm(u, axis=0)
        X[i] = c[:, None] + R * np.linalg.norm(c) * (basis @ np.concatenate([u, -u], axis=1))
    return X


@pytest.mark.parametrize("R,D", [(0.5, 3), (1.0, 3), (1.0, 2)])
def test_random_spheres_through_the_whole_analysis(R, D):
    """Points sampled on random spheres: per sample never above the sphere's contribution (their
    hull lies inside it), and the capacity close to alpha_Ball(R, D)."""
    half, n_t = 60, 1500
    X = sphere_manifolds(P=4, N=150, D=D, half=half, R=R, seed=1)
    coords = np.stack(remove_center_correlation(X, K=0).coords)
    np.testing.assert_allclose(coords[:, D:-1], 0, atol=1e-12)  # the sphere spans D coordinates
    T = np.random.default_rng(5).standard_normal((4, 2 * half + 1, n_t))
    s = anchor_points(coords, T, 0.0).anchors
    got = np.maximum(np.einsum("pdt,pdt->pt", T, s), 0) ** 2 / np.einsum("pdt,pdt->pt", s, s)
    assert np.all(got <= ball_contribution(np.linalg.norm(T[:, :D], axis=1), T[:, -1], R, 0.0) + 1e-10)
    res = mftma(X, K=0, t_vecs=T)
    np.testing.assert_allclose(res.capacities, 1 / got.mean(axis=1), rtol=1e-10)
    assert res.capacity == pytest.approx(ball_capacity(R, D, 0.0), rel=0.06)  # 6000 samples, hull inside
