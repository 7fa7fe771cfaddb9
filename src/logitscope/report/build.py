"""Assemble the reproduce report from the stores alone: tables 1-3, every figure, the claims.

Everything here reads files written by earlier stages (run folders, ``eval/`` records,
``analysis/``, ``manifolds/``, ``theory/``, ``plan/teacher.json``) and draws every figure into
``report/figures/`` from those results; nothing is measured again.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from logitscope.analysis.analyze import SUMMARY_FILE, read_analysis
from logitscope.data import load_data
from logitscope.fileio.errors import load_npz, read_json, read_yaml
from logitscope.report import figures_distill
from logitscope.report.claims import METHOD, Evidence, Records, check_claims
from logitscope.report.figures import draw_logit_figures
from logitscope.report.figures_manifolds import fig5_geometry, figA8_capacity, in_stored_order
from logitscope.report.model import Claim, Figure, Report, Section, Table
from logitscope.stats import BOOTSTRAP_LEVEL, mean_sd
from logitscope.store import outputs
from logitscope.store.evaluations import find_record, find_summary, summary_path
from logitscope.store.runs import Run, environment
from logitscope.store.targets import provenance_path, targets_path

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
    """The paper protocol's test summary of a run at ``epoch`` (None: its latest), or None."""
    p = find_summary(runs / run_id, epoch)
    return read_json(p, expect=dict) if p is not None else None


def _accs(runs: Path, ids: Sequence[str], epoch: int | None) -> tuple[list[float], list[float]]:
    sums = [s for rid in ids if (s := _summary(runs, rid, epoch)) is not None]
    return [s["clean_acc"] for s in sums], [s["robust_acc"] for s in sums]


class Failures:
    """The plan's failed stages (stage name -> one-line error), for marking what they feed."""

    def __init__(self, errors: dict[str, str] | None = None) -> None:
        self.errors = dict(errors or {})

    def first(self, *prefixes: str) -> str | None:
        """ "<stage>: <error>" for the first failed stage whose name starts with a prefix (or
        matches it as an ``fnmatch`` pattern, e.g. ``distill-sweep-e*-l1-s*``)."""
        for name, error in self.errors.items():
            if name.startswith(prefixes) or any("*" in p and fnmatch(name, p) for p in prefixes):
                return f"{name}: {error}"
        return None


def _fig(
    drawn: Mapping[str, Path],
    name: str,
    fid: str,
    title: str,
    caption: str,
    skipped: Mapping[str, str] | None = None,
    failed: str | None = None,
) -> Figure:
    """The report's figure ``name`` if it was drawn (``drawn``: name -> PNG), else its reason."""
    if name in drawn and not failed:
        return Figure(fid, title, drawn[name], caption)
    skipped = skipped or {}
    reason = f"failed: {failed}" if failed else skipped.get(name) or skipped.get("*") or f"{name} was not produced"
    return Figure(fid, title, Path(f"{name}.png"), caption, missing_reason=reason)


def _drawn(what: str, draw: Callable[[], tuple[dict[str, Path], dict[str, str]]]) -> tuple[dict, dict]:
    """Draw a stage's figures; a figure that cannot be drawn (a damaged result) is reported in
    the page with its reason, never fatal to the rest of the report."""
    try:
        return draw()
    except (OSError, ValueError, KeyError, TypeError) as exc:  # DamagedFileError is a ValueError
        log.warning("the %s figures could not be drawn: %s", what, exc)
        return {}, {"*": f"could not be drawn: {type(exc).__name__}: {exc}"}


def logit_figures(
    out: Path, folder: Path, failed: str | None, analysis_dir: Path | None = None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Draw sections 4.1's and 4.3's figures from the analyze stage's results
    (``analysis_dir``, default ``out/analysis``) into ``folder``."""
    source = analysis_dir or outputs.analysis_dir(out)
    if failed or not (source / SUMMARY_FILE).is_file():
        return {}, {}

    def draw() -> tuple[dict[str, Path], dict[str, str]]:
        summary, results = read_analysis(source)
        return draw_logit_figures(summary, results, folder, _analysed_images(summary))

    return _drawn("logit", draw)


def _analysed_images(summary: Mapping[str, Any]) -> np.ndarray | None:
    """The images the analysis indexed (its split of the first run's dataset), or None."""
    paths = list(summary.get("paths", {}).values())
    try:
        x, _ = load_data(Run(paths[0]).config.data).split(summary["split"])
    except (IndexError, KeyError, OSError, ValueError) as exc:
        log.warning("figures B.2 and B.3 need the analysed images: %s", exc)
        return None
    return x.numpy() if len(x) == summary.get("n_images") else None


def table1(
    runs: Path,
    st: list[str],
    at: list[str],
    last: int,
    teacher_epoch: int | None,
    failures: Failures | None = None,
    analysis_epoch: int | None = None,
) -> Table:
    """Table 1: ST and AT at the last epoch and AT at the teacher epoch (the paper's epoch 40);
    ST too at the analysis epoch when the analysis uses another epoch than the last."""
    failures = failures or Failures()
    rows = []
    lines = [
        ("ST", "st", st, last),
        ("AT (last epoch)", "at", at, last),
        ("AT (teacher epoch)", "at", at, teacher_epoch),
    ]
    if analysis_epoch is not None and analysis_epoch != last:
        lines.insert(1, ("ST (analysis epoch)", "st", st, analysis_epoch))
    for label, method, ids, epoch in lines:
        paper = PAPER_TABLE1.get(label, ("—", "—"))
        name = f"{label}" + (f" (epoch {epoch})" if epoch is not None and epoch != last else "")
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
        note="test split; mean ± sd over seeds; the paper's numbers are ResNet-18 on CIFAR-10 (its AT row: epoch 40)",
    )


def _table2(
    students: dict[str, list[str]], acc: dict[str, tuple[list[float], list[float]]], failed: Callable[..., str | None]
) -> Table:
    rows = []
    for tag in students:
        nat, adv = acc[tag]
        paper = PAPER_TABLE2.get(tag, ("—", "—"))
        cells = [pct(nat), pct(adv)]
        if (why := failed(tag)) is not None:
            cells = [f"failed: {why}"] * 2 if not adv else [c + " (some seeds failed)" for c in cells]
        rows.append([tag, paper[0], cells[0], paper[1], cells[1], str(len(adv))])
    return Table(
        "table2",
        "Table 2: students distilled from manipulated AT-teacher logits",
        ["student", "A_natural paper", "A_natural this run", "A_adversarial paper", "A_adversarial this run", "seeds"],
        rows,
        note="every student is evaluated with the same protocol as table 1",
    )


def _fig4a(runs: Path, students: dict[str, list[str]], teacher: dict[str, Any], folder: Path) -> list[Figure]:
    """Figure 4A: one training sample's targets before and after each transform."""
    panels, label = {}, None
    for tag in ("normal", "fix3-permute", "fix3-average", "correct-fix1", "hybrid"):
        if tag in students:
            p = targets_path(runs / students[tag][0])
            if p.is_file():
                t = np.load(p, mmap_mode="r")
                labels = Run(runs / students[tag][0]).logits.labels("train")
                if label is None:
                    wrong = np.flatnonzero(np.asarray(t).argmax(1) != labels)
                    idx = int(wrong[0]) if len(wrong) else 0
                    label = int(labels[idx])
                panels[tag] = np.asarray(t[idx])
    if not panels:
        return []
    return [
        Figure(
            "fig4a",
            "Figure 4A: one sample's teacher targets after each manipulation",
            figures_distill.fig4a_target_transforms(panels, label, folder / "fig4a.png"),
            f"train split, targets of the AT teacher at epoch {teacher.get('epoch', '—')}; blue: the true "
            "class; orange: values the manipulation changed",
        )
    ]


def _fig4b(students: dict[str, list[str]], acc: dict[str, tuple[list[float], list[float]]], folder: Path) -> list:
    """Figure 4B: student adversarial accuracy against k."""
    ks = sorted({int(t[3:].split("-")[0]) for t in students if t.startswith("fix")})
    if not ks:
        return []
    permute = {k: acc[f"fix{k}-permute"][1] for k in ks if f"fix{k}-permute" in acc}
    average = {k: acc[f"fix{k}-average"][1] for k in ks if f"fix{k}-average" in acc}
    drawn = figures_distill.fig4b_accuracy_vs_k(
        permute, folder / "fig4b.png", average=average or None, normal=acc.get("normal", ([], []))[1]
    )
    return [
        Figure(
            "fig4b",
            "Figure 4B: student adversarial accuracy against k",
            drawn,
            "test split, each student's last epoch; fix-k: the teacher's top-k logits kept, the rest "
            "permuted or averaged; line: normal distillation",
        )
    ]


def _sweep_figures(
    runs: Path, sweep: dict[str, Any], teacher: dict[str, Any], folder: Path, failed: str | None
) -> list[Figure]:
    """Figures A.6 and A.7: the sweep's students against the teacher's epoch, L1 and KL."""
    nat: dict[str, dict[int, list[float]]] = {}
    adv: dict[str, dict[int, list[float]]] = {}
    for info in sweep.values():  # figure A.6/A.7's students, both losses
        if (s := _summary(runs, info["run_id"], info["epoch"])) is not None:
            nat.setdefault(info["loss"], {}).setdefault(int(info["teacher_epoch"]), []).append(s["clean_acc"])
            adv.setdefault(info["loss"], {}).setdefault(int(info["teacher_epoch"]), []).append(s["robust_acc"])
    if "l1" not in nat:
        return []
    recipe = _kl_recipe(runs, sweep)
    return [
        Figure(
            "figA6",
            "Figure A.6: student accuracy against the teacher's epoch (L1)",
            figures_distill.figA6_teacher_epoch(nat["l1"], adv["l1"], folder / "figA6.png"),
            "test split, each student's last epoch; " + teacher.get("rule", ""),
        ),
        Figure(
            "figA7",
            "Figure A.7: L1 logit distillation against KL softmax distillation",
            figures_distill.figA7_l1_vs_kl(nat, adv, folder / "figA7.png"),
            "test split, each student's last epoch, per teacher epoch; both losses with the same student "
            "schedule" + (f" ({recipe})" if recipe else "") + (f"; failed: {failed}" if failed else ""),
        ),
    ]


def distillation_section(
    out: Path,
    runs: Path,
    students: dict[str, list[str]],
    sweep: dict[str, Any],
    teacher: dict[str, Any],
    failures: Failures | None = None,
) -> Section:
    """Section 4.2 and A.3: table 2, the teacher choice, figures 4A, 4B, A.6 and A.7."""
    failures = failures or Failures()
    folder = outputs.figures_dir(out)
    acc = {tag: _accs(runs, ids, None) for tag, ids in students.items()}

    def failed_students(*tags: str) -> str | None:
        return failures.first(*(f"{p}distill-{t}-s" for t in tags for p in ("", "eval-")))

    failed_sweep = failures.first(*sweep, *(i["eval"] for i in sweep.values())) if sweep else None
    figs = _fig4a(runs, students, teacher, folder) + _fig4b(students, acc, folder)
    figs += _sweep_figures(runs, sweep, teacher, folder, failed_sweep)
    tables = [_table2(students, acc, failed_students)]
    if chosen := teacher_choice_table(runs, teacher):
        tables.append(chosen)
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
        "distillation", "Robust distillation with manipulated targets (section 4.2, A.3)", text, tables, figs, []
    )


def teacher_choice_table(runs: Path, teacher: dict[str, Any]) -> Table | None:
    """The numbers that chose the teacher epoch (validation split) beside the test numbers
    figure A.6 reports, per sweep student of the rule's loss; None when the epoch was fixed."""
    if teacher.get("split") != "val":
        return None
    rows = []
    for name, info in sorted(teacher.get("sweep", {}).items(), key=lambda kv: kv[1]["teacher_epoch"]):
        test = _summary(runs, info["run_id"], info["epoch"]) or {}
        cells = [info.get("val_clean_acc"), info.get("val_robust_acc"), test.get("clean_acc"), test.get("robust_acc")]
        mark = " (chosen)" if info["teacher_epoch"] == teacher.get("epoch") else ""
        rows.append([f"{info['teacher_epoch']}{mark}", name, *("—" if c is None else f"{100 * c:.1f}%" for c in cells)])
    return Table(
        "teacher-choice",
        "Appendix A.3: the teacher epoch, chosen on the validation split",
        ["teacher epoch", "student", "val natural", "val adversarial", "test natural", "test adversarial"],
        rows,
        note=f"the rule reads the validation columns only ({teacher.get('n_val', '?')} images held out of training); "
        "the test columns are reported, never used to choose",
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
        p = provenance_path(runs / rid)
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
                parts = ("train_seconds", "snapshot_seconds", "pgd_seconds")
                values = (float(m.get(k) or 0) for m in r.metrics() for k in parts)
                secs.append(sum(v for v in values if math.isfinite(v)))
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
        note="this run: training steps, logit snapshots and the PGD monitor, summed over epochs, on this machine "
        "(students trained as one batch: each its share of the batch's epochs)",
    )


def _record_file(runs: Path, run_id: str, epoch: int | None) -> Path | None:
    """A run's test-split robustness record at ``epoch`` (``None``: its latest)."""
    return find_record(runs / run_id, epoch)


def _records(runs: Path, ids: Sequence[str], epoch: int | None) -> Records | None:
    """The group's records (the seeds that have one), or None when none has."""
    found = [(rid, f) for rid in ids if (f := _record_file(runs, rid, epoch)) is not None]
    if not found:
        return None
    return Records.from_arrays([load_npz(f) for _, f in found], [rid for rid, _ in found], epoch)


def load_evidence(
    out: Path,
    runs: dict[str, list[str]],
    students: dict[str, list[str]],
    sweep: dict[str, Any],
    teacher: dict[str, Any],
    last_epoch: int,
    analysis: dict[str, Any],
    manifolds: dict[str, Any],
    theory: dict[str, Any],
    loss: str = "l1",
) -> Evidence:
    """What the claims registry reads (`logitscope.report.claims.Evidence`), from the stores."""
    rdir = outputs.runs_dir(out)
    groups: dict[str, tuple[Sequence[str], int | None]] = {
        "ST": (runs["st"], last_epoch),
        "AT analysed": (runs["at"], analysis.get("epoch") or last_epoch),
    }
    if teacher.get("epoch") is not None:
        groups["AT teacher"] = (runs["at"], int(teacher["epoch"]))
    groups.update({tag: (ids, None) for tag, ids in students.items()})
    by_sweep: dict[str, list[str]] = {}
    for info in sweep.values():
        by_sweep.setdefault(f"sweep-{info['loss']}-e{info['teacher_epoch']}", []).append(info["run_id"])
    epochs = {info["run_id"]: info["epoch"] for info in sweep.values()}
    groups.update({g: (ids, epochs[ids[0]]) for g, ids in by_sweep.items()})
    records = {g: r for g, (ids, e) in groups.items() if (r := _records(rdir, ids, e)) is not None}
    n_classes = analysis.get("n_classes")
    if n_classes is None and records:
        first = next(iter(records.values()))
        n_classes = int(load_npz(_record_file(rdir, first.runs[0], first.epoch))["clean_logits"].shape[1])
    return Evidence(
        records=records,
        analysis=analysis,
        manifolds=manifolds,
        theory=theory,
        teacher={**teacher, "loss": loss},
        n_classes=n_classes,
        teacher_error=_provenance_report(rdir, students.get("correct-fix1", [])),
    )


def _read_stage_json(path: Path, failed: str | None) -> dict[str, Any]:
    """A stage's JSON result, or {} when it is absent or the stage failed (outputs a failed
    stage may have left from an earlier run are not read)."""
    return read_json(path, expect=dict) if path.is_file() and not failed else {}


def _epoch_text(epoch: int | None) -> str:
    return f"epoch {epoch}" if epoch is not None else "last epoch"


def crosscheck_table(runs: Path, crosscheck: dict[str, Any], failures: Failures) -> Table:
    """Section 3's check of the protocol: the paper's protocol against AutoAttack (standard)
    and ODI, per model, on the same first n test images."""
    protocols = sorted({p for info in crosscheck.values() for p in info.get("protocols", ())})
    rows = []
    for label, info in crosscheck.items():
        rid, epoch, n = info["run_id"], info["epoch"], info["n"]
        row = [label, _epoch_text(epoch), str(n)]
        paper = _record_file(runs, rid, epoch)
        if paper is None:
            row.append("— (no paper-protocol record)")
        else:
            rec = load_npz(paper)
            row.append(f"{100 * float(np.mean(np.asarray(rec['robust'])[:n])):.1f}%")
        for proto in protocols:
            summary = summary_path(runs / rid, proto, epoch)
            if summary.is_file():
                v = read_json(summary, expect=dict)
                row.append(f"{100 * v['robust_acc']:.1f}%" + (f" (n={v['n']})" if v.get("n") != n else ""))
            else:
                failed = failures.first(f"crosscheck-{proto}")
                row.append(f"failed: {failed}" if failed else "—")
        rows.append(row)
    return Table(
        "crosscheck",
        "Cross-check of the protocol (section 3): adversarial accuracy under each attack",
        ["model", "epoch", "test images", "paper protocol (APGD-CE, APGD-DLR)"]
        + [{"autoattack": "AutoAttack (standard)", "odi": "ODI"}.get(p, p) for p in protocols],
        rows,
        note="the same first n test images for every attack; the paper protocol's column is its full-test "
        "record restricted to those images (each image's attack is independent of the batch it ran in)",
    )


def _logits_sections(
    out: Path, runs: dict[str, list[str]], analysis: dict[str, Any], table: Table, f_analysis: str | None
) -> list[Section]:
    """Section 4.1's and 4.3's figures (drawn here from the analyze stage's results) with table 1."""
    drawn, not_drawn = logit_figures(out, outputs.figures_dir(out), f_analysis)
    skipped = {**analysis.get("skipped", {}), **not_drawn}
    at = f"{analysis.get('split', 'test')} split, {_epoch_text(analysis.get('epoch'))}"

    def fig(name: str, fid: str, title: str, caption: str) -> Figure:
        return _fig(drawn, name, fid, title, caption, skipped, f_analysis)

    logits = Section(
        "logits",
        "Logit distributions: ST against AT (section 4.1, appendix B)",
        f"{len(runs['st'])} ST and {len(runs['at'])} AT runs; the image-level analyses use the {at}.",
        [table],
        [
            fig(
                "fig1_max_logit_evolution",
                "fig1",
                "Figure 1 / B.4: max-logit distribution over epochs",
                "train split, every epoch",
            ),
            fig("fig2a_gap_histograms", "fig2a", "Figure 2A / B.5: logit-gap histograms, AT vs ST", at),
            fig(
                "fig2b_adv_acc_by_gap",
                "fig2b",
                "Figure 2B: adversarial accuracy by clean logit gap",
                f"{at}; mean ± sd over seeds",
            ),
            fig(
                "figb1_gap_evolution",
                "figB1",
                "Figure B.1: logit-gap distributions across epochs",
                "train split (and the AT test split), every epoch",
            ),
        ],
        [],
    )
    ranks = Section(
        "ranks",
        "Which images and which classes: ranks, errors, overlap (sections 4.1, 4.3)",
        "",
        [],
        [
            fig("fig3a_rank_scatter", "fig3a", "Figure 3A: confidence ranks of one class, AT vs ST", at),
            fig(
                "fig3b_rank_disagreement",
                "fig3b",
                "Figure 3B: rank disagreement per class and model pair",
                f"{at}; the paper: 11.8% AT-ST, 1.1% AT-AT",
            ),
            fig(
                "fig3c_error_class_rank",
                "fig3c",
                "Figure 3C: rank of the predicted class in the true class's mean logits",
                at,
            ),
            fig(
                "fig3d_average_overlap",
                "fig3d",
                "Figure 3D / B.6: average overlap AO@k",
                f"{at}; solid: pairs of models; dashed: same-class image baseline",
            ),
            fig("figb2_confidence_quadrants", "figB2", "Figure B.2: images by AT and ST confidence", at),
            fig(
                "figb3_neighbors",
                "figB3",
                "Figure B.3: nearest images by logit cosine similarity",
                f"{at}; seed, ST neighbours, AT neighbours",
            ),
        ],
        [],
    )
    return [logits, ranks]


def manifold_figures(manifolds: Mapping[str, Any], folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Figures 5 and A.8 from the manifolds stage's results (``manifolds.json``) into ``folder``."""
    if not manifolds.get("models"):
        return {}, {}

    def draw() -> tuple[dict[str, Path], dict[str, str]]:
        models = in_stored_order(manifolds)
        drawn = {"fig5": fig5_geometry(models, folder / "fig5.png")}
        if manifolds.get("simulated_models"):
            drawn["figA8"] = figA8_capacity(models, folder / "figA8.png")
        return drawn, {}

    return _drawn("manifold", draw)


def _manifolds_section(out: Path, manifolds: dict[str, Any], failed: str | None) -> Section:
    mdir = outputs.manifolds_dir(out)
    drawn, not_drawn = manifold_figures(manifolds, outputs.figures_dir(out))
    epochs = ", ".join(f"{k} {_epoch_text(v.get('epoch'))}" for k, v in manifolds.get("models", {}).items())
    caption = f"test-split exemplars; {epochs}" if epochs else ""
    simulate_off = {
        "figA8": "simulated capacity is off in this preset (manifolds.simulate=false): it costs minutes per layer "
        "on a CPU; set --set manifolds.simulate=true"
    }
    return Section(
        "manifolds",
        "Manifold analysis of adversarial L-inf balls (figure 5, A.8)",
        _read_text(mdir / outputs.MANIFOLDS_TEXT),
        [],
        [
            _fig(
                drawn,
                "fig5",
                "fig5",
                "Figure 5: capacity, radius, dimension, centre correlation by layer",
                caption,
                not_drawn,
                failed=failed,
            ),
            _fig(
                drawn,
                "figA8",
                "figA8",
                "Figure A.8: MFTMA capacity against simulated capacity",
                caption
                + (
                    f"; simulated capacity from {manifolds['n_dichotomies']} random dichotomies per projection size, "
                    f"every layer of the {', '.join(manifolds.get('simulated_models') or ['models'])}"
                    if manifolds.get("n_dichotomies")
                    else ""
                ),
                {**simulate_off, **not_drawn},
                failed,
            ),
        ],
        [],
    )


def theory_figures(out: Path, folder: Path, failed: str | None) -> tuple[dict[str, Path], dict[str, str]]:
    """Appendix C's figures (and the measured FGSM gap change) from the theory stage's results."""
    if failed or not outputs.theory_dir(out).is_dir():
        return {}, {}
    from logitscope.report.figures_theory import draw_theory_figures

    return _drawn("theory", lambda: (draw_theory_figures(outputs.theory_dir(out), folder), {}))


def _theory_section(out: Path, theory: dict[str, Any], failed: str | None) -> Section:
    drawn, not_drawn = theory_figures(out, outputs.figures_dir(out), failed)
    tables = []
    if theory.get("statements"):
        tables.append(
            Table(
                "theory-statements",
                "Appendix C: what the code confirms",
                ["statement", "verdict", "evidence"],
                [[s["statement"], s["verdict"], s["evidence"]] for s in theory["statements"]],
            )
        )
    if th := theory.get("thresholds", {}):
        rows = [
            [n, "3.5" if "paper" in t else "—", f"{t['threshold']:.4f}", t.get("boundary", "")] for n, t in th.items()
        ]
        tables.append(
            Table(
                "theory-thresholds",
                "Admissibility thresholds on beta",
                ["case / sign / reading", "paper", "this code", "boundary"],
                rows,
                note="the paper's 3.5 is for misclassified samples; 'magnitude' reads the constraint on |g| and |psi|, "
                "'literal' as printed (a pole at ln(N-1))",
            )
        )
    figs = [
        ("fig_c1", "figC1", "Figure C.1: constraints on beta and the thresholds they imply", "analytic: no data"),
        ("fig_c2", "figC2", "Figure C.2: mean-field loss surface", "analytic: no data"),
        ("fig_c3", "figC3", "Figure C.3: relative logit-gap change under FGSM (equation 10)", "analytic: no data"),
        (
            "fig_fgsm_gap",
            "figFGSM",
            "Beyond the paper: measured gap change under FGSM against the gap",
            "ST and AT, first test-split images, last epoch",
        ),
    ]
    return Section(
        "theory",
        "The analytical model of appendix C",
        theory.get("summary", ""),
        tables,
        [_fig(drawn, n, fid, title, cap, not_drawn, failed) for n, fid, title, cap in figs],
        [],
    )


def claims_section(claims: list[Claim], note: str = "") -> Section:
    return Section(
        "claims",
        "The paper's claims, checked",
        "Each finding of the paper as a test on this run: the paper's sentence, its number, ours with a "
        f"{BOOTSTRAP_LEVEL:.0%} interval, and the verdict. A verdict holds (or does not) only when the whole "
        "interval is on one side of the claim's threshold; otherwise it is inconclusive: the effect is within the "
        f"uncertainty across seeds and test images. Intervals: {METHOD}." + (f" {note}" if note else ""),
        [],
        [],
        claims,
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
    analysis_epoch: int | None = None,
    crosscheck: dict[str, Any] | None = None,
) -> Path:
    """The report of a reproduce folder. ``failed``: the plan's failed stages (name -> error):
    what they feed is marked "failed: reason", and a section lists them; outputs a failed
    stage may have left from an earlier run are not read. ``analysis_epoch``: the epoch the
    analysis used (None: the last); ``crosscheck``: label -> run, epoch, n, protocols."""
    out = Path(out)
    rdir = outputs.runs_dir(out)
    failures = Failures(failed)
    teacher = _read_stage_json(outputs.teacher_choice(out), failures.first("choose-teacher"))
    f_analysis, f_manifolds, f_theory = failures.first("analyze"), failures.first("manifolds"), failures.first("theory")
    analysis = _read_stage_json(outputs.analysis_dir(out) / outputs.ANALYSIS_JSON, f_analysis)
    manifolds = _read_stage_json(outputs.manifolds_dir(out) / outputs.MANIFOLDS_JSON, f_manifolds)
    theory = _read_stage_json(outputs.theory_dir(out) / outputs.THEORY_JSON, f_theory)

    sections = _logits_sections(
        out,
        runs,
        analysis,
        table1(rdir, runs["st"], runs["at"], last_epoch, teacher_epoch, failures, analysis_epoch),
        f_analysis,
    )
    dist = distillation_section(out, rdir, students, sweep, teacher, failures)
    if crosscheck:
        dist.tables.append(crosscheck_table(rdir, crosscheck, failures))
    sections += [dist, _manifolds_section(out, manifolds, f_manifolds), _theory_section(out, theory, f_theory)]
    distilled = [i for v in students.values() for i in v] + [v["run_id"] for v in sweep.values()]
    all_ids = {"standard": runs["st"], "pgd-at": runs["at"], "distill": list(dict.fromkeys(distilled))}
    sections.append(Section("compute", "Compute", "", [table3(rdir, all_ids)], [], []))

    evidence = load_evidence(
        out,
        runs,
        students,
        sweep,
        teacher,
        last_epoch,
        analysis.get("claim_inputs", {}),
        manifolds.get("models", {}),
        theory,
        preset.get("distill", {}).get("loss", "l1"),
    )
    by_section = check_claims(evidence, lambda needs: failures.first(*needs))
    if failures.errors:
        sections.insert(0, failures_section(out, failures))
    sections.insert(0, claims_section([c for cs in by_section.values() for c in cs]))
    configs = {}
    for rid in [*runs["st"], *runs["at"], *(i for v in students.values() for i in v)]:
        p = rdir / rid / "config.yaml"
        if p.is_file():
            configs[rid] = read_yaml(p)
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

    return render_report(report, outputs.report_dir(out))


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


# -- `logitscope compare`: two groups of runs, section 4.1's analyses and claims ----------------

COMPARE_SECTIONS = ("logits", "ranks")
COMPARE_MANIFOLD_CLAIMS = ("manifold-radius-early",)  # the others need distilled students


def compare_table(runs: Path, ids: dict[str, list[str]], failures: Failures, eps: float | None = None) -> Table:
    """Table 1 for the compared groups: each run at its last evaluated epoch (at ``eps``)."""
    radius = f"eps {eps:.4g}" if eps is not None else "each run's attack eps"
    rows = []
    for label, group, paper in (("ST", "st", PAPER_TABLE1["ST"]), ("AT", "at", PAPER_TABLE1["AT (teacher epoch)"])):
        nat, adv = _accs(runs, ids[group], None)
        missing = len(ids[group]) - len(adv)
        failed = failures.first(f"eval-train-{group}-") if missing else None
        cells = [pct(nat), pct(adv)] if nat else [f"failed: {failed}" if failed else "—"] * 2
        if nat and missing:
            cells = [c + f" ({missing} of {len(ids[group])} runs not evaluated)" for c in cells]
        rows.append([label, ", ".join(ids[group]), paper[0], cells[0], paper[1], cells[1]])
    return Table(
        "table1",
        "Table 1: natural and adversarial accuracy (APGD-CE then APGD-DLR)",
        ["group", "runs", "A_natural paper", "A_natural here", "A_adversarial paper", "A_adversarial here"],
        rows,
        note=f"test split, each run at its last stored epoch, {radius}; mean ± sd over the group's runs; "
        "the paper's numbers are ResNet-18 on CIFAR-10 (its AT row: epoch 40)",
    )


def build_compare_report(
    out: Path,
    ids: dict[str, list[str]],
    failed: dict[str, str] | None = None,
    manifolds: bool = False,
    eps: float | None = None,
) -> tuple[Path, dict[str, int]]:
    """The report of `logitscope.compare.compare` (runs linked under ``out/runs``): table 1,
    the logit and rank figures, figure 5 when ``manifolds``, and the claims that apply to an
    ST and an AT group. Returns the page and the count of claims per verdict."""
    from logitscope.report.claims import verdict_counts
    from logitscope.report.html import render_report

    out = Path(out)
    rdir = outputs.runs_dir(out)
    failures = Failures(failed)
    f_analysis, f_manifolds = failures.first("analyze"), failures.first("manifolds")
    analysis = _read_stage_json(outputs.analysis_dir(out) / outputs.ANALYSIS_JSON, f_analysis)
    mani = _read_stage_json(outputs.manifolds_dir(out) / outputs.MANIFOLDS_JSON, f_manifolds) if manifolds else {}
    sections = _logits_sections(out, ids, analysis, compare_table(rdir, ids, failures, eps), f_analysis)
    if manifolds:
        sections.append(_manifolds_section(out, mani, f_manifolds))
    # the AT group stands in for the paper's AT teacher (and analysed) model, ST for its ST one
    groups = {"ST": ids["st"], "AT teacher": ids["at"], "AT analysed": ids["at"]}
    records = {g: r for g, rid in groups.items() if (r := _records(rdir, rid, None)) is not None}
    evidence = Evidence(
        records=records,
        analysis=analysis.get("claim_inputs", {}),
        manifolds={f"{label} teacher": m for label, m in mani.get("models", {}).items()},
        n_classes=analysis.get("n_classes"),
    )
    by_section = check_claims(evidence, lambda needs: failures.first(*needs))
    claims = [c for s in COMPARE_SECTIONS for c in by_section.get(s, [])]
    if manifolds:
        claims += [c for c in by_section.get("manifolds", []) if c.id in COMPARE_MANIFOLD_CLAIMS]
    head = claims_section(
        claims,
        "Here the AT group stands in for the paper's AT teacher (epoch 40) and the ST group for its standard "
        "model, each run at its last stored epoch; the distillation claims need `logitscope reproduce`.",
    )
    if failures.errors:
        sections.insert(0, failures_section(out, failures))
    sections.insert(0, head)
    configs = {rid: read_yaml(rdir / rid / "config.yaml") for g in ids.values() for rid in g if (rdir / rid).is_dir()}
    report = Report(
        title="logitscope compare: what adversarial training puts into the logits",
        subtitle=f"ST: {', '.join(ids['st'])}; AT: {', '.join(ids['at'])}"
        + (f"; {len(failures.errors)} stage(s) failed" if failures.errors else ""),
        sections=sections,
        environment=environment(),
        run_configs=configs,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    return render_report(report, outputs.report_dir(out)), verdict_counts(claims)
