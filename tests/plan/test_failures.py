"""One failing stage never costs the user the rest: the tiny plan with a diverging student
runs every stage that does not need it, builds the report marking what failed, exits
non-zero, and a rerun retries exactly the failed stage and what depends on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plan_helpers import RecordingExecutor

from logitscope.plan import stages
from logitscope.plan.dag import execute
from logitscope.plan.graph import build_plan, resolve_preset
from logitscope.plan.reproduce import reproduce

DIVERGING = "distill-sweep-e2-kl-s0"  # figure A.7's KL student of the teacher's epoch 2


def test_a_diverging_student_costs_only_what_needs_it(chosen_copy: Path, tiny_preset: Path, monkeypatch) -> None:
    out = chosen_copy
    real_train_stage = stages.train_stage

    def train_stage(out: Path, config: dict[str, Any]) -> dict[str, Any]:
        if config["name"] == "digits-student-sweep-e2-kl-s0":
            config = {**config, "optim": {**config["optim"], "lr": 1e9}}  # a learning rate that diverges
        return real_train_stage(out, config)

    monkeypatch.setattr(stages, "train_stage", train_stage)
    assert reproduce(str(tiny_preset), out) == 1  # non-zero: a stage failed

    plan = build_plan(resolve_preset(str(tiny_preset), [], None), out)
    record = plan.failure(DIVERGING)
    assert record["error"].startswith("TrainingDiverged: run digits-student-sweep-e2-kl-s0-")
    assert "diverged at epoch 1: loss " in record["error"] and " at batch " in record["error"]
    assert any("TrainingDiverged" in line for line in record["log_tail"])  # the traceback in its log
    blocked = plan.failure(f"eval-{DIVERGING}-e1")
    assert blocked["blocked_by"] == DIVERGING and blocked["error"].startswith("not run: it depends on")
    failed = {DIVERGING, f"eval-{DIVERGING}-e1"}
    # every other stage finished; the report was built, marking the failure, and is not "done"
    assert {n for n in plan.stages if not plan.is_done(n)} == failed | {"report"}
    assert json.loads(plan.marker("report").read_text())["partial"] is True
    report = json.loads((out / "report" / "report.json").read_text())
    claims = {c["id"]: c for s in report["sections"] for c in s["claims"]}
    assert claims["l1-vs-kl"]["verdict"] == "failed" and DIVERGING in claims["l1-vs-kl"]["statistic"]
    assert claims["late-teacher"]["verdict"] != "failed"  # the L1 sweep is intact
    assert (out / "report" / "index.html").is_file()
    failed_table = next(t for s in report["sections"] for t in s["tables"] if t["id"] == "failed-stages")
    assert {row[0] for row in failed_table["rows"]} == failed

    monkeypatch.setattr(stages, "train_stage", real_train_stage)
    exe = RecordingExecutor()
    resolved = resolve_preset(str(tiny_preset), [], None)
    assert execute(lambda: build_plan(resolved, out), None, exe) == (3, {})
    assert exe.names == [DIVERGING, f"eval-{DIVERGING}-e1", "report"]
    plan = build_plan(resolved, out)
    assert all(plan.is_done(n) for n in plan.stages) and not (out / "plan" / "failed" / f"{DIVERGING}.json").exists()
    report = json.loads((out / "report" / "report.json").read_text())
    assert all(c["verdict"] != "failed" for s in report["sections"] for c in s["claims"])
