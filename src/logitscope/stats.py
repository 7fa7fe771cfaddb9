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

__all__ = ["mean_sd", "mean_sd_axis"]


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
