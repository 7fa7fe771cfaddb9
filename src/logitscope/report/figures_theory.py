"""Appendix C's figures C.1-C.3 and the measured gap change under FGSM, drawn from a stored
theory folder (`logitscope.theory.stored`: ``theory.json`` and ``fgsm_gap.npz``).

Figures are built on `matplotlib.figure.Figure` directly (Agg, no display, no global pyplot
state) and written atomically as PNG. The curves of C.1-C.3 are analytic
(`logitscope.theory.appendix_c`); their parameters and thresholds come from ``theory.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from logitscope.fileio.errors import read_json
from logitscope.report.figures import save_figure
from logitscope.store.outputs import THEORY_JSON
from logitscope.theory import appendix_c as ac
from logitscope.theory.stored import GAP_NPZ, load_gap_results

C_DPI = 100
"""Resolution of figures C.1-C.3."""
GAP_DPI = 120
"""Resolution of the measured gap-change figure."""

_SIGN_TAG = {1: "+", -1: "-"}


def _masked(values: np.ndarray, limit: float = 40.0) -> np.ndarray:
    """NaN where a curve runs off to a pole, so that the plot breaks instead of joining."""
    return np.where(np.abs(values) > limit, np.nan, values)


def _vline(ax, x: float, label: str, **kw) -> None:
    if np.isfinite(x):
        ax.axvline(x, linestyle="--", linewidth=1, label=label, **kw)


def figure_c1(n_classes: int, found: Mapping[str, float], beta_max: float = 10.0) -> Figure:
    """Figure C.1: the constraints of (4) and (5) on beta and the thresholds they imply.

    Panels: the correct case (beta against f_pm); the wrong case for each kappa reading
    (beta against g_pm and psi_pm); the margins ``beta - max(g, psi)`` and
    ``beta - max(|g|, |psi|)`` of the + branch, whose last zero is the threshold.

    Args:
        n_classes: N.
        found: threshold on beta by name, as in ``appendix_c.thresholds(n_classes)`` (NaN
            where there is none).
        beta_max: right end of the beta axis.
    """
    n = n_classes
    beta = np.linspace(0.02, beta_max, 2000)
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(2, 2)
    ylim = (-10.0, 12.0)

    ax = axes[0, 0]
    ax.plot(beta, beta, color="k", linewidth=1, label="beta")
    for sign, color in ((1, "C0"), (-1, "C1")):
        ax.plot(beta, _masked(ac.f(beta, n, sign)), color=color, label=f"f{_SIGN_TAG[sign]}")
        _vline(
            ax,
            found[f"correct{_SIGN_TAG[sign]}/literal"],
            f"beta > f{_SIGN_TAG[sign]} from here",
            color=color,
        )
    ax.set(title=f"(4) correctly classified, N={n}", xlabel="beta", ylabel="logit", ylim=ylim)
    ax.legend(fontsize=8)

    for ax, reading in ((axes[0, 1], "unsquared"), (axes[1, 0], "squared")):
        ax.plot(beta, beta, color="k", linewidth=1, label="beta")
        for sign, style in ((1, "-"), (-1, ":")):
            tag = _SIGN_TAG[sign]
            ax.plot(beta, _masked(ac.g(beta, n, sign, reading)), "C2" + style, label=f"g{tag}")
            ax.plot(beta, _masked(ac.psi(beta, n, sign, reading)), "C3" + style, label=f"psi{tag}")
        _vline(ax, found[f"wrong+/literal/{reading}"], "literal (+)", color="C4")
        _vline(ax, found[f"wrong+/magnitude/{reading}"], "magnitudes (+)", color="C5")
        _vline(ax, ac.PAPER_THRESHOLD, "paper: 3.5", color="0.5", alpha=0.7)
        ax.set(title=f"(5) misclassified, kappa {reading}", xlabel="beta", ylabel="logit", ylim=ylim)
        ax.legend(fontsize=8, ncol=2)

    ax = axes[1, 1]
    for reading, color in (("unsquared", "C0"), ("squared", "C1")):
        for adm, style in (("literal", "-"), ("magnitude", "--")):
            margin = ac.constraint_margin(beta, n, "wrong", 1, adm, reading)
            ax.plot(beta, _masked(margin), color=color, linestyle=style, label=f"{adm}, kappa {reading}")
            thr = found[f"wrong+/{adm}/{reading}"]
            if np.isfinite(thr):
                ax.plot([thr], [0.0], "o", color=color)
    ax.axhline(0.0, color="k", linewidth=0.8)
    _vline(ax, ac.PAPER_THRESHOLD, "paper: 3.5", color="0.5")
    ax.set(title="margin beta - bound, + branch (admissible > 0)", xlabel="beta", ylim=(-6, 8))
    ax.legend(fontsize=8)
    return fig


def _beta_grid(
    ok_range: tuple[float, float], bad_range: tuple[float, float], n_grid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The axes of figures C.2 and C.3 (``beta_ok``, ``beta_bad``) and their ``(n_grid, n_grid)`` mesh."""
    bo, bb = np.linspace(*ok_range, n_grid), np.linspace(*bad_range, n_grid)
    grid_ok, grid_bad = np.meshgrid(bo, bb, indexing="xy")
    return bo, bb, grid_ok, grid_bad


def figure_c2(
    n_classes: int,
    error_rate: float,
    beta_ok_range: tuple[float, float] = (0.2, 15.0),
    beta_bad_range: tuple[float, float] = (ac.PAPER_THRESHOLD, 15.0),
    n_grid: int = 150,
) -> Figure:
    """Figure C.2: the mean-field loss over ``(beta_ok, beta_bad)`` at the paper's + branch.

    Right panel: each group's exact loss at the closed-form points (both branches) against the
    infimum of the exact loss over ``S_N`` (0 for correct, ln 2 for misclassified samples).

    Args:
        n_classes: N.
        error_rate: e.
        beta_ok_range, beta_bad_range: axis ranges.
        n_grid: points per axis.
    """
    n = n_classes
    bo, bb, grid_ok, grid_bad = _beta_grid(beta_ok_range, beta_bad_range, n_grid)
    loss = ac.mean_field_loss(grid_ok, grid_bad, n, error_rate)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    cs = ax.contourf(grid_ok, grid_bad, loss, levels=24, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="mean-field loss (nats)")
    ax.set(
        title=f"C.2 mean-field loss, N={n}, error rate {error_rate:g}",
        xlabel="beta_ok (correct)",
        ylabel="beta_bad (misclassified)",
    )
    beta = np.linspace(0.2, beta_bad_range[1], 600)
    for sign, style in ((1, "-"), (-1, ":")):
        tag = _SIGN_TAG[sign]
        # only where the closed-form point lies in S_N (its entries below beta)
        inside_ok = ac.constraint_margin(beta, n, "correct", sign) > 0
        inside_bad = ac.constraint_margin(beta, n, "wrong", sign) > 0
        good = ac.correct_loss(beta, ac.f(beta, n, sign), n)
        ax2.plot(beta, np.where(inside_ok, good, np.nan), "C0" + style, label=f"correct, f{tag}")
        bad = ac.wrong_loss(beta, ac.g(beta, n, sign), ac.psi(beta, n, sign), n)
        ax2.plot(beta, np.where(inside_bad, bad, np.nan), "C3" + style, label=f"misclassified, g{tag}, psi{tag}")
    ax2.axhline(0.0, color="C0", linewidth=0.8, alpha=0.6)
    ax2.axhline(np.log(2.0), color="C3", linewidth=0.8, alpha=0.6, label="infimum ln 2 over S_N")
    ax2.set(title="exact loss at the closed forms in S_N", xlabel="beta", ylabel="loss (nats)", ylim=(-0.5, 15.0))
    ax2.legend(fontsize=8)
    return fig


def figure_c3(
    n_classes: int,
    error_rate: float,
    eps: float = 0.1,
    beta_ok_range: tuple[float, float] = (0.5, 15.0),
    beta_bad_range: tuple[float, float] = (ac.PAPER_THRESHOLD, 15.0),
    n_grid: int = 150,
) -> Figure:
    """Figure C.3: relative gap change ``delta gap / gap`` from (10), printed and exact.

    ``Omega_ok(eps) = Omega_bad(eps) = eps`` (unit-length inputs, unit weights per group).

    Args:
        n_classes: N.
        error_rate: e.
        eps: attack strength.
        beta_ok_range, beta_bad_range: axis ranges.
        n_grid: points per axis.
    """
    n = n_classes
    bo, bb, grid_ok, grid_bad = _beta_grid(beta_ok_range, beta_bad_range, n_grid)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, reading in zip(axes, ac.GAP_READINGS, strict=True):
        rel = ac.relative_gap_change(grid_ok, grid_bad, n, error_rate, eps, eps, reading=reading)
        cs = ax.contourf(grid_ok, grid_bad, rel, levels=24, cmap="magma")
        fig.colorbar(cs, ax=ax, label="delta gap / gap")
        ax.set(
            title=f"C.3 (10) {reading}: delta gap / gap, eps={eps:g}, e={error_rate:g}",
            xlabel="beta_ok",
            ylabel="beta_bad",
        )
    return fig


def figure_gap_change(results_by_name: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Measured logit-gap change under FGSM against the clean gap, per model.

    Left: change against gap for correctly classified samples, with the fitted law
    ``slope * gap^2 + intercept``. Right: measured change against the linearised prediction.

    Args:
        results_by_name: ``{"ST": measure_gap_change(...), "AT": ...}``.
    """
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    lo, hi = np.inf, -np.inf
    for i, (name, res) in enumerate(results_by_name.items()):
        color = f"C{i}"
        ok = np.asarray(res["correct"], dtype=bool)
        gap = np.asarray(res["gap_before"])[ok]
        change = np.asarray(res["change"])[ok]
        ax.scatter(gap, change, s=6, alpha=0.4, color=color, label=f"{name} (n={ok.sum()})")
        if gap.size:
            curve = np.linspace(0.0, float(gap.max()), 200)
            slope, icpt = float(res["fit_slope"]), float(res["fit_intercept"])
            r2 = float(res["fit_r2"])
            ax.plot(
                curve,
                slope * curve**2 + icpt,
                color=color,
                label=f"{name}: {slope:.3g} gap^2 + {icpt:.3g} (R^2 {r2:.2f})",
            )
        pred = np.asarray(res["predicted_linear"])[ok]
        ax2.scatter(pred, change, s=6, alpha=0.4, color=color, label=name)
        if pred.size:
            lo = min(lo, float(pred.min()), float(change.min()))
            hi = max(hi, float(pred.max()), float(change.max()))
    if np.isfinite(lo):
        ax2.plot([lo, hi], [lo, hi], color="k", linewidth=0.8, label="measured = linearised")
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set(title="FGSM: gap change vs clean gap", xlabel="clean gap z_y - max_{j != y} z_j", ylabel="gap change")
    ax2.set(title="measured vs linearised (first order in eps)", xlabel="linearised change", ylabel="measured change")
    ax.legend(fontsize=8)
    ax2.legend(fontsize=8)
    return fig


def _thresholds(theory: Mapping[str, Any]) -> dict[str, float]:
    """``theory.json``'s threshold table as name -> value (NaN where JSON holds null)."""
    out = {}
    for name, entry in theory["thresholds"].items():
        value = entry.get("threshold")
        out[name] = float(value) if value is not None else math.nan
    return out


def draw_theory_figures(theory_dir: Path, folder: Path) -> dict[str, Path]:
    """Draw every figure the stored theory folder has data for into ``folder``.

    Reads only ``theory_dir``'s ``theory.json`` (for ``fig_c1``, ``fig_c2``, ``fig_c3``) and
    ``fgsm_gap.npz`` (for ``fig_fgsm_gap``); a missing file means its figures are not drawn.

    Args:
        theory_dir: a folder written by `logitscope.theory.model.write_theory`.
        folder: where the PNGs go (created if missing; may be ``theory_dir``).

    Returns:
        Figure name (``"fig_c1"``, ..., ``"fig_fgsm_gap"``) -> path of the PNG, for those drawn.

    Raises:
        DamagedFileError: a stored file exists but cannot be read.
    """
    theory_dir, folder = Path(theory_dir), Path(folder)
    drawn: dict[str, Path] = {}
    if (theory_dir / THEORY_JSON).is_file():
        theory = read_json(theory_dir / THEORY_JSON, expect=dict)
        n = int(theory["n_classes"])
        error_rate, eps = float(theory["options"]["error_rate"]), float(theory["options"]["eps"])
        figs = {
            "fig_c1": lambda: figure_c1(n, _thresholds(theory)),
            "fig_c2": lambda: figure_c2(n, error_rate),
            "fig_c3": lambda: figure_c3(n, error_rate, eps),
        }
        for name, make in figs.items():
            drawn[name] = save_figure(make(), folder / f"{name}.png", dpi=C_DPI)
    if (theory_dir / GAP_NPZ).is_file():
        gaps = load_gap_results(theory_dir / GAP_NPZ)
        drawn["fig_fgsm_gap"] = save_figure(figure_gap_change(gaps), folder / "fig_fgsm_gap.png", dpi=GAP_DPI)
    return drawn
