"""Manifold analysis of runs: eps-ball activations per layer, MFTMA and simulated capacity,
figures 5 and A.8 (``logitscope manifolds`` and the reproduce stage)."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logitscope.manifolds.activations import ball_points, choose_exemplars, layer_activations
from logitscope.store.atomic import atomic_write_json, atomic_write_text
from logitscope.store.models import load_model
from logitscope.store.runs import Run

log = logging.getLogger(__name__)


def layer_geometry(
    acts: dict[str, np.ndarray], n_t: int, seed: int, simulate: bool, n_dichotomies: int = 50
) -> dict[str, dict[str, Any]]:
    """MFTMA (and simulated capacity) of every layer whose width exceeds the points per ball."""
    from logitscope.manifolds import mftma, simulated_capacity

    out: dict[str, dict[str, Any]] = {}
    for name, x in acts.items():
        p, n, m = x.shape
        if n <= m:
            out[name] = {"skipped": f"{n} features <= {m} points per manifold"}
            continue
        t0 = time.perf_counter()
        r = mftma(x, kappa=0.0, n_t=n_t, seed=seed)
        row = {
            "capacity": float(r.capacity),
            "radius": float(r.radius),
            "dimension": float(r.dimension),
            "center_corr": float(r.center_corr),
            "K": int(r.K),
            "features": n,
        }
        if simulate:
            row["simulated_capacity"] = float(simulated_capacity(x, n_dichotomies=n_dichotomies, seed=seed).capacity)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        out[name] = row
    return out


def analyze_models(
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
) -> dict[str, Any]:
    """Figure 5 and A.8 for labelled models ``{label: (run folder, epoch or None)}``.

    The same P exemplar test images (balanced over classes) serve every model; each model's
    M points per ball are adversarial for that model.
    """
    from logitscope.report.figures_manifolds import fig5_geometry, figA8_capacity
    from logitscope.training.engine import load_run_dataset

    out = Path(out_dir)
    first = Run(next(iter(runs.values()))[0])
    data = load_run_dataset(first.config)
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
            "layers": layer_geometry(acts, n_t, seed, simulate, n_dichotomies),
        }
        log.info(
            "manifolds %s: %s",
            label,
            {k: round(v.get("capacity", math.nan), 3) for k, v in results[label]["layers"].items()},
        )
    figures = {"fig5": str(fig5_geometry(results, out / "fig5.png"))}
    if simulate:
        figures["figA8"] = str(figA8_capacity(results, out / "figA8.png"))
    claims = manifold_claims(results)
    summary = {
        "eps": eps,
        "p": n_manifolds,
        "m": n_points,
        "n_t": n_t,
        "kind": kind,
        "exemplars": idx.tolist(),
        "models": results,
        "figures": figures,
        "claims": claims,
    }
    atomic_write_json(out / "manifolds.json", summary)
    atomic_write_json(out / "claims.json", claims)
    atomic_write_text(
        out / "summary.txt",
        f"P = {n_manifolds} exemplar test images, M = {n_points} {kind} points in "
        f"each L-inf ball of radius {eps:.4g}; MFTMA with n_t = {n_t}.",
    )
    return summary


def _series(results: dict[str, Any], label: str, key: str) -> list[float]:
    layers = results[label]["layers"]
    return [v[key] for v in layers.values() if key in v]


def manifold_claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Section 4.2 / A.4.3 findings checked on these models."""
    claims = []
    if "ST teacher" in results and "AT teacher" in results:
        st, at = _series(results, "ST teacher", "radius"), _series(results, "AT teacher", "radius")
        if len(st) > 1 and len(at) > 1:
            claims.append(
                {
                    "claim": "Adversarial-ball radius grows faster in early layers of the non-robust (ST) network",
                    "statistic": f"radius at the first hidden layer: ST {st[1]:.3f}, AT {at[1]:.3f}",
                    "holds": bool(st[1] > at[1]),
                }
            )
        for label in ("correct-fix-1 student", "hybrid student"):
            if label in results:
                c_s, c_at = _series(results, label, "capacity"), _series(results, "AT teacher", "capacity")
                c_st = _series(results, "ST teacher", "capacity")
                if c_s and c_at and c_st:
                    claims.append(
                        {
                            "claim": f"The {label}'s capacity falls towards the ST teacher's",
                            "statistic": f"last-layer capacity: {label} {c_s[-1]:.3f}, AT {c_at[-1]:.3f}, "
                            f"ST {c_st[-1]:.3f}",
                            "holds": bool(abs(c_s[-1] - c_st[-1]) < abs(c_s[-1] - c_at[-1])),
                        }
                    )
    mft = [v["capacity"] for r in results.values() for v in r["layers"].values() if "simulated_capacity" in v]
    sim = [v["simulated_capacity"] for r in results.values() for v in r["layers"].values() if "simulated_capacity" in v]
    if len(mft) > 2:
        rho = float(np.corrcoef(mft, sim)[0, 1])
        ratio = float(np.median(np.asarray(mft) / np.asarray(sim)))
        claims.append(
            {
                "claim": "MFTMA capacity approximately predicts simulated capacity, mildly overestimating",
                "statistic": f"correlation {rho:.2f}, median MFTMA/simulated {ratio:.2f} over {len(mft)} layers",
                "holds": bool(rho > 0.8 and ratio >= 1.0),
            }
        )
    return claims


def analyze_runs(
    runs: list[Path],
    epoch: int | None = None,
    eps: float | None = None,
    n_manifolds: int = 50,
    n_points: int = 20,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """``logitscope manifolds RUN ...``: every run at ``epoch`` (default: its last checkpoint)."""
    loaded = [Run(r) for r in runs]
    eps = eps if eps is not None else loaded[0].config.attack.eps
    labelled = {r.dir.name: (r.dir, epoch) for r in loaded}
    return analyze_models(labelled, eps, n_manifolds, n_points, out_dir=out_dir or loaded[0].dir.parent / "manifolds")
