"""`build_report` on a small synthetic reproduce store: tables, claims and cross-check from the
files alone, and what a failed stage turns into."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from logitscope.fileio.atomic import atomic_save_npz
from logitscope.report.build import build_report

N, C = 200, 10
LABELS = np.arange(N) % C


def _write_eval(run: Path, epoch: int, clean: float, adv: float, seed: int, protocol: str = "paper") -> None:
    """A robustness record with exactly ``clean`` / ``adv`` rates, and its summary."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, C))
    right = rng.permutation(N)[: round(clean * N)]
    z[right, LABELS[right]] += 10.0
    wrong = np.setdiff1d(np.arange(N), right)
    z[wrong, (LABELS[wrong] + 1) % C] += 10.0
    robust = np.zeros(N, bool)
    robust[right[: round(adv * N)]] = True
    folder = run / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{protocol}-epoch_{epoch:03d}"
    if protocol == "paper":
        atomic_save_npz(folder / f"{name}.npz", label=LABELS, clean_logits=z, adv_logits=z, robust=robust)
    summary = {"run": run.name, "epoch": epoch, "n": N, "clean_acc": clean, "robust_acc": adv, "protocol": protocol}
    (folder / f"{name}.json").write_text(json.dumps(summary))


@pytest.fixture
def store(tmp_path):
    out = tmp_path / "out"
    runs = out / "runs"
    ids = {"st": ["st-s0", "st-s1"], "at": ["at-s0", "at-s1"]}
    for i, rid in enumerate(ids["st"]):
        _write_eval(runs / rid, 3, 0.98, 0.0, i)
    for i, rid in enumerate(ids["at"]):
        _write_eval(runs / rid, 3, 0.85, 0.45, 10 + i)
        _write_eval(runs / rid, 2, 0.80, 0.50, 20 + i)
    rates = {"normal": (0.8, 0.35), "fix1-permute": (0.82, 0.1), "correct-fix1": (0.93, 0.0), "hybrid": (0.9, 0.0)}
    students = {tag: [f"{tag}-s0", f"{tag}-s1"] for tag in rates}
    for j, (tag, (nat, adv)) in enumerate(rates.items()):
        for i, rid in enumerate(students[tag]):
            _write_eval(runs / rid, 4, nat, adv, 100 + 10 * j + i)
    sweep = {}
    for te, (l1, kl) in {2: (0.4, 0.2), 3: (0.1, 0.05)}.items():
        for loss, adv in (("l1", l1), ("kl", kl)):
            rid = f"sweep-e{te}-{loss}-s0"
            _write_eval(runs / rid, 4, 0.8, adv, 300 + te * 10 + len(loss))
            sweep[f"distill-sweep-e{te}-{loss}-s0"] = {
                "eval": f"eval-distill-sweep-e{te}-{loss}-s0-e4",
                "run_id": rid,
                "epoch": 4,
                "teacher_epoch": te,
                "loss": loss,
                "seed": 0,
            }
    (out / "plan").mkdir(parents=True)
    chose = {
        n: {**i, "val_clean_acc": 0.81, "val_robust_acc": 0.42 if i["teacher_epoch"] == 2 else 0.12, "val_n": 100}
        for n, i in sweep.items()
        if i["loss"] == "l1"
    }
    teacher = {"epoch": 2, "rule": "teacher epoch 2, chosen on the validation split (100 images)", "split": "val"}
    (out / "plan" / "teacher.json").write_text(json.dumps({**teacher, "n_val": 100, "sweep": chose}))
    (out / "analysis").mkdir()
    inputs = {
        "split": "test",
        "epoch": None,
        "n_classes": C,
        "max_logit_mean": {"ST": [20.0, 21.0], "AT": [5.0, 5.5]},
        "max_logit_skew": {"ST": [0.0, 0.1], "AT": [1.0, 1.1]},
        "gap_mean": {"ST": [12.0, 11.0], "AT": [2.0, 2.5]},
        "rank_disagreement": {"AT-ST": [0.12, 0.11, 0.13, 0.12], "AT-AT": [0.01], "ST-ST": [0.02]},
        "average_overlap": {"AT-AT": [0.9], "AT-ST": [0.6, 0.62, 0.61, 0.6], "ST-ST": [0.8]},
        "overlap_baseline": {"AT-AT": [0.5], "AT-ST": [0.6, 0.6, 0.6, 0.6], "ST-ST": [0.7]},
        "error_top1": {"ST natural": [0.6, 0.62], "AT natural": [0.4, 0.41]},
        "neighbors_same_class": {"ST": [0.9, 0.92], "AT": [0.5, 0.52]},
    }
    (out / "analysis" / "analysis.json").write_text(
        json.dumps({"split": "test", "epoch": None, "claim_inputs": inputs})
    )
    (out / "theory").mkdir()
    statements = [{"id": "beta-3.5", "statement": "beta > 3.5", "verdict": "partly", "evidence": "3.5 and 2.2"}]
    (out / "theory" / "theory.json").write_text(json.dumps({"statements": statements, "summary": "theory"}))
    for rid, proto, adv in (("st-s0", "autoattack", 0.0), ("at-s0", "autoattack", 0.44), ("at-s0", "odi", 0.46)):
        _write_eval(runs / rid, 3 if rid.startswith("st") else 2, 0.9, adv, 7, protocol=proto)
    crosscheck = {
        "ST": {"run_id": "st-s0", "epoch": 3, "n": N, "protocols": ["autoattack", "odi"]},
        "AT teacher": {"run_id": "at-s0", "epoch": 2, "n": N, "protocols": ["autoattack", "odi"]},
    }
    params = {
        "preset": {"name": "synthetic", "distill": {"loss": "l1"}},
        "runs": ids,
        "students": students,
        "sweep": sweep,
        "teacher_epoch": 2,
        "last_epoch": 3,
        "crosscheck": crosscheck,
    }
    return out, params


def _csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def _verdicts(out: Path) -> dict[str, str]:
    rows = _csv(out / "report" / "claims.csv")
    head = rows[0]
    return {r[head.index("id")]: r[head.index("verdict")] for r in rows[1:]}


def test_report_from_a_synthetic_store(store):
    out, params = store
    html = build_report(out, **params)
    assert html == out / "report" / "index.html" and html.is_file()
    v = _verdicts(out)
    # hand-made numbers far from every threshold
    assert v["table1-robust"] == v["table1-natural-cost"] == v["distill-transfers"] == "holds"
    assert v["fix1-drop"] == v["fix1-above-st"] == v["correct-fix1-natural"] == "holds"
    assert v["correct-fix1-adversarial"] == v["hybrid"] == "holds"
    assert v["late-teacher"] == v["l1-vs-kl"] == "inconclusive"  # one sweep seed: no interval
    assert v["max-logit-mean"] == v["gap-smaller"] == v["neighbors-class"] == "holds"
    assert v["rank-disagreement-at-at"] == "inconclusive"  # one AT-AT pair: no interval
    assert v["distill-k7"] == v["distill-k-rising"] == "not measured"  # no fix-k students but fix-1
    assert v["manifold-radius-early"] == "not measured"
    assert v["theory-beta-3.5"] == "inconclusive"
    t1 = _csv(out / "report" / "tables" / "table1.csv")
    assert t1[1][0] == "ST" and t1[1][2] == "98.0% ± 0.0%" and t1[3][0] == "AT (teacher epoch) (epoch 2)"
    assert t1[3][4] == "50.0% ± 0.0%"
    t2 = {r[0]: r for r in _csv(out / "report" / "tables" / "table2.csv")}
    assert t2["normal"][4] == "35.0% ± 0.0%" and t2["correct-fix1"][2] == "93.0% ± 0.0%"
    cross = _csv(out / "report" / "tables" / "crosscheck.csv")
    assert cross[0][3:] == ["paper protocol (APGD-CE, APGD-DLR)", "AutoAttack (standard)", "ODI"]
    assert cross[1] == ["ST", "epoch 3", str(N), "0.0%", "0.0%", "—"]
    assert cross[2] == ["AT teacher", "epoch 2", str(N), "50.0%", "44.0%", "46.0%"]
    chosen = _csv(out / "report" / "tables" / "teacher-choice.csv")
    assert chosen[1] == ["2 (chosen)", "distill-sweep-e2-l1-s0", "81.0%", "42.0%", "80.0%", "40.0%"]
    assert chosen[2][0] == "3" and chosen[2][3] == "12.0%"
    page = html.read_text()
    assert "inconclusive" in page and "percentile bootstrap" in page


def test_a_failed_stage_marks_what_it_feeds(store):
    out, params = store
    build_report(out, **params, failed={"analyze": "ValueError: boom", "distill-hybrid-s1": "RuntimeError: x"})
    v = _verdicts(out)
    assert v["gap-smaller"] == v["rank-disagreement"] == "failed"
    assert v["hybrid"] == "failed" and v["fix1-drop"] == "holds"
    page = (out / "report" / "index.html").read_text()
    assert "Stages that failed" in page and "ValueError: boom" in page


def test_analysis_epoch_adds_the_st_row(store):
    out, params = store
    for i, rid in enumerate(params["runs"]["st"]):
        _write_eval(out / "runs" / rid, 2, 0.97, 0.0, 40 + i)
    build_report(out, **params, analysis_epoch=2)
    names = [r[0] for r in _csv(out / "report" / "tables" / "table1.csv")[1:]]
    assert names == ["ST", "ST (analysis epoch) (epoch 2)", "AT (last epoch)", "AT (teacher epoch) (epoch 2)"]


def test_table3_sums_each_runs_measured_seconds(tmp_path):
    """Per run: training steps, snapshots and the PGD monitor over every epoch (hand-made
    metrics); the mean and sd over runs of a kind beside the paper's hours."""
    from logitscope.config import run_preset
    from logitscope.report.build import table3
    from logitscope.store.runs import Run

    def run(name: str, rows: list[tuple[float, float, float]]) -> str:
        r = Run.create(tmp_path, run_preset("digits", name=name))
        r.write_metrics(
            [
                {"epoch": e, "train_seconds": t, "snapshot_seconds": s, "pgd_seconds": p}
                for e, (t, s, p) in enumerate(rows, 1)
            ]
        )
        return r.dir.name

    a = run("a", [(1.0, 0.5, 0.5), (2.0, 0.0, float("nan"))])  # a missing number counts as no time
    b = run("b", [(3.0, 0.5, 0.5)])
    table = table3(tmp_path, {"standard": [a, b], "pgd-at": [a], "distill": []})
    assert table.rows[0][:2] == ["standard", "1.66 h"]
    assert table.rows[0][2:] == ["4.0 s ± 0.0 s", "2"]
    assert table.rows[1][2] == "4.0 s (n=1)"
    assert table.rows[2][2] == "—" and table.rows[2][3] == "0"
