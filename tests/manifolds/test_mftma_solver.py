"""The batched anchor-point solver against the optimality (KKT) conditions and SciPy's NNLS.

For manifold coordinates A (last row ones) and a Gaussian vector T, the reference solves
``min 1/2 |v|^2 - T.v  s.t.  A^T v <= -kappa``. Its KKT conditions, with v = T - A alpha:
alpha >= 0, A^T v + kappa <= 0 and alpha_mu (A^T v + kappa)_mu = 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from mftma_cases import coords
from scipy.optimize import nnls
from threadpoolctl import threadpool_limits

from logitscope.manifolds.mftma import anchor_points


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The suite shares few cores with PyTorch's threads; BLAS threads would only contend."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def check_kkt(A: np.ndarray, T: np.ndarray, kappa: float, tol: float = 1e-10) -> None:
    sol = anchor_points(A, T, kappa)
    alpha = sol.multipliers
    v = T - np.matmul(A, alpha)
    slack = np.matmul(A.transpose(0, 2, 1), v) + kappa  # <= 0
    scale = 1 + np.abs(T).max()
    assert np.all(alpha >= 0)
    assert slack.max() <= tol * scale
    assert np.abs(alpha * slack).max() <= tol * scale
    # interior: no constraint active, v = T
    assert np.all(alpha[np.broadcast_to(sol.interior[:, None, :], alpha.shape)] == 0)
    # anchors: convex combination of the points (center coordinate exactly 1)
    np.testing.assert_allclose(sol.anchors[:, -1], 1.0, rtol=0, atol=1e-12)
    solved = ~sol.interior & (np.linalg.norm(np.matmul(A, alpha), axis=1) >= 1e-8)
    expected = np.matmul(A, alpha) / np.where(solved, alpha.sum(axis=1), 1.0)[:, None, :]
    np.testing.assert_allclose(
        sol.anchors.transpose(0, 2, 1)[solved], expected.transpose(0, 2, 1)[solved], rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("kappa", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("radius", [0.05, 0.3, 1.0])
def test_kkt_conditions_hold(radius, kappa):
    A = coords(6, 80, 12, radius, seed=int(radius * 100))
    T = np.random.default_rng(0).standard_normal((6, 13, 300))
    check_kkt(A, T, kappa)


def test_agrees_with_scipy_nnls():
    A = coords(3, 60, 10, 0.5, seed=7)
    T = np.random.default_rng(1).standard_normal((3, 11, 60))
    kappa = 0.3
    alpha = anchor_points(A, T, kappa).multipliers
    for p in range(3):
        for k in range(T.shape[2]):
            target = T[p, :, k].copy()
            target[-1] += kappa
            ref, rnorm = nnls(A[p], target)
            assert np.linalg.norm(A[p] @ alpha[p, :, k] - target) == pytest.approx(rnorm, rel=1e-9, abs=1e-12)
            np.testing.assert_allclose(A[p] @ alpha[p, :, k], A[p] @ ref, atol=1e-9)


def test_degenerate_points():
    """Repeated and collinear points (singular normal equations) and a one-point manifold."""
    rng = np.random.default_rng(2)
    base = coords(1, 40, 6, 0.4, seed=3)[0]
    dup = np.concatenate([base[:, :3], base[:, :3]], axis=1)  # every point twice
    collinear = base.copy()
    collinear[:-1, 3:] = np.outer(base[:-1, 0], [0.5, -0.5, 2.0])
    for A in (dup, collinear):
        check_kkt(A[None], rng.standard_normal((1, 7, 400)), 0.1)
    single = np.array([[0.0], [1.0]])
    check_kkt(single[None], rng.standard_normal((1, 2, 200)), 0.0)


def test_interior_samples_take_the_point_of_largest_projection():
    A = coords(1, 50, 8, 0.5, seed=5)
    T = np.random.default_rng(4).standard_normal((1, 9, 500))
    T[0, -1] -= 5.0  # mostly interior
    sol = anchor_points(A, T, 0.0)
    inside = sol.interior[0]
    assert inside.sum() > 400
    top = np.argmax(A[0, :-1].T @ T[0, :-1], axis=0)
    np.testing.assert_array_equal(sol.anchors[0][:, inside], A[0][:, top[inside]])
