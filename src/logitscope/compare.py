"""``logitscope compare --st RUN... --at RUN...``: section 4.1's analyses and verdicts for any runs.

The runs (trained here or imported with ``logitscope import``) are evaluated with the paper's
protocol (APGD-CE then APGD-DLR on the survivors, each run's attack eps, test split) at their
last stored epoch, analysed as groups ST and AT (logit distributions, gaps, ranks, overlap,
error classes, neighbours), optionally put through the manifold analysis, and reported with
the claims that apply to two groups of models (the distillation ones need a teacher and
students: `logitscope reproduce`)::

    <out>/runs/<run>      links to the given run folders (evaluations are written there)
    <out>/analysis/       analysis.json, the figures, CSV tables
    <out>/manifolds/      manifolds.json, figure 5 (with --manifolds)
    <out>/report/         index.html, claims.csv, report.json

A stage that fails is named in the report with its error; everything else still finishes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logitscope.store.outputs import analysis_dir, manifolds_dir, runs_dir
from logitscope.store.runs import Run

log = logging.getLogger(__name__)

GROUPS = ("st", "at")


def _link_runs(out: Path, groups: dict[str, list[Run]]) -> dict[str, list[str]]:
    """``out/runs/<name>`` -> each run folder (the report reads runs under one folder); the
    names are the run folders' own, made unique."""
    rdir = runs_dir(out)
    rdir.mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {g: [] for g in GROUPS}
    used: dict[str, Path] = {}
    for g in GROUPS:
        for run in groups[g]:
            target = run.dir.resolve()
            name, i = run.dir.name, 1
            while name in used and used[name] != target:
                i += 1
                name = f"{run.dir.name}-{i}"
            used[name] = target
            link = rdir / name
            if link.is_symlink() or link.exists():
                if link.resolve() == target:
                    ids[g].append(name)
                    continue
                if not link.is_symlink():
                    raise FileExistsError(f"{link} exists and is not a link to {target}: use another --out")
            tmp = rdir / f".{name}.link"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target, target_is_directory=True)
            os.replace(tmp, link)
            ids[g].append(name)
    return ids


def _check_runs(
    st: Sequence[str | os.PathLike], at: Sequence[str | os.PathLike], eps: float | None
) -> dict[str, list[Run]]:
    if not st or not at:
        raise ValueError(f"{len(st)} ST and {len(at)} AT runs given: expected at least one of each (--st and --at)")
    groups = {"st": [Run(p) for p in st], "at": [Run(p) for p in at]}
    runs = [*groups["st"], *groups["at"]]
    seen: dict[Path, str] = {}
    for g, members in groups.items():
        for r in members:
            where = seen.setdefault(r.dir.resolve(), g)
            if where != g or sum(m.dir.resolve() == r.dir.resolve() for m in members) > 1:
                raise ValueError(f"run {r.dir} is given twice (--{where} and --{g}): expected each run once")
    for r in runs:
        if not r.complete:
            raise ValueError(f"run {r.dir} is not complete (epoch {r.last_epoch}/{r.config.epochs}): finish it first")
        if not r.logits.splits:
            raise ValueError(f"run {r.dir} has no stored logits: expected a trained (or imported) run")
    radii = {r.config.attack.eps for r in runs}
    if eps is None and len(radii) > 1:
        by = ", ".join(f"{r.dir.name} {r.config.attack.eps:.4g}" for r in runs)
        raise ValueError(f"the runs' attack radii differ ({by}): give one for all with --eps")
    first = runs[0].config.data
    for r in runs[1:]:
        d = r.config.data
        if (d.name, d.data_dir, d.split_seed) != (first.name, first.data_dir, first.split_seed):
            raise ValueError(
                f"run {r.dir.name} is on dataset {d.name} ({d.data_dir or 'embedded'}, split seed {d.split_seed}): "
                f"expected {first.name} ({first.data_dir or 'embedded'}, split seed {first.split_seed}) like "
                f"{runs[0].dir.name}"
            )
    return groups


def compare(
    st: Sequence[str | os.PathLike],
    at: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    n: int | None = None,
    n_iter: int = 100,
    manifolds: bool = False,
    n_manifolds: int = 50,
    n_points: int = 20,
    device: str = "auto",
    eps: float | None = None,
) -> dict[str, Any]:
    """Evaluate, analyse and report ST runs against AT runs, all at one attack radius.

    Args:
        st, at: run folders (one per seed or model; at least one each), on the same dataset.
        out: output folder (``runs/`` links, ``analysis/``, ``manifolds/``, ``report/``).
        n: evaluate the first ``n`` test images (default: all).
        n_iter: APGD iterations of each attack of the protocol.
        manifolds: also run the manifold analysis (figure 5) on the first ST and AT run, at
            ``n_manifolds`` exemplars and ``n_points`` adversarial points per ball.
        eps: the L-inf radius of every evaluation and of the manifolds' balls (default: the
            runs' own ``attack.eps``, refused when they differ).

    Returns:
        ``{"report": index.html, "failed": {stage: error}, "claims": {verdict: count}}``.
    """
    from logitscope.analysis.analyze import analyze
    from logitscope.data import load_data
    from logitscope.evaluation import evaluate
    from logitscope.report.build import build_compare_report

    out = Path(out)
    groups = _check_runs(st, at, eps)
    if eps is None:
        eps = groups["at"][0].config.attack.eps
    ids = _link_runs(out, groups)
    rdir = runs_dir(out)
    failed: dict[str, str] = {}

    def attempt(stage: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one failed stage never takes the others with it
            failed[stage] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.error("compare: %s failed: %s", stage, failed[stage])
            return None

    for g in GROUPS:
        for rid in ids[g]:
            attempt(f"eval-train-{g}-{rid}", evaluate, rdir / rid, eps=eps, n=n, n_iter=n_iter, device=device)
    data = load_data(groups["st"][0].config.data)
    attempt(
        "analyze",
        analyze,
        [rdir / r for r in ids["st"]],
        [rdir / r for r in ids["at"]],
        None,
        analysis_dir(out),
        class_names=data.class_names,
        dataset=data.name,
    )
    if manifolds:
        models = {"ST": (rdir / ids["st"][0], None), "AT": (rdir / ids["at"][0], None)}
        attempt("manifolds", _manifolds, models, eps, n_manifolds, n_points, manifolds_dir(out), device)
    report, counts = build_compare_report(out, ids, failed, manifolds=manifolds, eps=eps)
    return {"report": str(report), "failed": failed, "claims": counts}


__all__ = ["compare"]


def _manifolds(models: dict[str, Any], eps: float, p: int, m: int, out: Path, device: str) -> dict[str, Any]:
    """Figure 5 of the first ST and AT run (no simulated capacity: minutes per layer on a CPU)."""
    from logitscope.manifolds.geometry import measure_geometry
    from logitscope.runtime import resolve_device

    return measure_geometry(models, eps, p, m, out_dir=out, simulate=False, device=str(resolve_device(device)))
