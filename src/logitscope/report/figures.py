"""The paper's figures, one function each, drawn from analysis results and saved as PNG.

Every function takes the results of `logitscope.analysis` (arrays and small dataclasses) and a
path, writes the PNG atomically and returns the path. Figures are built on
`matplotlib.figure.Figure` directly (Agg, no display, no global pyplot state). The CIFAR-100
figures of appendix B are the same functions on CIFAR-100 results: B.4 is
`fig1_max_logit_evolution`, B.5 is `fig2a_gap_histograms` + `fig2b_adv_acc_by_gap`, B.6 is
`fig3d_average_overlap`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from logitscope.fileio.atomic import atomic_write_bytes
from logitscope.stats import mean_sd_axis

if TYPE_CHECKING:
    from logitscope.analysis.logit_stats import DistributionStats, GapAccuracy, Histogram
    from logitscope.analysis.neighbors import ConfidenceQuadrants, Neighbors
    from logitscope.analysis.ranks import (
        AverageOverlap,
        ErrorClassRank,
        RankDisagreement,
        RankScatter,
    )

DPI = 150
GROUP_COLORS = {
    "ST": "tab:blue",
    "AT": "tab:red",
    "AT-AT": "tab:red",
    "ST-ST": "tab:blue",
    "AT-ST": "tab:purple",
}
STAT_LABELS = {"max_logit": "max logit", "gap": "logit gap"}
QUADRANT_TITLES = {
    "at_low_st_high": "AT low, ST high",
    "at_high_st_high": "AT high, ST high",
    "at_low_st_low": "AT low, ST low",
    "at_high_st_low": "AT high, ST low",
}


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A blank figure of ``width`` x ``height`` inches, constrained layout by default."""
    return Figure(figsize=(width, height), layout=layout)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Render ``fig`` to PNG and write it atomically at ``path``; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def _color(key: str, i: int) -> str:
    return GROUP_COLORS.get(key, f"C{i}")


def _evolution_panel(ax: Axes, stats: DistributionStats, title: str) -> None:
    epochs = stats.epochs.astype(np.float64)
    if len(epochs) > 1:
        mids = 0.5 * (epochs[1:] + epochs[:-1])
        x = np.concatenate([[epochs[0] - (mids[0] - epochs[0])], mids, [epochs[-1] + (epochs[-1] - mids[-1])]])
    else:
        x = np.array([epochs[0] - 0.5, epochs[0] + 0.5])
    dens = stats.density
    # Each epoch's histogram scaled to its own peak: the shape per epoch, as in a ridgeline.
    shape = dens / np.maximum(dens.max(axis=1, keepdims=True), np.finfo(float).tiny)
    mesh = ax.pcolormesh(x, stats.edges, shape.T, cmap="magma", norm=PowerNorm(0.5, 0, 1))
    ax.plot(epochs, stats.mean, color="cyan", lw=1.2, label="mean")
    median = np.flatnonzero(np.isclose(stats.quantile_levels, 0.5))
    if median.size:
        ax.plot(epochs, stats.quantiles[:, median[0]], color="cyan", lw=1, ls="--", label="median")
    ax.set(title=title, xlabel="epoch", ylabel=STAT_LABELS.get(stats.statistic, stats.statistic))
    ax.legend(loc="upper left", fontsize=7, framealpha=0.6)
    ax.figure.colorbar(mesh, ax=ax, label="density / epoch peak", shrink=0.9)


def _evolution_figure(panels: Sequence[tuple[str, DistributionStats]], path: str | os.PathLike, title: str) -> Path:
    if not panels:
        raise ValueError("no panels: expected at least one (label, DistributionStats)")
    fig = new_figure(4.6 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (label, stats) in zip(axes, panels, strict=True):
        _evolution_panel(ax, stats, label)
    fig.suptitle(title)
    return save_figure(fig, path)


def fig1_max_logit_evolution(
    st: DistributionStats, at: DistributionStats, path: str | os.PathLike, dataset: str = ""
) -> Path:
    """Figure 1 / B.4: the max-logit distribution at every epoch, ST (A) beside AT (B)."""
    suffix = f" ({dataset}, {st.split})" if dataset else f" ({st.split})"
    return _evolution_figure(
        [("A) standard training", st), ("B) adversarial training", at)],
        path,
        "Max logit over training" + suffix,
    )


def figb1_gap_evolution(panels: Sequence[tuple[str, DistributionStats]], path: str | os.PathLike) -> Path:
    """Figure B.1: logit-gap distributions over epochs, e.g. ST train, AT train, AT test."""
    return _evolution_figure(panels, path, "Logit gap over training")


def fig2a_gap_histograms(st: Histogram, at: Histogram, path: str | os.PathLike, dataset: str = "") -> Path:
    """Figure 2A / B.5a: logit-gap histograms of AT and ST, mean ± sd over runs."""
    fig = new_figure(5.0, 3.6)
    ax = fig.subplots()
    for i, (name, h) in enumerate((("ST", st), ("AT", at))):
        mean, sd = mean_sd_axis(h.density)  # over runs (rows); sd NaN (no band) for one run
        epochs = ",".join(str(e) for e in sorted(set(h.epochs.tolist())))
        color = _color(name, i)
        ax.stairs(mean, h.edges, color=color, lw=1.5, label=f"{name} (epoch {epochs}, n={len(h.density)})")
        if len(h.density) > 1:
            ax.stairs(mean + sd, h.edges, baseline=mean - sd, fill=True, color=color, alpha=0.25)
    ax.set(
        xlabel="logit gap (max - second)",
        ylabel="density",
        title="Logit gaps" + (f" ({dataset})" if dataset else ""),
    )
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def fig2b_adv_acc_by_gap(at: GapAccuracy, path: str | os.PathLike, st: GapAccuracy | None = None) -> Path:
    """Figure 2B / B.5b: adversarial accuracy per clean-gap bin, mean ± sd over runs."""
    fig = new_figure(5.0, 3.6)
    ax = fig.subplots()
    for name, res, color in (("AT", at, "black"), ("ST", st, "tab:blue")):
        if res is None:
            continue
        mean, sd = res.mean, res.sd
        ax.plot(
            res.centers,
            mean,
            color=color,
            marker="o",
            ms=3,
            label=f"{name} (n={len(res.accuracy)})",
        )
        ax.fill_between(res.centers, mean - sd, mean + sd, color=color, alpha=0.2)
    ax.set(
        xlabel="clean logit gap (bin center; last bin open)",
        ylabel="adversarial accuracy",
        ylim=(-0.02, 1.02),
        title="Adversarial accuracy by logit gap",
    )
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def fig3a_rank_scatter(scatter: RankScatter, path: str | os.PathLike, class_name: str | None = None) -> Path:
    """Figure 3A: two models' confidence ranks of one class; far-apart images in colour."""
    fig = new_figure(4.2, 4.0)
    ax = fig.subplots()
    near = ~scatter.far
    ax.scatter(scatter.rank_a[near], scatter.rank_b[near], s=4, color="0.7", lw=0)
    diff = scatter.rank_a - scatter.rank_b
    ax.scatter(
        scatter.rank_a[scatter.far],
        scatter.rank_b[scatter.far],
        s=6,
        lw=0,
        c=diff[scatter.far],
        cmap="coolwarm",
        vmin=-len(diff),
        vmax=len(diff),
    )
    name = class_name if class_name is not None else f"class {scatter.cls}"
    ax.set(
        xlabel=f"{scatter.names[0]} confidence rank",
        ylabel=f"{scatter.names[1]} confidence rank",
        title=f"{name}: {scatter.far.mean():.1%} ranked > half apart",
        aspect="equal",
    )
    return save_figure(fig, path)


def fig3b_rank_disagreement(
    result: RankDisagreement, path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> Path:
    """Figure 3B: per class, the far-ranked fraction for each pair group, mean ± sd over pairs."""
    summary = result.summary()
    if not summary:
        raise ValueError("no model pairs: rank disagreement needs at least two models")
    k = len(result.classes)
    fig = new_figure(max(5.0, 0.45 * k + 2), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(summary)
    for i, (group, s) in enumerate(sorted(summary.items())):
        x = np.arange(k) + (i - (len(summary) - 1) / 2) * width
        ax.bar(
            x,
            100 * np.array(s["per_class_mean"]),
            width,
            yerr=100 * np.array(s["per_class_sd"]),
            color=_color(group, i),
            label=f"{group}: {100 * s['mean']:.1f}%" + (f" ± {100 * s['sd']:.1f}" if s["n_pairs"] > 1 else " (1 pair)"),
            capsize=2,
        )
    names = [class_names[c] if class_names is not None else str(c) for c in result.classes]
    long = k > 12 or max(len(n) for n in names) > 3
    ax.set_xticks(np.arange(k), names, rotation=45 if long else 0, fontsize=7)
    ax.set(ylabel="% images ranked > half apart", title="Confidence rank disagreement")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def fig3c_error_class_rank(
    results: Mapping[str, Sequence[ErrorClassRank]], path: str | os.PathLike, k_max: int = 10
) -> Path:
    """Figure 3C: share of wrong predictions at each rank k of the true class's average logits.

    Args:
        results: label (e.g. ``"ST natural"``, ``"AT adversarial"``) -> one result per run;
            bars are mean ± sd over runs.
        path: PNG path.
        k_max: ranks shown (the paper: 1..10).
    """
    results = {name: runs for name, runs in results.items() if runs}
    if not results:
        raise ValueError("no error-class results to plot")
    fig = new_figure(5.6, 3.6)
    ax = fig.subplots()
    width = 0.8 / len(results)
    for i, (name, runs) in enumerate(results.items()):
        frac = np.stack([r.fraction for r in runs])[:, :k_max]
        mean, sd = mean_sd_axis(frac)  # over runs; NaN (no error bar) for one run
        k = np.arange(1, frac.shape[1] + 1)
        x = k + (i - (len(results) - 1) / 2) * width
        ax.bar(
            x,
            mean,
            width,
            yerr=sd,
            label=name,
            capsize=2,
            color=_color(name.split()[0], i),
            alpha=1.0 if "natural" in name else 0.55,
        )
    ax.set_xticks(np.arange(1, min(k_max, len(next(iter(results.values()))[0].counts)) + 1))
    ax.set(
        xlabel="rank k of the predicted class in the true class's average logits",
        ylabel="fraction of errors",
        title="Error-class rank",
    )
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def fig3d_average_overlap(result: AverageOverlap, path: str | os.PathLike, dataset: str = "") -> Path:
    """Figure 3D / B.6: AO@k per pair group (solid), same-class baseline (dashed), mean ± sd."""
    fig = new_figure(5.0, 3.6)
    ax = fig.subplots()
    for i, (group, s) in enumerate(sorted(result.summary().items())):
        color = _color(group, i)
        for key, ls, label in (
            ("", "-", f"{group} (pairs={s['n_pairs']})"),
            ("baseline_", "--", None),
        ):
            mean = np.array(s[f"{key}mean"])
            sd = np.array(s[f"{key}sd"])
            ax.plot(result.k, mean, color=color, ls=ls, label=label)
            ax.fill_between(result.k, mean - sd, mean + sd, color=color, alpha=0.15)  # NaN sd (1 pair): none
    ax.plot([], [], color="0.4", ls="--", label="same-class baseline")
    ax.set(
        xlabel="k",
        ylabel="AO@k",
        ylim=(0, 1.02),
        title="Average overlap" + (f" ({dataset})" if dataset else ""),
    )
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _as_hwc(images: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` uint8 with C in {1, 3} -> ``(N, H, W, C)``."""
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"images {images.dtype} {images.shape}: expected uint8 (N, C, H, W) with C = 1 or 3")
    return np.transpose(images, (0, 2, 3, 1))


def _montage(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """Tile ``(n, H, W, C)`` uint8 images into one ``(rows*(H+pad), cols*(W+pad), C)`` picture."""
    n, h, w, c = images.shape
    rows = max(1, -(-n // cols))
    out = np.full((rows * (h + pad), cols * (w + pad), c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = images[i]
    return out


def _show(ax: Axes, picture: np.ndarray) -> None:
    if picture.shape[-1] == 1:
        ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(picture, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def figb2_confidence_quadrants(
    images: np.ndarray,
    quadrants: ConfidenceQuadrants,
    path: str | os.PathLike,
    class_name: str | None = None,
) -> Path:
    """Figure B.2: one class's images in four quadrants, AT confidence (x) by ST confidence (y).

    Args:
        images: ``(N, C, H, W)`` uint8 images of the split the quadrants index.
        quadrants: from `logitscope.analysis.neighbors.confidence_quadrants`.
        path: PNG path.
        class_name: title text (default: the class number).
    """
    hwc = _as_hwc(images)
    per = max((len(v) for v in quadrants.index.values()), default=1)
    cols = max(1, int(np.ceil(np.sqrt(per))))
    fig = new_figure(7.0, 7.0)
    axes = fig.subplots(2, 2)
    places = {
        "at_low_st_high": axes[0, 0],
        "at_high_st_high": axes[0, 1],
        "at_low_st_low": axes[1, 0],
        "at_high_st_low": axes[1, 1],
    }
    for name, ax in places.items():
        idx = quadrants.index[name]
        if len(idx):
            _show(ax, _montage(hwc[idx], cols))
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(QUADRANT_TITLES[name], fontsize=9)
    axes[1, 0].set_xlabel("AT low confidence")
    axes[1, 1].set_xlabel("AT high confidence")
    axes[0, 0].set_ylabel("ST high confidence")
    axes[1, 0].set_ylabel("ST low confidence")
    name = class_name if class_name is not None else f"class {quadrants.cls}"
    fig.suptitle(f"Confident images of {name}: AT (x) vs ST (y)")
    return save_figure(fig, path)


def figb3_neighbors(
    images: np.ndarray,
    neighbors: Neighbors,
    path: str | os.PathLike,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Figure B.3: each seed image (left) and its nearest images by logit cosine similarity,
    one block per model (e.g. ST centre, AT right).

    Args:
        images: ``(N, C, H, W)`` uint8 images of the split the neighbors index.
        neighbors: from `logitscope.analysis.neighbors.logit_neighbors`.
        path: PNG path.
        labels: ``(N,)`` classes; when given, a neighbor's frame is green if it shares its
            seed's class and orange if not.
        class_names: with ``labels``, each seed row is labelled with its class name.
    """
    hwc = _as_hwc(images)
    models = list(neighbors.index)
    n_seeds = len(neighbors.seeds)
    if n_seeds == 0 or not models:
        raise ValueError(f"{n_seeds} seeds and {len(models)} models: expected at least one each")
    k = neighbors.index[models[0]].shape[1]
    ratios = [1.0] + [0.35, *([1.0] * k)] * len(models)
    fig = new_figure(0.8 * sum(ratios), 0.8 * n_seeds + 0.5, layout=None)
    axes = fig.subplots(n_seeds, len(ratios), squeeze=False, width_ratios=ratios)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.02, top=0.9, wspace=0.06, hspace=0.06)
    for r, seed in enumerate(neighbors.seeds):
        _show(axes[r, 0], hwc[seed])
        if class_names is not None and labels is not None:
            axes[r, 0].set_ylabel(class_names[int(labels[seed])], fontsize=7)
        for m, model in enumerate(models):
            base = 1 + m * (k + 1)
            axes[r, base].axis("off")
            for j, idx in enumerate(neighbors.index[model][r]):
                ax = axes[r, base + 1 + j]
                _show(ax, hwc[idx])
                if labels is not None:
                    same = labels[idx] == labels[seed]
                    for spine in ax.spines.values():
                        spine.set(color="tab:green" if same else "tab:orange", linewidth=2)
    axes[0, 0].set_title("seed", fontsize=8)
    for m, model in enumerate(models):
        axes[0, 1 + m * (k + 1) + 1 + (k - 1) // 2].set_title(f"{model} neighbors", fontsize=8)
    return save_figure(fig, path)


# -- the analyze stage's figures, from its stored results ------------------------------------

LOGIT_FIGURES = (
    "fig1_max_logit_evolution",
    "figb1_gap_evolution",
    "fig2a_gap_histograms",
    "fig2b_adv_acc_by_gap",
    "fig3a_rank_scatter",
    "fig3b_rank_disagreement",
    "fig3c_error_class_rank",
    "fig3d_average_overlap",
    "figb2_confidence_quadrants",
    "figb3_neighbors",
)


def draw_logit_figures(
    summary: Mapping[str, Any], results: Mapping[str, Any], folder: str | os.PathLike, images: np.ndarray | None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Sections 4.1's and 4.3's figures from the analyze stage's stored results
    (`logitscope.analysis.analyze.read_analysis`) into ``folder``.

    Args:
        summary, results: the stage's numbers and its figures' inputs.
        images: ``(N, C, H, W)`` uint8 images of the analysed split, for figures B.2 and B.3
            (None: those two are not drawn).

    Returns:
        (figure name -> PNG path, figure name -> why it was not drawn).
    """
    folder = Path(folder)
    meta = results["meta"]
    if images is not None and len(images) != len(meta["labels"]):
        raise ValueError(f"{len(images)} images: expected {len(meta['labels'])}, the {summary.get('split')} split")
    label = ", ".join(x for x in (summary.get("dataset", ""), summary.get("split", "")) if x)
    names = meta.get("class_names")
    cname = names[meta["scatter_class"]] if names is not None else None
    skipped = {k: v for k, v in summary.get("skipped", {}).items() if k in LOGIT_FIGURES}
    draw = {
        "fig1_max_logit_evolution": lambda p: fig1_max_logit_evolution(
            results["max_logit_evolution"]["ST"], results["max_logit_evolution"]["AT"], p, meta["dataset"]
        ),
        "figb1_gap_evolution": lambda p: figb1_gap_evolution(results["gap_evolution"], p),
        "fig2a_gap_histograms": lambda p: fig2a_gap_histograms(
            results["gap_histograms"]["ST"], results["gap_histograms"]["AT"], p, label
        ),
        "fig3a_rank_scatter": lambda p: fig3a_rank_scatter(results["rank_scatter"], p, cname),
        "fig3b_rank_disagreement": lambda p: fig3b_rank_disagreement(results["rank_disagreement"], p, names),
        "fig3c_error_class_rank": lambda p: fig3c_error_class_rank(results["error_class_rank"], p),
        "fig3d_average_overlap": lambda p: fig3d_average_overlap(results["average_overlap"], p, label),
    }
    if "adv_acc_by_gap" in results:
        accs = results["adv_acc_by_gap"]
        draw["fig2b_adv_acc_by_gap"] = lambda p: fig2b_adv_acc_by_gap(accs["AT"], p, accs.get("ST"))
    if images is None:
        skipped["figb2_confidence_quadrants"] = skipped["figb3_neighbors"] = "the analysed images are not available"
    else:
        quads, neigh = results["confidence_quadrants"], results["neighbors"]
        draw["figb2_confidence_quadrants"] = lambda p: figb2_confidence_quadrants(images, quads, p, cname)
        draw["figb3_neighbors"] = lambda p: figb3_neighbors(images, neigh, p, meta["labels"], names)
    return {name: fn(folder / f"{name}.png") for name, fn in draw.items()}, skipped
