"""Mean ± sd over seeds: the one definition every table, figure and JSON number uses.

"sd over seeds" (or over runs, or over model pairs) is the **sample** standard deviation,
``ddof=1``: the seeds are a sample of the seeds one could have run, and the sd estimates the
spread of that population. NaN (and ``None``) entries are missing runs and are left out.

With a single value the sd is **NaN**, not 0: one seed says nothing about the spread over
seeds, and 0 would claim a certainty it cannot give. Code that prints an sd shows NaN as
"n=1" or "—", never as "nan" (`logitscope.report.build.pct`); figures draw no error bar or band
for it (matplotlib skips NaN error bars silently).

This is the lowest layer of the package: numpy and the standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["BOOTSTRAP_DRAWS", "BOOTSTRAP_LEVEL", "bootstrap_means", "mean_sd", "mean_sd_axis", "percentile_interval"]


def mean_sd(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample sd (``ddof=1``) of ``values``, ignoring ``None`` and NaN.

    Returns:
        ``(mean, sd)`` as Python floats: ``(nan, nan)`` when no value is left, ``(x, nan)``
        for a single value ``x`` (sd undefined for one seed).
    """
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(v.std(ddof=1))


def mean_sd_axis(a: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd (``ddof=1``) along ``axis`` of stacked per-seed arrays, ignoring NaN.

    E.g. ``(R, B)`` histograms of R runs -> two ``(B,)`` arrays for the error bars over runs.
    Each position counts its own non-NaN entries: the mean is NaN where there are none, the
    sd is NaN where there are fewer than two. Never warns.

    Returns:
        ``(mean, sd)`` float64 arrays with ``axis`` removed.
    """
    x = np.asarray(a, dtype=np.float64)
    ok = ~np.isnan(x)
    n = ok.sum(axis=axis)
    filled = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=axis) / n
        dev = np.where(ok, x - np.expand_dims(mean, axis), 0.0)
        sd = np.sqrt((dev**2).sum(axis=axis) / (n - 1))
    mean = np.where(n > 0, mean, np.nan)
    sd = np.where(n > 1, sd, np.nan)
    return mean, sd


BOOTSTRAP_DRAWS = 2000
"""Draws of every bootstrap interval in the report."""
BOOTSTRAP_LEVEL = 0.95
"""Coverage of every interval in the report (a percentile interval)."""
_CHUNK = 100


def bootstrap_means(
    samples: dict[str, dict[str, np.ndarray]],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
    resample_seeds: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """A two-level bootstrap of group means: seeds within each group, and shared test images.

    ``samples`` maps a group (e.g. "normal", "fix1-permute") to columns, each an ``(S, N)``
    array: one row per seed (run), one column per image; every group and column must have the
    same N (the same images, in the same order). A draw resamples the N images with
    replacement, **the same images for every group** (groups evaluated on one test set are
    paired), then each group's S seeds with replacement (independently per group: seeds are
    separate runs), and averages the column over the drawn seeds and images. A column of
    shape ``(S, 1)`` (one number per run, e.g. a skew) is thus resampled over seeds only.

    ``resample_seeds=False`` keeps every group's seeds as they are and resamples the images
    only: the part of the spread that more seeds would not remove (used to project how many
    seeds an undecided claim needs, `logitscope.report.claims`).

    The draws depend only on ``seed``, the group names and the array shapes (numpy's PCG64
    integers are the same on every machine with the same numpy version); the means are of the stored values, so the
    result does not depend on thread counts.

    Returns:
        group -> column -> ``(draws,)`` float64 means.
    """
    n = {a.shape[1] for cols in samples.values() for a in cols.values()}
    if len(n) != 1:
        raise ValueError(f"columns with {sorted(n)} images: expected the same images for every group")
    (n_images,) = n
    for g, cols in samples.items():
        rows = {np.asarray(a).shape[0] for a in cols.values()}
        if len(rows) != 1 or 0 in rows:
            raise ValueError(f"group {g!r} has columns with {sorted(rows)} seeds: expected one non-zero count")
    # two streams: the images drawn depend only on (seed, draws, images), whatever the groups and
    # whether seeds are resampled, so bootstraps of one test set draw the same images
    img_rng, seed_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = {g: {c: np.empty(draws) for c in cols} for g, cols in samples.items()}
    for start in range(0, draws, _CHUNK):
        b = min(_CHUNK, draws - start)
        img = img_rng.integers(0, n_images, (b, n_images)) if n_images > 1 else np.zeros((b, 1), np.int64)
        for g in sorted(samples):
            cols = samples[g]
            s = next(iter(cols.values())).shape[0]
            pick = seed_rng.integers(0, s, (b, s)) if resample_seeds else np.broadcast_to(np.arange(s), (b, s))
            for c, a in cols.items():
                per_seed = np.asarray(a, np.float64)[:, img].mean(axis=2)  # (S, b)
                out[g][c][start : start + b] = np.take_along_axis(per_seed.T, pick, axis=1).mean(axis=1)
    return out


def percentile_interval(draws: np.ndarray, level: float = BOOTSTRAP_LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap draws, NaN draws left out
    (``(nan, nan)`` when more than a tenth are NaN: the statistic is then too often undefined)."""
    d = np.asarray(draws, np.float64)
    ok = d[np.isfinite(d)]
    if ok.size == 0 or ok.size < 0.9 * d.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
