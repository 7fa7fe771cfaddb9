"""Appendix C of the paper as printed: surrogate logits, their constraints, eqs. (3)-(10).

Notation (``THEORY-NOTES.md``): ``N = n_classes``; ``beta`` is the largest logit, at index
``top`` (``phi_hat = e_top``); ``y`` is the one-hot label, given here as the index ``label``;
``E1 = (N-1) e^-beta`` and ``E3 = (N-3) e^-beta``. "Correct" means ``label == top``, "wrong"
means ``label != top``. Every function is vectorised over ``beta`` (any shape, float64) and
returns arrays of the broadcast shape; logits are dimensionless (natural-log units).

The forms here are the paper's, read as ``THEORY-NOTES.md`` says; where the extracted text is
ambiguous the alternatives are named options. Whether they are right is checked elsewhere
(``logitscope.theory.stationary``): nothing in this module assumes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

KappaReading = Literal["unsquared", "squared"]
"""kappa's inner denominator: ``(1+E1)`` as we read it, or ``(1+E1)^2`` (the alternative)."""
Admissibility = Literal["literal", "magnitude"]
"""``beta > max(psi, g)`` as printed, or ``beta > max(|g|, |psi|)`` (on magnitudes)."""
GapReading = Literal["printed", "exact"]
"""Equation (10) as printed, or the exact substitution of (4, 5) into (9)."""
Case = Literal["correct", "wrong"]

KAPPA_READINGS: tuple[KappaReading, ...] = ("unsquared", "squared")
ADMISSIBILITY_READINGS: tuple[Admissibility, ...] = ("literal", "magnitude")
GAP_READINGS: tuple[GapReading, ...] = ("printed", "exact")

PAPER_THRESHOLD = 3.5
"""The paper's bound for misclassified samples with 10 classes (figure C.1)."""

Array = NDArray[np.float64]


def _beta(beta: ArrayLike) -> Array:
    return np.asarray(beta, dtype=np.float64)


def _check_n(n_classes: int) -> int:
    n = int(n_classes)
    if n < 2:
        raise ValueError(f"n_classes={n_classes}: need at least 2 classes")
    return n


def _check_sign(sign: int) -> int:
    if sign not in (1, -1):
        raise ValueError(f"sign={sign}: expected +1 or -1 (the branch of the square root)")
    return sign


def log_z(beta: ArrayLike, n_classes: int) -> Array:
    """``log Z_beta = ln(e^beta + N - 1)``, the log-partition function at ``beta * phi_hat``.

    Args:
        beta: largest logit, any shape.
        n_classes: N.

    Returns:
        Array of ``beta``'s shape (nats).
    """
    n = _check_n(n_classes)
    return np.logaddexp(_beta(beta), math.log(n - 1))


def h(beta: ArrayLike, n_classes: int, top: int = 0) -> Array:
    """The external field ``h_beta = (1 + (e^beta - 1) phi_hat) / (e^beta + N - 1)``.

    It equals ``softmax(beta * phi_hat)``: ``exp(-log Z)`` off ``top`` and ``exp(beta - log Z)``
    at ``top``, which neither overflows nor underflows to a wrong value for any ``beta``.

    Args:
        beta: largest logit, shape ``S``.
        n_classes: N.
        top: index of the largest logit.

    Returns:
        ``(*S, N)`` probabilities.
    """
    n = _check_n(n_classes)
    b = _beta(beta)
    lz = log_z(b, n)
    out = np.repeat(np.exp(-lz)[..., None], n, axis=-1)
    out[..., top] = np.exp(b - lz)
    return out


def q_matrix(field_h: ArrayLike) -> Array:
    """``Q(h) = diag(h) - h (x) h``, the Hessian of ``log sum exp`` at the point with softmax h.

    Args:
        field_h: ``(*S, N)`` probabilities.

    Returns:
        ``(*S, N, N)`` symmetric matrices.
    """
    hv = np.asarray(field_h, dtype=np.float64)
    eye = np.eye(hv.shape[-1])
    return hv[..., :, None] * eye - hv[..., :, None] * hv[..., None, :]


def cross_entropy(z: ArrayLike, label: ArrayLike) -> Array:
    """Exact ``L_CE(z | y) = log sum_i exp(z_i) - z . y``.

    Args:
        z: ``(*S, N)`` logits.
        label: class index, broadcastable to ``S``.

    Returns:
        ``S`` losses (nats).
    """
    zv = np.asarray(z, dtype=np.float64)
    lab = np.broadcast_to(np.asarray(label, dtype=np.int64), zv.shape[:-1])
    picked = np.take_along_axis(zv, lab[..., None], axis=-1)[..., 0]
    return logsumexp(zv, axis=-1) - picked


def cross_entropy_grad(z: ArrayLike, label: ArrayLike) -> Array:
    """Gradient of the exact loss in z: ``softmax(z) - y``; ``(*S, N)``."""
    zv = np.asarray(z, dtype=np.float64)
    p = np.exp(zv - logsumexp(zv, axis=-1, keepdims=True))
    lab = np.broadcast_to(np.asarray(label, dtype=np.int64), zv.shape[:-1])
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, lab[..., None], 1.0, axis=-1)
    return p - onehot


def _expansion_parts(beta: ArrayLike, u: ArrayLike, top: int) -> tuple[Array, Array, Array, Array, Array]:
    uv = np.asarray(u, dtype=np.float64)
    n = uv.shape[-1]
    b = np.broadcast_to(_beta(beta), uv.shape[:-1])
    hv = h(b, n, top)
    qu = hv * uv - hv * np.sum(hv * uv, axis=-1, keepdims=True)
    return b, uv, hv, qu, np.sum(uv * qu, axis=-1)


def expansion3(beta: ArrayLike, u: ArrayLike, top: int, label: ArrayLike) -> Array:
    """Equation (3): the loss at ``beta * e_top + u`` to third order in u.

    ``log Z - beta phi.y + u.(h - y) + 1/2 u.Q u + 1/6 (u*u).Q u - 1/3 (u.h) u.Q u``.

    Args:
        beta: ``S`` (broadcast against ``u``'s leading shape).
        u: ``(*S, N)`` displacement from ``beta * e_top``.
        top: index of the largest logit.
        label: class index, broadcastable to ``S``.

    Returns:
        ``S`` approximate losses (nats).
    """
    b, uv, hv, qu, uqu = _expansion_parts(beta, u, top)
    n = uv.shape[-1]
    lab = np.broadcast_to(np.asarray(label, dtype=np.int64), b.shape)
    u_lab = np.take_along_axis(uv, lab[..., None], axis=-1)[..., 0]
    phi_y = (lab == top).astype(np.float64)
    uh = np.sum(uv * hv, axis=-1)
    cubic = np.sum(uv * uv * qu, axis=-1) / 6.0 - uh * uqu / 3.0
    return log_z(b, n) - b * phi_y + (uh - u_lab) + 0.5 * uqu + cubic


def expansion3_grad(beta: ArrayLike, u: ArrayLike, top: int, label: ArrayLike) -> Array:
    """Gradient of (3) in u: ``(h - y) + Q u + 1/6 [2 u*(Qu) + Q(u*u)]
    - 1/3 [h (u.Qu) + 2 (u.h) Qu]``.

    Args:
        beta: ``S``.
        u: ``(*S, N)``.
        top: index of the largest logit.
        label: class index, broadcastable to ``S``.

    Returns:
        ``(*S, N)``; the constraint ``u_top = 0`` is not applied (see ``stationary``).
    """
    b, uv, hv, qu, uqu = _expansion_parts(beta, u, top)
    lab = np.broadcast_to(np.asarray(label, dtype=np.int64), b.shape)
    y = np.zeros_like(uv)
    np.put_along_axis(y, lab[..., None], 1.0, axis=-1)
    uu = uv * uv
    q_uu = hv * uu - hv * np.sum(hv * uu, axis=-1, keepdims=True)
    uh = np.sum(uv * hv, axis=-1, keepdims=True)
    third = (2.0 * uv * qu + q_uu) / 6.0 - (hv * uqu[..., None] + 2.0 * uh * qu) / 3.0
    return (hv - y) + qu + third


def expansion3_hessian(beta: float, u: ArrayLike, top: int) -> Array:
    """Hessian of (3) in u at one point (it does not depend on the label).

    ``Q + 1/3 [diag(Qu) + diag(u) Q + Q diag(u)] - 2/3 [h (x) Qu + Qu (x) h + (u.h) Q]``.

    Args:
        beta: scalar.
        u: ``(N,)``.
        top: index of the largest logit.

    Returns:
        ``(N, N)`` symmetric matrix.
    """
    uv = np.asarray(u, dtype=np.float64)
    hv = h(beta, uv.shape[-1], top)
    q = q_matrix(hv)
    qu = q @ uv
    third = (np.diag(qu) + uv[:, None] * q + q * uv[None, :]) / 3.0
    third -= 2.0 / 3.0 * (np.outer(hv, qu) + np.outer(qu, hv) + (uv @ hv) * q)
    return q + third


def _e1_e3(beta: ArrayLike, n: int) -> tuple[Array, Array, Array]:
    eb = np.exp(-_beta(beta))
    return eb, (n - 1) * eb, (n - 3) * eb


def f(beta: ArrayLike, n_classes: int, sign: int = 1) -> Array:
    """Equation (4), correct case: ``v_perp = f(beta) (1 - y)`` with

    ``f_pm = (1+E1)/(1-E1) [-1 pm sqrt(1 + 2 e^-2beta (1-E1) / (1+E1)^2)]``.

    The + branch is evaluated as ``x / (sqrt(1+x) + 1)`` to avoid cancellation at large beta.
    NaN where the square root is of a negative number; infinite at ``E1 = 1``.

    Args:
        beta: largest logit, any shape.
        n_classes: N.
        sign: +1 or -1, the branch of the square root.

    Returns:
        Array of ``beta``'s shape (logit units).
    """
    n = _check_n(n_classes)
    s = _check_sign(sign)
    eb, e1, _ = _e1_e3(beta, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = 2.0 * eb * eb * (1.0 - e1) / (1.0 + e1) ** 2
        root = np.sqrt(1.0 + x)
        bracket = x / (root + 1.0) if s > 0 else -1.0 - root
        return (1.0 + e1) / (1.0 - e1) * bracket


def kappa(beta: ArrayLike, n_classes: int, reading: KappaReading = "unsquared") -> Array:
    """Equation (5): ``kappa = (1+E1)/(1-E3) sqrt(1 + 2 (1-E1)(1-E3) / (1+E1)^p)``.

    ``p = 1`` for ``reading="unsquared"`` (ours), ``p = 2`` for ``"squared"``.

    Args:
        beta: largest logit, any shape.
        n_classes: N.
        reading: the denominator's power.

    Returns:
        Array of ``beta``'s shape; NaN where the root is complex.
    """
    n = _check_n(n_classes)
    power = {"unsquared": 1, "squared": 2}.get(reading)
    if power is None:
        raise ValueError(f"reading={reading!r}: expected one of {KAPPA_READINGS}")
    _, e1, e3 = _e1_e3(beta, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 + e1) / (1.0 - e3) * np.sqrt(1.0 + 2.0 * (1.0 - e1) * (1.0 - e3) / (1.0 + e1) ** power)


def g(beta: ArrayLike, n_classes: int, sign: int = 1, reading: KappaReading = "unsquared") -> Array:
    """Equation (5), wrong case, weight on the label: ``g_pm = -(1-E3)/(1-E1) [1 pm kappa]``.

    Args:
        beta: largest logit, any shape.
        n_classes: N.
        sign: +1 or -1.
        reading: kappa's reading.

    Returns:
        Array of ``beta``'s shape (logit units).
    """
    n = _check_n(n_classes)
    s = _check_sign(sign)
    _, e1, e3 = _e1_e3(beta, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(1.0 - e3) / (1.0 - e1) * (1.0 + s * kappa(beta, n, reading))


def psi(beta: ArrayLike, n_classes: int, sign: int = 1, reading: KappaReading = "unsquared") -> Array:
    """Equation (5), wrong case, weight on the other classes:
    ``psi_pm = 2 [e^-beta g_pm / (1-E1) - (1+E1)/(1-E3)]``.

    Args:
        beta: largest logit, any shape.
        n_classes: N.
        sign: +1 or -1.
        reading: kappa's reading.

    Returns:
        Array of ``beta``'s shape (logit units).
    """
    n = _check_n(n_classes)
    eb, e1, e3 = _e1_e3(beta, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * (eb * g(beta, n, sign, reading) / (1.0 - e1) - (1.0 + e1) / (1.0 - e3))


def closed_form_u(
    beta: ArrayLike,
    n_classes: int,
    case: Case,
    sign: int = 1,
    reading: KappaReading = "unsquared",
) -> Array:
    """The paper's ``v_perp`` as a vector, with ``top = 0`` and ``label = 0`` (correct) or 1.

    Correct: ``f (1 - y)``; wrong: ``g y + psi (1 - phi_hat - y)``.

    Returns:
        ``(*beta.shape, N)``.
    """
    n = _check_n(n_classes)
    b = _beta(beta)
    u = np.zeros((*b.shape, n))
    if case == "correct":
        u[..., 1:] = f(b, n, sign)[..., None]
    elif case == "wrong":
        u[..., 1] = g(b, n, sign, reading)
        u[..., 2:] = psi(b, n, sign, reading)[..., None]
    else:
        raise ValueError(f"case={case!r}: expected 'correct' or 'wrong'")
    return u


def case_label(case: Case) -> int:
    """Label index of ``closed_form_u``'s convention (top is 0)."""
    return 0 if case == "correct" else 1


def constraint_margin(
    beta: ArrayLike,
    n_classes: int,
    case: Case,
    sign: int = 1,
    admissibility: Admissibility = "literal",
    reading: KappaReading = "unsquared",
) -> Array:
    """``beta - F(beta)``: positive where the constraint of (4) or (5) admits ``beta``.

    ``F`` is ``f`` (correct) or ``max(psi, g)`` (wrong; ``g`` alone for N = 2, which has no
    other classes), with magnitudes under ``admissibility="magnitude"``. NaN where the
    closed forms are complex (no real stationary point is claimed there).

    Returns:
        Array of ``beta``'s shape.
    """
    n = _check_n(n_classes)
    b = _beta(beta)
    if admissibility not in ADMISSIBILITY_READINGS:
        raise ValueError(f"admissibility={admissibility!r}: expected {ADMISSIBILITY_READINGS}")
    mag = np.abs if admissibility == "magnitude" else (lambda a: a)
    if case == "correct":
        bound = mag(f(b, n, sign))
    elif case == "wrong":
        gv = mag(g(b, n, sign, reading))
        bound = gv if n == 2 else np.fmax(gv, mag(psi(b, n, sign, reading)))
        bound = np.where(np.isnan(gv), np.nan, bound)
        if n > 2:
            bound = np.where(np.isnan(psi(b, n, sign, reading)), np.nan, bound)
    else:
        raise ValueError(f"case={case!r}: expected 'correct' or 'wrong'")
    return b - bound


@dataclass(frozen=True)
class Threshold:
    """Where a constraint of (4)/(5) starts to hold for good.

    Attributes:
        name: ``"<case><sign>/<admissibility>[/<kappa reading>]"``, e.g. ``"wrong+/magnitude/unsquared"``.
        case, sign, admissibility, kappa_reading: the reading.
        threshold: smallest ``b0`` such that every beta in ``(b0, beta_max]`` is admissible;
            ``beta_min`` if the whole scanned range is, NaN if ``beta_max`` is not.
        boundary: what happens at ``threshold``: ``"root"`` (the margin crosses 0),
            ``"pole"`` (the closed form diverges), ``"complex"`` (the closed form turns complex)
            or ``"none"``.
        intervals: admissible ``[lo, hi]`` intervals inside ``[beta_min, beta_max]``.
    """

    name: str
    case: str
    sign: int
    admissibility: str
    kappa_reading: str | None
    threshold: float
    boundary: str
    intervals: list[tuple[float, float]] = field(default_factory=list)


def _admissible(margin: Array) -> Array:
    return np.isfinite(margin) & (margin > 0)


def _refine(fun, lo: float, hi: float, ok_lo: bool) -> float:
    """Bisect the admissibility indicator between ``lo`` and ``hi`` (which differ) to 1 ulp-ish."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if bool(_admissible(fun(np.array(mid)))) == ok_lo:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _boundary_kind(fun, x: float) -> str:
    step = max(1e-7, 1e-7 * abs(x))
    left, right = float(fun(np.array(x - step))), float(fun(np.array(x + step)))
    if not (np.isfinite(left) and np.isfinite(right)):
        return "complex" if (np.isnan(left) or np.isnan(right)) else "pole"
    if abs(left) < 1e-4 and abs(right) < 1e-4:
        return "root"
    return "pole"


def constraint_threshold(
    n_classes: int,
    case: Case,
    sign: int = 1,
    admissibility: Admissibility = "literal",
    reading: KappaReading = "unsquared",
    beta_min: float = 1e-3,
    beta_max: float = 30.0,
    n_grid: int = 6001,
) -> Threshold:
    """Scan ``constraint_margin`` on a grid and bisect every change of admissibility.

    Args:
        n_classes: N.
        case, sign, admissibility, reading: the reading of (4)/(5).
        beta_min, beta_max: the scanned range of beta.
        n_grid: grid points; boundaries are then bisected to machine precision, so the result
            does not depend on the grid once it resolves every admissible interval.

    Returns:
        The ``Threshold``.
    """
    n = _check_n(n_classes)

    def fun(b: Array) -> Array:
        return constraint_margin(b, n, case, sign, admissibility, reading)

    grid = np.linspace(beta_min, beta_max, n_grid)
    ok = _admissible(fun(grid))
    changes = np.flatnonzero(ok[1:] != ok[:-1])
    edges = [_refine(fun, grid[i], grid[i + 1], bool(ok[i])) for i in changes]
    bounds = [beta_min, *edges, beta_max]
    states = [bool(ok[0])] + [not bool(ok[i]) for i in changes]
    intervals = [(bounds[j], bounds[j + 1]) for j, s in enumerate(states) if s]
    if not ok[-1]:
        thr, kind = float("nan"), "none"
    elif not edges:
        thr, kind = float(beta_min), "none"
    else:
        thr, kind = float(edges[-1]), _boundary_kind(fun, edges[-1])
    tag = "+" if sign > 0 else "-"
    name = f"{case}{tag}/{admissibility}" + ("" if case == "correct" else f"/{reading}")
    return Threshold(
        name=name,
        case=case,
        sign=sign,
        admissibility=admissibility,
        kappa_reading=None if case == "correct" else reading,
        threshold=thr,
        boundary=kind,
        intervals=[(float(a), float(b)) for a, b in intervals],
    )


def thresholds(
    n_classes: int, beta_min: float = 1e-3, beta_max: float = 30.0, n_grid: int = 6001
) -> dict[str, Threshold]:
    """Every reading's threshold for N classes: both branches, both admissibility readings,
    both kappa readings (the correct case has no kappa).

    Returns:
        ``{threshold.name: threshold}``; the paper's "beta > 3.5 for 10 classes" is to be
        compared with ``"wrong+/..."`` entries.
    """
    out: dict[str, Threshold] = {}
    for sign in (1, -1):
        for adm in ADMISSIBILITY_READINGS:
            th = constraint_threshold(n_classes, "correct", sign, adm, "unsquared", beta_min, beta_max, n_grid)
            out[th.name] = th
            for reading in KAPPA_READINGS:
                th = constraint_threshold(n_classes, "wrong", sign, adm, reading, beta_min, beta_max, n_grid)
                out[th.name] = th
    return out


def correct_loss(beta: ArrayLike, u_value: ArrayLike, n_classes: int) -> Array:
    """Exact ``L_CE(beta y + u (1 - y) | y) = ln(1 + (N-1) e^(u - beta))``; broadcasting."""
    n = _check_n(n_classes)
    b, uv = np.broadcast_arrays(_beta(beta), np.asarray(u_value, dtype=np.float64))
    return np.logaddexp(0.0, math.log(n - 1) + uv - b)


def wrong_loss(beta: ArrayLike, g_value: ArrayLike, psi_value: ArrayLike, n_classes: int) -> Array:
    """Exact ``L_CE(beta phi + g y + psi (1 - phi - y) | y)`` for ``phi != y``; broadcasting."""
    n = _check_n(n_classes)
    b, gv, pv = np.broadcast_arrays(
        _beta(beta), np.asarray(g_value, dtype=np.float64), np.asarray(psi_value, dtype=np.float64)
    )
    terms = [b, gv] if n == 2 else [b, gv, math.log(n - 2) + pv]
    return logsumexp(np.stack(terms), axis=0) - gv


def mean_field_loss(
    beta_ok: ArrayLike,
    beta_bad: ArrayLike,
    n_classes: int,
    error_rate: float,
    sign: int = 1,
    reading: KappaReading = "unsquared",
) -> Array:
    """Figure C.2: ``(1-e) L(b_ok y + f (1-y) | y) + e L(b_bad phi + g y + psi (1-phi-y) | y)``.

    The exact cross-entropy at the paper's closed-form points (the + branch by default).

    Args:
        beta_ok: largest logit of correctly classified samples, any shape.
        beta_bad: largest logit of misclassified samples, broadcastable with ``beta_ok``.
        n_classes: N.
        error_rate: e, in [0, 1].
        sign, reading: the branch and kappa's reading.

    Returns:
        Broadcast-shape mean loss (nats); NaN where a closed form is complex.
    """
    n = _check_n(n_classes)
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate={error_rate}: expected a value in [0, 1]")
    bo, bb = np.broadcast_arrays(_beta(beta_ok), _beta(beta_bad))
    ok = correct_loss(bo, f(bo, n, sign), n)
    bad = wrong_loss(bb, g(bb, n, sign, reading), psi(bb, n, sign, reading), n)
    return (1.0 - error_rate) * ok + error_rate * bad


def logit_response_eq8(z: ArrayLike, label_mu: int, omega: ArrayLike, eps: float) -> Array:
    """Equation (8): ``delta z^mu = eps sum_nu Omega_nu [z^nu . (1 - N y^mu)] z^nu``.

    Args:
        z: ``(M, N)`` logits of the M training samples nu.
        label_mu: label of the attacked sample mu.
        omega: ``(M,)`` non-negative weights Omega_nu.
        eps: attack strength.

    Returns:
        ``(N,)`` change of sample mu's logits.
    """
    zv = np.asarray(z, dtype=np.float64)
    n = zv.shape[-1]
    direction = np.ones(n)
    direction[label_mu] -= n
    return eps * np.einsum("m,m,mi->i", np.asarray(omega, dtype=np.float64), zv @ direction, zv)


def gap_change_eq9(z: ArrayLike, omega: ArrayLike, eps: float) -> float:
    """Equation (9): ``eps/(N-1) sum_nu Omega_nu [(z^nu . 1)^2 - N z^nu . z^nu]``.

    Args:
        z: ``(M, N)`` logits.
        omega: ``(M,)`` weights.
        eps: attack strength.
    """
    zv = np.asarray(z, dtype=np.float64)
    n = zv.shape[-1]
    per = zv.sum(-1) ** 2 - n * np.sum(zv * zv, axis=-1)
    return float(eps / (n - 1) * np.dot(np.asarray(omega, dtype=np.float64), per))


def gap_change(
    beta_ok: ArrayLike,
    beta_bad: ArrayLike,
    n_classes: int,
    error_rate: float,
    omega_ok: float = 1.0,
    omega_bad: float = 1.0,
    sign: int = 1,
    kappa_reading: KappaReading = "unsquared",
    reading: GapReading = "printed",
) -> Array:
    """Equation (10): the change of the correct-sample gap ``beta_ok - f(beta_ok)`` under FGSM.

    Printed: ``-[(1-e) W_ok (b_ok - f)^2 + e W_bad (b_bad - g)^2]
    - 2 (N-2)/(N-1) e W_bad (b_bad - g)(g - psi)``.
    Exact substitution of (4, 5) into (9) adds ``- 2 (N-2)/(N-1) e W_bad (g - psi)^2``.
    ``W = Omega(eps)``: the paper's group sums, which already carry the factor eps.

    Args:
        beta_ok, beta_bad: broadcastable arrays.
        n_classes: N.
        error_rate: e.
        omega_ok, omega_bad: ``Omega_ok(eps)``, ``Omega_bad(eps)`` (>= 0).
        sign, kappa_reading: the closed forms used.
        reading: ``"printed"`` or ``"exact"``.

    Returns:
        Broadcast-shape gap change (logit units).
    """
    n = _check_n(n_classes)
    if reading not in GAP_READINGS:
        raise ValueError(f"reading={reading!r}: expected one of {GAP_READINGS}")
    bo, bb = np.broadcast_arrays(_beta(beta_ok), _beta(beta_bad))
    gap_ok = bo - f(bo, n, sign)
    gv = g(bb, n, sign, kappa_reading)
    pv = psi(bb, n, sign, kappa_reading)
    e = error_rate
    coupling = 2.0 * (n - 2) / (n - 1) * e * omega_bad
    out = -((1.0 - e) * omega_ok * gap_ok**2 + e * omega_bad * (bb - gv) ** 2)
    out = out - coupling * (bb - gv) * (gv - pv)
    if reading == "exact":
        out = out - coupling * (gv - pv) ** 2
    return out


def relative_gap_change(
    beta_ok: ArrayLike,
    beta_bad: ArrayLike,
    n_classes: int,
    error_rate: float,
    omega_ok: float = 1.0,
    omega_bad: float = 1.0,
    sign: int = 1,
    kappa_reading: KappaReading = "unsquared",
    reading: GapReading = "printed",
) -> Array:
    """Figure C.3: ``gap_change / (beta_ok - f(beta_ok))`` (dimensionless)."""
    bo = _beta(beta_ok)
    change = gap_change(bo, beta_bad, n_classes, error_rate, omega_ok, omega_bad, sign, kappa_reading, reading)
    return change / (bo - f(bo, n_classes, sign))
