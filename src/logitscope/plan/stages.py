"""The reproduce stages: each ``fn(out, **params)`` reads and writes files under ``out``.

Layout of a reproduce output folder::

    out/runs/<run-id>/         every training run (ST, AT, students) with its eval/ records
    out/plan/                  preset.json, done markers, the teacher choice
    out/analysis/ out/manifolds/ out/theory/   each analysis stage's numbers and figures
    out/report/index.html      the report (plus tables/*.csv, claims.csv, report.json)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from logitscope.config import TEACHER_RULES, RunConfig
from logitscope.fileio.atomic import atomic_write_json
from logitscope.fileio.errors import read_json
from logitscope.store.outputs import analysis_dir, manifolds_dir, runs_dir, teacher_choice, theory_dir

log = logging.getLogger(__name__)


def train_stage(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    from logitscope.distill.distillation import train_run

    cfg = RunConfig.from_dict(config)
    run = train_run(cfg, out=runs_dir(out), resume=True)
    meta = run.meta
    return {
        "run_id": run.dir.name,
        "seconds": sum(r.get("train_seconds", 0) for r in run.metrics()),
        "status": meta.get("status"),
    }


def train_batched_stage(out: Path, configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Train runs of one data stream as one batch. Never fails on a run's account: a run that
    diverged is recorded in its own folder, and whatever stops the batch is logged; each run's
    own stage (which depends on this one) then finds it complete or trains it alone, failing
    with its own reason."""
    from logitscope.distill.batched import train_batched

    cfgs = [RunConfig.from_dict(c) for c in configs]
    try:
        runs = train_batched(cfgs, out=runs_dir(out), resume=True)
    except Exception as exc:  # noqa: BLE001 - the runs' own stages retry them one at a time
        log.warning("batched training stopped (%s: %s); each run trains alone", type(exc).__name__, exc)
        return {"run_ids": [c.run_id for c in cfgs], "complete": [], "error": f"{type(exc).__name__}: {exc}"}
    return {"run_ids": [r.dir.name for r in runs], "complete": [r.dir.name for r in runs if r.complete]}


def evaluate_stage(
    out: Path, run_id: str, epoch: int, protocol: str = "paper", split: str = "test", **settings: Any
) -> dict[str, Any]:
    """``protocol`` on the first ``n`` images of the run's ``split`` ("test", or "val" for the
    teacher choice), with the preset's evaluate section (``settings``: eps, n_iter, n_restarts,
    n, batch_size, as the plan gave them); the records are the stage's outputs."""
    from logitscope.config import EvaluateSection
    from logitscope.evaluation import evaluate
    from logitscope.store.evaluations import record_path

    section = EvaluateSection(**settings)
    s = evaluate(runs_dir(out) / run_id, epoch, section.protocol_config(protocol), n=section.n, split=split)
    record = record_path(runs_dir(out) / run_id, protocol, epoch, split)
    outputs = [str(record), str(record.with_suffix(".json"))]
    return {**{k: s[k] for k in ("clean_acc", "robust_acc", "seconds", "epoch", "n")}, "outputs": outputs}


def eval_summary(
    out: Path, run_id: str, epoch: int, protocol: str = "paper", split: str = "test"
) -> dict[str, Any] | None:
    """The summary of a run's evaluation (``eval/<protocol>[-val]-epoch_XXX.json``), or None."""
    from logitscope.store.evaluations import summary_path

    p = summary_path(runs_dir(out) / run_id, protocol, epoch, split)
    return read_json(p, expect=dict) if p.is_file() else None


def choose_teacher(
    sweep: dict[str, dict[str, Any]],
    summaries: dict[str, dict[str, Any]],
    loss: str,
    rule: str = "robustness",
    natural_tolerance: float | None = None,
    data: str = "",
) -> tuple[int, str]:
    """The teacher epoch by ``rule`` from its normally distilled (``loss``) students' mean
    natural and adversarial accuracy over the sweep seeds, in ``summaries`` (their evaluations
    on the data ``data`` names, e.g. "the validation split (200 images)"). Returns (epoch, reason).

    - "robustness": section 4.2's "the teacher checkpoint that produced maximum robustness":
      the highest student adversarial accuracy (a tie: the higher natural accuracy, then the
      earlier epoch);
    - "trade-off": among epochs whose student's natural accuracy is within
      ``natural_tolerance`` of the best, the highest adversarial accuracy (one reading of
      A.3's "best trade-off between natural and adversarial accuracy").
    """
    if rule not in TEACHER_RULES:
        raise ValueError(f"rule={rule!r}: expected one of {', '.join(TEACHER_RULES)}")
    by_epoch: dict[int, list[tuple[float, float]]] = {}
    for name, info in sweep.items():
        if info["loss"] == loss and name in summaries:
            s = summaries[name]
            by_epoch.setdefault(int(info["teacher_epoch"]), []).append((s["clean_acc"], s["robust_acc"]))
    if not by_epoch:
        raise ValueError(f"no {loss} students in the teacher sweep: cannot choose a teacher epoch")
    means = {e: (sum(c for c, _ in v) / len(v), sum(r for _, r in v) / len(v)) for e, v in by_epoch.items()}
    if rule == "trade-off":
        if natural_tolerance is None:
            raise ValueError("rule='trade-off' needs natural_tolerance (e.g. 0.05)")
        best_nat = max(c for c, _ in means.values())
        eligible = {e: m for e, m in means.items() if m[0] >= best_nat - natural_tolerance}
        among = (
            f"teacher epochs whose student's natural accuracy is within {natural_tolerance:.0%} "
            f"of the best ({best_nat:.1%})"
        )
    else:
        eligible, among = means, f"the {len(means)} teacher epochs {sorted(means)} (section 4.2: maximum robustness)"
    epoch = max(eligible, key=lambda e: (eligible[e][1], eligible[e][0], -e))
    reason = (
        f"teacher epoch {epoch}{f', chosen on {data}' if data else ''}: its {loss} student reaches "
        f"{means[epoch][1]:.1%} adversarial and {means[epoch][0]:.1%} natural accuracy, "
        f"the highest adversarial accuracy among {among}"
    )
    return epoch, reason


def choose_teacher_stage(
    out: Path,
    sweep: dict[str, dict[str, Any]],
    fixed_epoch: int | None,
    loss: str,
    rule: str = "robustness",
    natural_tolerance: float | None = None,
) -> dict[str, Any]:
    """The teacher epoch: ``fixed_epoch``, or ``rule`` (`choose_teacher`) on the ``loss`` sweep
    students' VALIDATION records only (their test records are figure A.6's, read once to
    report). Writes ``plan/teacher.json``: epoch, rule, loss, split ("val", or None when
    fixed), n_val (validation images) and per sweep student its val_clean_acc and
    val_robust_acc (the numbers that chose)."""
    sweep = {name: info for name, info in sweep.items() if info["loss"] == loss}  # what the rule reads
    if fixed_epoch is not None:
        epoch, reason = int(fixed_epoch), f"teacher epoch {fixed_epoch} fixed by the preset (the paper: 40)"
        info = {"epoch": epoch, "rule": reason, "loss": loss, "split": None, "n_val": None, "sweep": sweep}
    else:
        summaries = {
            name: s
            for name, v in sweep.items()
            if (s := eval_summary(out, v["run_id"], v["epoch"], split="val")) is not None
        }
        n_val = max((int(s["n"]) for s in summaries.values()), default=0)
        data = f"the validation split ({n_val} images)"
        epoch, reason = choose_teacher(sweep, summaries, loss, rule, natural_tolerance, data=data)
        chose = {
            n: {"val_clean_acc": s["clean_acc"], "val_robust_acc": s["robust_acc"], "val_n": s["n"]}
            for n, s in summaries.items()
        }
        info = {
            "epoch": epoch,
            "rule": reason,
            "loss": loss,
            "split": "val",
            "n_val": n_val,
            "sweep": {n: {**sweep[n], **chose.get(n, {})} for n in sweep},
        }
    atomic_write_json(teacher_choice(out), info)
    log.info("%s", reason)
    return {"epoch": epoch, "rule": reason}


def analyze_stage(out: Path, st: list[str], at: list[str], epoch: int | None) -> dict[str, Any]:
    from logitscope.analysis.analyze import analyze
    from logitscope.data import load_data
    from logitscope.store.runs import Run

    cfg = Run(runs_dir(out) / st[0]).config
    result = analyze(
        [runs_dir(out) / r for r in st],
        [runs_dir(out) / r for r in at],
        epoch,
        analysis_dir(out),
        class_names=load_data(cfg.data).class_names,
        dataset=cfg.data.name,
    )
    return {"split": result["split"], "skipped": result.get("skipped", {})}


def manifolds_stage(
    out: Path,
    models: dict[str, dict[str, Any]],
    eps: float,
    p: int,
    m: int,
    n_t: int,
    max_features: int,
    simulate: bool = True,
    n_dichotomies: int = 50,
    simulate_models: list[str] | None = None,
) -> dict[str, Any]:
    from logitscope.manifolds.geometry import measure_geometry

    runs = {label: (runs_dir(out) / v["run_id"], v["epoch"]) for label, v in models.items()}
    result = measure_geometry(
        runs,
        eps=eps,
        n_manifolds=p,
        n_points=m,
        n_t=n_t,
        max_features=max_features,
        out_dir=manifolds_dir(out),
        simulate=simulate,
        n_dichotomies=n_dichotomies,
        simulate_models=simulate_models,
    )
    return {"models": sorted(result.get("models", {}))}


def theory_stage(out: Path, classes: int, st: str, at: str, eps: float, n: int) -> dict[str, Any]:
    """Appendix C's model, plus (beyond the paper) the measured logit-gap change under FGSM of
    the first ST and AT models against the quadratic law: data only (``theory.json`` and
    ``fgsm_gap.npz``), the report draws the figures."""
    from logitscope.data import load_data
    from logitscope.store.models import load_model
    from logitscope.store.runs import Run
    from logitscope.theory.fgsm_gap import measure_gap_change
    from logitscope.theory.model import write_theory

    data = load_data(Run(runs_dir(out) / st).config.data)
    x, y = data.x_test[:n].float() / 255, data.y_test[:n]
    gaps = {
        label: measure_gap_change(load_model(runs_dir(out) / rid), x, y, eps) for label, rid in (("ST", st), ("AT", at))
    }
    folder = theory_dir(out)
    result = write_theory(folder, n_classes=classes, gap_results=gaps)  # stores gaps in fgsm_gap.npz
    return {"thresholds": {k: v.get("threshold") for k, v in result.get("thresholds", {}).items()}}


def report_stage(out: Path, **params: Any) -> dict[str, Any]:
    """The report, built from whatever finished; the plan's recorded failures are marked in it
    (read here, not passed as parameters: they must not change the report's cache key)."""
    from logitscope.plan.dag import plan_failures
    from logitscope.report.build import build_report

    failed = {name: str(record.get("error", "failed")) for name, record in plan_failures(out).items()}
    return {"html": str(build_report(Path(out), failed=failed, **params)), "failed": sorted(failed)}
