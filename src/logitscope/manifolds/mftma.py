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
   reproduces the reference's K, directions and residual correlations.
3. Per manifold, anchor points: for each Gaussian vector T = (t, t0) the quadratic program
   ``min 1/2 |v|^2 - T.v  s.t.  s_mu . v <= -kappa`` over the manifold's points s_mu (center
   coordinate 1). Its dual is the non-negative least-squares problem
   ``min |A alpha - (T + kappa e)|, alpha >= 0`` on the manifold's (M+1, M) coordinate matrix
   A, which a batched active-set (Lawson-Hanson) solver handles for all T and manifolds at once
   (the reference calls cvxopt once per T).
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
_FIRST_K_BATCH = 6  # K = 1..6 optimized together: the stopping rule needs K <= 5 anyway


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


def _manifold_coords(manifolds: list[np.ndarray], directions: np.ndarray) -> list[np.ndarray]:
    """Project ``directions`` out of every point and build each manifold's sD1 coordinates.

    As the reference: subtract the mean of all points, remove the directions, center each
    manifold and divide by the norm of its center, take coordinates in an orthonormal basis
    of the manifold's span (R of its QR) and append a row of ones. Manifolds of equal size
    are processed in chunks of at most ``_COORD_CHUNK_BYTES``.
    """
    total = sum(m.shape[1] for m in manifolds)
    origin = sum(m.sum(axis=1, dtype=np.float64) for m in manifolds)[:, None] / total
    N = origin.shape[0]
    coords: list[np.ndarray] = [np.empty(0)] * len(manifolds)
    by_m: dict[int, list[int]] = {}
    for i, m in enumerate(manifolds):
        by_m.setdefault(m.shape[1], []).append(i)
    for M, members in by_m.items():
        chunk = max(1, _COORD_CHUNK_BYTES // (8 * N * M))
        for start in range(0, len(members), chunk):
            idx = members[start : start + chunk]
            Xr = np.stack([manifolds[i] for i in idx]).astype(np.float64) - origin
            if directions.shape[1]:
                Xr -= directions @ (directions.T @ Xr)
            center = Xr.mean(axis=2, keepdims=True)
            norm = np.linalg.norm(center, axis=1, keepdims=True)
            zero = np.nonzero(norm[:, 0, 0] == 0)[0]
            if zero.size:
                raise ValueError(
                    f"manifold {idx[zero[0]]} has its center at the mean of all points after "
                    "the removal; expected a nonzero center (capacity is undefined)"
                )
            Xr -= center
            Xr /= norm
            R = np.linalg.qr(Xr, mode="r")  # (G, M, M): coordinates in the manifold's span
            for g, i in enumerate(idx):
                coords[i] = np.concatenate([R[g], np.ones((1, M))], axis=0)
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
        coords=_manifold_coords(manifolds, V11),
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


@_single_threaded
def anchor_points(sD1: np.ndarray, t_vecs: np.ndarray, kappa: float = 0.0) -> AnchorSolution:
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
        idx, a = _nnls_gram(G, b, pq, tol)
        a, Aa[pq, tq] = _refine(A, Tq, kappa, pq, idx, a)
        full = np.zeros((pq.size, M + 1))
        np.put_along_axis(full, idx, a, axis=1)
        alpha[pq, tq] = full[:, :M]
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
