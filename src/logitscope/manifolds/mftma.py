"""Replica mean-field theoretic manifold analysis (MFTMA) of point-cloud manifolds.

Implements the analysis of Chung, Lee & Sompolinsky (Phys. Rev. X 8, 031003, 2018) with the
center-correlation removal of Cohen, Chung, Lee & Sompolinsky (Nat. Commun. 11, 746, 2020), as
in their public implementation (schung039/neural_manifolds_replicaMFT,
``mftma/manifold_analysis_correlation.py``), which the paper uses for figure 5 (appendix A.4).
Given P manifolds of M points in N dimensions it returns each manifold's capacity, radius and
dimension and the correlation between manifold centers.

The steps, and what differs from the reference implementation (numbers do not):

1. Center correlation: mean absolute correlation between the centered manifold centers.
2. Center-correlation removal: for K = 1, 2, ... find K directions of the center space whose
   removal leaves the least correlated residual centers (Riemannian conjugate gradient on the
   Stiefel manifold, ``n_reps`` random starts, the most "stable" start kept), stop when the
   residual correlation rose three times in a row, keep the K with the least residual
   correlation, and project the directions out of every point. The reference runs pymanopt's
   conjugate gradient with automatic differentiation one start at a time; here the same
   algorithm (Hestenes-Stiefel directions, adaptive backtracking, QR retraction, the same
   random starts and stopping rule) runs with an analytic gradient on all starts and several K
   at once, so with the reference's iteration limit (``max_iter=1000``; default 500) it
   reproduces the reference's K, directions and residual correlations. Each manifold's
   coordinates (R of the Householder QR of its N x M points, as the reference) come from the
   Cholesky factor of its M x M Gram matrix with Householder's signs where that is exact to
   rounding (well-conditioned manifolds), from the QR itself elsewhere.
3. Per manifold, anchor points: for each Gaussian vector T = (t, t0) the quadratic program
   ``min 1/2 |v|^2 - T.v  s.t.  s_mu . v <= -kappa`` over the manifold's points s_mu (center
   coordinate 1). Its dual is the non-negative least-squares problem
   ``min |A alpha - (T + kappa e)|, alpha >= 0`` on the manifold's (M+1, M) coordinate matrix
   A, which a batched active-set (Lawson-Hanson) solver handles for all T and manifolds at once
   (the reference calls cvxopt once per T), updating a factor of each positive set's Gram
   matrix as variables enter and adding several per step; the NNLS optimum is unique, and
   solutions that miss its optimality conditions are solved again by refactoring every step.
4. Capacity ``1 / <(T.s + kappa)_+^2 / |s|^2>``, radius and dimension from the anchor points.
   The reference's dimension is ``D <cos(t, s)>^2`` and its radius subtracts the mean anchor
   point; the formulas printed in the paper's appendix A.4.2 (``<(t.s_hat)^2>`` and
   ``sqrt(<|s|^2>)``) are available with ``dimension="appendix"`` and ``radius="appendix"``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, ParamSpec, TypeVar

import numpy as np

__all__ = [
    "AnchorSolution",
    "CenterRemoval",
    "MFTMAResult",
    "ManifoldGeometry",
    "anchor_points",
    "center_correlation",
    "manifold_geometry",
    "mftma",
    "one_blas_thread",
    "remove_center_correlation",
]

log = logging.getLogger(__name__)

ManifoldsLike = np.ndarray | Sequence[np.ndarray]
P_ = ParamSpec("P_")
R_ = TypeVar("R_")
GeometryFormula = Literal["reference", "appendix"]
DualSolver = Literal["inverse", "gram"]

# Settings of the reference implementation (manifold_analysis_correlation.py and the pymanopt
# conjugate-gradient defaults it runs with).
_VARIANCE_FOR_MAX_K = 0.95  # maxK = (components below 95% of center variance) + 11
_EXTRA_K = 11
_MIN_GRAD_NORM = 1e-6  # pymanopt stopping criteria
_MIN_STEP = 1e-10
_LS_CONTRACTION = 0.5  # pymanopt LineSearchAdaptive
_LS_SUFFICIENT_DECREASE = 0.5
_LS_MAX_EVALS = 11
_INTERIOR_EPS = 1e-8  # |v - t| below which T counts as interior (anchor = max-projection point)
_CHOLQR_MAX_COND = 100.0  # Cholesky QR only for Y with cond(Y) below about this
_SMALL_BATCH_SIZE = 2048  # batches with n * K * B up to this evaluate several trial steps per round
_SMALL_BATCH_TRIALS = 2
_COORD_CHUNK_BYTES = 1 << 27  # working memory for the projection of the points
_GRAM_MAX_COND = 100.0  # manifold coordinates from the Gram matrix only below this condition number
_SIGN_MARGIN = 1e-8  # Householder signs taken from the Gram path only with |alpha| / |R_ii| in (margin, 1 - margin)
_FIRST_K_BATCH = 5  # K = 1..5 optimized together: the stopping rule needs K >= 5 to fire


_state = threading.local()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS single-threaded (threadpoolctl) inside the block.

    The analysis is mostly many small matrix products (the removal search, the anchor QPs),
    where BLAS threads only add synchronization; on cores shared with other processes or with
    PyTorch's OpenMP threads they can slow even the larger QR factorizations tenfold.
    """
    if getattr(_state, "single", False):  # already inside
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    _state.single = True
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        _state.single = False


def _single_threaded(fn: Callable[P_, R_]) -> Callable[P_, R_]:
    """Decorator: run ``fn`` under :func:`one_blas_thread`."""

    @functools.wraps(fn)
    def wrapper(*args: P_.args, **kwargs: P_.kwargs) -> R_:
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MFTMAResult:
    """Output of :func:`mftma`.

    Attributes:
        capacities: (P,) capacity of each manifold.
        radii: (P,) radius of each manifold (units of its center norm).
        dimensions: (P,) dimension of each manifold.
        capacity: 1 / mean(1 / capacities), the capacity of the whole set.
        radius: mean of ``radii``.
        dimension: mean of ``dimensions``.
        center_corr: mean absolute correlation between the centered manifold centers, before
            the removal step.
        K: number of center directions removed.
        res_coeff_per_K: (L,) residual center correlation after removing K = 1..L directions.
        kappa: margin used.
        n_t: Gaussian samples per manifold.
        timings: seconds spent in each stage ("removal", "geometry", "total").
    """

    capacities: np.ndarray
    radii: np.ndarray
    dimensions: np.ndarray
    capacity: float
    radius: float
    dimension: float
    center_corr: float
    K: int
    res_coeff_per_K: np.ndarray
    kappa: float
    n_t: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CenterRemoval:
    """Output of :func:`remove_center_correlation`.

    Attributes:
        coords: per manifold, the (M_i + 1, M_i) coordinates ``sD1``: the manifold's points in an
            orthonormal basis of their own span after the removal, centered and divided by the
            norm of the center, with a last row of ones (the center direction).
        directions: (N, K) orthonormal directions removed from every point.
        K: number of directions removed.
        res_coeff_per_K: residual center correlation for each K optimized: K = 1..L when K
            was chosen, only the given K when it was fixed, empty when nothing was searched.
        center_corr: center correlation before the removal.
    """

    coords: list[np.ndarray]
    directions: np.ndarray
    K: int
    res_coeff_per_K: np.ndarray
    center_corr: float


@dataclass(frozen=True)
class AnchorSolution:
    """Anchor points of a batch of manifolds (output of :func:`anchor_points`).

    Attributes:
        anchors: (P, M+1, n_t) anchor point s(T) for each Gaussian vector T; last row is 1.
        multipliers: (P, M, n_t) non-negative weights alpha of the manifold's points, with
            ``T - v = sD1 @ alpha`` at the solution v of the quadratic program (zero where T is
            interior, i.e. already satisfies the constraints).
        interior: (P, n_t) True where no constraint is active.
    """

    anchors: np.ndarray
    multipliers: np.ndarray
    interior: np.ndarray


@dataclass(frozen=True)
class ManifoldGeometry:
    """Per-manifold capacity, radius and dimension (output of :func:`manifold_geometry`).

    Attributes:
        capacity: (P,) capacity of each manifold.
        radius: (P,) radius.
        dimension: (P,) dimension.
    """

    capacity: np.ndarray
    radius: np.ndarray
    dimension: np.ndarray


# ------------------------------------------------------------------------------ validation


def _as_manifolds(X: ManifoldsLike) -> list[np.ndarray]:
    """Check X and return it as a list of (N, M_i) real arrays (no copies)."""
    if isinstance(X, np.ndarray):
        if X.ndim != 3:
            raise ValueError(
                f"X must be a (P, N, M) array or a sequence of (N, M_i) arrays; got an array of shape {X.shape}"
            )
        manifolds = list(X)
    elif isinstance(X, Sequence) and not isinstance(X, str | bytes):
        manifolds = list(X)
    else:
        raise ValueError(f"X must be a (P, N, M) array or a sequence of (N, M_i) arrays; got {type(X).__name__}")
    if not manifolds:
        raise ValueError("X holds no manifolds; expected P >= 1")
    out = []
    n_features = None
    for i, m in enumerate(manifolds):
        a = np.asarray(m)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"manifold {i} has dtype {a.dtype}; expected real numbers")
        if a.ndim != 2:
            raise ValueError(f"manifold {i} has shape {a.shape}; expected (N, M_i)")
        n, m_i = a.shape
        if n_features is None:
            n_features = n
        elif n != n_features:
            raise ValueError(
                f"manifold {i} has N={n} features but manifold 0 has N={n_features}; expected one feature dimension"
            )
        if m_i < 1:
            raise ValueError(f"manifold {i} has no points; expected M_i >= 1")
        if m_i >= n:
            raise ValueError(
                f"manifold {i} has M={m_i} points in N={n} dimensions; expected M < N (fewer points than features)"
            )
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise ValueError(f"manifold {i} has {bad} non-finite activations (NaN or inf); expected finite values")
        out.append(a)
    return out


def _centers(manifolds: list[np.ndarray]) -> np.ndarray:
    """(P, N) float64 manifold centers."""
    return np.stack([m.mean(axis=1, dtype=np.float64) for m in manifolds])


def _check_margin(kappa: float) -> float:
    kappa = float(kappa)
    if not math.isfinite(kappa) or kappa < 0:
        raise ValueError(f"kappa={kappa}; expected a finite margin >= 0")
    return kappa


# ---------------------------------------------------------------------- center correlation


def _reduced_centers(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centers minus their mean, in an orthonormal basis of their span.

    Args:
        centers: (P, N) manifold centers.

    Returns:
        Xc: (P, n) reduced centers, n = min(P - 1, N).
        basis: (N, n) orthonormal basis (as in the reference: Q of the QR of the centered
            centers, first P - 1 columns).
    """
    Xb = centers - centers.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(Xb, axis=1)
    at_mean = np.nonzero(norms <= 1e-10 * norms.max())[0]
    if at_mean.size:
        raise ValueError(f"manifold {at_mean[0]} has its center at the mean of all centers; expected distinct centers")
    basis = np.linalg.qr(Xb.T)[0][:, : len(centers) - 1]
    return Xb @ basis, basis


def _mean_abs_corr(R: np.ndarray) -> float:
    """Mean absolute off-diagonal correlation between the rows of R: (P, n)."""
    P = R.shape[0]
    norms = np.linalg.norm(R, axis=1)
    C = (R @ R.T) / np.outer(norms, norms)
    return float((np.abs(C).sum() - P) / (P * (P - 1)))


@_single_threaded
def center_correlation(X: ManifoldsLike) -> float:
    """Mean absolute correlation between the centered manifold centers.

    Args:
        X: (P, N, M) array or a sequence of P (N, M_i) arrays, P >= 2.

    Returns:
        The mean over pairs of manifolds of |cos| between their centers after subtracting the
        mean center (``res_coeff0`` of the reference).
    """
    manifolds = _as_manifolds(X)
    if len(manifolds) < 2:
        raise ValueError(f"center correlation needs at least 2 manifolds, got P={len(manifolds)}")
    return _mean_abs_corr(_reduced_centers(_centers(manifolds))[0])


# -------------------------------------------------- removal: batched Stiefel conjugate gradient


class _CorrCost:
    """Sum of squared correlations between residual centers, and its Riemannian gradient.

    For reduced centers X: (P, n) and V: (n, K) orthonormal, the residual of center m is
    ``x_m - V V^T x_m`` and the cost (the reference's ``square_corrcoeff_full_cost``) is
    ``1/2 sum_{m,n} (C_mn - c_m.c_n)^2 / (c0_m c0_n)`` with C = X X^T, c = X V and
    ``c0_m = C_mm - |c_m|^2``. It is evaluated for a batch of V stored feature-major as
    (n, B, K), with padded columns of zeros for problems of smaller K. The P x P residual Gram
    matrix is never formed: with w = 1/c0 and Q1 = C (w c), ``sum_n (C_mn - c_m.c_n)^2 w_n
    = (C o C) w - sum_k c o (2 Q1 - c H)`` with H = c^T diag(w) c, which costs O(P n K).
    """

    def __init__(self, X: np.ndarray) -> None:
        self.X = np.ascontiguousarray(X)
        self.XT = np.ascontiguousarray(X.T)
        self.C = self.X @ self.XT
        self.diagC = np.ascontiguousarray(np.diag(self.C))[:, None]
        self.C2 = self.C * self.C

    def __call__(self, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cost, Riemannian gradient and its squared norm at V: (n, B, K).

        Returns:
            f: (B,) costs; rg: (n, B, K) Riemannian gradients (projection of the Euclidean
            gradient onto the tangent space); rgg: (B,) squared norms of rg.
        """
        n, B, K = V.shape
        P = self.X.shape[0]
        c = (self.X @ V.reshape(n, B * K)).reshape(P, B, K)
        w = 1.0 / (self.diagC - np.vecdot(c, c))  # (P, B)
        wc = c * w[:, :, None]
        Q1 = (self.C @ wc.reshape(P, B * K)).reshape(P, B, K)
        H = np.matmul(c.transpose(1, 2, 0), wc.transpose(1, 0, 2))  # (B, K, K)
        T = Q1 - np.matmul(c.transpose(1, 0, 2), H).transpose(1, 0, 2)
        rm2w = self.C2 @ w - np.vecdot(c, Q1) - np.vecdot(c, T)  # sum_n Rm_mn^2 w_n
        f = 0.5 * np.vecdot(w.T, rm2w.T)
        # Euclidean gradient 2 X^T G with G_m = w_m (w_m rm2w_m c_m - T_m); the factor 2 is
        # folded into G.
        w2 = 2.0 * w
        G = (c * (w * rm2w)[:, :, None] - T) * w2[:, :, None]
        eg = (self.XT @ G.reshape(P, B * K)).reshape(n, B, K)
        S = np.matmul(c.transpose(1, 2, 0), G.transpose(1, 0, 2))  # V^T eg
        S = 0.5 * (S + S.transpose(0, 2, 1))
        rg = eg - _times(V, S)
        return f, rg, _inner(rg, rg)


def _inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Frobenius inner product per problem of (n, B, K) stacks -> (B,)."""
    return np.einsum("nbk,nbk->b", a, b)


def _small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a^T b per problem for (n, B, K) stacks -> (B, K, K)."""
    return np.matmul(a.transpose(1, 2, 0), b.transpose(1, 0, 2))


def _times(V: np.ndarray, S: np.ndarray) -> np.ndarray:
    """V @ S per problem: (n, B, K) x (B, K, K) -> (n, B, K)."""
    return np.matmul(V.transpose(1, 0, 2), S).transpose(1, 0, 2)


@functools.cache
def _eye(k: int) -> np.ndarray:
    """Read-only identity matrix (cached: the retraction needs one every round)."""
    eye = np.eye(k)
    eye.flags.writeable = False
    return eye


def _cholesky_qr(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Q = Y L^-T with L L^T = S = Y^T Y, for well-conditioned Y: (n, B, K).

    L^-1 = (I + N)^-1 D^-1 with D = diag(L) and N strictly lower triangular, hence nilpotent,
    so (I + N)^-1 = (I - N)(I + N^2)(I + N^4)...: a few batched products instead of a
    per-matrix LAPACK inverse.
    """
    L = np.linalg.cholesky(S)
    dinv = 1.0 / np.diagonal(L, axis1=1, axis2=2)  # (B, K)
    K = L.shape[1]
    eye = _eye(K)
    N = L * dinv[:, :, None] - eye
    inv_unit = eye - N
    power = 2
    while power < K:
        N = N @ N
        inv_unit = inv_unit @ (eye + N)
        power *= 2
    return _times(Y * dinv, inv_unit.transpose(0, 2, 1))


def _householder_qr(Y: np.ndarray, pad: np.ndarray | None) -> np.ndarray:
    """Q of the thin QR of each (n, K) matrix in Y: (n, B, K), signs made so diag(R) >= 0."""
    Q, R = np.linalg.qr(Y.transpose(1, 0, 2))
    Q *= np.where(np.diagonal(R, axis1=1, axis2=2) < 0, -1.0, 1.0)[:, None, :]
    if pad is not None:  # columns of zeros get arbitrary unit vectors from LAPACK
        Q *= 1.0 - np.diagonal(pad, axis1=1, axis2=2)[:, None, :]
    return Q.transpose(1, 0, 2)


def _qr_retract(Y: np.ndarray, pad: np.ndarray | None) -> np.ndarray:
    """Q factor with a positive diagonal R of each (n, K) matrix in Y: (n, B, K).

    pymanopt's Stiefel retraction (thin QR with signs unflipped). Y = x + alpha d with x
    orthonormal and x^T d skew, so S = Y^T Y = I + alpha^2 d^T d and cond(Y)^2 <= trace(S):
    where the trace is small the Cholesky QR is accurate, elsewhere (huge steps) Householder
    QR is used. Padded (all-zero) columns get a unit diagonal and stay zero.
    """
    S = _small(Y, Y)
    if pad is not None:
        S += pad
    ok = np.trace(S, axis1=1, axis2=2) <= _CHOLQR_MAX_COND**2
    if ok.all():
        try:
            return _cholesky_qr(Y, S)
        except np.linalg.LinAlgError:
            return _householder_qr(Y, pad)
    Q = _householder_qr(Y, pad)
    if ok.any():
        Q[:, ok] = _cholesky_qr(Y[:, ok], S[ok])
    return Q


def _stiefel_cg(cost: _CorrCost, x0: np.ndarray, n_cols: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimize ``cost`` on the Stiefel manifold from each start, all starts in one batch.

    The same algorithm as pymanopt 0.2's ConjugateGradient with its default
    LineSearchAdaptive, run independently per start: Hestenes-Stiefel beta clipped at 0,
    vector transport by projection, restart on ascent directions, backtracking by halves
    (sufficient decrease 0.5, at most 11 evaluations, rejected steps give step 0), the next
    trial step is the last accepted one (doubled unless exactly one halving happened), and
    stops when the gradient norm < 1e-6, the step < 1e-10 or ``max_iter - 1`` iterations
    were made. Each round evaluates the next trial point of every start (and, for small
    batches, the next two backtracking steps too), so starts in different phases of their
    line searches share the linear algebra; finished starts leave the batch.

    The inner products use that the gradient is horizontal (V^T grad = 0, exact for a cost
    that depends only on span(V)), so transported vectors need no extra products.

    Args:
        cost: the cost.
        x0: (n, B, Kmax) orthonormal starts, columns beyond each start's K zero.
        n_cols: (B,) number of columns K of each start.
        max_iter: iteration limit (pymanopt's maxiter).

    Returns:
        x: (n, B, Kmax) final points; iters: (B,) iterations made.
    """
    n, B, Kmax = x0.shape
    pad_mask = np.arange(Kmax)[None, :] >= n_cols[:, None]
    pad = None
    if pad_mask.any():
        pad = np.zeros((B, Kmax, Kmax))
        pad[:, np.arange(Kmax), np.arange(Kmax)] = pad_mask
    out_x = np.zeros_like(x0)
    out_it = np.zeros(B, dtype=np.int64)
    ids = np.arange(B)
    min_gg = _MIN_GRAD_NORM**2

    x = x0.copy()
    f, g, gg = cost(x)
    d = -g
    df0 = -gg  # <g, d>: directional derivative along d
    dd = gg.copy()  # |d|^2
    alpha = np.divide(1.0, np.sqrt(dd), out=np.zeros_like(dd), where=dd > 0)  # first step: unit length
    n_evals = np.ones(B)  # evaluation count of the coming trial in the current line search
    it = np.zeros(B)
    stop = (gg < min_gg) | (max_iter <= 1)
    while True:
        if stop.any():
            out_x[:, ids[stop], :Kmax] = x[:, stop]
            out_it[ids[stop]] = it[stop]
            keep = ~stop
            if not keep.any():
                break
            ids, f, gg, df0, dd, alpha, n_evals, it = (a[keep] for a in (ids, f, gg, df0, dd, alpha, n_evals, it))
            x, g, d = x[:, keep], g[:, keep], d[:, keep]
            if pad is not None:
                pad = pad[keep]
                k_left = int(n_cols[ids].max())
                if k_left < Kmax:  # only starts of smaller K are left: drop padding columns
                    Kmax = k_left
                    x, g, d, pad = x[:, :, :Kmax], g[:, :, :Kmax], d[:, :, :Kmax], pad[:, :Kmax, :Kmax]
                    if not pad.any():
                        pad = None
        b_now = len(ids)
        # Small batches, where a round costs mostly overhead, also evaluate the line search's
        # next trials (the step halved, quartered) so that backtracks take no extra rounds.
        n_trials = _SMALL_BATCH_TRIALS if b_now * Kmax * n <= _SMALL_BATCH_SIZE else 1
        step_d = alpha[:, None] * d
        if n_trials == 1:
            Y, pad_t = x + step_d, pad
        else:
            Y = np.concatenate([x + (_LS_CONTRACTION**j) * step_d for j in range(n_trials)], axis=1)
            pad_t = None if pad is None else np.concatenate([pad] * n_trials)
        Q = _qr_retract(Y, pad_t)
        f_t, g_t, gg_t = cost(Q)
        if n_trials == 1:
            y, fy, gy, ggy = Q, f_t, g_t, gg_t
            armijo = fy <= f + (_LS_SUFFICIENT_DECREASE * alpha) * df0
        else:
            # the line search stops at the first trial meeting Armijo or using its last evaluation
            scale = _LS_CONTRACTION ** np.arange(n_trials)[:, None]
            f_t = f_t.reshape(n_trials, b_now)
            armijo_t = f_t <= f + (_LS_SUFFICIENT_DECREASE * alpha * scale) * df0
            ends = armijo_t | (n_evals + np.arange(n_trials)[:, None] >= _LS_MAX_EVALS)
            j = np.where(ends.any(axis=0), np.argmax(ends, axis=0), n_trials - 1)
            cols = j * b_now + np.arange(b_now)
            y, gy, ggy, fy = Q[:, cols], g_t[:, cols], gg_t[cols], f_t[j, np.arange(b_now)]
            armijo = armijo_t[j, np.arange(b_now)]
            alpha = alpha * _LS_CONTRACTION**j
            n_evals = n_evals + j
        done_ls = armijo | (n_evals >= _LS_MAX_EVALS)
        if not done_ls.any():
            alpha *= _LS_CONTRACTION
            n_evals += 1
            stop = done_ls
            continue
        all_done = bool(done_ls.all())
        accept = armijo | (done_ls & (fy <= f))
        if accept.all():
            nx, ng, ngg, nf = y, gy, ggy, fy
        else:
            acc3 = accept[:, None]
            nx, ng = np.where(acc3, y, x), np.where(acc3, gy, g)
            ngg, nf = np.where(accept, ggy, gg), np.where(accept, fy, f)
        # Hestenes-Stiefel direction at nx. With Sd = sym(nx^T d) the transported direction
        # is d - nx Sd; the transported old gradient's inner products follow from nx^T g.
        Sd = _small(nx, d)
        nx_sd = _times(nx, Sd + Sd.transpose(0, 2, 1))  # 2 nx sym(nx^T d)
        ng_g, ng_d = _inner(ng, g), _inner(ng, d)
        # <diff, transported d> = <ng, d> - (<g, d> - <g, nx Sd>)
        denom = ng_d - df0 + 0.5 * _inner(g, nx_sd)
        numer = ngg - ng_g
        beta = np.maximum(0.0, np.divide(numer, denom, out=np.zeros_like(numer), where=denom != 0))
        new_d = beta[:, None] * (d - 0.5 * nx_sd) - ng
        new_df0 = _inner(ng, new_d)
        ascent = new_df0 >= 0
        if ascent.any():
            new_d = np.where(ascent[:, None], -ng, new_d)
            new_df0 = np.where(ascent, -ngg, new_df0)
        new_dd = _inner(new_d, new_d)
        step_alpha = alpha * accept
        step = step_alpha * np.sqrt(dd)
        next_alpha = step_alpha * (2.0 - (n_evals == 2))
        it_new = it + 1
        stop = done_ls & ((it_new >= max_iter - 1) | (ngg < min_gg) | (step < _MIN_STEP))
        x, g, f, gg = nx, ng, nf, ngg
        if all_done:
            d, df0, dd, alpha, it = new_d, new_df0, new_dd, next_alpha, it_new
            n_evals = np.ones(len(ids))
        else:
            d = np.where(done_ls[:, None], new_d, d)
            df0 = np.where(done_ls, new_df0, df0)
            dd = np.where(done_ls, new_dd, dd)
            alpha = np.where(done_ls, next_alpha, _LS_CONTRACTION * alpha)
            n_evals = np.where(done_ls, 1.0, n_evals + 1)
            it = np.where(done_ls, it_new, it)
    return out_x, out_it


def _stability(Xc: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Smallest residual-to-original norm ratio over centers, per start: V (R, n, K) -> (R,)."""
    norms = np.linalg.norm(Xc, axis=1)
    resid = Xc[None] - (Xc @ V) @ V.transpose(0, 2, 1)
    return (np.linalg.norm(resid, axis=2) / norms).min(axis=1)


def _max_k(centers: np.ndarray, n: int) -> int:
    """Largest K to try: the reference's rule, capped so that residual centers stay nonzero.

    The reference tries up to (number of principal components of the centers that explain
    less than 95% of their variance) + 11 directions; more than n - 1 would leave nothing.
    """
    s = np.linalg.svd(centers - centers.mean(axis=0, keepdims=True), compute_uv=False)
    total = np.cumsum(s**2 / np.sum(s**2))
    max_k = int(np.argmax(np.where(total < _VARIANCE_FOR_MAX_K, total, 0.0))) + _EXTRA_K
    return min(max_k, n - 1)


def _random_starts(rs: np.random.RandomState, P: int, n: int, k: int, n_reps: int) -> np.ndarray:
    """The reference's random starts for one K: (n_reps, n, k).

    fun_FA draws a (P, 1) vector per start (its initial point is then discarded: pymanopt's
    solve() is called without one) and pymanopt draws the start as Q of the QR of an (n, k)
    Gaussian matrix, all from numpy's global legacy generator.
    """
    draws = []
    for _ in range(n_reps):
        rs.standard_normal((P, 1))
        draws.append(rs.standard_normal((n, k)))
    return np.linalg.qr(np.stack(draws))[0]


def _choose_directions(
    Xc: np.ndarray, max_k: int, n_reps: int, seed: int, max_iter: int, K: int | None
) -> tuple[np.ndarray, int, np.ndarray]:
    """Directions of the center space to remove (fun_FA of the reference).

    Returns:
        V: (n, K) orthonormal directions in the reduced center space; K; res_coeff_per_K.
    """
    P, n = Xc.shape
    cost = _CorrCost(Xc)
    rs = np.random.RandomState(seed)
    if K is not None:
        levels_todo = [K]
        # consume the stream as the reference would before reaching level K
        for k in range(1, K):
            _random_starts(rs, P, n, k, n_reps)
    else:
        levels_todo = list(range(1, max_k + 1))
    res: list[float] = []
    best: dict[int, np.ndarray] = {}
    pos = 0
    while pos < len(levels_todo):
        group = levels_todo[pos : pos + (_FIRST_K_BATCH if pos == 0 else 1)]
        pos += len(group)
        starts = [_random_starts(rs, P, n, k, n_reps) for k in group]
        kmax = max(group)
        x0 = np.zeros((n, len(group) * n_reps, kmax))
        n_cols = np.repeat(np.array(group), n_reps)
        for a, (k, s) in enumerate(zip(group, starts, strict=True)):
            x0[:, a * n_reps : (a + 1) * n_reps, :k] = s.transpose(1, 0, 2)
        x, iters = _stiefel_cg(cost, x0, n_cols, max_iter)
        stop = False
        for a, k in enumerate(group):
            V = x[:, a * n_reps : (a + 1) * n_reps, :k].transpose(1, 0, 2)
            j = int(np.argmax(_stability(Xc, V)))
            best[k] = V[j]
            resid = Xc - (Xc @ V[j]) @ V[j].T
            res.append(_mean_abs_corr(resid))
            log.debug(
                "K=%d: residual correlation %.6f, CG iterations %s",
                k,
                res[-1],
                iters[a * n_reps : (a + 1) * n_reps].tolist(),
            )
            i = len(res)
            if i > 4 and res[i - 1] > res[i - 2] > res[i - 3] > res[i - 4]:
                stop = True
                break
        if stop:
            break
    res_arr = np.array(res)
    if K is None:
        K = int(np.argmin(res_arr)) + 1
    return best[K], K, res_arr


def _householder_signs(Q1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signs of the diagonal of LAPACK's Householder R, from the top block of the thin Q.

    For Y = Q R with R's diagonal positive and Q1 the top (m, m) block of Q, Householder QR
    (dgeqrf) gives ``Y = (Q D) (D R)`` with D = diag(d) the signs it chose. Its compact WY
    form ``Q D = I - V T V^T`` (restricted to the first m columns) makes ``Q1 D - I = V1 U``
    an LU factorization with unit lower V1 and pivots ``U_ii = -tau_i`` in [-2, -1]
    (dlarfg's ``beta = -sign(alpha) |x|``), so LU without pivoting of ``Q1 - D`` has pivots
    ``-tau_i d_i``: d_i is forced at each step to ``-sign(q_i)``, q_i the pivot before d_i is
    subtracted (the construction of Ballard et al., "Reconstructing Householder vectors from
    tall-skinny QR", 2015). Here ``q_i = alpha_i / |R_ii|``, LAPACK's normalized alpha.

    Args:
        Q1: (G, m, m) top blocks.

    Returns:
        d: (G, m) the signs; q: (G, m) the normalized alphas, whose sign is ambiguous where
        they are near 0 (LAPACK's own alpha is then rounding noise) or near +-1 (no
        reflection: tau = 0).
    """
    A = Q1.copy()
    G, m, _ = A.shape
    d = np.empty((G, m))
    q = np.empty((G, m))
    for i in range(m):
        qi = A[:, i, i].copy()
        q[:, i] = qi
        d[:, i] = np.where(qi < 0, 1.0, -1.0)
        pivot = qi - d[:, i]
        if i + 1 < m:
            lower = A[:, i + 1 :, i] / pivot[:, None]
            A[:, i + 1 :, i + 1 :] -= lower[:, :, None] * A[:, i, None, i + 1 :]
    return d, q


def _span_coordinates(Y: np.ndarray) -> np.ndarray:
    """``np.linalg.qr(Y, mode="r")`` for centered manifolds Y: (G, N, M), mostly without QR.

    The reference takes each manifold's coordinates as R of the Householder QR of its
    (N, M) points, which at N = 5000 costs most of the removal step. Centered points have
    rank M - 1 at most (the columns sum to zero), so R is the Cholesky factor of the Gram
    matrix of the first M - 1 columns (one BLAS product), its last column minus the sum of
    the others and its last entry zero (rounding noise, ~1e-16 of the norm, in the QR), with
    the signs of the rows Householder QR gives them (``_householder_signs``). The Gram
    matrix squares the condition number, so manifolds with cond > ``_GRAM_MAX_COND`` (or a
    failed factorization, or an ambiguous sign) get the Householder QR itself; below it the
    two agree to ~1e-15 of the norm.
    """
    R, ok = _gram_coordinates(Y)
    if not ok.all():
        bad = np.nonzero(~ok)[0]
        R[bad] = np.linalg.qr(Y[bad], mode="r")
    return R


def _gram_coordinates(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Gram-matrix path of ``_span_coordinates``: R (G, M, M) and where it holds (G,)."""
    G, N, M = Y.shape
    m = M - 1
    R = np.zeros((G, M, M))
    ok = np.zeros(G, dtype=bool)
    if m >= 1:
        gram = np.matmul(Y[:, :, :m].transpose(0, 2, 1), Y[:, :, :m])
        try:
            L = np.linalg.cholesky(gram)
            factored = np.ones(G, dtype=bool)
        except np.linalg.LinAlgError:  # some manifold is degenerate: factor one by one
            L = np.tile(np.eye(m), (G, 1, 1))
            factored = np.zeros(G, dtype=bool)
            for g in range(G):
                with contextlib.suppress(np.linalg.LinAlgError):
                    L[g] = np.linalg.cholesky(gram[g])
                    factored[g] = True
        if factored.any():
            s = np.linalg.svd(L, compute_uv=False)
            ok = factored & (s[:, -1] * _GRAM_MAX_COND >= s[:, 0])
            Q1T = np.linalg.solve(np.where(ok[:, None, None], L, np.eye(m)), Y[:, :m, :m].transpose(0, 2, 1))
            d, q = _householder_signs(Q1T.transpose(0, 2, 1))
            aq = np.abs(q)
            ok &= ((aq > _SIGN_MARGIN) & (aq < 1.0 - _SIGN_MARGIN)).all(axis=1)
            R[:, :m, :m] = L.transpose(0, 2, 1) * d[:, :, None]
            R[:, :m, m] = -R[:, :m, :m].sum(axis=2)
    return R, ok


def _manifold_coords(
    manifolds: list[np.ndarray], directions: np.ndarray, centers: np.ndarray | None = None
) -> list[np.ndarray]:
    """Project ``directions`` out of every point and build each manifold's sD1 coordinates.

    As the reference: subtract the mean of all points, remove the directions, center each
    manifold and divide by the norm of its center, take coordinates in an orthonormal basis
    of the manifold's span (R of its QR, see ``_span_coordinates``) and append a row of
    ones. The mean of all points cancels in the centered points, so each manifold is centered
    first (one pass, into a float64 buffer) and the directions are projected out of it
    there; the mean only enters the center, ``(I - V V^T)(mu_i - origin)``. Manifolds of
    equal size are processed in chunks of at most ``_COORD_CHUNK_BYTES``.

    Args:
        manifolds: P (N, M_i) arrays.
        directions: (N, K) orthonormal directions.
        centers: (P, N) float64 manifold means, if already computed.
    """
    if centers is None:
        centers = _centers(manifolds)
    sizes = np.array([m.shape[1] for m in manifolds], dtype=np.float64)
    origin = (sizes @ centers) / sizes.sum()
    N = origin.shape[0]
    rel = centers - origin
    if directions.shape[1]:
        rel = rel - (rel @ directions) @ directions.T
    norms = np.linalg.norm(rel, axis=1)
    zero = np.nonzero(norms == 0)[0]
    if zero.size:
        raise ValueError(
            f"manifold {zero[0]} has its center at the mean of all points after "
            "the removal; expected a nonzero center (capacity is undefined)"
        )
    coords: list[np.ndarray] = [np.empty(0)] * len(manifolds)
    by_m: dict[int, list[int]] = {}
    for i, m in enumerate(manifolds):
        by_m.setdefault(m.shape[1], []).append(i)
    for M, members in by_m.items():
        chunk = max(1, _COORD_CHUNK_BYTES // (8 * N * M))
        buf = np.empty((min(chunk, len(members)), N, M))
        for start in range(0, len(members), chunk):
            idx = members[start : start + chunk]
            Y = buf[: len(idx)]
            for g, i in enumerate(idx):
                np.subtract(manifolds[i], centers[i][:, None], out=Y[g])
                if directions.shape[1]:
                    Y[g] -= directions @ (directions.T @ Y[g])
            R = _span_coordinates(Y)
            for g, i in enumerate(idx):
                coords[i] = np.concatenate([R[g] / norms[i], np.ones((1, M))], axis=0)
    return coords


@_single_threaded
def remove_center_correlation(
    X: ManifoldsLike,
    *,
    K: int | None = None,
    directions: np.ndarray | None = None,
    seed: int = 0,
    n_reps: int = 10,
    max_iter: int = 500,
) -> CenterRemoval:
    """Remove the shared low-rank structure of the manifold centers (Cohen et al., 2020).

    Args:
        X: (P, N, M) array or a sequence of P (N, M_i) arrays, M_i < N.
        K: number of directions to remove; None chooses it as the reference does (K = 1, 2, ...
            until the residual correlation rose three times in a row, then the K with the least
            residual correlation). K = 0 removes nothing.
        directions: (N, K) orthonormal directions to remove instead of searching (e.g. the
            reference's ``V11``); overrides K and seed.
        seed: seed of the random starts. The starts are drawn from
            ``np.random.RandomState(seed)`` exactly as the reference draws them from numpy's
            global generator after ``np.random.seed(seed)``.
        n_reps: random starts per K.
        max_iter: conjugate-gradient iteration limit per start. The reference runs with
            pymanopt's default of 1000 (the 20000 it asks for is ignored by pymanopt); starts
            that reach the limit are crawling along flat valleys of the cost, mostly at K
            beyond the structure of the centers. 1000 reproduces the reference's search on
            its cases; the default 500 takes a third less time on case b with the same K and
            directions (``benchmarks/mftma_speed.py``), and on synthetic data agrees with 1000
            about as often as 1000 agrees with itself after a 1e-14 perturbation of the
            input (the search is chaotic on those valleys). A lower limit biases K downward.

    Returns:
        The coordinates of every manifold after the removal, the directions, K and the
        residual correlations.
    """
    manifolds = _as_manifolds(X)
    P = len(manifolds)
    N = manifolds[0].shape[0]
    if P < 2:
        raise ValueError(f"the center-correlation removal needs at least 2 manifolds, got P={P}")
    centers = _centers(manifolds)
    Xc, basis = _reduced_centers(centers)
    center_corr = _mean_abs_corr(Xc)
    res = np.empty(0)
    if directions is not None:
        V11 = np.asarray(directions, dtype=np.float64)
        if V11.ndim != 2 or V11.shape[0] != N:
            raise ValueError(f"directions have shape {V11.shape}; expected (N={N}, K)")
        if not np.allclose(V11.T @ V11, np.eye(V11.shape[1]), atol=1e-8):
            raise ValueError("directions are not orthonormal; expected V^T V = I")
        K = V11.shape[1]
    elif K == 0:
        V11 = np.zeros((N, 0))
    else:
        n = Xc.shape[1]
        if P < 3:
            raise ValueError(
                f"the center-correlation removal needs at least 3 manifolds (it keeps K <= P - 2 directions), got P={P}"
            )
        if K is not None and (not isinstance(K, int | np.integer) or not 1 <= K <= n - 1):
            raise ValueError(f"K={K}; expected 0 <= K <= {n - 1} for P={P} manifolds in N={N}")
        if n_reps < 1 or max_iter < 1:
            raise ValueError(f"n_reps={n_reps}, max_iter={max_iter}; expected both >= 1")
        V, K, res = _choose_directions(Xc, _max_k(centers, n), n_reps, seed, max_iter, K)
        V11 = basis @ V
    return CenterRemoval(
        coords=_manifold_coords(manifolds, V11, centers),
        directions=V11,
        K=int(K),
        res_coeff_per_K=res,
        center_corr=center_corr,
    )


# ------------------------------------------------------------ anchor points: batched NNLS


def _nnls_gram(G: np.ndarray, b: np.ndarray, which: np.ndarray, tol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lawson-Hanson active-set NNLS on normal equations, many problems at once.

    Solves ``min 1/2 a^T G a - b^T a, a >= 0`` (= ``min |A a - t|`` with G = A^T A,
    b = A^T t) for problems q with Gram matrix ``G[which[q]]``.

    Args:
        G: (Gm, M, M) Gram matrices.
        b: (Q, M) right-hand sides.
        which: (Q,) index into G of each problem.
        tol: (Q,) dual-feasibility tolerance: a variable enters while its gradient exceeds it.

    Returns:
        idx: (Q, k) indices of the positive variables (M marks an empty slot);
        alpha: (Q, k) their values.
    """
    Q, M = b.shape
    Gm = G.shape[0]
    # Extended Gram matrices: index M marks an empty slot (zero row and column).
    Gx = np.zeros((Gm, M + 1, M + 1))
    Gx[:, :M, :M] = G
    bx = np.concatenate([b, np.zeros((Q, 1))], axis=1)
    ridge = 64 * np.finfo(np.float64).eps * np.einsum("gii->g", G)  # guards exact duplicates

    idx = np.full((Q, 0), M, dtype=np.int64)
    alpha = np.zeros((Q, 0))
    active = np.arange(Q)  # problems still adding variables
    for _ in range(3 * M):
        if active.size == 0:
            break
        ia, aa, wa = idx[active], alpha[active], which[active]
        # gradient of the dual: w = b - G a (on the current positive set)
        cols = Gx[wa[:, None], :, ia]  # (Qa, k, M+1)
        w = bx[active] - np.einsum("qk,qkm->qm", aa, cols)
        np.put_along_axis(w, ia, -np.inf, axis=1)
        w[:, M] = -np.inf
        j = np.argmax(w, axis=1)
        grow = w[np.arange(active.size), j] > tol[active]
        active = active[grow]
        if active.size == 0:
            break
        j = j[grow]
        # append the entering variable (use an empty slot when there is one)
        k = idx.shape[1]
        free = idx[active] == M
        has_free = free.any(axis=1)
        if not has_free.all():
            idx = np.concatenate([idx, np.full((Q, 1), M, dtype=np.int64)], axis=1)
            alpha = np.concatenate([alpha, np.zeros((Q, 1))], axis=1)
            free = idx[active] == M
            k += 1
        slot = np.argmax(free, axis=1)
        idx[active, slot] = j
        entering = slot
        # inner loop: solve on the positive set, step back while a variable would go negative
        todo = active
        ent = entering
        for _ in range(M + 1):
            it_idx = idx[todo]
            Gs = Gx[which[todo][:, None, None], it_idx[:, :, None], it_idx[:, None, :]]
            empty = it_idx == M
            Gs[empty[:, :, None] | empty[:, None, :]] = 0.0
            diag = np.arange(k)
            Gs[:, diag, diag] += np.where(empty, 1.0, ridge[which[todo]][:, None])
            z = np.linalg.solve(Gs, bx[todo[:, None], it_idx][..., None])[..., 0]
            z[it_idx == M] = 0.0
            bad = (z <= 0) & (it_idx < M)
            neg = bad.any(axis=1)
            ok = ~neg
            alpha[todo[ok]] = z[ok]
            if not neg.any():
                break
            # entering variable not positive: numerical noise, stop this problem
            stuck = bad[np.arange(todo.size), ent] & neg
            if stuck.any():
                s_idx = todo[stuck]
                idx[s_idx, ent[stuck]] = M
                active = np.setdiff1d(active, s_idx, assume_unique=True)
            move = neg & ~stuck
            todo, ent = todo[move], ent[move]
            if todo.size == 0:
                break
            a0, z0, b0 = alpha[todo], z[move], bad[move]
            ratio = np.where(b0, a0 / np.where(b0, a0 - z0, 1.0), np.inf)
            theta = ratio.min(axis=1)
            a_new = a0 + theta[:, None] * (z0 - a0)
            leave = (a_new <= 0) | (b0 & (ratio == theta[:, None]))
            a_new[leave] = 0.0
            idx_t = idx[todo]
            idx_t[leave] = M
            idx[todo] = idx_t
            alpha[todo] = a_new
    else:
        if active.size:
            log.warning("NNLS: %d problems stopped at the iteration limit", active.size)
    return idx, alpha


def _refine(
    A: np.ndarray, T: np.ndarray, kappa: float, which: np.ndarray, idx: np.ndarray, alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One step of iterative refinement of the least-squares solutions on their positive sets.

    The active-set solver works with Gram matrices, whose condition number is the square of
    the coordinates'; recomputing the residual from the coordinates themselves and correcting
    once brings the optimality conditions to rounding level.

    Args:
        A: (P, M+1, M) coordinates; T: (Q, M+1) Gaussian vectors; which: (Q,) manifold of each;
        idx, alpha: (Q, k) positive sets and values from ``_nnls_gram``.

    Returns:
        (Q, k) refined values (empty slots stay 0) and (Q, M+1) the points' combinations
        A alpha (= T - v).
    """
    M = A.shape[2]
    filled = idx < M
    order = np.argsort(~filled, axis=1, kind="stable")  # filled slots first
    idx = np.take_along_axis(idx, order, axis=1)
    alpha = np.take_along_axis(alpha, order, axis=1)
    counts = filled.sum(axis=1)
    target = T.copy()
    target[:, -1] += kappa
    out = np.zeros_like(alpha)
    combo = np.zeros_like(T)
    for c in np.unique(counts[counts > 0]):
        rows = np.nonzero(counts == c)[0]
        a = alpha[rows, :c]
        AF = A[which[rows, None], :, idx[rows, :c]]  # (rows, c, M+1)
        resid = target[rows] - np.matmul(a[:, None, :], AF)[:, 0]
        step = np.linalg.solve(np.matmul(AF, AF.transpose(0, 2, 1)), np.matmul(AF, resid[..., None]))
        a = np.maximum(a + step[..., 0], 0.0)
        out[rows, :c] = a
        combo[rows] = np.matmul(a[:, None, :], AF)[:, 0]
    inverse = np.argsort(order, axis=1)
    return np.take_along_axis(out, inverse, axis=1), combo


_ENTER = 6  # variables entering together per step of _nnls_inverse
_KKT_SLACK = 10.0  # the inverse-update solutions must meet KKT to this multiple of the entering tolerance
_GATHER_ROWS = 1024  # rows per gathered batch in _grouped_products
_INVERSE_CHUNK_BYTES = 1 << 26  # factors of the problems solved together by _nnls_inverse


def _grouped_products(X: np.ndarray, mats: np.ndarray, which: np.ndarray) -> np.ndarray:
    """``X[q] @ mats[which[q]]`` for every row q: X (Q, a), mats (P, a, c) -> (Q, c).

    Rows come in runs of equal ``which`` (problems sorted by manifold), so a run costs one
    BLAS product with the shared matrix; only when runs are mostly single rows are the
    matrices gathered (in chunks, to bound the copy).
    """
    Q = X.shape[0]
    out = np.empty((Q, mats.shape[2]))
    if Q == 0:
        return out
    cut = np.flatnonzero(which[1:] != which[:-1]) + 1
    if 8 * (cut.size + 1) > Q:
        for s in range(0, Q, _GATHER_ROWS):
            e = min(s + _GATHER_ROWS, Q)
            out[s:e] = np.matmul(X[s:e, None, :], mats[which[s:e]])[:, 0]
        return out
    for s, e in zip(np.concatenate([[0], cut]), np.concatenate([cut, [Q]]), strict=True):
        np.matmul(X[s:e], mats[which[s]], out=out[s:e])
    return out


def _nnls_inverse(
    A: np.ndarray, G: np.ndarray, b: np.ndarray, target: np.ndarray, which: np.ndarray, tol: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The active-set (Lawson-Hanson) NNLS of ``_nnls_gram``, with factors updated, not refactored.

    ``_nnls_gram`` gathers and factors the (k, k) Gram matrix of every problem's positive set
    at every step: O(k^3) per step and O(k^4) per problem, which at the presets' size (M = 50
    points, ~25 positive weights, 20,000 problems) was most of the whole analysis. Here each
    problem keeps a factor of ``(G_FF + ridge I)^-1`` (the ridged matrix ``_nnls_gram``
    solves with), extended by bordering when variables enter (O(k^2)) and refactored only
    when one leaves (rare), and the gradients ``b - G alpha`` are one BLAS product per
    manifold instead of a gather of Gram columns per problem. A step adds up to ``_ENTER``
    variables of largest positive gradient (see ``_nnls_inverse_chunk``), so problems need a
    fraction of the steps. The tolerances, leaving rule and iteration limits are those of
    ``_nnls_gram`` and the refinement step is ``_refine``'s, so the solutions (unique: the
    Gram matrices are ridged positive definite) are the same to rounding.

    Updated factors accumulate rounding where the Gram matrices are ill-conditioned, so each
    solution comes with a flag, False where a Schur complement fell below half the ridge, a
    lone entering variable came out non-positive (``_nnls_gram``'s numerical-noise exit),
    the iteration limit was hit, or the refined solution misses the optimality conditions
    by more than ``_KKT_SLACK`` times the entering tolerance; the caller solves the flagged
    problems again with ``_nnls_gram``.

    Args:
        A: (Gm, M+1, M) coordinates; G: (Gm, M, M) their Gram matrices; b: (Q, M) = A^T target;
        target: (Q, M+1) right-hand sides; which: (Q,) manifold of each problem, sorted;
        tol: (Q,) entering tolerance.

    Returns:
        alpha: (Q, M) the weights; combo: (Q, M+1) A alpha; ok: (Q,) the flags.
    """
    Gm, D1, M = A.shape
    Q = b.shape[0]
    ridge = 64 * np.finfo(np.float64).eps * np.einsum("gii->g", G)
    diag = np.einsum("gii->gi", G) + ridge[:, None]
    Gx = np.zeros((Gm, M + 1, M + 1))  # index M marks an empty slot (zero row and column)
    Gx[:, :M, :M] = G
    At = np.ascontiguousarray(A.transpose(0, 2, 1))
    alpha_out = np.zeros((Q, M))
    combo_out = np.zeros((Q, D1))
    ok_out = np.zeros(Q, dtype=bool)
    # Chunks bound the factors' memory (~_INVERSE_CHUNK_BYTES); within one, every numpy
    # call serves thousands of problems.
    chunk = max(1, _INVERSE_CHUNK_BYTES // (8 * (M + 1) ** 2))
    for start in range(0, Q, chunk):
        rows = np.arange(start, min(start + chunk, Q))
        _nnls_inverse_chunk(G, Gx, diag, ridge, A, At, b, target, which, tol, rows, alpha_out, combo_out, ok_out)
    if ok_out.any():
        # optimality of the refined solutions: A^T (target - A alpha) <= tol, = 0 where alpha > 0
        sel = np.nonzero(ok_out)[0]
        grad = _grouped_products(target[sel] - combo_out[sel], A, which[sel])
        slack = _KKT_SLACK * tol[sel][:, None]
        pos = alpha_out[sel] > 0
        bad = np.where(pos, np.abs(grad) > slack, grad > slack).any(axis=1)
        ok_out[sel[bad]] = False
    return alpha_out, combo_out, ok_out


def _inverse_factor(Gx: np.ndarray, ridge: np.ndarray, wh: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """W = L^-1 with L L^T the ridged Gram matrix of the positive set (identity on empty slots).

    For problems whose positive set lost a variable: the bordered updates only append, so a
    removal refactors (rare: a variable leaves in a few percent of the steps).
    """
    M = Gx.shape[1] - 1
    Gs = Gx[wh[:, None, None], idx[:, :, None], idx[:, None, :]]
    empty = idx == M
    k = idx.shape[1]
    Gs[:, np.arange(k), np.arange(k)] += np.where(empty, 1.0, ridge[wh][:, None])
    return np.linalg.inv(np.linalg.cholesky(Gs))


def _small_cholesky(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower Cholesky factors C of a stack of small (b, b) matrices S, and their pivots C_ii^2.

    Unrolled over b (at most a few), vectorized over the stack; a non-positive pivot is left
    for the caller to test instead of raising, and the factor's later entries are garbage
    there.
    """
    b = S.shape[1]
    C = np.zeros_like(S)
    piv = np.empty(S.shape[:2])
    for i in range(b):
        p = S[:, i, i] - np.vecdot(C[:, i, :i], C[:, i, :i])
        piv[:, i] = p
        d = np.sqrt(np.where(p > 0, p, 1.0))
        C[:, i, i] = d
        for r in range(i + 1, b):
            C[:, r, i] = (S[:, r, i] - np.vecdot(C[:, r, :i], C[:, i, :i])) / d
    return C, piv


def _lower_inverse(C: np.ndarray) -> np.ndarray:
    """Inverses of a stack of small lower-triangular (b, b) matrices (forward substitution)."""
    b = C.shape[1]
    inv = np.zeros_like(C)
    for i in range(b):
        inv[:, i, i] = 1.0 / C[:, i, i]
        for r in range(i + 1, b):
            inv[:, r, i] = -np.vecdot(C[:, r, i:r], inv[:, i:r, i]) / C[:, r, r]
    return inv


def _apply_inverse(W: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(G_FF + ridge I)^-1 v = W^T (W v) per problem: W (n, k, k), v (n, k)."""
    return np.matmul(np.matmul(W, v[..., None]).transpose(0, 2, 1), W)[:, 0]


def _refine_inverse(
    A: np.ndarray,
    At: np.ndarray,
    target: np.ndarray,
    wh: np.ndarray,
    idx: np.ndarray,
    alpha: np.ndarray,
    W: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``_refine`` for finished problems of ``_nnls_inverse_chunk``, with their factors W.

    The residual and its gradient come from the coordinates A (At = A^T per manifold) by one
    product per manifold (``_grouped_products``; wh sorted) rather than from gathered columns.

    Returns the refined weights (n, M) and the combinations A alpha (n, M+1).
    """
    n, M = alpha.shape[0], A.shape[2]
    full = np.zeros((n, M + 1))
    np.put_along_axis(full, idx, alpha, axis=1)
    resid = target - _grouped_products(full[:, :M], At, wh)
    grad = np.zeros((n, M + 1))
    grad[:, :M] = _grouped_products(resid, A, wh)
    a = np.maximum(alpha + _apply_inverse(W, np.take_along_axis(grad, idx, axis=1)), 0.0)
    a[idx == M] = 0.0
    full[:] = 0.0
    np.put_along_axis(full, idx, a, axis=1)
    return full[:, :M], _grouped_products(full[:, :M], At, wh)


def _nnls_inverse_chunk(
    G: np.ndarray,
    Gx: np.ndarray,
    diag: np.ndarray,
    ridge: np.ndarray,
    A: np.ndarray,
    At: np.ndarray,
    b: np.ndarray,
    target: np.ndarray,
    which: np.ndarray,
    tol: np.ndarray,
    rows: np.ndarray,
    alpha_out: np.ndarray,
    combo_out: np.ndarray,
    ok_out: np.ndarray,
) -> None:
    """``_nnls_inverse`` on the problems ``rows``, writing into the ``*_out`` arrays.

    Each problem keeps a factor W (slots x slots) with ``W^T W = (G_FF + ridge I)^-1`` on its
    positive set F and the identity on empty slots, so that a step reads W twice
    (``L = W U``, ``W^T L``) and writes a few rows, where updating the inverse itself would
    rewrite all of it: the steps are memory-bound. Variables J entering empty slots replace
    W's rows J (identity rows while the slots were empty) with ``C^-1 [-(W^T W U)^T | I_J]``,
    C C^T the Schur complement S of the bordered matrix.

    Lawson-Hanson adds one variable per step, the one of largest gradient; each step costs a
    product of every problem's weights with its Gram matrix for the gradients. Here a step
    adds the ``_ENTER`` variables of largest positive gradient together when the bordered
    solution keeps them all positive (S positive definite, ``S^-1 w_J > 0``), and the first
    alone otherwise, so a problem needs about a ``_ENTER``-th of the steps. Adding a set of
    variables whose solution is positive is a Lawson-Hanson step too (the objective falls and
    the weights stay feasible), and the optimum is unique: the solution is the same to
    rounding (the final check in ``_nnls_inverse`` makes sure).
    """
    M = G.shape[1]
    Q = rows.size
    nb = min(_ENTER, M)
    wh = which[rows]
    bq = b[rows]
    tq = tol[rows]
    idx = np.full((Q, 0), M, dtype=np.int64)
    alpha = np.zeros((Q, 0))
    bF = np.zeros((Q, 0))
    W = np.zeros((Q, 0, 0))

    def finish(sel: np.ndarray) -> None:
        if sel.size:
            r = rows[sel]
            alpha_out[r], combo_out[r] = _refine_inverse(A, At, target[r], wh[sel], idx[sel], alpha[sel], W[sel])
            ok_out[r] = True

    # Finished problems stay in the arrays, inert (nothing enters), until a quarter of them
    # are finished: dropping them at once would copy every W at every step.
    alive = np.ones(Q, dtype=bool)
    for _ in range(3 * M):
        Qa = rows.size
        ar = np.arange(Qa)
        dense = np.zeros((Qa, M + 1))
        np.put_along_axis(dense, idx, alpha, axis=1)
        w = np.empty((Qa, M + 1))
        np.subtract(bq, _grouped_products(dense[:, :M], G, wh), out=w[:, :M])
        np.put_along_axis(w, idx, -np.inf, axis=1)
        w[:, M] = -np.inf
        # the nb largest gradients, in decreasing order
        J = np.argpartition(w, -nb, axis=1)[:, -nb:]
        wJ = np.take_along_axis(w, J, axis=1)
        order = np.argsort(-wJ, axis=1)
        J, wJ = np.take_along_axis(J, order, axis=1), np.take_along_axis(wJ, order, axis=1)
        valid = wJ > tq[:, None]
        grow = valid[:, 0] & alive
        if not grow.all():
            finish(np.nonzero(alive & ~grow)[0])
            alive = grow
            n_alive = int(np.count_nonzero(alive))
            if n_alive == 0:
                break
            if n_alive <= 0.75 * Qa:
                rows, wh, bq, tq, idx, alpha, bF, W, J, wJ, valid = (
                    x[alive] for x in (rows, wh, bq, tq, idx, alpha, bF, W, J, wJ, valid)
                )
                Qa = n_alive
                ar = np.arange(Qa)
                alive = np.ones(Qa, dtype=bool)
        valid &= alive[:, None]
        free = idx == M
        if not ((free.sum(axis=1) >= nb) | ~alive).all():  # add empty slots: identity in W
            k = idx.shape[1]
            g = max(2 * nb, k // 2)
            idx = np.concatenate([idx, np.full((Qa, g), M, dtype=np.int64)], axis=1)
            alpha = np.concatenate([alpha, np.zeros((Qa, g))], axis=1)
            bF = np.concatenate([bF, np.zeros((Qa, g))], axis=1)
            W2 = np.zeros((Qa, k + g, k + g))
            W2[:, :k, :k] = W
            W2[:, np.arange(k, k + g), np.arange(k, k + g)] = 1.0
            W = W2
            free = idx == M
        # slots for the entering variables: the first nb free ones (every live problem has nb)
        slots = np.argsort(~free, axis=1, kind="stable")[:, :nb]
        Jm = np.where(valid, J, M)  # M: no variable (zero Gram row and column)
        kc = idx.shape[1]
        GJ = Gx[wh[:, None], Jm].reshape(Qa * nb, M + 1)  # Gram rows of the entering variables
        UT = np.take(GJ, idx[:, None, :] + (np.arange(Qa * nb) * (M + 1)).reshape(Qa, nb, 1))  # (Qa, nb, k)
        LT = np.matmul(UT, W.transpose(0, 2, 1))  # (W U)^T, zero rows for no variable
        HU = np.matmul(LT, W)  # (H U)^T, zero on empty slots
        S = np.take_along_axis(GJ.reshape(Qa, nb, M + 1), Jm[:, None, :], axis=2) - np.matmul(LT, LT.transpose(0, 2, 1))
        S[:, np.arange(nb), np.arange(nb)] += np.where(valid, ridge[wh][:, None], 1.0)
        wJv = np.where(valid, wJ, 0.0)
        half_ridge = 0.5 * ridge[wh]
        C, piv = _small_cholesky(S)
        Ci = _lower_inverse(C)
        zJ = np.matmul(Ci.transpose(0, 2, 1), np.matmul(Ci, wJv[..., None]))[..., 0]
        single = ~(((piv > half_ridge[:, None]) & (zJ > 0)) | ~valid).all(axis=1)
        if single.any():  # only the first variable enters there: the Lawson-Hanson step
            valid[single, 1:] = False
            s00 = S[single, 0, 0]
            piv[single, 0] = s00
            s00 = np.where(s00 > 0, s00, 1.0)
            Ci[single] = np.eye(nb)
            Ci[single, 0, 0] = 1.0 / np.sqrt(s00)
            zJ[single] = 0.0
            zJ[single, 0] = wJv[single, 0] / s00
            HU[single, 1:] = 0.0
        failed = ~(piv[:, 0] > half_ridge) & alive
        z = alpha - np.matmul(zJ[:, None, :], HU)[:, 0]
        np.put_along_axis(z, slots, zJ, axis=1)  # z there was 0: empty slots
        # new rows of W for the slots: C^-1 [-(H U)^T | I_J]; identity rows where nothing enters
        new_rows = -np.matmul(Ci, HU)
        np.put_along_axis(new_rows, np.broadcast_to(slots[:, None, :], (Qa, nb, nb)), Ci, axis=2)
        W = np.ascontiguousarray(W)  # (a no-op: W is never a view) so that the rows below land in W
        W.reshape(Qa * kc, kc)[(ar[:, None] * kc + slots).ravel()] = new_rows.reshape(Qa * nb, kc)
        Jm = np.where(valid, J, M)
        np.put_along_axis(idx, slots, Jm, axis=1)
        b_new = np.where(valid, np.take_along_axis(bq, np.minimum(Jm, M - 1), axis=1), 0.0)
        np.put_along_axis(bF, slots, b_new, axis=1)
        # inner loop: step back while a variable would go negative
        todo = ar[alive & ~failed]
        ent = slots[todo, 0]
        # One entering variable stays positive through the inner loop in exact arithmetic
        # (Lawson-Hanson), so there a non-positive one is noise and stops the problem as in
        # _nnls_gram; of several entering together one may legitimately turn non-positive
        # after a step back (its weight is then positive), and leaves as any other.
        multi = valid[todo, 1:].any(axis=1)
        z = z[todo]
        for _ in range(M + 1):
            filled = idx[todo] < M
            bad = (z <= 0) & filled
            neg = bad.any(axis=1)
            good = ~neg
            alpha[todo[good]] = z[good]
            if not neg.any():
                break
            stuck = bad[np.arange(todo.size), ent] & neg & ~multi  # _nnls_gram's numerical-noise exit
            failed[todo[stuck]] = True
            move = neg & ~stuck
            todo, ent, multi, z, bad, filled = todo[move], ent[move], multi[move], z[move], bad[move], filled[move]
            if todo.size == 0:
                break
            a0 = alpha[todo]
            ratio = np.where(bad, a0 / np.where(bad, a0 - z, 1.0), np.inf)
            theta = ratio.min(axis=1)
            a_new = a0 + theta[:, None] * (z - a0)
            leave = ((a_new <= 0) | (bad & (ratio == theta[:, None]))) & filled
            a_new[leave] = 0.0
            alpha[todo] = a_new
            it_idx, it_b = idx[todo], bF[todo]
            it_idx[leave] = M
            it_b[leave] = 0.0
            try:
                Wt = _inverse_factor(Gx, ridge, wh[todo], it_idx)
            except np.linalg.LinAlgError:
                Wt = None
            if Wt is None or not np.isfinite(Wt).all():
                failed[todo] = True
                break
            W[todo], idx[todo], bF[todo] = Wt, it_idx, it_b
            z = _apply_inverse(Wt, it_b)
        alive &= ~failed
    # problems still running at the iteration limit are left unflagged (ok_out False)


def _solve_duals(
    A: np.ndarray,
    G: np.ndarray,
    b: np.ndarray,
    T: np.ndarray,
    kappa: float,
    which: np.ndarray,
    tol: np.ndarray,
    method: DualSolver,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights alpha (Q, M) and combinations A alpha (Q, D1) of the dual NNLS problems.

    "inverse" runs ``_nnls_inverse`` and solves only the problems it flags with ``_nnls_gram``
    and ``_refine``; "gram" runs those on every problem (the slower original path, kept to
    check the fast one against).
    """
    Q, M = b.shape
    if method == "inverse":
        target = T.copy()
        target[:, -1] += kappa
        alpha, combo, ok = _nnls_inverse(A, G, b, target, which, tol)
        redo = np.nonzero(~ok)[0]
        if redo.size == 0:
            return alpha, combo
        log.debug("anchor points: %d of %d problems solved again by factorization", redo.size, Q)
    elif method == "gram":
        alpha, combo = np.zeros((Q, M)), np.zeros((Q, A.shape[1]))
        redo = np.arange(Q)
    else:
        raise ValueError(f"method={method!r}; expected 'inverse' or 'gram'")
    idx, a = _nnls_gram(G, b[redo], which[redo], tol[redo])
    a, combo[redo] = _refine(A, T[redo], kappa, which[redo], idx, a)
    full = np.zeros((redo.size, M + 1))
    np.put_along_axis(full, idx, a, axis=1)
    alpha[redo] = full[:, :M]
    return alpha, combo


@_single_threaded
def anchor_points(
    sD1: np.ndarray, t_vecs: np.ndarray, kappa: float = 0.0, *, method: DualSolver = "inverse"
) -> AnchorSolution:
    """Anchor points of manifolds for Gaussian vectors T (the per-T quadratic programs).

    For each manifold (points s_mu = columns of its sD1, last coordinate 1) and each T, the
    reference solves ``min 1/2 |v|^2 - T.v  s.t.  s_mu.v <= -kappa`` and takes the anchor point
    ``s = (T - v) / sum(alpha)`` (alpha the multipliers), or the point of largest projection on
    T when no constraint is active or |T - v| < 1e-8. Eliminating v gives the dual
    ``min |sD1 alpha - (T + kappa e_last)|, alpha >= 0`` (the last row of sD1 is ones, so
    ``kappa sum(alpha)`` is a linear term in sD1 alpha), solved here for all T at once.

    Args:
        sD1: (P, M+1, M) manifold coordinates (or one (M+1, M) manifold).
        t_vecs: (P, M+1, n_t) Gaussian vectors (or one (M+1, n_t) array).
        kappa: margin >= 0.
        method: "inverse" (default): active-set iterations with updated inverses, problems
            whose result misses the optimality conditions solved again by "gram", the
            active-set iterations that factor every step's Gram matrix afresh (slower, the
            same solutions to rounding).

    Returns:
        Anchor points, multipliers and the interior mask.
    """
    kappa = _check_margin(kappa)
    A = np.asarray(sD1, dtype=np.float64)
    T = np.asarray(t_vecs, dtype=np.float64)
    if A.ndim == 2:
        A, T = A[None], T[None]
    if A.ndim != 3 or T.ndim != 3 or A.shape[:2] != T.shape[:2] or A.shape[1] < 2:
        raise ValueError(
            f"sD1 has shape {np.shape(sD1)} and t_vecs {np.shape(t_vecs)}; expected (P, M+1, M) and (P, M+1, n_t)"
        )
    Pm, D1, M = A.shape
    n_t = T.shape[2]
    TA = np.matmul(T.transpose(0, 2, 1), A)  # (P, n_t, M): T . s_mu
    # point of largest projection (the center coordinate adds the same t0 to every point)
    top = np.argmax(TA, axis=2)
    gmax = np.take_along_axis(TA, top[:, :, None], axis=2)[:, :, 0]
    interior = gmax + kappa < 0
    points = np.ascontiguousarray(A.transpose(0, 2, 1))  # (P, M, D1)
    s_max = points[np.arange(Pm)[:, None], top]  # (P, n_t, D1)

    alpha = np.zeros((Pm, n_t, M))
    Aa = np.zeros((Pm, n_t, D1))  # T - v
    pq, tq = np.nonzero(~interior)
    if pq.size:
        G = np.matmul(A.transpose(0, 2, 1), A)
        b = TA[pq, tq] + kappa  # A^T (T + kappa e_last): the last row of A is ones
        Tq = T[pq, :, tq]
        t_norm = np.linalg.norm(Tq, axis=1) + kappa
        col_norm = np.sqrt(np.einsum("gii->gi", G).max(axis=1))
        tol = 1e3 * np.finfo(np.float64).eps * M * col_norm[pq] * (1.0 + t_norm)
        alpha[pq, tq], Aa[pq, tq] = _solve_duals(A, G, b, Tq, kappa, pq, tol, method)
    total = Aa[:, :, -1]  # sum(alpha): last row of A is ones
    small = np.sqrt(np.vecdot(Aa, Aa)) < _INTERIOR_EPS
    use_max = interior | small
    anchors = np.where(use_max[:, :, None], s_max, Aa / np.where(use_max, 1.0, total)[:, :, None])
    anchors = anchors.transpose(0, 2, 1)  # (P, D1, n_t)
    return AnchorSolution(anchors=anchors, multipliers=alpha.transpose(0, 2, 1), interior=interior)


@_single_threaded
def manifold_geometry(
    sD1: np.ndarray,
    t_vecs: np.ndarray,
    kappa: float = 0.0,
    *,
    dimension: GeometryFormula = "reference",
    radius: GeometryFormula = "reference",
) -> ManifoldGeometry:
    """Capacity, radius and dimension of manifolds from their anchor points.

    Args:
        sD1: (P, M+1, M) manifold coordinates (or one (M+1, M) manifold).
        t_vecs: (P, M+1, n_t) Gaussian vectors (or one (M+1, n_t) array).
        kappa: margin >= 0.
        dimension: "reference": ``D * <cos(t, s)>^2`` over the first D = M coordinates (the
            public implementation); "appendix": ``<(t . s_hat)^2>`` (paper, appendix A.4.2;
            PRX 2018 eq. 29).
        radius: "reference": root mean square of the anchor points minus their mean, per unit
            center coordinate (the public implementation); "appendix": ``sqrt(<|s|^2>)`` of the
            anchor points' manifold part (paper, appendix A.4.2; PRX 2018 eq. 28).

    Returns:
        Per-manifold capacity ``1 / <(T.s + kappa)_+^2 / |s|^2>``, radius and dimension.
    """
    if dimension not in ("reference", "appendix") or radius not in ("reference", "appendix"):
        raise ValueError(f"dimension={dimension!r}, radius={radius!r}; expected 'reference' or 'appendix'")
    sol = anchor_points(sD1, t_vecs, kappa)
    s = sol.anchors
    T = np.asarray(t_vecs, dtype=np.float64)
    if T.ndim == 2:
        T = T[None]
    D = s.shape[1] - 1
    kappa = float(kappa)
    gap = np.maximum(np.einsum("pdt,pdt->pt", T, s) + kappa, 0.0)
    s_sq = np.einsum("pdt,pdt->pt", s, s)
    capacity = 1.0 / np.mean(np.where(s_sq > 0, gap**2 / np.where(s_sq > 0, s_sq, 1.0), 0.0), 1)

    if radius == "reference":
        ds = (s - s.mean(axis=2, keepdims=True))[:, :D] / s[:, D : D + 1]
    else:
        ds = s[:, :D] / s[:, D : D + 1]
    rad = np.sqrt(np.mean(np.einsum("pdt,pdt->pt", ds, ds), axis=1))

    t_part, s_part = T[:, :D], s[:, :D]
    s_norm = np.sqrt(np.einsum("pdt,pdt->pt", s_part, s_part) + 1e-12)
    if dimension == "reference":
        t_hat = t_part / np.linalg.norm(t_part, axis=1, keepdims=True)
        cos = np.einsum("pdt,pdt->pt", t_hat, s_part) / s_norm
        dim = D * np.mean(cos, axis=1) ** 2
    else:
        proj = np.einsum("pdt,pdt->pt", t_part, s_part) / s_norm
        dim = np.mean(proj**2, axis=1)
    return ManifoldGeometry(capacity=capacity, radius=rad, dimension=dim)


# ------------------------------------------------------------------------------ entry point


def _t_vectors(sizes: list[int], n_t: int, seed: int) -> list[np.ndarray]:
    """Gaussian vectors per manifold, as the reference cases drew them.

    ``np.random.default_rng(seed).standard_normal((P, M+1, n_t))[i]`` for equal M; manifold i
    takes the next (M_i + 1) x n_t values of the same stream otherwise.
    """
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((m + 1, n_t)) for m in sizes]


@_single_threaded
def mftma(
    X: ManifoldsLike,
    kappa: float = 0.0,
    n_t: int = 200,
    seed: int = 0,
    *,
    K: int | None = None,
    n_reps: int = 10,
    max_iter: int = 500,
    t_vecs: Sequence[np.ndarray] | np.ndarray | None = None,
    dimension: GeometryFormula = "reference",
    radius: GeometryFormula = "reference",
) -> MFTMAResult:
    """Mean-field theoretic manifold analysis of P point-cloud manifolds.

    Args:
        X: (P, N, M) array (P manifolds of M points in N dimensions) or a sequence of P
            (N, M_i) arrays; M_i < N, P >= 3, finite values.
        kappa: margin >= 0.
        n_t: Gaussian vectors T per manifold.
        seed: seeds both the Gaussian vectors (``np.random.default_rng(seed)``) and the random
            starts of the removal step (``np.random.RandomState(seed)``), as in the reference
            cases.
        K: directions to remove; None chooses K as the reference does, 0 skips the removal.
        n_reps: random starts per K in the removal step.
        max_iter: conjugate-gradient iteration limit in the removal step (1000 in the
            reference; see :func:`remove_center_correlation`).
        t_vecs: Gaussian vectors to use instead of drawing them: per manifold (M_i + 1, n_t).
        dimension: "reference" or "appendix" formula (see :func:`manifold_geometry`).
        radius: "reference" or "appendix" formula (see :func:`manifold_geometry`).

    Returns:
        Per-manifold capacities, radii and dimensions, their averages (capacity as
        1 / mean(1 / c)), the center correlation, K and the residual correlations.

    Runs with one BLAS thread (see :func:`one_blas_thread`).
    """
    t_start = time.perf_counter()
    kappa = _check_margin(kappa)
    if dimension not in ("reference", "appendix") or radius not in ("reference", "appendix"):
        raise ValueError(f"dimension={dimension!r}, radius={radius!r}; expected 'reference' or 'appendix'")
    if n_t < 1:
        raise ValueError(f"n_t={n_t}; expected at least 1 Gaussian vector per manifold")
    manifolds = _as_manifolds(X)
    sizes = [m.shape[1] for m in manifolds]
    if t_vecs is None:
        tv = _t_vectors(sizes, n_t, seed)
    else:
        tv = [np.asarray(t, dtype=np.float64) for t in t_vecs]
        if len(tv) != len(sizes) or any(t.ndim != 2 or t.shape[0] != m + 1 for t, m in zip(tv, sizes, strict=False)):
            raise ValueError(
                "t_vecs must hold one (M_i + 1, n_t) array per manifold; got shapes "
                f"{[t.shape for t in tv]} for M = {sizes}"
            )
    removal = remove_center_correlation(manifolds, K=K, seed=seed, n_reps=n_reps, max_iter=max_iter)
    t_removal = time.perf_counter()
    P = len(manifolds)
    caps, rads, dims = np.empty(P), np.empty(P), np.empty(P)
    by_m: dict[tuple[int, int], list[int]] = {}
    for i, m in enumerate(sizes):
        by_m.setdefault((m, tv[i].shape[1]), []).append(i)
    for idx in by_m.values():
        geo = manifold_geometry(
            np.stack([removal.coords[i] for i in idx]),
            np.stack([tv[i] for i in idx]),
            kappa,
            dimension=dimension,
            radius=radius,
        )
        caps[idx], rads[idx], dims[idx] = geo.capacity, geo.radius, geo.dimension
    t_end = time.perf_counter()
    return MFTMAResult(
        capacities=caps,
        radii=rads,
        dimensions=dims,
        capacity=float(1.0 / np.mean(1.0 / caps)),
        radius=float(np.mean(rads)),
        dimension=float(np.mean(dims)),
        center_corr=removal.center_corr,
        K=removal.K,
        res_coeff_per_K=removal.res_coeff_per_K,
        kappa=kappa,
        n_t=int(tv[0].shape[1]),
        timings={
            "removal": t_removal - t_start,
            "geometry": t_end - t_removal,
            "total": t_end - t_start,
        },
    )
