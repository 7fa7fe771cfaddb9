"""Section C.3: the Jacobian estimate from Fyodorov's constrained least squares, eq. (13).

Shapes: ``X`` is ``(M, F)`` (M = N_data samples as rows, F = N_feats features), ``Z~`` is
``(M, N)`` surrogate logits (N = N_classes), ``W`` is ``(M, N)`` standard Gaussian noise.
With ``A = [X^T X - lambda* 1]^-1`` (F x F):

- (13) ``omega = A X^T (Z~ - sigma0 W)`` minimises
  ``E = |X omega - (Z~ - sigma0 W)|^2 - lambda |omega|^2``; the printed energy has
  ``+ sigma0 W`` inside the norm, which is the same problem with W -> -W.
- ``lambda*`` lies below the smallest eigenvalue of ``X^T X`` and solves the trace condition
  ``c^2 F N = Tr(X A^2 X^T (Z~ Z~^T + s))``, with ``s = sigma0^2 N 1`` (the expectation over W;
  ``noise="printed"`` uses ``sigma0^2 1``).
- Logits ``Z = sigma0 W + X A X^T (Z~ - sigma0 W)``; with A held fixed the Jacobian of
  ``x^mu -> z^mu`` (sigma0 -> 0) is ``J_mj = (A X^T)_{j mu} z~^mu_m + (A X^T Z~)_{jm}`` and
  ``J J^T = Omega_{mu mu} z~ z~^T + Z~^T Omega Z~ + z~ (Omega Z~)_mu + (Omega Z~)_mu^T z~^T``
  with ``Omega = X A^2 X^T`` (M x M). The paper prints ``Z^T`` in the second term; ``Z~^T``
  is what the Jacobian gives (``jacobian_gram(..., reading="printed")`` keeps the printed one).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq

Array = NDArray[np.float64]
NoiseReading = Literal["expectation", "printed"]
GramReading = Literal["corrected", "printed"]


def _as2d(a: ArrayLike, name: str) -> Array:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    return arr


def _resolvent(x: Array, lam: float) -> Array:
    """``A = [X^T X - lam 1]^-1`` (F x F)."""
    gram = x.T @ x
    return np.linalg.inv(gram - lam * np.eye(gram.shape[0]))


def noise_variance_factor(n_classes: int, noise: NoiseReading = "expectation") -> float:
    """The ``s / sigma0^2`` factor: N (expectation of ``W W^T``) or 1 (as printed)."""
    if noise == "expectation":
        return float(n_classes)
    if noise == "printed":
        return 1.0
    raise ValueError(f"noise={noise!r}: expected 'expectation' or 'printed'")


def trace_condition(
    lam: float, x: ArrayLike, z_tilde: ArrayLike, sigma0: float = 0.0, noise: NoiseReading = "expectation"
) -> float:
    """``Tr(X A^2 X^T (Z~ Z~^T + s))`` at ``lambda = lam``, the expected ``|omega|^2``.

    Args:
        lam: Lagrange multiplier, below the smallest eigenvalue of ``X^T X``.
        x: ``(M, F)`` inputs.
        z_tilde: ``(M, N)`` surrogate logits.
        sigma0: noise standard deviation.
        noise: reading of ``s``.
    """
    xv, zv = _as2d(x, "x"), _as2d(z_tilde, "z_tilde")
    u, sv, _ = np.linalg.svd(xv, full_matrices=False)
    weights = np.sum((u.T @ zv) ** 2, axis=1) + sigma0**2 * noise_variance_factor(zv.shape[1], noise)
    d = sv**2
    return float(np.sum(d * weights / (d - lam) ** 2))


def smallest_eigenvalue(x: ArrayLike) -> float:
    """Smallest eigenvalue of ``X^T X`` (0 when ``M < F``)."""
    xv = _as2d(x, "x")
    return float(np.linalg.eigvalsh(xv.T @ xv)[0])


def lagrange_multiplier(
    x: ArrayLike,
    z_tilde: ArrayLike,
    c: float,
    sigma0: float = 0.0,
    noise: NoiseReading = "expectation",
) -> float:
    """``lambda*`` below the smallest eigenvalue of ``X^T X`` from ``c^2 F N = trace_condition``.

    The trace is increasing in ``lambda`` on ``(-inf, lambda_min)``, from 0 at ``-inf``, so
    the root is unique when it exists; it does not when ``X^T X`` is singular and the target
    exceeds the trace's finite limit at ``lambda_min``.

    Args:
        x: ``(M, F)`` inputs.
        z_tilde: ``(M, N)`` surrogate logits.
        c: the norm constant, ``|omega| = c sqrt(F N)``.
        sigma0: noise standard deviation.
        noise: reading of ``s``.

    Returns:
        ``lambda*``.

    Raises:
        ValueError: no solution below ``lambda_min``.
    """
    xv, zv = _as2d(x, "x"), _as2d(z_tilde, "z_tilde")
    target = c**2 * xv.shape[1] * zv.shape[1]
    lam_min = smallest_eigenvalue(xv)
    u, sv, _ = np.linalg.svd(xv, full_matrices=False)
    weights = np.sum((u.T @ zv) ** 2, axis=1) + sigma0**2 * noise_variance_factor(zv.shape[1], noise)
    d = sv**2

    def excess(t: float) -> float:
        # t = lambda_min - lambda > 0; the trace falls as t grows
        return float(np.sum(d * weights / (d - lam_min + t) ** 2)) - target

    scale = max(1.0, float(np.max(d)))
    t_small = 1e-14 * scale
    if excess(t_small) <= 0.0:
        raise ValueError(f"no lambda* below lambda_min={lam_min:.6g}: the trace stays below c^2 F N={target:.6g}")
    t_big = scale
    while excess(t_big) > 0.0:
        t_big *= 2.0
    t_star = brentq(excess, t_small, t_big, xtol=1e-15 * scale, rtol=4 * np.finfo(float).eps, maxiter=500)
    return lam_min - t_star


def omega(x: ArrayLike, z_tilde: ArrayLike, lam: float, noise: ArrayLike | None = None) -> Array:
    """Equation (13): ``omega = [X^T X - lam 1]^-1 X^T (Z~ - noise)``, ``(F, N)``.

    Args:
        x: ``(M, F)``.
        z_tilde: ``(M, N)``.
        lam: the Lagrange multiplier.
        noise: ``(M, N)`` the matrix ``sigma0 W`` (None: zero).
    """
    xv, zv = _as2d(x, "x"), _as2d(z_tilde, "z_tilde")
    rhs = zv if noise is None else zv - np.asarray(noise, dtype=np.float64)
    gram = xv.T @ xv
    return np.linalg.solve(gram - lam * np.eye(gram.shape[0]), xv.T @ rhs)


def energy(w: ArrayLike, x: ArrayLike, z_tilde: ArrayLike, lam: float, noise: ArrayLike | None = None) -> float:
    """``E = |X w - (Z~ - noise)|^2 - lam |w|^2``; (13) is its stationary point."""
    xv, zv = _as2d(x, "x"), _as2d(z_tilde, "z_tilde")
    wv = np.asarray(w, dtype=np.float64)
    rhs = zv if noise is None else zv - np.asarray(noise, dtype=np.float64)
    return float(np.sum((xv @ wv - rhs) ** 2) - lam * np.sum(wv**2))


def response_kernel(x: ArrayLike, lam: float) -> Array:
    """``Omega(X, lambda*) = X [X^T X - lambda* 1]^-2 X^T``, ``(M, M)``."""
    xv = _as2d(x, "x")
    xa = xv @ _resolvent(xv, lam)
    return xa @ xa.T


def fitted_logits(x: ArrayLike, z_tilde: ArrayLike, lam: float, noise: ArrayLike | None = None) -> Array:
    """``Z = noise + X A X^T (Z~ - noise)``, ``(M, N)``."""
    xv, zv = _as2d(x, "x"), _as2d(z_tilde, "z_tilde")
    nv = np.zeros_like(zv) if noise is None else np.asarray(noise, dtype=np.float64)
    return nv + xv @ omega(xv, zv, lam, nv)


def jacobian(x: ArrayLike, z_tilde: ArrayLike, lam: float, mu: int) -> Array:
    """``[Jac_{x^mu} z^mu]_{mj} = (A X^T)_{j mu} z~^mu_m + (A X^T Z~)_{jm}`` (A held fixed).

    Args:
        x: ``(M, F)``.
        z_tilde: ``(M, N)``.
        lam: the Lagrange multiplier.
        mu: the sample.

    Returns:
        ``(N, F)``.
    """
    xv, zv = _as2d(x, "x"), _as2d(z_tilde, "z_tilde")
    a = _resolvent(xv, lam)
    return np.outer(zv[mu], a @ xv[mu]) + (a @ xv.T @ zv).T


def jacobian_gram(x: ArrayLike, z_tilde: ArrayLike, lam: float, mu: int, reading: GramReading = "corrected") -> Array:
    """``J J^T`` by the paper's formula, ``(N, N)``.

    ``Omega_{mu mu} z~ z~^T + L^T Omega Z~ + z~ (Omega Z~)_mu + (Omega Z~)_mu^T z~^T`` with
    ``L = Z~`` (``"corrected"``) or ``L = Z``, the fitted logits (``"printed"``).
    """
    xv, zv = _as2d(x, "x"), _as2d(z_tilde, "z_tilde")
    if reading not in ("corrected", "printed"):
        raise ValueError(f"reading={reading!r}: expected 'corrected' or 'printed'")
    om = response_kernel(xv, lam)
    left = zv if reading == "corrected" else fitted_logits(xv, zv, lam)
    zt = zv[mu]
    oz = (om @ zv)[mu]
    return om[mu, mu] * np.outer(zt, zt) + left.T @ om @ zv + np.outer(zt, oz) + np.outer(oz, zt)


def jacobian_autograd(x: ArrayLike, z_tilde: ArrayLike, lam: float, mu: int, hold_resolvent: bool = True) -> Array:
    """The Jacobian of ``x^mu -> z^mu = Z~^T X A x^mu`` by torch autograd (float64).

    Args:
        x, z_tilde, lam, mu: as in ``jacobian``.
        hold_resolvent: keep ``A`` fixed (the paper's assumption); False recomputes
            ``A = [X^T X - lam]^-1`` from the perturbed X (lambda still fixed).

    Returns:
        ``(N, F)``.
    """
    import torch

    xv = torch.as_tensor(_as2d(x, "x"))
    zv = torch.as_tensor(_as2d(z_tilde, "z_tilde"))
    eye = torch.eye(xv.shape[1], dtype=xv.dtype)
    a_fixed = torch.linalg.inv(xv.T @ xv - lam * eye)

    def logits(row: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([xv[:mu], row[None], xv[mu + 1 :]])
        a = a_fixed if hold_resolvent else torch.linalg.inv(rows.T @ rows - lam * eye)
        return zv.T @ rows @ a @ row

    jac = torch.autograd.functional.jacobian(logits, xv[mu].clone())
    return jac.detach().numpy()
