"""Assemble the reproduce report from the stores alone: tables 1-3, every figure, the claims.

Everything here reads files written by earlier stages (run folders, ``eval/`` records,
``analysis/``, ``manifolds/``, ``theory/``, ``plan/teacher.json``); nothing is recomputed
except the small figures of the distillation section, drawn from the students' records.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from logitscope.report.model import Claim, Figure, Report, Section, Table
from logitscope.stats import mean_sd
from logitscope.store.runs import Run, environment

log = logging.getLogger(__name__)

# The paper's numbers (CIFAR-10 unless said otherwise).
PAPER_TABLE1 = {
    "ST": ("94.5% ± 0.20%", "0.00% ± 0.00%"),
    "AT (last epoch)": ("—", "—"),
    "AT (teacher epoch)": ("74.0% ± 0.63%", "41.5% ± 0.63%"),
}
PAPER_TABLE2 = {
    "normal": ("75.2% ± 0.30%", "30.4% ± 0.34%"),
    "fix1-permute": ("77.6% ± 0.6%", "13.3% ± 2.0%"),
    "correct-fix1": ("92.1% ± 0.19%", "0.1% ± 0.05%"),
    "hybrid": ("87.86% ± 0.19%", "0.00% ± 0.00%"),
}
PAPER_TABLE3 = {"standard": "1.66 h", "pgd-at": "18 h", "distill": "3.83 h"}


def pct(values: Sequence[float]) -> str:
    """``"74.0% ± 0.6%"``: mean ± sample sd over seeds; ``"74.0% (n=1)"`` for one seed; "—" for none."""
    m, s = mean_sd(values)
    if math.isnan(m):
        return "—"
    return f"{100 * m:.1f}% (n=1)" if math.isnan(s) else f"{100 * m:.1f}% ± {100 * s:.1f}%"


def _summary(runs: Path, run_id: str, epoch: int | None) -> dict[str, Any] | None:
    folder = runs / run_id / "eval"
    if not folder.is_dir():
        return None
    if epoch is None:
        files = sorted(folder.glob("paper-epoch_*.json"))
        return json.loads(files[-1].read_text()) if files else None
    p = folder / f"paper-epoch_{epoch:03d}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _accs(runs: Path, ids: Sequence[str], epoch: int | None) -> tuple[list[float], list[float]]:
    sums = [s for rid in ids if (s := _summary(runs, rid, epoch)) is not None]
    return [s["clean_acc"] for s in sums], [s["robust_acc"] for s in sums]


class Failures:
    """The plan's failed stages (stage name -> one-line error), for marking what they feed."""

    def __init__(self, errors: dict[str, str] | None = None) -> None:
        self.errors = dict(errors or {})

    def first(self, *prefixes: str) -> str | None:
        """ "<stage>: <error>" for the first failed stage whose name starts with a prefix."""
        for name, error in self.errors.items():
            if name.startswith(prefixes):
                return f"{name}: {error}"
        return None


def _fig(
    folder: Path,
    name: str,
    fid: str,
    title: str,
    caption: str,
    skipped: dict[str, str] | None = None,
    failed: str | None = None,
) -> Figure:
    path = folder / f"{name}.png"
    if path.is_file():
        return Figure(fid, title, path, caption)
    reason = f"failed: {failed}" if failed else (skipped or {}).get(name, f"{path.name} was not produced")
    return Figure(fid, title, path, caption, missing_reason=reason)


def _claim(
    cid: str, statement: str, statistic: str, holds: bool | None, detail: str = "", failed: str | None = None
) -> Claim:
    """A claim; ``failed`` (the failed stage that measures it, with its error) overrides the verdict."""
    if failed:
        return Claim(cid, statement, f"failed: {failed}", "failed", detail)
    verdict = "not measured" if holds is None else ("holds" if holds else "does not hold")
    return Claim(cid, statement, statistic, verdict, detail)


def _fmt(v: Any) -> str:
    """Compact text for a measured value: numbers, {"mean", "sd"} pairs, nested groups."""
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        if "mean" in v and not isinstance(v["mean"], (dict, list)):
            sd = v.get("sd")
            if sd is None or (isinstance(sd, float) and math.isnan(sd)):  # one run: sd undefined (logitscope.stats)
                return f"{_fmt(v['mean'])}" + (" (n=1)" if v.get("n") == 1 else " ± —")
            return f"{_fmt(v['mean'])} ± {_fmt(sd)}"
        parts = [f"{k}: {_fmt(x)}" for k, x in v.items() if not isinstance(x, list)]
        return ", ".join(parts)
    return str(v)


def table1(
    runs: Path, st: list[str], at: list[str], last: int, teacher_epoch: int | None, failures: Failures | None = None
) -> Table:
    failures = failures or Failures()
    rows = []
    for label, method, ids, epoch in (
        ("ST", "st", st, last),
        ("AT (last epoch)", "at", at, last),
        ("AT (teacher epoch)", "at", at, teacher_epoch),
    ):
        paper = PAPER_TABLE1[label]
        name = f"{label}" + (f" (epoch {epoch})" if "teacher" in label else "")
        nat, adv = _accs(runs, ids, epoch) if epoch is not None else ([], [])
        failed = failures.first(f"train-{method}-s", f"eval-train-{method}-s") if len(adv) < len(ids) else None
        if epoch is None:
            failed = failures.first("choose-teacher") or "the teacher epoch was not chosen"
        cells = [pct(nat), pct(adv)] if nat else [f"failed: {failed}" if failed else "—"] * 2
        if nat and failed:
            cells = [c + f" ({len(ids) - len(adv)} of {len(ids)} seeds failed)" for c in cells]
        rows.append([name, paper[0], cells[0], paper[1], cells[1]])
    return Table(
        "table1",
        "Table 1: natural and adversarial accuracy (APGD-CE then APGD-DLR)",
        ["model", "A_natural paper", "A_natural this run", "A_adversarial paper", "A_adversarial this run"],
        rows,
        note="mean ± sd over seeds; the paper's numbers are ResNet-18 on CIFAR-10",
    )


def distillation_section(
    out: Path,
    runs: Path,
    students: dict[str, list[str]],
    sweep: dict[str, Any],
    teacher: dict[str, Any],
    claims: list[Claim],
    failures: Failures | None = None,
) -> Section:
    from logitscope.report import figures_distill as fd

    failures = failures or Failures()
    folder = out / "report" / "figures"
    acc = {tag: _accs(runs, ids, None) for tag, ids in students.items()}

    def failed_students(*tags: str) -> str | None:
        return failures.first(*(f"{p}distill-{t}-s" for t in tags for p in ("", "eval-")))

    def failed_sweep(loss: str | None = None) -> str | None:
        names = [n for n, i in sweep.items() if loss is None or i["loss"] == loss]
        return failures.first(*names, *(sweep[n]["eval"] for n in names)) if names else None

    rows = []
    for tag in students:
        nat, adv = acc[tag]
        paper = PAPER_TABLE2.get(tag, ("—", "—"))
        cells = [pct(nat), pct(adv)]
        if (failed := failed_students(tag)) is not None:
            cells = [f"failed: {failed}"] * 2 if not adv else [c + " (some seeds failed)" for c in cells]
        rows.append([tag, paper[0], cells[0], paper[1], cells[1], str(len(adv))])
    t2 = Table(
        "table2",
        "Table 2: students distilled from manipulated AT-teacher logits",
        ["student", "A_natural paper", "A_natural this run", "A_adversarial paper", "A_adversarial this run", "seeds"],
        rows,
        note="every student is evaluated with the same protocol as table 1",
    )
    figs = []
    # Figure 4A: one training sample's targets before and after each transform.
    panels, label = {}, None
    for tag in ("normal", "fix3-permute", "fix3-average", "correct-fix1", "hybrid"):
        if tag in students:
            p = runs / students[tag][0] / "targets" / "targets.npy"
            if p.is_file():
                t = np.load(p, mmap_mode="r")
                labels = Run(runs / students[tag][0]).logits.labels("train")
                if label is None:
                    wrong = np.flatnonzero(np.asarray(t).argmax(1) != labels)
                    idx = int(wrong[0]) if len(wrong) else 0
                    label = int(labels[idx])
                panels[tag] = np.asarray(t[idx])
    if panels:
        figs.append(
            Figure(
                "fig4a",
                "Figure 4A: one sample's teacher targets after each manipulation",
                fd.fig4a_target_transforms(panels, label, folder / "fig4a.png"),
                "blue: the true class; orange: values the manipulation changed",
            )
        )
    ks = sorted({int(t[3:].split("-")[0]) for t in students if t.startswith("fix")})
    if ks:
        permute = {k: acc[f"fix{k}-permute"][1] for k in ks if f"fix{k}-permute" in acc}
        average = {k: acc[f"fix{k}-average"][1] for k in ks if f"fix{k}-average" in acc}
        figs.append(
            Figure(
                "fig4b",
                "Figure 4B: student adversarial accuracy against k",
                fd.fig4b_accuracy_vs_k(
                    permute, folder / "fig4b.png", average=average, normal=acc.get("normal", ([], []))[1]
                ),
                "fix-k: the teacher's top-k logits kept, the rest permuted or averaged; line: normal distillation",
            )
        )
    nat: dict[str, dict[int, list[float]]] = {}
    adv: dict[str, dict[int, list[float]]] = {}
    for info in sweep.values():  # figure A.6/A.7's students, both losses
        if (s := _summary(runs, info["run_id"], info["epoch"])) is not None:
            nat.setdefault(info["loss"], {}).setdefault(int(info["teacher_epoch"]), []).append(s["clean_acc"])
            adv.setdefault(info["loss"], {}).setdefault(int(info["teacher_epoch"]), []).append(s["robust_acc"])
    if "l1" in nat:
        figs.append(
            Figure(
                "figA6",
                "Figure A.6: student accuracy against the teacher's epoch (L1)",
                fd.figA6_teacher_epoch(nat["l1"], adv["l1"], folder / "figA6.png"),
                teacher.get("rule", ""),
            )
        )
        figs.append(
            Figure(
                "figA7",
                "Figure A.7: L1 logit distillation against KL softmax distillation",
                fd.figA7_l1_vs_kl(nat, adv, folder / "figA7.png"),
                "per teacher epoch; both losses with the same student schedule"
                + (f" ({r})" if (r := _kl_recipe(runs, sweep)) else "")
                + (f"; failed: {f}" if (f := failed_sweep()) else ""),
            )
        )
    # Claims of section 4.2 and appendix A.3.
    normal = mean_sd(acc.get("normal", ([], []))[1])[0]
    k_adv = {k: mean_sd(acc[f"fix{k}-permute"][1])[0] for k in ks if f"fix{k}-permute" in acc}
    failed_k = failed_students("normal", *(f"fix{k}-permute" for k in ks))
    if (k_adv and not math.isnan(normal)) or failed_k:
        kmax = max(k_adv) if k_adv else 0
        rising = float(np.corrcoef(list(k_adv), list(k_adv.values()))[0, 1]) if len(k_adv) > 1 else float("nan")
        claims.append(
            _claim(
                "distill-k",
                "Student robustness rises with k, and fix-7 is within 1% of normal",
                f"corr(k, adv) = {rising:.2f}; fix-{kmax} {k_adv.get(kmax, math.nan):.1%} vs normal {normal:.1%}",
                None if math.isnan(rising) else bool(rising > 0 and abs(k_adv[kmax] - normal) <= 0.01),
                failed=failed_k,
            )
        )
    for tag, text in (
        ("correct-fix1", "Correct-fix-1 students lose all robustness"),
        ("hybrid", "Hybrid ST-AT students lose all robustness"),
    ):
        if tag in acc:
            m = mean_sd(acc[tag][1])[0]
            fix1 = mean_sd(acc.get("fix1-permute", ([], []))[1])[0]
            claims.append(
                _claim(
                    tag,
                    text,
                    f"adversarial {m:.1%} (fix-1 permute {fix1:.1%}, normal {normal:.1%})",
                    None if math.isnan(m) else bool(m < 0.02 or (not math.isnan(normal) and m < 0.1 * normal)),
                    failed=failed_students(tag, "fix1-permute", "normal"),
                )
            )
    if failed_sweep():
        claims.append(
            _claim(
                "l1-vs-kl", "L1 logit distillation transfers more robustness than KL", "", None, failed=failed_sweep()
            )
        )
    elif "l1" in adv and "kl" in adv:
        l1 = np.mean([np.mean(v) for v in adv["l1"].values()])
        kl = np.mean([np.mean(v) for v in adv["kl"].values()])
        claims.append(
            _claim(
                "l1-vs-kl",
                "L1 logit distillation transfers more robustness than KL",
                f"mean student adversarial accuracy L1 {l1:.1%} vs KL {kl:.1%}",
                bool(l1 > kl),
            )
        )
    if failed_sweep("l1"):
        claims.append(
            _claim(
                "late-teacher",
                "Late teachers distil less robustness than the best checkpoint",
                "",
                None,
                failed=failed_sweep("l1"),
            )
        )
    elif "l1" in adv and len(adv["l1"]) > 1:
        epochs = sorted(adv["l1"])
        first, last = np.mean(adv["l1"][epochs[0]]), np.mean(adv["l1"][epochs[-1]])
        best = max(epochs, key=lambda e: np.mean(adv["l1"][e]))
        claims.append(
            _claim(
                "late-teacher",
                "Late teachers distil less robustness than the best checkpoint",
                f"best teacher epoch {best}: {np.mean(adv['l1'][best]):.1%}; last ({epochs[-1]}): {last:.1%}; "
                f"first ({epochs[0]}): {first:.1%}",
                bool(last < np.mean(adv["l1"][best])),
            )
        )
    corr = _provenance_report(runs, students.get("correct-fix1", []))
    text = (
        "The teacher's training error that correct-fix-1 fixed: "
        + (pct(corr) if corr else "—")
        + " (the paper: 19.6% ± 0.6%). "
        + teacher.get("rule", "")
    )
    if not students and (failed := failures.first("choose-teacher", *sweep)):
        text += f" No student was trained: the teacher epoch could not be chosen (failed: {failed})."
    return Section(
        "distillation", "Robust distillation with manipulated targets (section 4.2, A.3)", text, [t2], figs, []
    )


def _kl_recipe(runs: Path, sweep: dict[str, Any]) -> str:
    """What figure A.7's KL students trained with, read from the first one's config."""
    for info in sweep.values():
        if info["loss"] == "kl" and (runs / info["run_id"] / "config.yaml").is_file():
            c = Run(runs / info["run_id"]).config
            clip = f"gradient-norm clip {c.optim.grad_clip:g}" if c.optim.grad_clip else "no clipping"
            return (
                f"KL: T*KL(softmax(t/T) || softmax(s/T)), T={c.distill.temperature:g}; both losses "
                f"{c.epochs} epochs, SGD lr {c.optim.lr:g}, batch {c.optim.batch_size}, {clip}"
            )
    return ""


def _provenance_report(runs: Path, ids: Sequence[str]) -> list[float]:
    out = []
    for rid in ids:
        p = runs / rid / "targets" / "provenance.json"
        if p.is_file():
            for rep in json.loads(p.read_text()).get("reports", []):
                if "teacher_error_rate" in rep:
                    out.append(rep["teacher_error_rate"])
    return out


def table3(runs: Path, all_ids: dict[str, list[str]]) -> Table:
    rows = []
    for kind, ids in all_ids.items():
        secs = []
        for rid in ids:
            if (runs / rid / "metrics.csv").is_file():
                r = Run(runs / rid)
                secs.append(
                    sum(float(m.get("train_seconds", 0)) + float(m.get("snapshot_seconds", 0)) for m in r.metrics())
                )
        m, s = mean_sd(secs)
        rows.append(
            [
                kind,
                PAPER_TABLE3.get(kind, "—"),
                "—" if math.isnan(m) else f"{m:.1f} s" + (" (n=1)" if math.isnan(s) else f" ± {s:.1f} s"),
                str(len(secs)),
            ]
        )
    return Table(
        "table3",
        "Table 3: wall time per training run",
        ["training", "paper (Titan Xp, CIFAR-10)", "this run", "runs"],
        rows,
        note="this run: training plus logit snapshots, summed over epochs, on this machine",
    )


def build_report(
    out: Path,
    preset: dict[str, Any],
    runs: dict[str, list[str]],
    students: dict[str, list[str]],
    sweep: dict[str, Any],
    teacher_epoch: int | None,
    last_epoch: int,
    failed: dict[str, str] | None = None,
) -> Path:
    """The report of a reproduce folder. ``failed``: the plan's failed stages (name -> error):
    what they feed is marked "failed: reason", and a section lists them; outputs a failed
    stage may have left from an earlier run are not read."""
    out = Path(out)
    rdir = out / "runs"
    failures = Failures(failed)
    teacher = (
        json.loads((out / "plan" / "teacher.json").read_text()) if (out / "plan" / "teacher.json").is_file() else {}
    )
    claims: list[Claim] = []
    sections: list[Section] = []

    # Section 4.1: distributions, table 1.
    analysis_dir = out / "analysis"
    f_analysis = failures.first("analyze")
    analysis = (
        json.loads((analysis_dir / "analysis.json").read_text())
        if (analysis_dir / "analysis.json").is_file() and not f_analysis
        else {}
    )
    if f_analysis:
        claims.append(
            _claim(
                "analysis", "The findings of sections 4.1 and 4.3 (logits, ranks, overlap)", "", None, failed=f_analysis
            )
        )
    skipped = analysis.get("skipped", {})
    for i, c in enumerate(analysis.get("claims", [])):
        claims.append(
            _claim(
                f"analysis-{i}",
                c["claim"],
                f"ours: {_fmt(c['ours'])}; paper: {_fmt(c['paper'])}",
                c["holds"],
                c.get("where", ""),
            )
        )
    t1 = table1(rdir, runs["st"], runs["at"], last_epoch, teacher_epoch, failures)
    sections.append(
        Section(
            "logits",
            "Logit distributions: ST against AT (section 4.1, appendix B)",
            f"Preset {preset['name']}: {len(runs['st'])} ST and {len(runs['at'])} AT runs.",
            [t1],
            [
                _fig(
                    analysis_dir,
                    "fig1_max_logit_evolution",
                    "fig1",
                    "Figure 1 / B.4: max-logit distribution over epochs (train)",
                    "",
                    skipped,
                    f_analysis,
                ),
                _fig(
                    analysis_dir,
                    "fig2a_gap_histograms",
                    "fig2a",
                    "Figure 2A / B.5: logit-gap histograms, AT vs ST",
                    "",
                    skipped,
                    f_analysis,
                ),
                _fig(
                    analysis_dir,
                    "fig2b_adv_acc_by_gap",
                    "fig2b",
                    "Figure 2B: adversarial accuracy by clean logit gap",
                    "mean ± sd over seeds",
                    skipped,
                    f_analysis,
                ),
                _fig(
                    analysis_dir,
                    "figb1_gap_evolution",
                    "figB1",
                    "Figure B.1: logit-gap distributions across epochs",
                    "",
                    skipped,
                    f_analysis,
                ),
            ],
            [],
        )
    )
    sections.append(
        Section(
            "ranks",
            "Which images and which classes: ranks, errors, overlap (sections 4.1, 4.3)",
            "",
            [],
            [
                _fig(
                    analysis_dir,
                    "fig3a_rank_scatter",
                    "fig3a",
                    "Figure 3A: confidence ranks of one class, AT vs ST",
                    "",
                    skipped,
                    f_analysis,
                ),
                _fig(
                    analysis_dir,
                    "fig3b_rank_disagreement",
                    "fig3b",
                    "Figure 3B: rank disagreement per class and model pair",
                    "the paper: 11.8% AT-ST, 1.1% AT-AT",
                    skipped,
                    f_analysis,
                ),
                _fig(
                    analysis_dir,
                    "fig3c_error_class_rank",
                    "fig3c",
                    "Figure 3C: rank of the predicted class in the true class's mean logits",
                    "",
                    skipped,
                    f_analysis,
                ),
                _fig(
                    analysis_dir,
                    "fig3d_average_overlap",
                    "fig3d",
                    "Figure 3D / B.6: average overlap AO@k",
                    "solid: pairs of models; dashed: same-class image baseline",
                    skipped,
                    f_analysis,
                ),
                _fig(
                    analysis_dir,
                    "figb2_confidence_quadrants",
                    "figB2",
                    "Figure B.2: images by AT and ST confidence",
                    "",
                    skipped,
                    f_analysis,
                ),
                _fig(
                    analysis_dir,
                    "figb3_neighbors",
                    "figB3",
                    "Figure B.3: nearest images by logit cosine similarity",
                    "seed, ST neighbours, AT neighbours",
                    skipped,
                    f_analysis,
                ),
            ],
            [],
        )
    )
    sections.append(distillation_section(out, rdir, students, sweep, teacher, claims, failures))

    mdir = out / "manifolds"
    f_manifolds = failures.first("manifolds")
    sections.append(
        Section(
            "manifolds",
            "Manifold analysis of adversarial L-inf balls (figure 5, A.8)",
            _read_text(mdir / "summary.txt"),
            [],
            [
                _fig(
                    mdir,
                    "fig5",
                    "fig5",
                    "Figure 5: capacity, radius, dimension, centre correlation by layer",
                    "",
                    failed=f_manifolds,
                ),
                _fig(
                    mdir,
                    "figA8",
                    "figA8",
                    "Figure A.8: MFTMA capacity against simulated capacity",
                    "",
                    {
                        "figA8": "simulated capacity is off in this preset (manifolds.simulate=false): it costs "
                        "minutes per layer on a CPU; set --set manifolds.simulate=true"
                    },
                    f_manifolds,
                ),
            ],
            [],
        )
    )
    mclaims = mdir / "claims.json"
    if f_manifolds:
        claims.append(_claim("manifolds", "The manifold findings (figure 5, A.8)", "", None, failed=f_manifolds))
    elif mclaims.is_file():
        for i, c in enumerate(json.loads(mclaims.read_text())):
            claims.append(_claim(f"manifolds-{i}", c["claim"], c["statistic"], c["holds"]))

    tdir = out / "theory"
    f_theory = failures.first("theory")
    theory = json.loads((tdir / "theory.json").read_text()) if (tdir / "theory.json").is_file() and not f_theory else {}
    if f_theory:
        claims.append(_claim("theory", "The analytical model of appendix C", "", None, failed=f_theory))
    ttables = []
    if theory.get("statements"):
        ttables.append(
            Table(
                "theory-statements",
                "Appendix C: what the code confirms",
                ["statement", "verdict", "evidence"],
                [[s["statement"], s["verdict"], s["evidence"]] for s in theory["statements"]],
            )
        )
    th = theory.get("thresholds", {})
    if th:
        rows = [
            [name, "3.5" if "paper" in t else "—", f"{t['threshold']:.4f}", t.get("boundary", "")]
            for name, t in th.items()
        ]
        note = (
            "the paper's 3.5 is for misclassified samples; 'magnitude' reads the constraint on |g| and |psi|, "
            "'literal' as printed (a pole at ln(N-1))"
        )
        ttables.append(
            Table(
                "theory-thresholds",
                "Admissibility thresholds on beta",
                ["case / sign / reading", "paper", "this code", "boundary"],
                rows,
                note=note,
            )
        )
        main = th.get("wrong+/magnitude/unsquared", {}).get("threshold")
        literal = th.get("wrong+/literal/unsquared", {}).get("threshold", float("nan"))
        stat = f"threshold {main:.3f} (magnitude reading, + root); literal reading {literal:.3f}" if main else "—"
        claims.append(
            _claim(
                "theory-3.5",
                "Misclassified samples need beta > 3.5 (10 classes)",
                stat,
                None if main is None else bool(abs(main - 3.5) < 0.1),
            )
        )
    sections.append(
        Section(
            "theory",
            "The analytical model of appendix C",
            theory.get("summary", ""),
            ttables,
            [
                _fig(
                    tdir,
                    "fig_c1",
                    "figC1",
                    "Figure C.1: constraints on beta and the thresholds they imply",
                    "",
                    failed=f_theory,
                ),
                _fig(tdir, "fig_c2", "figC2", "Figure C.2: mean-field loss surface", "", failed=f_theory),
                _fig(
                    tdir,
                    "fig_c3",
                    "figC3",
                    "Figure C.3: relative logit-gap change under FGSM (equation 10)",
                    "",
                    failed=f_theory,
                ),
                _fig(
                    tdir,
                    "fig_fgsm_gap",
                    "figFGSM",
                    "Beyond the paper: measured gap change under FGSM against the gap",
                    "ST and AT",
                    failed=f_theory,
                ),
            ],
            [],
        )
    )

    all_ids = {"standard": runs["st"], "pgd-at": runs["at"], "distill": [i for v in students.values() for i in v]}
    sections.append(Section("compute", "Compute", "", [table3(rdir, all_ids)], [], []))
    if failures.errors:
        sections.insert(0, failures_section(out, failures))
    sections.insert(
        0,
        Section(
            "claims", "The paper's claims, checked", "Each finding as an automatic check on this run.", [], [], claims
        ),
    )
    configs = {}
    for rid in [*runs["st"], *runs["at"], *(i for v in students.values() for i in v)]:
        p = rdir / rid / "config.yaml"
        if p.is_file():
            import yaml

            configs[rid] = yaml.safe_load(p.read_text())
    report = Report(
        title="logitscope: what adversarial training puts into the logits",
        subtitle=f"preset {preset['name']}; teacher epoch {teacher_epoch if teacher_epoch is not None else '—'}"
        + (f"; {len(failures.errors)} stage(s) failed" if failures.errors else ""),
        sections=sections,
        environment=environment(),
        run_configs=configs,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    from logitscope.report.html import render_report

    return render_report(report, out / "report")


def failures_section(out: Path, failures: Failures) -> Section:
    """The failed stages, their errors and where their logs are: what to fix before a rerun."""
    rows: list[list[Any]] = [
        [name, error, str(Path("plan") / "logs" / f"{name}.log") if not error.startswith("not run:") else "—"]
        for name, error in failures.errors.items()
    ]
    return Section(
        "failed",
        "Stages that failed",
        "These stages raised (or could not run because a stage they need raised). Everything else "
        'finished; the tables, figures and claims they feed say "failed". Rerun the same '
        "`logitscope reproduce` command to retry exactly these: finished stages are kept.",
        [Table("failed-stages", "Failed stages", ["stage", "error", "log (under the output folder)"], rows)],
        [],
        [],
    )


def _read_text(p: Path) -> str:
    return p.read_text() if p.is_file() else ""
