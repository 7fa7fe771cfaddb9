"""The center-correlation removal: its cost, analytic gradient, retraction and search."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from logitscope.manifolds import center_correlation, remove_center_correlation
from logitscope.manifolds.mftma import _CorrCost, _qr_retract


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The suite shares few cores with PyTorch's threads; BLAS threads would only contend."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def naive_cost(X: np.ndarray, V: np.ndarray) -> float:
    """1/2 sum_{m,n} cos^2 between residual centers, diagonal included (the reference's cost)."""
    R = X - X @ V @ V.T
    G = R @ R.T
    d = np.diag(G)
    return 0.5 * float(np.sum(G**2 / np.outer(d, d)))


def random_problem(P: int, ks: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduced centers (P, P-1) and a padded feature-major batch of orthonormal V."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, P - 1)) + rng.standard_normal((P, 1)) * rng.standard_normal(P - 1)
    V = np.zeros((P - 1, len(ks), max(ks)))
    for b, k in enumerate(ks):
        V[:, b, :k] = np.linalg.qr(rng.standard_normal((P - 1, k)))[0]
    return X, V


def test_cost_matches_the_direct_formula():
    X, V = random_problem(12, [1, 3, 2, 5], seed=0)
    f, _, _ = _CorrCost(X)(V)
    for b, k in enumerate([1, 3, 2, 5]):
        assert f[b] == pytest.approx(naive_cost(X, V[:, b, :k]), rel=1e-11)


def test_gradient_matches_finite_differences():
    ks = [1, 2, 4]
    X, V = random_problem(9, ks, seed=1)
    cost = _CorrCost(X)
    _, rg, rgg = cost(V)
    rng = np.random.default_rng(2)
    for b, k in enumerate(ks):
        Vb = V[:, b, :k]
        np.testing.assert_allclose(Vb.T @ rg[:, b, :k], 0, atol=1e-10)  # horizontal
        assert np.all(rg[:, b, k:] == 0)  # padding stays zero
        assert rgg[b] == pytest.approx(np.sum(rg[:, b, :k] ** 2), rel=1e-12)
        for _ in range(3):
            xi = rng.standard_normal(Vb.shape)
            xi -= Vb @ (Vb.T @ xi + xi.T @ Vb) / 2  # tangent direction
            h = 1e-6

            def f_at(step: float, Vb=Vb, xi=xi) -> float:
                return naive_cost(X, np.linalg.qr(Vb + step * xi)[0])

            fd = (f_at(h) - f_at(-h)) / (2 * h)
            assert np.sum(rg[:, b, :k] * xi) == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_retraction_is_the_positive_diagonal_qr():
    rng = np.random.default_rng(3)
    ks = [3, 1, 2]
    Y = np.zeros((10, 3, 3))
    pad = np.zeros((3, 3, 3))
    for b, k in enumerate(ks):
        Y[:, b, :k] = rng.standard_normal((10, k))
        pad[b, np.arange(k, 3), np.arange(k, 3)] = 1
    Q = _qr_retract(Y, pad)
    for b, k in enumerate(ks):
        q, r = np.linalg.qr(Y[:, b, :k])
        np.testing.assert_allclose(Q[:, b, :k], q * np.sign(np.diag(r)), atol=1e-13)
        assert np.all(Q[:, b, k:] == 0)


def structured_manifolds(seed: int, P: int = 20, N: int = 60, M: int = 6, rank: int = 2) -> np.ndarray:
    """Centers with a shared rank-``rank`` component plus small point clouds."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((P, rank)) @ rng.standard_normal((rank, N)) * 2.0
    centers = shared + rng.standard_normal((P, N))
    return centers[:, :, None] + 0.3 * rng.standard_normal((P, N, M))


def test_removal_finds_the_shared_structure():
    X = structured_manifolds(0)
    removal = remove_center_correlation(X, seed=0)
    assert removal.center_corr == pytest.approx(center_correlation(X))
    assert int(np.argmin(removal.res_coeff_per_K)) + 1 == removal.K
    assert removal.K >= 2
    assert removal.res_coeff_per_K.min() < removal.center_corr / 2
    np.testing.assert_allclose(removal.directions.T @ removal.directions, np.eye(removal.K), atol=1e-10)
    # search stops once the residual correlation rose three times in a row
    r = removal.res_coeff_per_K
    assert len(r) < 5 or not (r[-2] > r[-3] > r[-4] > r[-5])


def test_removal_options():
    X = structured_manifolds(0, P=16, N=48, rank=1)
    full = remove_center_correlation(X, seed=3)
    again = remove_center_correlation(X, seed=3)
    np.testing.assert_array_equal(full.directions, again.directions)  # deterministic
    # a fixed K draws the same random starts for that K (the search converges there quickly,
    # so the two runs agree to the optimizer's tolerance)
    fixed = remove_center_correlation(X, K=full.K, seed=3)
    assert fixed.K == full.K == 1 and len(fixed.res_coeff_per_K) == 1
    np.testing.assert_allclose(fixed.directions @ fixed.directions.T, full.directions @ full.directions.T, atol=1e-5)
    given = remove_center_correlation(X, directions=full.directions)
    np.testing.assert_allclose(np.stack(given.coords), np.stack(full.coords), atol=1e-12)
    none = remove_center_correlation(X, K=0)
    assert none.K == 0 and none.directions.shape == (X.shape[1], 0)
    for c in none.coords:
        assert c.shape == (X.shape[2] + 1, X.shape[2])
        np.testing.assert_array_equal(c[-1], 1.0)
        np.testing.assert_allclose(np.tril(c[:-1], -1), 0, atol=0)
        np.testing.assert_allclose(c[:-1].sum(axis=1), 0, atol=1e-12)  # centered
