"""Figures 5 and A.8: manifold geometry by layer, and MFTMA against simulated capacity."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from logitscope.report.figures import new_figure, save_figure

PANELS = (
    ("capacity", "capacity α_M"),
    ("radius", "radius R_M"),
    ("dimension", "dimension D_M"),
    ("center_corr", "centre correlation"),
)


def fig5_geometry(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """One panel per measure, a line per model over its layers (input to logits)."""
    fig = new_figure(11, 7.5)
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        for label, r in results.items():
            layers = [(n, v[key]) for n, v in r["layers"].items() if key in v]
            if layers:
                ax.plot(range(len(layers)), [v for _, v in layers], marker="o", label=label)
                ax.set_xticks(range(len(layers)), [n for n, _ in layers], rotation=30, fontsize=8)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


def figA8_capacity(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """MFTMA capacity (x) against simulated capacity (y) for every layer and model."""
    fig = new_figure(5.5, 5)
    ax = fig.subplots()
    hi = 0.0
    for label, r in results.items():
        pts = [(v["capacity"], v["simulated_capacity"]) for v in r["layers"].values() if "simulated_capacity" in v]
        if pts:
            ax.scatter(*zip(*pts, strict=True), label=label, s=25)
            hi = max(hi, *(max(p) for p in pts))
    ax.plot([0, hi * 1.05], [0, hi * 1.05], color="grey", lw=1, ls="--", label="y = x")
    ax.set_xlabel("MFTMA capacity")
    ax.set_ylabel("simulated capacity")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
