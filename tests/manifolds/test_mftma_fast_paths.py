"""The fast paths of mftma against the slower direct computations they replace.

- Anchor points: the active-set NNLS with updated factors and several entering variables per
  step (``method="inverse"``, the default) against the one that refactors every step
  (``method="gram"``): the NNLS optimum is unique, so the two give the same anchors and
  weights to rounding.
- Manifold coordinates: R from the Cholesky factor of the Gram matrix with Householder's signs
  (``_gram_coordinates``) against ``np.linalg.qr(mode="r")`` (LAPACK's Householder QR, as the
  reference's scipy.linalg.qr), and the whole of ``_manifold_coords`` against the reference's
  order of operations written out.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from mftma_cases import coords
from threadpoolctl import threadpool_limits

from logitscope.manifolds import remove_center_correlation

# the module (``logitscope.manifolds.mftma`` as an attribute is the function of that name)
mm = importlib.import_module("logitscope.manifolds.mftma")


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The suite shares few cores with PyTorch's threads; BLAS threads would only contend."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def solve_both(A: np.ndarray, T: np.ndarray, kappa: float, monkeypatch) -> tuple:
    """Both methods; counts the problems the fast path handed back to the factorization."""
    handed_back = []
    real = mm._nnls_gram

    def counting(G, b, which, tol):
        handed_back.append(b.shape[0])
        return real(G, b, which, tol)

    monkeypatch.setattr(mm, "_nnls_gram", counting)
    fast = mm.anchor_points(A, T, kappa)
    n_back = sum(handed_back)
    slow = mm.anchor_points(A, T, kappa, method="gram")
    return fast, slow, n_back


def noise_coords(P: int, N: int, M: int, seed: int) -> np.ndarray:
    """Coordinates of pure-noise manifolds (the reference README's example data, smaller)."""
    X = np.random.default_rng(seed).standard_normal((P + 1, N, M))
    return np.stack(remove_center_correlation(X, K=0).coords)[:P]


@pytest.mark.parametrize("kappa", [0.0, 0.3])
@pytest.mark.parametrize(
    "A",
    [coords(4, 36, 12, 0.3, seed=12), coords(4, 120, 40, 0.1, seed=40), noise_coords(4, 300, 40, seed=40)],
    ids=["clouds-M12", "tight-M40", "noise-M40"],
)
def test_inverse_solver_equals_refactoring(A, kappa, monkeypatch):
    """Well-conditioned manifolds: the fast path solves every problem itself, the same numbers.

    The noise manifolds have ~20 positive weights per problem: several steps of several
    entering variables, with steps back; the point clouds have a few.
    """
    M = A.shape[2]
    T = np.random.default_rng(M + 1).standard_normal((4, M + 1, 150))
    fast, slow, n_back = solve_both(A, T, kappa, monkeypatch)
    assert n_back == 0
    np.testing.assert_array_equal(fast.interior, slow.interior)
    np.testing.assert_allclose(fast.anchors, slow.anchors, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.multipliers, slow.multipliers, rtol=0, atol=1e-12)
    # the same positive sets
    np.testing.assert_array_equal(fast.multipliers > 1e-10, slow.multipliers > 1e-10)


def test_inverse_solver_on_degenerate_points(monkeypatch):
    """Repeated points (singular Gram matrices): whatever the fast path hands back, same numbers."""
    base = coords(1, 40, 6, 0.4, seed=3)[0]
    A = np.concatenate([base, base], axis=1)[None]  # every point twice
    T = np.random.default_rng(2).standard_normal((1, 7, 400))
    fast, slow, _ = solve_both(A, T, 0.1, monkeypatch)
    np.testing.assert_allclose(fast.anchors, slow.anchors, rtol=0, atol=1e-10)
    # weights of duplicates are not unique, their combinations are
    np.testing.assert_allclose(np.matmul(A, fast.multipliers), np.matmul(A, slow.multipliers), rtol=0, atol=1e-10)


def test_grouped_products_match_a_loop():
    rng = np.random.default_rng(0)
    mats = rng.standard_normal((5, 7, 3))
    for which in (np.repeat(np.arange(5), 30), np.array([0, 1, 2, 3, 4, 0, 1])):  # runs; single rows
        X = rng.standard_normal((which.size, 7))
        expected = np.stack([X[q] @ mats[which[q]] for q in range(which.size)])
        np.testing.assert_allclose(mm._grouped_products(X, mats, which), expected, rtol=1e-13, atol=1e-13)


def centered(G: int, N: int, M: int, seed: int) -> np.ndarray:
    Y = np.random.default_rng(seed).standard_normal((G, N, M))
    return Y - Y.mean(axis=2, keepdims=True)


@pytest.mark.parametrize("N,M", [(300, 20), (2000, 50), (60, 2)])
def test_gram_coordinates_equal_householder_qr(N, M):
    """Signs and values of LAPACK's R, without the QR (well-conditioned: the Gram path holds)."""
    Y = centered(6, N, M, seed=N + M)
    R, ok = mm._gram_coordinates(Y)
    assert ok.all()
    Rh = np.linalg.qr(Y, mode="r")
    scale = np.abs(Rh).max(axis=(1, 2), keepdims=True)
    # the last diagonal entry is rounding noise in the QR (centered points have rank M - 1)
    Rh[:, -1, -1] = 0.0
    np.testing.assert_allclose(R / scale, Rh / scale, rtol=0, atol=1e-13)


def test_ill_conditioned_or_ambiguous_manifolds_get_the_qr():
    """cond > _GRAM_MAX_COND, an exactly zero leading feature (sign of 0), a repeated point."""
    Y = centered(4, 200, 10, seed=1)
    Y[0, :, 1] = Y[0, :, 0] + 1e-4 * Y[0, :, 1]  # nearly collinear points
    Y[1, 0, :] = 0.0  # a dead feature first: LAPACK's first alpha is 0
    Y[2, :, 3] = Y[2, :, 2]  # a repeated point (singular Gram matrix)
    Y[2] -= Y[2].mean(axis=1, keepdims=True)
    _, ok = mm._gram_coordinates(Y)
    np.testing.assert_array_equal(ok, [False, False, False, True])
    np.testing.assert_array_equal(mm._span_coordinates(Y)[:3], np.linalg.qr(Y[:3], mode="r"))


@pytest.mark.parametrize("K", [0, 2])
def test_manifold_coordinates_equal_the_reference_order_of_operations(K):
    """sD1 as the reference computes it: X - mean of all points, directions out, center, QR."""
    rng = np.random.default_rng(K)
    P, N, M = 5, 400, 30
    X = rng.standard_normal((P, N, 1)) + 0.5 * rng.standard_normal((P, N, M))
    V = np.linalg.qr(rng.standard_normal((N, K)))[0] if K else np.zeros((N, 0))
    coords_fast = remove_center_correlation(X, directions=V).coords if K else remove_center_correlation(X, K=0).coords
    origin = np.concatenate(list(X), axis=1).mean(axis=1, keepdims=True)
    for i in range(P):
        Xr = X[i] - origin
        Xr = Xr - V @ (V.T @ Xr)
        center = Xr.mean(axis=1, keepdims=True)
        R = np.linalg.qr((Xr - center) / np.linalg.norm(center), mode="r")
        expected = np.concatenate([R, np.ones((1, M))])
        expected[M - 1, M - 1] = 0.0  # rounding noise in the QR
        got = coords_fast[i].copy()
        got[M - 1, M - 1] = 0.0
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
