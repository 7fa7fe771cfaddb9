"""Figures 5 and A.8: manifold geometry by layer, and MFTMA against simulated capacity.

Layers where MFTMA is undefined (rows with ``defined`` false and an ``undefined`` reason, see
:func:`logitscope.manifolds.geometry.layer_geometry`) have no point: figure 5 shades their
column, labels it "undefined" and gives the reasons under the panels; figure A.8 leaves them
out and says how many.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any

from logitscope.report.figures import new_figure, save_figure

PANELS = (
    ("capacity", "capacity α_M"),
    ("radius", "radius R_M"),
    ("dimension", "dimension D_M"),
    ("center_corr", "centre correlation"),
)


def in_stored_order(summary: dict[str, Any]) -> dict[str, Any]:
    """The models of a stored ``manifolds.json`` in the order they were given (``model_order``),
    each one's layers input to logits (``layer_order``): the file's keys are sorted."""
    models = summary["models"]
    order = [m for m in summary.get("model_order", []) if m in models] + [
        m for m in models if m not in summary.get("model_order", [])
    ]
    out = {}
    for label in order:
        r = models[label]
        layers = [n for n in r.get("layer_order", []) if n in r["layers"]] + [
            n for n in r["layers"] if n not in r.get("layer_order", [])
        ]
        out[label] = {**r, "layers": {n: r["layers"][n] for n in layers}}
    return out


def _layer_order(results: dict[str, Any]) -> list[str]:
    """Every model's layers in order of first appearance (input to logits)."""
    names: list[str] = []
    for r in results.values():
        names += [n for n in r["layers"] if n not in names]
    return names


def _undefined(results: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{layer: {model: reason}}`` where MFTMA is undefined."""
    out: dict[str, dict[str, str]] = {}
    for label, r in results.items():
        for n, v in r["layers"].items():
            if not v.get("defined", True):
                out.setdefault(n, {})[label] = v.get("undefined", "undefined")
    return out


def _note(undefined: dict[str, dict[str, str]], n_models: int) -> str:
    lines = []
    for n, by_model in undefined.items():
        for reason in dict.fromkeys(by_model.values()):
            labels = [m for m, r in by_model.items() if r == reason]
            who = "" if len(labels) == n_models else f" ({', '.join(labels)})"
            lines.append(textwrap.fill(f"{n}{who}: {reason}", 150))
    return "\n".join(lines)


def fig5_geometry(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """One panel per measure, a line per model over its layers (input to logits); undefined
    layers are shaded columns with no point, their reasons noted under the panels."""
    names = _layer_order(results)
    undefined = _undefined(results)
    fig = new_figure(11, 7.5 + 0.25 * sum(len(v) for v in undefined.values()))
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        for label, r in results.items():
            ys = [r["layers"].get(n, {}).get(key) for n in names]
            ys = [math.nan if v is None else v for v in ys]
            if any(not math.isnan(v) for v in ys):
                ax.plot(range(len(names)), ys, marker="o", label=label)
        ticks = [f"{n}\n(undefined)" if n in undefined else n for n in names]
        ax.set_xticks(range(len(names)), ticks, rotation=30, fontsize=8)
        for i, n in enumerate(names):
            if n in undefined:
                ax.axvspan(i - 0.4, i + 0.4, color="0.85", zorder=0)
                ax.text(
                    i,
                    0.5,
                    "MFTMA undefined" if len(undefined[n]) == len(results) else "undefined: " + ", ".join(undefined[n]),
                    transform=ax.get_xaxis_transform(),
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="0.35",
                )
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    if undefined:
        fig.supxlabel(_note(undefined, len(results)), fontsize=7, ha="left", x=0.01)
    return save_figure(fig, path)


def figA8_capacity(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """MFTMA capacity (x) against simulated capacity (y) for every layer and model where both
    are defined; the layers left out are counted in the title."""
    fig = new_figure(5.5, 5)
    ax = fig.subplots()
    hi, left_out = 0.0, []
    for label, r in results.items():
        pts = []
        for n, v in r["layers"].items():
            if "simulated_capacity" not in v:
                continue
            if v.get("capacity") is None or v.get("simulated_capacity") is None:
                left_out.append(n)
            else:
                pts.append((v["capacity"], v["simulated_capacity"]))
        if pts:
            ax.scatter(*zip(*pts, strict=True), label=label, s=25)
            hi = max(hi, *(max(p) for p in pts))
    ax.plot([0, hi * 1.05], [0, hi * 1.05], color="grey", lw=1, ls="--", label="y = x")
    ax.set_xlabel("MFTMA capacity")
    ax.set_ylabel("simulated capacity")
    if left_out:
        layers = ", ".join(dict.fromkeys(left_out))
        ax.set_title(f"left out, undefined: {len(left_out)} model layers ({layers})", fontsize=8)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
