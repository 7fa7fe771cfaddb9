"""Manifold analysis of runs: eps-ball activations per layer, MFTMA and simulated capacity
(``logitscope manifolds`` and the reproduce stage). It stores ``manifolds.json``, from which
the report draws figures 5 and A.8 (`logitscope.report.figures_manifolds`)."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logitscope.data import load_data
from logitscope.fileio.atomic import atomic_write_json, atomic_write_text
from logitscope.manifolds.activations import ball_points, choose_exemplars, layer_activations
from logitscope.store.models import load_model
from logitscope.store.outputs import MANIFOLDS_JSON, MANIFOLDS_TEXT
from logitscope.store.runs import Run

log = logging.getLogger(__name__)


MEASURES = ("capacity", "radius", "dimension", "center_corr")


def mftma_undefined(p: int, n: int, m: int) -> str | None:
    """Why MFTMA is undefined for P manifolds of M points each in N dimensions (None if it is not).

    Conditions, each with its own clause in the reason:

    - N >= P. With fewer features than manifolds the P centres span every feature (their rank
      is min(P - 1, N) = N). The centre-correlation removal (Cohen et al. 2020; the reference
      implementation takes a (P - 1)-dimensional basis of the centres) looks for shared
      directions inside the centres' span and projects them out of every point; when that
      span is the whole space the reference's search for K can run to K = N, which leaves
      nothing, and :func:`~logitscope.manifolds.mftma` only returns numbers because it caps K
      at N - 1. The load P / N is then above 1, so the simulated capacity P / N_c (N_c <= N)
      could only find capacities above 1. The paper's logits layer (N = 10 classes, P = 40 or
      50 images) is such a layer.
    - M < N: :func:`~logitscope.manifolds.mftma` requires fewer points per manifold than
      features (each manifold's (M - 1)-dimensional span and its centre direction must fit).
    - P >= 3: the removal keeps K <= P - 2 directions.

    Returns:
        ``"undefined: ..."`` naming the failed conditions, or None where MFTMA is defined.
    """
    why = []
    if n < p:
        why.append(f"{p} manifolds in {n} dimensions (MFTMA needs N >= P: the centres would span every feature)")
    if m >= n:
        why.append(f"{m} points per manifold in {n} dimensions (MFTMA needs M < N)")
    if p < 3:
        why.append(f"{p} manifolds (the centre-correlation removal needs P >= 3)")
    return "undefined: " + "; ".join(why) if why else None


def _undefined_row(row: dict[str, Any], reason: str, simulate: bool) -> dict[str, Any]:
    row.update({k: None for k in MEASURES}, K=None, defined=False, undefined=reason)
    if simulate:
        row["simulated_capacity"] = None
    return row


def layer_geometry(
    acts: dict[str, np.ndarray], n_t: int, seed: int, simulate: bool, n_dichotomies: int = 50
) -> dict[str, dict[str, Any]]:
    """MFTMA (and simulated capacity) of every layer's ``(P, N, M)`` activations.

    Every row has ``features`` (N), ``manifolds`` (P), ``points`` (M) and ``defined``. A
    defined row has the measures ``capacity``, ``radius``, ``dimension``, ``center_corr``, the
    removed directions ``K``, ``seconds`` and (``simulate``) ``simulated_capacity``, which is
    None with a reason in ``simulated_undefined`` when even all N features separate fewer
    than half the dichotomies. An undefined row (see :func:`mftma_undefined`; also a layer
    whose data MFTMA rejects, or where it returns a non-finite measure) has those measures
    as None and the reason in ``undefined``.
    """
    from logitscope.manifolds import mftma, simulated_capacity

    out: dict[str, dict[str, Any]] = {}
    for name, x in acts.items():
        p, n, m = x.shape
        row: dict[str, Any] = {"features": n, "manifolds": p, "points": m}
        reason = mftma_undefined(p, n, m)
        if reason is not None:
            log.info("MFTMA at %s: %s", name, reason)
            out[name] = _undefined_row(row, reason, simulate)
            continue
        t0 = time.perf_counter()
        try:
            r = mftma(x, kappa=0.0, n_t=n_t, seed=seed)
        except ValueError as e:  # degenerate data, e.g. a manifold centred at the mean
            log.warning("MFTMA at %s is undefined: %s", name, e)
            out[name] = _undefined_row(row, f"undefined: {e}", simulate)
            continue
        values = {k: float(getattr(r, k)) for k in MEASURES}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            reason = f"undefined: MFTMA returned a non-finite {', '.join(bad)}"
            log.warning("MFTMA at %s: %s", name, reason)
            out[name] = _undefined_row(row, reason, simulate)
            continue
        row.update(values, K=int(r.K), defined=True)
        # per exemplar (same order in every layer and model): what the claims resample over
        row["per_manifold"] = {
            "capacity": r.capacities.tolist(),
            "radius": r.radii.tolist(),
            "dimension": r.dimensions.tolist(),
        }
        if simulate:
            sim = float(simulated_capacity(x, n_dichotomies=n_dichotomies, seed=seed).capacity)
            row["simulated_capacity"] = sim if math.isfinite(sim) else None
            if not math.isfinite(sim):
                row["simulated_undefined"] = (
                    f"undefined: fewer than half of {n_dichotomies} dichotomies are separable with all {n} features"
                )
        row["seconds"] = round(time.perf_counter() - t0, 3)
        out[name] = row
    return out


def undefined_layers(results: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{model: {layer: reason}}`` of the layers where MFTMA is undefined."""
    out = {
        label: {name: v["undefined"] for name, v in r["layers"].items() if not v.get("defined", True)}
        for label, r in results.items()
    }
    return {label: layers for label, layers in out.items() if layers}


def undefined_note(results: dict[str, Any]) -> str:
    """One line per layer (and reason) where MFTMA is undefined, naming the models; "" if none."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for label, layers in undefined_layers(results).items():
        for name, reason in layers.items():
            by_reason.setdefault((name, reason), []).append(label)
    lines = []
    for (name, reason), labels in by_reason.items():
        who = "every model" if len(labels) == len(results) else ", ".join(labels)
        lines.append(f"{name} ({who}): {reason}")
    return "\n".join(lines)


def _summary_text(
    p: int, m: int, kind: str, eps: float, n_t: int, simulated: Sequence[str], n_dichotomies: int, note: str
) -> str:
    """``summary.txt``: what was measured, in words (the report's manifold section text)."""
    text = (
        f"P = {p} exemplar test images, M = {m} {kind} points in "
        f"each L-inf ball of radius {eps:.4g}; MFTMA with n_t = {n_t}."
    )
    if simulated:
        text += (
            f" Simulated capacity (figure A.8) of the {', '.join(simulated)}: P / N_c, N_c the number of random "
            f"projections at which half of {n_dichotomies} random balanced dichotomies are linearly separable "
            "(exact LPs, bisection on N)."
        )
    if note:
        text += "\nMFTMA is undefined at (no measures; left out of the figures and claims):\n" + note
    return text


def measure_geometry(
    runs: dict[str, tuple[str | os.PathLike, int | None]],
    eps: float,
    n_manifolds: int = 50,
    n_points: int = 20,
    n_t: int = 200,
    max_features: int = 5000,
    out_dir: str | os.PathLike = "manifolds",
    kind: str = "adversarial",
    simulate: bool = True,
    n_dichotomies: int = 50,
    seed: int = 0,
    device: str = "cpu",
    simulate_models: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Figure 5 and A.8 for labelled models ``{label: (run folder, epoch or None)}``.

    The same P exemplar test images (balanced over classes) serve every model; each model's
    M points per ball are adversarial for that model. ``simulate_models``: the labels whose
    simulated capacity (figure A.8) is computed (None: every model's, when ``simulate``).
    """
    unknown = sorted(set(simulate_models or ()) - set(runs))
    if unknown:
        raise ValueError(
            f"manifolds.simulate_models: {unknown[0]!r} is not a model here: expected some of {sorted(runs)}"
        )
    simulated = [label for label in runs if simulate and (simulate_models is None or label in simulate_models)]

    out = Path(out_dir)
    first = Run(next(iter(runs.values()))[0])
    data = load_data(first.config.data)
    idx = choose_exemplars(data.y_test.numpy(), n_manifolds, seed)
    x = data.x_test[idx].float().div(255).to(device)
    y = data.y_test[idx].to(device)
    results: dict[str, Any] = {}
    for label, (run_dir, epoch) in runs.items():
        run = Run(run_dir)
        if run.config.data.name != first.config.data.name:
            raise ValueError(f"{label}: run of dataset {run.config.data.name}: expected {first.config.data.name}")
        model = load_model(run, epoch, device=device)
        torch.manual_seed(seed)
        pts = ball_points(model, x, y, eps, n_points, data.n_classes, kind=kind, seed=seed)
        acts = layer_activations(model, pts, max_features=max_features, seed=seed)
        results[label] = {
            "run": run.dir.name,
            "epoch": run.resolve_epoch(epoch),
            "layers": layer_geometry(acts, n_t, seed, label in simulated, n_dichotomies),
            "layer_order": list(acts),  # input to logits (the JSON's keys are sorted)
        }
        log.info(
            "manifolds %s: capacity %s",
            label,
            {k: round(v["capacity"], 3) if v["defined"] else "undefined" for k, v in results[label]["layers"].items()},
        )
    note = undefined_note(results)
    summary = {
        "eps": eps,
        "p": n_manifolds,
        "m": n_points,
        "n_t": n_t,
        "kind": kind,
        "simulate": bool(simulated),
        "n_dichotomies": n_dichotomies if simulated else None,
        "simulated_models": simulated,
        "exemplars": idx.tolist(),
        "models": results,
        "model_order": list(results),  # as given (the JSON's keys are sorted)
        "undefined": undefined_layers(results),
    }
    atomic_write_json(out / MANIFOLDS_JSON, summary)
    text = _summary_text(n_manifolds, n_points, kind, eps, n_t, simulated, n_dichotomies, note)
    atomic_write_text(out / MANIFOLDS_TEXT, text)
    return summary
