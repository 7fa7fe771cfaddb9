"""Simulated capacity: the separability test against Cover's count, and against MFTMA."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from logitscope.manifolds import mftma, simulated, simulated_capacity
from logitscope.manifolds.simulated import linearly_separable, separable_fraction


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def cover_count(P: int, d: int) -> int:
    """Cover (1965): dichotomies of P points in general position separable in d dimensions
    by a hyperplane through the origin, here d = n + 1 for n features with a bias."""
    return 2 * sum(math.comb(P - 1, k) for k in range(d))


@pytest.mark.parametrize("P,n", [(6, 2), (7, 2), (7, 3), (8, 1)])
def test_separable_dichotomies_match_covers_count(P, n):
    points = np.random.default_rng(P * 10 + n).standard_normal((P, n))
    count = sum(linearly_separable(points, np.array(lab)) for lab in itertools.product([-1.0, 1.0], repeat=P))
    assert count == cover_count(P, n + 1)


@pytest.mark.parametrize("method", simulated.LP_METHODS)
def test_each_lp_method_alone_matches_covers_count(method, monkeypatch):
    """Either solver alone decides exactly (the order of the fallback only changes time)."""
    monkeypatch.setattr(simulated, "LP_METHODS", (method,))
    points = np.random.default_rng(72).standard_normal((7, 2))
    count = sum(linearly_separable(points, np.array(lab)) for lab in itertools.product([-1.0, 1.0], repeat=7))
    assert count == cover_count(7, 3)


def test_separable_and_not():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5))
    w = rng.standard_normal(5)
    y = np.where(x @ w + 0.3 > 0, 1.0, -1.0)
    assert linearly_separable(1e-6 * x, y)  # scale-free
    assert not linearly_separable(np.array([[0, 0], [1, 1], [0, 1], [1, 0]]), np.array([1, 1, -1, -1]))  # XOR
    inside = np.concatenate([x, x[y > 0].mean(axis=0, keepdims=True)])  # centroid of the positives
    assert not linearly_separable(inside, np.append(y, -1.0))


def test_enough_features_separate_every_dichotomy():
    rng = np.random.default_rng(1)
    manifolds = [rng.standard_normal((40, 1)) for _ in range(9)]  # 9 points in 40 dimensions
    labels = -np.ones((10, 9))
    labels[:, :4] = 1
    assert separable_fraction(manifolds, 8, labels) == 1.0  # 9 points, 8 features + bias
    assert separable_fraction(manifolds, 1, labels) < 1.0


def test_identical_manifolds_are_never_separable():
    rng = np.random.default_rng(2)
    cloud = rng.standard_normal((20, 3))
    res = simulated_capacity([cloud] * 6, n_dichotomies=5)
    assert math.isnan(res.capacity)
    assert res.fraction[-1] == 0.0


def gaussian_manifolds(P: int, N: int, M: int, radius: float, D: int, seed: int) -> np.ndarray:
    """Random centers, points on a random D-dimensional Gaussian cloud of relative radius."""
    rng = np.random.default_rng(seed)
    X = np.empty((P, N, M))
    for i in range(P):
        c = rng.standard_normal(N)
        basis = np.linalg.qr(rng.standard_normal((N, D)))[0]
        X[i] = c[:, None] + np.linalg.norm(c) * radius / np.sqrt(D) * (basis @ rng.standard_normal((D, M)))
    return X


def test_simulated_and_mean_field_capacity_agree():
    """Random Gaussian manifolds with uncorrelated centers, the setting of the theory.

    Cohen et al. (2020) and the paper (appendix A.4.3) find the two within about 10% (MFTMA
    mildly above); here, without center removal (the centers are random), within 10%.
    """
    X = gaussian_manifolds(P=32, N=100, M=4, radius=0.5, D=3, seed=0)
    sim = simulated_capacity(X, n_dichotomies=30, seed=0)
    mft = mftma(X, n_t=1000, K=0)
    assert 20 < sim.n_critical < 40
    assert np.all(np.diff(sim.n_features) > 0)
    assert sim.capacity == pytest.approx(32 / sim.n_critical)
    assert mft.capacity / sim.capacity == pytest.approx(1.0, abs=0.1)
    # fractions bracket 1/2 around N_c
    below = sim.n_features[sim.n_features < sim.n_critical]
    above = sim.n_features[sim.n_features > sim.n_critical]
    assert sim.fraction[np.isin(sim.n_features, below)].max() < 0.5
    assert sim.fraction[np.isin(sim.n_features, above)].min() >= 0.5


@pytest.mark.parametrize(
    "X,kwargs,match",
    [
        ([np.zeros((5, 2))], {}, r"at least 2 manifolds, got P=1"),
        ([np.zeros((5, 2)), np.full((5, 2), np.nan)], {}, r"manifold 1 has non-finite activations"),
        ([np.zeros((5, 2)), np.zeros((4, 2))], {}, r"manifold 1 has shape \(4, 2\); expected \(N=5"),
        ([np.zeros((5, 2))] * 3, {"p_tol": 0.5}, r"p_tol=0.5"),
    ],
)
def test_bad_input(X, kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulated_capacity(X, **kwargs)
