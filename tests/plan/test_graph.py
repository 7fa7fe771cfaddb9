"""The plan graph: cache keys, reruns, ``--only``, kills and ``--dry-run``.

A toy graph of file-writing stages pins the semantics exactly; the tiny digits preset checks
them on real training, distillation and evaluation stages (up to the teacher choice and
the students, the stages other parts of the report build on).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from plan_helpers import (
    CHOOSE,
    SWEEP,
    SWEEP_EVALS,
    SWEEP_VAL_EVALS,
    RecordingExecutor,
    assert_same_results,
    plan_results,
    run_plan,
)

from logitscope.config import ConfigError, RunConfig
from logitscope.plan.dag import Plan, Stage, describe_plan, execute, run_stage
from logitscope.plan.graph import build_plan, resolve_preset
from logitscope.plan.reproduce import reproduce
from logitscope.store.runs import Run

# -- a toy graph: a -> b, a -> c, (b, c) -> d ----------------------------------------------

FN = f"{__name__}:toy_stage"
FAIL: set[str] = set()


def toy_stage(out: Path, name: str, value: int, inputs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Writes ``value`` plus the numbers its inputs wrote; refuses when named in ``FAIL``."""
    if name in FAIL:
        raise RuntimeError(f"stage {name} failed (test)")
    total = value + sum(int((out / "toy" / f"{i}.txt").read_text()) for i in inputs)
    (out / "toy").mkdir(parents=True, exist_ok=True)
    (out / "toy" / f"{name}.txt").write_text(str(total))
    return {"value": value}


def toy_plan(out: Path, **values: int) -> Plan:
    def stage(name: str, kind: str, deps: tuple[str, ...] = ()) -> Stage:
        return Stage(name, kind, FN, {"name": name, "value": values.get(name, 1), "inputs": deps}, deps)

    stages = [stage("a", "train"), stage("b", "evaluate", ("a",)), stage("c", "evaluate", ("a",))]
    return Plan(out, [*stages, stage("d", "analyze", ("b", "c"))], [])


class WaveExecutor(RecordingExecutor):
    def __init__(self) -> None:
        super().__init__()
        self.waves: list[list[str]] = []

    def run(self, plan: Plan, ready: list[Stage]) -> dict[str, str | None]:
        self.waves.append([s.name for s in ready])
        return super().run(plan, ready)


def run_toy(
    out: Path, only: list[str] | None = None, failed: dict[str, str] | None = None, **values: int
) -> list[list[str]]:
    """The waves the toy plan runs in; the failures must be ``failed`` (default: none)."""
    exe = WaveExecutor()
    ran, got = execute(lambda: toy_plan(out, **values), only, exe)
    assert ran == len(exe.names) and got == (failed or {})
    return exe.waves


def test_keys_change_with_parameters_and_with_the_keys_of_inputs(tmp_path):
    base = toy_plan(tmp_path).stages
    b = toy_plan(tmp_path, b=2).stages
    a = toy_plan(tmp_path, a=2).stages
    assert len({s.key for s in base.values()}) == 4
    assert {n for n in base if b[n].key != base[n].key} == {"b", "d"}
    assert {n for n in base if a[n].key != base[n].key} == {"a", "b", "c", "d"}
    assert toy_plan(tmp_path / "elsewhere").stages["d"].key == base["d"].key  # keys do not name the folder


def test_execute_runs_waves_in_dependency_order_and_skips_what_is_done(tmp_path):
    assert run_toy(tmp_path) == [["a"], ["b", "c"], ["d"]]
    assert (tmp_path / "toy" / "d.txt").read_text() == str(1 + (1 + 1) + (1 + 1))  # a, b, c written before d
    marker = json.loads((tmp_path / "plan" / "done" / "d.json").read_text())
    assert marker["key"] == toy_plan(tmp_path).stages["d"].key and marker["result"] == {"value": 1}
    assert run_toy(tmp_path) == []
    assert run_toy(tmp_path, b=5) == [["b"], ["d"]]  # exactly what depends on the change
    assert run_toy(tmp_path, b=5) == []
    assert run_toy(tmp_path) == [["b"], ["d"]]  # back to the old setting: its markers were replaced


def test_only_runs_the_kinds_asked_for_and_what_they_need(tmp_path):
    plan = toy_plan(tmp_path)
    assert [s.name for s in plan.select(["evaluate"])] == ["a", "b", "c"]
    assert [s.name for s in plan.select(["train", "analyze"])] == ["a", "b", "c", "d"]
    assert [s.name for s in plan.select(None)] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="--only 'eval': expected one of train, distill, evaluate"):
        plan.select(["eval"])
    assert run_toy(tmp_path, only=["evaluate"]) == [["a"], ["b", "c"]]
    lines = describe_plan(toy_plan(tmp_path), None).splitlines()
    assert [line.split()[:3] for line in lines[:-1]] == [
        ["done", "train", "a"],
        ["done", "evaluate", "b"],
        ["done", "evaluate", "c"],
        ["ready", "analyze", "d"],
    ]
    assert lines[-1] == "3/4 stages done"
    assert describe_plan(toy_plan(tmp_path), ["evaluate"]).splitlines()[-1] == "3/3 stages done"
    assert run_toy(tmp_path) == [["d"]]


def test_a_failed_stage_keeps_the_finished_ones(tmp_path):
    FAIL.add("c")
    blocked = "not run: it depends on c, which failed: RuntimeError: stage c failed (test)"
    try:
        waves = run_toy(tmp_path, failed={"c": "RuntimeError: stage c failed (test)", "d": blocked})
    finally:
        FAIL.clear()
    assert waves == [["a"], ["b", "c"]]  # b, which does not need c, still ran; d could not
    plan = toy_plan(tmp_path)
    assert [plan.is_done(n) for n in "abcd"] == [True, True, False, False]
    record = plan.failure("c")
    assert record["error"] == "RuntimeError: stage c failed (test)" and record["blocked_by"] is None
    assert any("stage c failed (test)" in line for line in record["log_tail"])  # the traceback's last line
    assert record["log"].endswith("plan/logs/c.log")
    assert plan.failure("d")["blocked_by"] == "c" and plan.failure("b") is None
    assert describe_plan(plan, None).splitlines()[2].split()[:3] == ["failed", "evaluate", "c"]
    assert run_toy(tmp_path) == [["c"], ["d"]]  # a rerun retries exactly what failed
    assert plan.failure("c") is None and plan.failure("d") is None


def test_a_stage_after_failures_runs_on_what_finished_and_reruns_once_they_are_fixed(tmp_path):
    def plan_with_report() -> Plan:
        base = toy_plan(tmp_path)
        params = {"name": "r", "value": 1, "inputs": ("b",)}
        report = Stage("r", "report", FN, params, ("b", "c", "d"), after_failures=True)
        return Plan(tmp_path, [*base.stages.values(), report], [])

    FAIL.add("c")
    try:
        ran, failed = execute(plan_with_report, None, RecordingExecutor())
    finally:
        FAIL.clear()
    assert ran == 4 and set(failed) == {"c", "d"}  # a, b, c (failed), then r on what finished
    plan = plan_with_report()
    assert (tmp_path / "toy" / "r.txt").read_text() == "3"  # r read b's output
    assert not plan.is_done("r") and json.loads(plan.marker("r").read_text())["partial"] is True
    exe = RecordingExecutor()
    assert execute(plan_with_report, None, exe) == (3, {}) and exe.names == ["c", "d", "r"]
    assert plan_with_report().is_done("r")


def test_a_stale_or_broken_marker_is_not_done(tmp_path):
    run_toy(tmp_path)
    plan = toy_plan(tmp_path)
    plan.marker("b").write_text("{not json")
    marker = json.loads(plan.marker("c").read_text())
    plan.marker("c").write_text(json.dumps({**marker, "key": "0" * 16}))
    assert [plan.is_done(n) for n in "abcd"] == [True, False, False, True]
    assert describe_plan(plan, None).splitlines()[-1] == "2/4 stages done"
    assert run_toy(tmp_path) == [["b", "c"]]  # d's key is unchanged: its inputs' keys are


def test_a_decision_enters_keys_through_its_value(tmp_path):
    def plan(sweep: int, epoch: int, waits_on: dict[str, tuple[str, ...]] | None = None) -> Plan:
        return Plan(
            tmp_path,
            [
                Stage("sweep", "evaluate", FN, {"name": "sweep", "value": sweep}),
                Stage("pick", "choose", FN, {"name": "pick", "value": sweep}, ("sweep",)),
                Stage("student", "distill", FN, {"name": "student", "value": epoch}, ("pick",)),
            ],
            [],
            waits_on,
        )

    base = plan(1, 3).stages
    # a changed sweep reruns the choice; a student whose chosen epoch stays keeps its key
    assert plan(2, 3).stages["pick"].key != base["pick"].key
    assert plan(2, 3).stages["student"].key == base["student"].key
    assert plan(2, 4).stages["student"].key != base["student"].key
    # stages of a kind that appears after a decision: --only that kind makes the decision first
    assert [s.name for s in plan(1, 3, {"pick": ("report",)}).select(["report"])] == ["sweep", "pick"]
    assert plan(1, 3, {"pick": ("report",)}).select(["train"]) == []


def threads_stage(out: Path) -> dict[str, Any]:
    return {"threads": torch.get_num_threads()}


def test_run_stage_sets_torch_threads_when_asked(tmp_path):
    assert run_stage(str(tmp_path), f"{__name__}:threads_stage", {}, threads=2) == {"threads": 2}
    assert run_stage(str(tmp_path), f"{__name__}:threads_stage", {}) == {"threads": 2}
    assert run_stage(str(tmp_path), f"{__name__}:threads_stage", {}, threads=1) == {"threads": 1}


def test_a_dependency_must_be_defined_first(tmp_path):
    with pytest.raises(ValueError, match="stage b depends on a, which is not defined before it"):
        Plan(tmp_path, [Stage("b", "evaluate", FN, {}, ("a",)), Stage("a", "train", FN, {})], [])


# -- the tiny digits preset ----------------------------------------------------------------


def marker_times(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "plan" / "done").glob("*.json")}


def test_reproduce_up_to_the_choice_then_a_rerun_does_nothing(chosen_copy, tiny_preset):
    out = chosen_copy
    before = marker_times(out)
    assert sorted(before) == sorted(f"{n}.json" for n in CHOOSE)
    teacher = json.loads((out / "plan" / "teacher.json").read_text())
    assert teacher["epoch"] in (1, 2) and set(teacher["sweep"]) == set(SWEEP)  # the rule reads L1 students only
    assert teacher["split"] == "val" and teacher["n_val"] == 40 and "validation split (40 images)" in teacher["rule"]
    assert all("val_robust_acc" in v and v["val_n"] == 40 for v in teacher["sweep"].values())
    assert run_plan(tiny_preset, out, only=["choose"]) == []
    assert reproduce(str(tiny_preset), out, only=["choose"]) == 0
    assert marker_times(out) == before
    plan = build_plan(resolve_preset(str(tiny_preset), [], None), out)
    assert describe_plan(plan, ["choose"]).splitlines()[-1] == f"{len(CHOOSE)}/{len(CHOOSE)} stages done"


def test_a_changed_evaluation_setting_reruns_the_evaluations_and_the_choice(chosen_copy, tiny_preset):
    runs = sorted(p.name for p in (chosen_copy / "runs").iterdir())
    ran = run_plan(tiny_preset, chosen_copy, ("evaluate.n_iter=3",), only=["choose"])
    assert ran == [*SWEEP_VAL_EVALS, "choose-teacher"]
    assert sorted(p.name for p in (chosen_copy / "runs").iterdir()) == runs  # no training
    teacher = json.loads((chosen_copy / "plan" / "teacher.json").read_text())
    val = [chosen_copy / "runs" / v["run_id"] / "eval" / "paper-val-epoch_001.json" for v in teacher["sweep"].values()]
    assert {json.loads(p.read_text())["settings"]["n_iter"] for p in val} == {3}


def test_a_changed_distillation_setting_retrains_the_students_only(chosen_copy, tiny_preset):
    runs = {p.name for p in (chosen_copy / "runs").iterdir()}
    ran = run_plan(tiny_preset, chosen_copy, ("distill.epochs=2",), only=["choose"])
    assert ran == [*SWEEP, *[f"eval-val-{s}-e2" for s in SWEEP], "choose-teacher"]  # students now end at epoch 2
    new = {p.name for p in (chosen_copy / "runs").iterdir()} - runs
    assert len(new) == len(SWEEP)
    assert all("-student-sweep-" in n and Run(chosen_copy / "runs" / n).last_epoch == 2 for n in new)


def test_a_killed_plan_continues_to_the_same_results(tmp_path, tiny_preset, chosen, monkeypatch):
    """Kills mid-epoch of the AT teacher, mid-epoch of the first student and at the second
    evaluation; each rerun continues where the last stopped and ends bitwise equal."""
    from logitscope import evaluation
    from logitscope.distill import distillation

    calls = {"train": 0, "evaluate": 0}
    kills = {("train", 1): 30, ("train", 3): 5, ("evaluate", 2): 0}  # digits: 22 batches an epoch
    real_train, real_evaluate = distillation.train, evaluation.evaluate  # the engine's train, as every run calls it

    def train(cfg, out="runs", resume=False, progress=None, stop_after_batches=None, objective=None):
        calls["train"] += 1
        return real_train(cfg, out, resume, progress, kills.get(("train", calls["train"])), objective=objective)

    def evaluate(*args, **kwargs):
        calls["evaluate"] += 1
        if ("evaluate", calls["evaluate"]) in kills:
            raise KeyboardInterrupt("killed (test)")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(distillation, "train", train)
    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_plan(tiny_preset, out, only=["choose"])
    (at_run,) = (out / "runs").iterdir()
    assert not marker_times(out) and Run(at_run).last_epoch == 1 and not Run(at_run).complete
    with pytest.raises(KeyboardInterrupt):
        run_plan(tiny_preset, out, only=["choose"])
    assert sorted(marker_times(out)) == ["train-at-s0.json"]
    with pytest.raises(KeyboardInterrupt):
        run_plan(tiny_preset, out, only=["choose"])
    assert sorted(marker_times(out)) == sorted(f"{n}.json" for n in ["train-at-s0", *SWEEP, SWEEP_VAL_EVALS[0]])
    assert run_plan(tiny_preset, out, only=["choose"]) == [*SWEEP_VAL_EVALS[1:], "choose-teacher"]
    assert calls == {"train": 2 + 1 + len(SWEEP), "evaluate": 1 + len(SWEEP_VAL_EVALS)}
    assert_same_results(plan_results(out), plan_results(chosen))


def test_dry_run_after_the_choice_shows_the_students_and_changes_nothing(chosen_copy, tiny_preset, capsys):
    files = {p: p.stat().st_mtime_ns for p in chosen_copy.rglob("*")}
    assert reproduce(str(tiny_preset), chosen_copy, dry_run=True) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert {p: p.stat().st_mtime_ns for p in chosen_copy.rglob("*")} == files
    end = next(i for i, line in enumerate(lines) if line.endswith(" stages done"))  # then the preflight
    states = {line.split()[2]: line.split()[0] for line in lines[:end]}
    assert all(states[n] == "done" for n in CHOOSE)
    students = ["normal", "fix1-permute", "fix1-average", "correct-fix1", "hybrid"]
    assert all(states[f"distill-{t}-s0"] == "ready" for t in students[:4])
    assert states["train-st-s0"] == "ready" and states["distill-hybrid-s0"] == "waiting"  # on the ST order
    assert all(states[f"eval-distill-{t}-s0-e1"] == "waiting" for t in students)
    assert states["report"] == "waiting" and "pending" not in states
    assert lines[end] == f"{len(CHOOSE)}/{len(states)} stages done"
    store = next(line for line in lines[end:] if line.startswith("store: about"))
    assert " 0.0 MB already written" not in store  # the runs so far


def test_students_follow_the_choice_and_a_rerun_choice_keeps_them(chosen_copy, tiny_preset):
    out = chosen_copy
    epoch = json.loads((out / "plan" / "teacher.json").read_text())["epoch"]
    students = [f"distill-{t}-s0" for t in ("normal", "fix1-permute", "fix1-average", "correct-fix1", "hybrid")]
    ran = run_plan(tiny_preset, out, only=["distill", "evaluate"])
    kl_sweep = [f"distill-sweep-e{e}-kl-s0" for e in (1, 2)]  # figure A.7's, not needed by the choice
    assert set(ran) == {
        *kl_sweep,
        *[f"eval-{s}-e1" for s in kl_sweep],
        *SWEEP_EVALS,  # figure A.6's test numbers: not read by the choice
        "train-st-s0",
        "eval-train-st-s0-e2",
        "eval-train-at-s0-e2",
        *students,
        *[f"eval-{s}-e1" for s in students],
        *([f"eval-train-at-s0-e{epoch}"] if epoch != 2 else []),
    }
    for s in students:
        cfg = Run(
            out / "runs" / json.loads((out / "plan" / "done" / f"{s}.json").read_text())["result"]["run_id"]
        ).config
        assert cfg.distill.teacher_epoch == epoch and cfg.distill.teacher.startswith("digits-small-cnn-at-s0-")
    plan = build_plan(resolve_preset(str(tiny_preset), [], None), out)
    lines = describe_plan(plan, ["distill", "evaluate"]).splitlines()
    assert all(line.startswith("done ") for line in lines[:-1])
    assert lines[-1] == f"{len(lines) - 1}/{len(lines) - 1} stages done"
    # the sweep evaluated again (batch size does not change results): the choice reruns, picks
    # the same epoch, and no student retrains
    ran = run_plan(tiny_preset, out, ("evaluate.batch_size=16",), only=["distill", "evaluate"])
    assert json.loads((out / "plan" / "teacher.json").read_text())["epoch"] == epoch
    assert "choose-teacher" in ran and not {r for r in ran if r.startswith(("train-", "distill-"))}
    assert {r for r in ran if r.startswith("eval-")} == {r for r in plan.stages if r.startswith("eval-")}


def test_a_stage_whose_listed_output_is_cut_short_or_deleted_runs_again(tmp_path):
    def plan() -> Plan:
        return Plan(tmp_path, [Stage("w", "evaluate", f"{__name__}:writer_stage", {})], [])

    assert execute(plan, None, RecordingExecutor()) == (1, {})
    record = tmp_path / "records" / "w.npz"
    assert plan().is_done("w") and json.loads(plan().marker("w").read_text())["outputs"] == {"records/w.npz": 64}
    record.write_bytes(record.read_bytes()[:10])  # truncated, e.g. by a full disk
    assert not plan().is_done("w")
    assert execute(plan, None, RecordingExecutor()) == (1, {}) and record.stat().st_size == 64
    record.unlink()
    assert not plan().is_done("w")


def writer_stage(out: Path) -> dict[str, Any]:
    path = out / "records" / "w.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 64)
    return {"outputs": [str(path)]}


def test_a_damaged_marker_or_failure_record_is_not_trusted(tmp_path):
    run_toy(tmp_path)
    plan = toy_plan(tmp_path)
    plan.marker("a").write_bytes(b"\x80\x04not json at all")
    assert not plan.is_done("a") and plan.result("a") == {}
    plan.failure_marker("b").parent.mkdir(parents=True, exist_ok=True)
    plan.failure_marker("b").write_text("{cut")
    assert plan.failure("b") is None


def test_batched_students_train_as_one_stage_per_seed_then_each_finds_its_run(chosen_copy, tiny_preset):
    out = chosen_copy
    plan = build_plan(resolve_preset(str(tiny_preset), ["distill.batched=always"], None), out)
    batch = plan.stages["distill-batch-s0"]
    students = [f"distill-{t}-s0" for t in ("normal", "fix1-permute", "fix1-average", "correct-fix1", "hybrid")]
    ids = [RunConfig.from_dict(plan.stages[s].params["config"]).run_id for s in students]
    assert [RunConfig.from_dict(c).run_id for c in batch.params["configs"]] == ids
    assert all("distill-batch-s0" in plan.stages[s].deps for s in students)
    assert "distill-batch-sweep-s0" in plan.stages["distill-sweep-e1-kl-s0"].deps
    ran = run_plan(tiny_preset, out, ("distill.batched=always",), only=["distill"])
    assert ran.index("distill-batch-s0") < min(ran.index(s) for s in students)
    done = json.loads((out / "plan" / "done" / "distill-batch-s0.json").read_text())["result"]
    assert len(done["complete"]) == len(students) and "error" not in done
    for s in students:  # each student's own stage found its run complete: one epoch, trained once
        run = Run(out / "runs" / json.loads((out / "plan" / "done" / f"{s}.json").read_text())["result"]["run_id"])
        assert run.complete and [int(r["epoch"]) for r in run.metrics()] == [1]
    never = build_plan(resolve_preset(str(tiny_preset), ["distill.batched=never"], None), out)
    assert not [s for s in never.stages if "batch" in s]
    with pytest.raises(ConfigError, match="distill.batched='sometimes': expected one of auto, always, never"):
        build_plan(resolve_preset(str(tiny_preset), ["distill.batched=sometimes"], None), out)


def test_a_stage_version_reruns_it_and_what_depends_on_it_and_nothing_else(tmp_path):
    """``Stage.version``: 0 leaves the key as the key of the stage's kind, fn, params and
    dependencies (every key written before versions existed); 1 changes the stage's key and
    so its dependents', never a stage it depends on."""
    import hashlib

    fn = "logitscope.plan.stages:train_stage"
    a, b = Stage("a", "train", fn, {"x": 1}), Stage("b", "analyze", fn, {"y": 2}, ("a",))
    c = Stage("c", "report", fn, {}, ("b",))
    plain = Plan(tmp_path, [a, b, c], [])
    blob = json.dumps(["train", fn, {"x": 1}, []], sort_keys=True, default=str)
    assert plain.stages["a"].key == hashlib.sha256(blob.encode()).hexdigest()[:16]  # by hand
    bumped = Plan(tmp_path, [a, Stage("b", "analyze", fn, {"y": 2}, ("a",), version=1), c], [])
    assert bumped.stages["a"].key == plain.stages["a"].key
    assert bumped.stages["b"].key != plain.stages["b"].key and bumped.stages["c"].key != plain.stages["c"].key


def test_the_analyze_and_theory_stages_carry_the_results_version(tmp_path):
    from plan_helpers import TINY

    from logitscope.plan.graph import RESULTS_VERSION

    plan = build_plan(TINY, tmp_path)
    versions = {name: s.version for name, s in plan.stages.items() if s.version}
    assert RESULTS_VERSION >= 1 and versions == {"analyze": RESULTS_VERSION, "theory": RESULTS_VERSION}
