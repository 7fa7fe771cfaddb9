"""Simulated (empirical) manifold capacity, the ground truth that MFTMA approximates.

As in Cohen, Chung, Lee & Sompolinsky (Nat. Commun. 11, 746, 2020) and the paper's appendix
A.4.3: project the P manifolds onto n random directions, label them with random balanced
dichotomies (every point of a manifold shares its manifold's label), and count the
dichotomies a hyperplane with bias separates. The fraction separable rises with n; doubling n
brackets, and bisection finds, the n where half are separable, N_c, and the simulated capacity
is alpha_sim = P / N_c.

Separability is decided exactly, as feasibility of the linear program ``y_i (w . x_i + b) >= 1``
for all points (the hard-margin SVM constraints), with SciPy's HiGHS solver. The dichotomies
are the same at every n (common random numbers make the bisection steadier); the projections
are drawn per (n, dichotomy) from generators seeded by ``(seed, n, dichotomy)``, so results
do not depend on the order in which n are tried. With more features than points, the points
are first reduced to their span (a thin SVD), which leaves the projected points' distribution
unchanged and makes each projection cheaper.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from tqdm.auto import tqdm

from logitscope.manifolds.mftma import one_blas_thread

__all__ = ["SimulatedCapacity", "linearly_separable", "separable_fraction", "simulated_capacity"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatedCapacity:
    """Output of :func:`simulated_capacity`.

    Attributes:
        capacity: alpha_sim = P / N_c (NaN when fewer than half the dichotomies are separable
            even with all N features).
        n_critical: N_c, the number of features at which half the dichotomies are separable
            (linear interpolation between the bracketing n).
        P: number of manifolds.
        n_features: (S,) numbers of features tried, increasing.
        fraction: (S,) fraction of separable dichotomies at each of them.
    """

    capacity: float
    n_critical: float
    P: int
    n_features: np.ndarray
    fraction: np.ndarray


def _check_manifolds(X: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    manifolds = list(X) if isinstance(X, np.ndarray | Sequence) else None
    if manifolds is None or (isinstance(X, np.ndarray) and X.ndim != 3):
        raise ValueError(
            f"X must be a (P, N, M) array or a sequence of (N, M_i) arrays; got {getattr(X, 'shape', type(X))}"
        )
    out = [np.asarray(m, dtype=np.float64) for m in manifolds]
    if len(out) < 2:
        raise ValueError(f"simulated capacity needs at least 2 manifolds, got P={len(out)}")
    for i, m in enumerate(out):
        if m.ndim != 2 or m.shape[0] != out[0].shape[0] or m.shape[1] < 1:
            raise ValueError(f"manifold {i} has shape {m.shape}; expected (N={out[0].shape[0]}, M_i >= 1)")
        if not np.isfinite(m).all():
            raise ValueError(f"manifold {i} has non-finite activations (NaN or inf); expected finite values")
    return out


# HiGHS's interior-point method first, its simplex where that leaves the problem undecided.
# Measured on the digits preset's layers (40 manifolds x 20 points, 10 dichotomies per n,
# n up to 128): both orders decide every problem alike, but on fc1 (near-degenerate ReLU
# features) the simplex first stalls into a solve error on most infeasible problems (2-3 s
# each) before the interior point decides them in 0.3 s: 39 s against 8 s for that layer.
LP_METHODS = ("highs-ipm", "highs")


def linearly_separable(points: np.ndarray, labels: np.ndarray) -> bool:
    """Whether a hyperplane with bias separates the points by their labels.

    Args:
        points: (n_points, n) points.
        labels: (n_points,) labels in {-1, +1}.

    Returns:
        True when some (w, b) has ``labels_i (w . points_i + b) > 0`` for every point, decided
        as feasibility of ``labels_i (w . points_i + b) >= 1`` (scale-free, hence exact).
    """
    Z = np.asarray(points, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    scale = np.abs(Z).max()
    if scale > 0:
        Z = Z / scale
    A = -y[:, None] * np.concatenate([Z, np.ones((len(Z), 1))], axis=1)
    for method in LP_METHODS:
        res = linprog(np.zeros(A.shape[1]), A_ub=A, b_ub=-np.ones(len(Z)), bounds=(None, None), method=method)
        if res.status in (0, 2):  # feasible / infeasible
            return bool(res.status == 0)
    log.warning("separability LP undecided (%s); counted as not separable", res.message)
    return False


def _dichotomies(P: int, n_dichotomies: int, seed: int) -> np.ndarray:
    """(n_dichotomies, P) random balanced labels: P // 2 manifolds +1, the rest -1."""
    rng = np.random.default_rng(seed)
    labels = -np.ones((n_dichotomies, P))
    for r in range(n_dichotomies):
        labels[r, rng.permutation(P)[: P // 2]] = 1.0
    return labels


def _projection_factor(points: np.ndarray) -> np.ndarray:
    """F with points^T W distributed as F G for W (N, n) and G (r, n) standard Gaussian.

    points^T = V S U^T (thin SVD) and U^T W is standard Gaussian, so projecting onto n random
    directions needs (total, r) x (r, n) products, r = min(N, total points), instead of N.
    """
    n_features, n_points = points.shape
    if n_features <= n_points:
        return points.T
    _, s, vt = np.linalg.svd(points, full_matrices=False)
    return vt.T * s


def _fraction(factor: np.ndarray, sizes: list[int], n: int, labels: np.ndarray, seed: int) -> float:
    separable = 0
    for r, lab in enumerate(labels):
        G = np.random.default_rng((seed, n, r)).standard_normal((factor.shape[1], n))
        separable += linearly_separable(factor @ G, np.repeat(lab, sizes))
    return separable / len(labels)


def separable_fraction(manifolds: Sequence[np.ndarray], n: int, labels: np.ndarray, seed: int = 0) -> float:
    """Fraction of dichotomies separable after projecting onto n random directions.

    Args:
        manifolds: P arrays (N, M_i).
        n: number of random features (Gaussian projections).
        labels: (R, P) manifold labels in {-1, +1}, one row per dichotomy.
        seed: the projection for dichotomy r is drawn from ``default_rng((seed, n, r))``.

    Returns:
        The fraction of the R dichotomies that are linearly separable (with bias).
    """
    points = np.concatenate([np.asarray(m, dtype=np.float64) for m in manifolds], axis=1)  # (N, total)
    with one_blas_thread():
        return _fraction(_projection_factor(points), [m.shape[1] for m in manifolds], n, labels, seed)


def simulated_capacity(
    X: np.ndarray | Sequence[np.ndarray],
    *,
    n_dichotomies: int = 50,
    seed: int = 0,
    p_tol: float = 0.05,
) -> SimulatedCapacity:
    """Simulated capacity alpha_sim = P / N_c of P manifolds (Cohen et al., 2020).

    Args:
        X: (P, N, M) array or a sequence of P (N, M_i) arrays, P >= 2.
        n_dichotomies: random balanced dichotomies (each with its own projection) per n.
        seed: seeds the dichotomies and the projections.
        p_tol: bisection also stops once the fraction is within p_tol of 1/2.

    Returns:
        The capacity, N_c and the fractions found along the bisection.
    """
    manifolds = _check_manifolds(X)
    P, N = len(manifolds), manifolds[0].shape[0]
    if n_dichotomies < 1 or not 0 <= p_tol < 0.5:
        raise ValueError(f"n_dichotomies={n_dichotomies}, p_tol={p_tol}; expected >= 1 and in [0, 0.5)")
    labels = _dichotomies(P, n_dichotomies, seed)
    sizes = [m.shape[1] for m in manifolds]
    with one_blas_thread():
        factor = _projection_factor(np.concatenate(manifolds, axis=1))
    tried: dict[int, float] = {}
    bar = tqdm(desc="simulated capacity", unit="n", disable=None, leave=False)  # quiet off a terminal

    def frac(n: int) -> float:
        if n not in tried:
            with one_blas_thread():
                tried[n] = _fraction(factor, sizes, n, labels, seed)
            log.debug("n=%d: %.3f of dichotomies separable", n, tried[n])
            bar.update()
            bar.set_postfix(n=n, separable=f"{tried[n]:.2f}")
        return tried[n]

    with bar:
        # bracket N_c by doubling n (small LPs first), then bisect
        lo, hi = 0, 1
        while frac(hi) < 0.5:
            if hi == N:
                log.warning("fewer than half the dichotomies are separable with all N=%d features", N)
                return _result(P, float("nan"), tried)
            lo, hi = hi, min(2 * hi, N)
        if lo == 0:
            return _result(P, 1.0, tried)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            p = frac(mid)
            if p >= 0.5:
                hi = mid
            else:
                lo = mid
            if abs(p - 0.5) <= p_tol:
                break
    p_lo, p_hi = tried[lo], tried[hi]
    n_c = lo + (0.5 - p_lo) * (hi - lo) / (p_hi - p_lo)
    return _result(P, n_c, tried)


def _result(P: int, n_c: float, tried: dict[int, float]) -> SimulatedCapacity:
    ns = np.array(sorted(tried))
    return SimulatedCapacity(
        capacity=P / n_c,
        n_critical=n_c,
        P=P,
        n_features=ns,
        fraction=np.array([tried[n] for n in ns]),
    )
