"""The checks appendix C did not make, computed numerically.

The paper states that ``f_pm (1 - y)`` (correct samples) and ``g_pm y + psi_pm (1 - phi - y)``
(misclassified samples) are stationary points of expansion (3) on the slice
``S_N(beta phi_hat) = {u : u_top = 0, max_i u_i < beta}``. Here we measure, rather than assume:

- the gradient of (3) and of the exact loss at those points, projected on the constraint
  ``u_top = 0`` (its Lagrange multiplier absorbs the ``top`` component);
- the stationary points that (3) really has, by root finding from many starts;
- the infimum of the exact loss over ``S_N(v)``;
- that (9) is (8) averaged over the attacked sample's label and runner-up class;
- the sign claims made after (10).

Conventions are those of ``appendix_c.closed_form_u``: ``top = 0``, ``label = 0`` (correct) or
1 (wrong); vectors are ``(N,)`` float64 logit displacements.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize, root

from logitscope.theory import appendix_c as ac

logger = logging.getLogger(__name__)

Array = NDArray[np.float64]


def _label(case: ac.Case) -> int:
    if case not in ("correct", "wrong"):
        raise ValueError(f"case={case!r}: expected 'correct' or 'wrong'")
    return ac.case_label(case)


def _embed(w: ArrayLike) -> Array:
    return np.concatenate([[0.0], np.asarray(w, dtype=np.float64)])


def first_order_norm(beta: float, n_classes: int, case: ac.Case) -> float:
    """``|P (h - y)|``: the size of (3)'s gradient at ``u = 0``, the scale of the residuals."""
    lab = _label(case)
    return float(np.linalg.norm((ac.h(beta, n_classes) - np.eye(n_classes)[lab])[1:]))


@dataclass(frozen=True)
class Residual:
    """Projected gradients at one of the paper's closed-form points.

    Attributes:
        case, sign, kappa_reading, beta: which point.
        values: ``[f]`` (correct) or ``[g, psi]`` (wrong), in logit units.
        in_domain: ``max_i u_i < beta`` (the point lies in ``S_N``), False if not real.
        expansion_abs, exact_abs: ``|P grad|`` of (3) and of the exact loss.
        expansion_rel, exact_rel: the same divided by ``first_order`` (1 means "as far from
            stationary as ``u = 0``"; 0 means stationary).
        first_order: ``|P (h - y)|``.
    """

    case: str
    sign: int
    kappa_reading: str | None
    beta: float
    values: list[float]
    in_domain: bool
    expansion_abs: float
    expansion_rel: float
    exact_abs: float
    exact_rel: float
    first_order: float


def closed_form_residuals(
    betas: ArrayLike,
    n_classes: int,
    kappa_readings: tuple[ac.KappaReading, ...] = ac.KAPPA_READINGS,
) -> list[Residual]:
    """Are (4) and (5) stationary? Projected gradients of (3) and of the exact loss there.

    Args:
        betas: 1-D values of beta.
        n_classes: N.
        kappa_readings: readings of kappa to test for the wrong case.

    Returns:
        One ``Residual`` per (case, branch, reading, beta).
    """
    out: list[Residual] = []
    e_top = np.eye(n_classes)[0]
    for beta in np.atleast_1d(np.asarray(betas, dtype=np.float64)):
        b = float(beta)
        for case, readings in (("correct", (None,)), ("wrong", kappa_readings)):
            lab = _label(case)
            scale = first_order_norm(b, n_classes, case)
            for sign in (1, -1):
                for reading in readings:
                    u = ac.closed_form_u(b, n_classes, case, sign, reading or "unsquared")
                    values = [float(u[1])] if case == "correct" else [float(u[1]), float(u[-1])]
                    if not np.all(np.isfinite(u)):
                        nan = float("nan")
                        out.append(Residual(case, sign, reading, b, values, False, nan, nan, nan, nan, scale))
                        continue
                    g3 = float(np.linalg.norm(ac.expansion3_grad(b, u, 0, lab)[1:]))
                    gx = float(np.linalg.norm(ac.cross_entropy_grad(b * e_top + u, lab)[1:]))
                    out.append(
                        Residual(
                            case,
                            sign,
                            reading,
                            b,
                            values,
                            bool(np.max(u) < b),
                            g3,
                            g3 / scale,
                            gx,
                            gx / scale,
                            scale,
                        )
                    )
    return out


def ray_stationary_f(beta: ArrayLike, n_classes: int, sign: int = 1) -> Array:
    """Stationary points of (3) on the correct-case ray ``u = f (1 - y)``, derived here.

    On that ray every projected component of (3)'s gradient equals
    ``a [1 + (1-A) f + (1-A)(1/2 - A) f^2]`` with ``a = 1/(e^beta + N - 1)``, ``A = (N-1) a``, so
    ``f^2 + 2 (1+E1)/(1-E1) f + 2 (1+E1)^2/(1-E1) = 0``:
    ``f_pm = (1+E1)/(1-E1) [-1 pm sqrt(2 E1 - 1)]``. Real only for ``E1 >= 1/2``, i.e.
    ``beta <= ln(2 (N-1))``; NaN beyond. (The paper's (4) has the same linear coefficient but
    the constant ``-2 e^-2beta / (1-E1)`` instead.) Checked against root finding in the tests.

    Args:
        beta: any shape.
        n_classes: N.
        sign: +1 or -1.

    Returns:
        Array of ``beta``'s shape.
    """
    b = np.asarray(beta, dtype=np.float64)
    e1 = (n_classes - 1) * np.exp(-b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 + e1) / (1.0 - e1) * (-1.0 + sign * np.sqrt(2.0 * e1 - 1.0))


@dataclass(frozen=True)
class StationaryPoint:
    """A stationary point of (3) on ``u_top = 0``, found by root finding.

    Attributes:
        u: ``(N,)`` the point (``u[0] = 0``).
        residual: ``|P grad (3)|`` there.
        morse_index: number of negative eigenvalues of the projected Hessian (0: a minimum).
        in_domain: ``max_i u_i < beta`` (inside ``S_N``).
        relative_size: ``|u| / beta`` (the expansion assumes it small).
        expansion_loss, exact_loss: (3) and the exact loss there (nats).
        symmetric: the point has the paper's form (equal entries off ``top`` and ``label``).
    """

    u: list[float]
    residual: float
    morse_index: int
    in_domain: bool
    relative_size: float
    expansion_loss: float
    exact_loss: float
    symmetric: bool


def _canonical(u: Array, lab: int) -> Array:
    """Representative modulo the permutations of the classes other than top and label."""
    keep = u[: lab + 1]
    return np.concatenate([keep, np.sort(u[lab + 1 :])])


def stationary_points(
    beta: float,
    n_classes: int,
    case: ac.Case,
    n_starts: int = 24,
    seed: int = 0,
    scales: tuple[float, ...] = (1.0, 3.0, 10.0),
    tol: float = 1e-10,
) -> list[StationaryPoint]:
    """Stationary points of (3) on ``u_top = 0`` by Newton-type root finding (MINPACK hybr).

    Starts: the paper's closed forms (both branches, both kappa readings) and ``n_starts``
    Gaussian points spread over ``scales``. Roots are kept when ``|P grad| <= tol * |P (h-y)|``
    and reported once per orbit of the symmetry that permutes the other classes.

    Args:
        beta: largest logit.
        n_classes: N.
        case: ``"correct"`` or ``"wrong"``.
        n_starts: random starts.
        seed: seeds the starts.
        scales: standard deviations of the random starts (logit units).
        tol: relative residual for accepting a root.

    Returns:
        Distinct points, sorted by (3)'s value.
    """
    lab = _label(case)
    n = n_classes
    rng = np.random.default_rng(seed)
    scale = first_order_norm(beta, n, case)

    def fun(w: Array) -> Array:
        return ac.expansion3_grad(beta, _embed(w), 0, lab)[1:]

    def jac(w: Array) -> Array:
        return ac.expansion3_hessian(beta, _embed(w), 0)[1:, 1:]

    starts = [ac.closed_form_u(beta, n, case, sign, reading)[1:] for sign in (1, -1) for reading in ac.KAPPA_READINGS]
    starts += [rng.normal(scale=scales[i % len(scales)], size=n - 1) for i in range(n_starts)]
    keys: list[Array] = []
    points: list[StationaryPoint] = []
    for w0 in starts:
        if not np.all(np.isfinite(w0)):
            continue
        sol = root(fun, w0, jac=jac, method="hybr")
        res = float(np.linalg.norm(fun(sol.x)))
        if not (np.all(np.isfinite(sol.x)) and res <= tol * scale):
            continue
        u = _embed(sol.x)
        key = _canonical(u, lab)
        if any(np.allclose(key, k, rtol=1e-7, atol=1e-7) for k in keys):
            continue
        keys.append(key)
        hess = jac(sol.x)
        others = u[lab + 1 :]
        points.append(
            StationaryPoint(
                u=[float(v) for v in u],
                residual=res,
                morse_index=int(np.sum(np.linalg.eigvalsh(hess) < 0)),
                in_domain=bool(np.max(u) < beta),
                relative_size=float(np.linalg.norm(u) / beta),
                expansion_loss=float(ac.expansion3(beta, u, 0, lab)),
                exact_loss=float(ac.cross_entropy(beta * np.eye(n)[0] + u, lab)),
                symmetric=bool(np.ptp(others) <= 1e-7 * max(1.0, np.max(np.abs(others)))),
            )
        )
    points.sort(key=lambda p: p.expansion_loss)
    logger.debug(
        "(3), %s, beta=%g: %d stationary points, %d in S_N", case, beta, len(points), sum(p.in_domain for p in points)
    )
    return points


@dataclass(frozen=True)
class Infimum:
    """The infimum of the exact loss over ``S_N(beta e_top)``.

    Attributes:
        case, beta: which slice.
        infimum: the analytical infimum: 0 (correct) or ``ln 2`` (wrong), never attained: the
            projected gradient of the exact loss has a component ``softmax_i > 0`` for every
            class other than top and label (and ``softmax_label - 1 < 0`` for the label), so
            the exact loss has no stationary point on the slice at all.
        box: ``(lower, upper)``: the box ``lower <= u_i <= upper = beta - gap`` searched.
        box_minimum: its analytical minimum (a corner of the box).
        numeric_minimum, numeric_argmin: what L-BFGS-B finds in the box.
        closed_form_losses: the exact loss at the paper's points, ``{"+": .., "-": ..}``.
        closed_form_in_domain: whether those points lie in ``S_N`` (a point outside it can
            have a loss below the infimum).
    """

    case: str
    beta: float
    infimum: float
    box: tuple[float, float]
    box_minimum: float
    numeric_minimum: float
    numeric_argmin: list[float]
    closed_form_losses: dict[str, float]
    closed_form_in_domain: dict[str, bool]


def exact_infimum(
    beta: float,
    n_classes: int,
    case: ac.Case,
    lower: float = -60.0,
    gap: float = 1e-6,
    n_starts: int = 2,
    seed: int = 0,
) -> Infimum:
    """Minimise the exact loss over ``{u_top = 0, lower <= u_i <= beta - gap}``.

    Args:
        beta: largest logit.
        n_classes: N.
        case: ``"correct"`` or ``"wrong"``.
        lower: the box's lower edge (the infimum is approached as it goes to -inf).
        gap: distance kept from the strict bound ``u_i < beta``.
        n_starts: random starts besides ``u = 0`` and the paper's closed forms.
        seed: seeds the starts.

    Returns:
        An ``Infimum``.
    """
    lab = _label(case)
    n = n_classes
    upper = beta - gap
    e_top = np.eye(n)[0]

    def fun(w: Array) -> tuple[float, Array]:
        z = beta * e_top + _embed(w)
        return float(ac.cross_entropy(z, lab)), ac.cross_entropy_grad(z, lab)[1:]

    rng = np.random.default_rng(seed)
    starts = [np.zeros(n - 1)]
    starts += [np.clip(ac.closed_form_u(beta, n, case, s)[1:], lower, upper) for s in (1, -1)]
    starts += [rng.uniform(lower / 10.0, upper, size=n - 1) for _ in range(n_starts)]
    best_val, best_w = math.inf, np.zeros(n - 1)
    for w0 in starts:
        if not np.all(np.isfinite(w0)):
            continue
        sol = minimize(
            fun,
            w0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(lower, upper)] * (n - 1),
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 500},
        )
        if sol.fun < best_val:
            best_val, best_w = float(sol.fun), sol.x
    corner = np.full(n - 1, lower)
    if case == "wrong":
        corner[0] = upper
    box_min = float(ac.cross_entropy(beta * e_top + _embed(corner), lab))
    closed: dict[str, float] = {}
    inside: dict[str, bool] = {}
    for s, tag in ((1, "+"), (-1, "-")):
        u = ac.closed_form_u(beta, n, case, s)
        finite = bool(np.all(np.isfinite(u)))
        closed[tag] = float(ac.cross_entropy(beta * e_top + u, lab)) if finite else float("nan")
        inside[tag] = finite and bool(np.max(u) < beta)
    return Infimum(
        case=case,
        beta=float(beta),
        infimum=0.0 if case == "correct" else math.log(2.0),
        box=(float(lower), float(upper)),
        box_minimum=box_min,
        numeric_minimum=best_val,
        numeric_argmin=[float(v) for v in _embed(best_w)],
        closed_form_losses=closed,
        closed_form_in_domain=inside,
    )


def expansion_error_order(
    beta: float, n_classes: int, case: ac.Case, seed: int = 0, radii: ArrayLike | None = None
) -> tuple[float, Array, Array]:
    """Fit the order p of ``|L_exact(beta e_top + t d) - (3)(t d)| ~ t^p`` (expect 4).

    Args:
        beta: largest logit.
        n_classes: N.
        case: which label.
        seed: draws the unit direction d.
        radii: values of t (default: 8 points from 0.02 to 0.2).

    Returns:
        ``(p, t, error)``: fitted log-log slope, radii and errors.
    """
    lab = _label(case)
    t = np.geomspace(0.02, 0.2, 8) if radii is None else np.asarray(radii, dtype=np.float64)
    d = np.random.default_rng(seed).normal(size=n_classes)
    d /= np.linalg.norm(d)
    u = t[:, None] * d
    z = beta * np.eye(n_classes)[0] + u
    err = np.abs(ac.cross_entropy(z, lab) - ac.expansion3(beta, u, 0, lab))
    slope = float(np.polyfit(np.log(t), np.log(err), 1)[0])
    return slope, t, err


def eq9_from_eq8(z: ArrayLike, omega: ArrayLike, eps: float) -> tuple[float, float]:
    """(9) against (8) averaged over the attacked sample's label k and runner-up j != k.

    For each label k, (8) gives ``delta z``; the gap change to class j is
    ``delta z_k - delta z_j``; averaging over j != k and then over k must give (9).

    Args:
        z: ``(M, N)`` logits of the training samples.
        omega: ``(M,)`` weights.
        eps: attack strength.

    Returns:
        ``(averaged, eq9)``: the average of (8) and the value of (9).
    """
    zv = np.asarray(z, dtype=np.float64)
    n = zv.shape[-1]
    total = 0.0
    for k in range(n):
        dz = ac.logit_response_eq8(zv, k, omega, eps)
        total += dz[k] - (dz.sum() - dz[k]) / (n - 1)
    return total / n, ac.gap_change_eq9(zv, omega, eps)


def sign_checks(
    n_classes: int,
    beta_bad_min: float = ac.PAPER_THRESHOLD,
    beta_max: float = 30.0,
    error_rates: tuple[float, ...] = (0.01, 0.1, 0.3),
    omega_ratios: tuple[float, ...] = (0.1, 1.0, 10.0),
    n_grid: int = 200,
) -> dict[str, dict[str, float]]:
    """The claims after (10): every quantity in it is positive for ``beta_bad > 3.5``, hence
    the correct-sample gap shrinks.

    On a grid ``beta_bad in (beta_bad_min, beta_max]``, ``beta_ok`` from the correct-case
    threshold to ``beta_max``, for each branch and kappa reading: the smallest values of
    ``beta_ok - f``, ``beta_bad - g`` and ``g - psi``, and the largest gap change of (10)
    printed and exact over the error rates and ``Omega_bad / Omega_ok`` ratios given.

    Returns:
        ``{"<sign>/<reading>": {statistic: value}}``.
    """
    n = n_classes
    out: dict[str, dict[str, float]] = {}
    bb = np.linspace(beta_bad_min, beta_max, n_grid + 1)[1:]
    for sign in (1, -1):
        thr_ok = ac.constraint_threshold(n, "correct", sign, "literal").threshold
        lo = thr_ok if np.isfinite(thr_ok) else beta_bad_min
        bo = np.linspace(lo, beta_max, n_grid + 1)[1:]
        for reading in ac.KAPPA_READINGS:
            gv = ac.g(bb, n, sign, reading)
            pv = ac.psi(bb, n, sign, reading)
            stats = {
                "min_gap_ok": float(np.nanmin(bo - ac.f(bo, n, sign))),
                "min_beta_bad_minus_g": float(np.nanmin(bb - gv)),
                "min_g_minus_psi": float(np.nanmin(gv - pv)),
                "max_g_minus_psi": float(np.nanmax(gv - pv)),
                "fraction_g_minus_psi_positive": float(np.mean(gv - pv > 0)),
            }
            grid_ok, grid_bad = np.meshgrid(bo, bb, indexing="ij")
            for gap_reading in ac.GAP_READINGS:
                worst = -math.inf
                frac = 0.0
                for e in error_rates:
                    for ratio in omega_ratios:
                        change = ac.gap_change(grid_ok, grid_bad, n, e, 1.0, ratio, sign, reading, gap_reading)
                        worst = max(worst, float(np.nanmax(change)))
                        frac = max(frac, float(np.mean(change > 0)))
                stats[f"max_gap_change_{gap_reading}"] = worst
                stats[f"fraction_positive_{gap_reading}"] = frac
            out[f"{'+' if sign > 0 else '-'}/{reading}"] = stats
    return out


def eq10_from_eq9(
    beta_ok: float,
    beta_bad: float,
    n_classes: int,
    error_rate: float,
    omega_ok: float = 1.0,
    omega_bad: float = 1.0,
    sign: int = 1,
    reading: ac.KappaReading = "unsquared",
    n_samples: int = 40,
    seed: int = 0,
) -> dict[str, float]:
    """Substitute the surrogate logits into (9) numerically and compare with (10).

    Builds a population of ``n_samples`` correct logits ``b_ok y + f (1 - y)`` and as many
    misclassified ones ``b_bad phi + g y + psi (1 - phi - y)`` with random labels, weighted so
    that the groups sum to ``(1-e) Omega_ok`` and ``e Omega_bad``, evaluates (9) on it (eps = 1:
    the Omegas carry eps), and returns it beside (10) printed and exact.

    Returns:
        ``{"eq9": .., "printed": .., "exact": ..}``.
    """
    n = n_classes
    rng = np.random.default_rng(seed)
    rows, weights = [], []
    fv = float(ac.f(beta_ok, n, sign))
    gv, pv = float(ac.g(beta_bad, n, sign, reading)), float(ac.psi(beta_bad, n, sign, reading))
    for _ in range(n_samples):
        label = int(rng.integers(n))
        z = np.full(n, fv)
        z[label] = beta_ok
        rows.append(z)
        weights.append((1.0 - error_rate) * omega_ok / n_samples)
        top, label = rng.choice(n, size=2, replace=False)
        z = np.full(n, pv)
        z[top], z[label] = beta_bad, gv
        rows.append(z)
        weights.append(error_rate * omega_bad / n_samples)
    eq9 = ac.gap_change_eq9(np.stack(rows), np.asarray(weights), 1.0)
    out = {"eq9": eq9}
    for gap_reading in ac.GAP_READINGS:
        out[gap_reading] = float(
            ac.gap_change(beta_ok, beta_bad, n, error_rate, omega_ok, omega_bad, sign, reading, gap_reading)
        )
    return out
