"""Figures of the distillation experiments: 4A, 4B, A.6 and A.7 of the paper.

Each function takes plain arrays or dicts, writes a PNG atomically and returns its path.
Figures are built on `matplotlib.figure.Figure` directly (Agg canvas, never pyplot), so nothing
touches a display or global pyplot state.
Accuracies are fractions in [0, 1] (plotted as percent); "per seed" inputs are sequences with
one value per student seed, drawn as mean +- sd (`logitscope.stats.mean_sd`: sample sd, ddof=1;
undefined for a single seed, which is drawn without an error bar or band).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from logitscope.fileio.atomic import atomic_write_bytes
from logitscope.stats import mean_sd

LABEL_COLOR = "#1f77b4"  # blue: the ground-truth class (figure 4A)
MANIPULATED_COLOR = "#ff7f0e"  # orange: manipulated values (figure 4A)
OTHER_COLOR = "#7f7f7f"
PerSeed = Sequence[float]


def fig4a_target_transforms(
    panels: Mapping[str, np.ndarray],
    label: int,
    path: str | os.PathLike,
    manipulated: Mapping[str, np.ndarray] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """One sample's targets before and after each manipulation, one bar panel per entry.

    Args:
        panels: title -> (C,) target vector, in display order; the first is the original
            (e.g. ``{"original": t, "fix-3 (perm)": ..., "fix-3 (avg)": ..., "hybrid": ...}``).
        label: the sample's ground-truth class, drawn blue.
        path: where to write the PNG.
        manipulated: title -> (C,) bool, the classes drawn orange; by default the classes whose
            value differs from the first panel's. The label's bar stays blue.
        class_names: C names for the x axis (class indices otherwise).

    Returns:
        ``path`` as a Path.
    """
    if not panels:
        raise ValueError("fig4a needs at least one panel: expected title -> (C,) targets")
    vectors = {k: np.asarray(v, dtype=np.float64) for k, v in panels.items()}
    first = next(iter(vectors.values()))
    c = first.shape[0] if first.ndim == 1 else -1
    for title, v in vectors.items():
        if v.shape != (c,) or c < 1:
            raise ValueError(f"fig4a panel {title!r} shape {v.shape}: expected ({max(c, 1)},)")
    if not 0 <= label < c:
        raise ValueError(f"fig4a label={label}: expected a class in [0, {c - 1}]")
    names = [str(i) for i in range(c)] if class_names is None else list(class_names)
    if len(names) != c:
        raise ValueError(f"fig4a got {len(names)} class names: expected {c}")

    fig = Figure(figsize=(2.6 * len(vectors), 2.8), layout="constrained")
    axes = fig.subplots(1, len(vectors), sharey=True, squeeze=False)[0]
    for ax, (title, v) in zip(axes, vectors.items(), strict=True):
        mask = v != first if manipulated is None or title not in manipulated else manipulated[title]
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (c,):
            raise ValueError(f"fig4a manipulated[{title!r}] shape {mask.shape}: expected ({c},)")
        colors = np.where(mask, MANIPULATED_COLOR, OTHER_COLOR).astype(object)
        colors[label] = LABEL_COLOR
        ax.bar(np.arange(c), v, color=list(colors))
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(np.arange(c), names, rotation=90 if c > 10 else 0, fontsize=7)
    axes[0].set_ylabel("target logit")
    return _save(fig, path)


def fig4b_accuracy_vs_k(
    permute: Mapping[int, PerSeed],
    path: str | os.PathLike,
    average: Mapping[int, PerSeed] | None = None,
    normal: PerSeed | None = None,
) -> Path:
    """Students' adversarial accuracy against k in fix-k distillation (figure 4B).

    Args:
        permute: k -> per-seed adversarial accuracy of fix-k-permute students.
        path: where to write the PNG.
        average: k -> per-seed adversarial accuracy of fix-k-average students.
        normal: per-seed adversarial accuracy of normally distilled students, drawn as a
            horizontal reference line with its +- sd band.
    """
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.subplots()
    series = {"permute": permute} if average is None else {"permute": permute, "average": average}
    all_ks: set[int] = set()
    for name, data in series.items():
        ks, mean, sd = _mean_sd(data, f"fig4b {name}")
        all_ks.update(int(k) for k in ks)
        ax.errorbar(ks, 100 * mean, yerr=100 * sd, marker="o", capsize=3, label=f"fix-k ({name})")
    if normal is not None:
        m, s = _mean_sd_one(normal, "fig4b normal")
        one_seed = np.isnan(s)  # sd over seeds is undefined for one seed: no band
        ax.axhline(100 * m, color="black", linestyle="--", label="normal distillation" + (" (n=1)" if one_seed else ""))
        if not one_seed:
            ax.axhspan(100 * (m - s), 100 * (m + s), color="black", alpha=0.1, linewidth=0)
    ax.set_xticks(sorted(all_ks))
    ax.set_xlabel("k (top values kept per sample)")
    ax.set_ylabel("student adversarial accuracy (%)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def figA6_teacher_epoch(
    natural: Mapping[int, PerSeed],
    adversarial: Mapping[int, PerSeed],
    path: str | os.PathLike,
) -> Path:
    """Students' natural and adversarial accuracy against the teacher's epoch (figure A.6).

    Args:
        natural: teacher epoch -> per-seed natural accuracy of the students.
        adversarial: teacher epoch -> per-seed adversarial accuracy of the students.
        path: where to write the PNG.
    """
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, data in (("natural", natural), ("adversarial", adversarial)):
        epochs, mean, sd = _mean_sd(data, f"figA6 {name}")
        ax.plot(epochs, 100 * mean, marker="o", label=name)
        ax.fill_between(epochs, 100 * (mean - sd), 100 * (mean + sd), alpha=0.2)
    ax.set_xlabel("teacher epoch")
    ax.set_ylabel("student accuracy (%)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def figA7_l1_vs_kl(
    natural: Mapping[str, Mapping[int, PerSeed]],
    adversarial: Mapping[str, Mapping[int, PerSeed]],
    path: str | os.PathLike,
) -> Path:
    """Students distilled with different losses, per teacher epoch (figure A.7).

    Args:
        natural: loss name ("l1", "kl") -> teacher epoch -> per-seed natural accuracy.
        adversarial: loss name -> teacher epoch -> per-seed adversarial accuracy.
        path: where to write the PNG.

    Two panels (natural, adversarial) of grouped bars: one group per teacher epoch, one bar
    per loss, with +- sd error bars.
    """
    if not natural or set(natural) != set(adversarial):
        raise ValueError(
            f"figA7 losses {sorted(natural)} (natural) and {sorted(adversarial)} (adversarial): "
            "expected the same non-empty set"
        )
    losses = list(natural)
    epochs = sorted({e for d in (natural, adversarial) for loss in losses for e in d[loss]})
    width = 0.8 / len(losses)
    fig = Figure(figsize=(8.0, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (metric, data) in zip(axes, (("natural", natural), ("adversarial", adversarial)), strict=True):
        for j, loss in enumerate(losses):
            xs, mean, sd = _mean_sd(data[loss], f"figA7 {metric} {loss}")
            pos = np.searchsorted(epochs, xs) + (j - (len(losses) - 1) / 2) * width
            ax.bar(pos, 100 * mean, width=width, yerr=100 * sd, capsize=2, label=loss.upper())
        ax.set_xticks(np.arange(len(epochs)), [str(e) for e in epochs])
        ax.set_xlabel("teacher epoch")
        ax.set_title(f"{metric} accuracy", fontsize=9)
    axes[0].set_ylabel("student accuracy (%)")
    axes[1].legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def _mean_sd_one(values: PerSeed, what: str) -> tuple[float, float]:
    """Mean and sample sd over seeds of checked accuracies (sd NaN for one seed)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError(f"{what}: no values, expected one accuracy per seed")
    if not np.all((v >= 0) & (v <= 1)):
        raise ValueError(f"{what}: accuracies {v.tolist()}: expected fractions in [0, 1]")
    return mean_sd(v)


def _mean_sd(data: Mapping[int, PerSeed], what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted keys and the mean and sd of each key's per-seed values."""
    if not data:
        raise ValueError(f"{what}: no entries, expected key -> per-seed accuracies")
    keys = sorted(data)
    stats = np.array([_mean_sd_one(data[k], f"{what} at {k}") for k in keys])
    return np.asarray(keys), stats[:, 0], stats[:, 1]


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write_bytes(path, buf.getvalue())
