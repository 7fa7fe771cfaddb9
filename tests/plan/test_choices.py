"""Choices on validation data only, the analyses at the paper's epochs, and section 3's
cross-check of the protocol: the stages the plan builds for them, and the records they read.

A choice is faked with a done marker of ``choose-teacher`` (what the plan reads to build
the stages downstream of it), so the graph after a choice is checked without running one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from plan_helpers import CHOOSE, SWEEP, SWEEP_EVALS, SWEEP_VAL_EVALS, TINY

from logitscope import evaluation
from logitscope.attacks.protocol import ProtocolResult
from logitscope.config import RunConfig
from logitscope.data import load_data
from logitscope.evaluation import evaluate
from logitscope.plan.dag import Plan, describe_plan, mark_done, run_stage
from logitscope.plan.graph import build_plan, validate_plan_inputs
from logitscope.plan.preset import apply_preset_overrides
from logitscope.store.evaluations import record_path
from logitscope.store.models import load_model
from logitscope.store.runs import Run

CROSS = {"models": ["st", "at", "normal"], "n": 10, "protocols": ["autoattack", "odi"]}
LAST_EVALS = ["eval-train-st-s0-e2", "eval-train-at-s0-e2"]  # the tiny preset's last epoch: 2


def with_choice(preset: dict[str, Any], out: Path, epoch: int) -> Plan:
    """The plan of ``preset`` in ``out`` once ``choose-teacher`` chose ``epoch``."""
    plan = build_plan(preset, out)
    mark_done(plan, plan.stages["choose-teacher"], {"epoch": epoch, "rule": "fixed by the test"}, 0.0)
    return build_plan(preset, out)


def at_run(out: Path) -> Path:
    (run,) = (out / "runs").glob("digits-small-cnn-at-s0-*")
    return run


# -- 1. the teacher epoch is chosen on the validation split ------------------------------------


def write_summary(out: Path, info: dict[str, Any], split: str, robust: float, n: int) -> None:
    path = record_path(out / "runs" / info["run_id"], "paper", info["epoch"], split).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"clean_acc": 0.9, "robust_acc": robust, "n": n, "split": split}))


@pytest.mark.parametrize("val_best", [1, 2])
def test_the_teacher_rule_follows_the_validation_split_not_the_test_split(tmp_path, val_best):
    plan = build_plan(TINY, tmp_path)
    stage = plan.stages["choose-teacher"]
    for info in stage.params["sweep"].values():  # opposite rankings on the two splits
        best = info["teacher_epoch"] == val_best
        write_summary(tmp_path, info, "val", 0.6 if best else 0.3, 40)
        write_summary(tmp_path, info, "test", 0.3 if best else 0.6, 40)
    assert run_stage(str(tmp_path), stage.fn, stage.params)["epoch"] == val_best
    teacher = json.loads((tmp_path / "plan" / "teacher.json").read_text())
    assert teacher["epoch"] == val_best and teacher["split"] == "val" and teacher["n_val"] == 40
    assert teacher["loss"] == "l1" and "chosen on the validation split (40 images)" in teacher["rule"]
    assert set(teacher["sweep"]) == set(SWEEP)  # the L1 students: what the rule reads
    for name, v in teacher["sweep"].items():
        expected = 0.6 if v["teacher_epoch"] == val_best else 0.3
        assert (v["val_clean_acc"], v["val_robust_acc"], v["val_n"]) == (0.9, expected, 40), name
        assert v["val_eval"] == f"eval-val-{name}-e1" and v["eval"] == f"eval-{name}-e1"


def test_choose_teacher_depends_on_the_validation_evaluations_only(tmp_path):
    plan = build_plan(TINY, tmp_path)
    deps = plan.stages["choose-teacher"].deps
    assert list(deps) == SWEEP_VAL_EVALS
    for d in deps:
        stage = plan.stages[d]
        assert stage.kind == "evaluate" and stage.params["split"] == "val" and stage.gpu, d
    # figure A.6/A.7's test evaluations stay (the report's numbers), read by no choice
    assert all(n in plan.stages and "split" not in plan.stages[n].params for n in SWEEP_EVALS)
    assert {s.name for s in plan.select(["choose"])} == set(CHOOSE)
    # a fixed epoch: no validation evaluation, and the choice needs nothing
    fixed = apply_preset_overrides(TINY, ["teacher.fixed_epoch=1"])
    fixed_plan = build_plan(fixed, tmp_path)
    assert fixed_plan.stages["choose-teacher"].deps == ()
    assert not [n for n in fixed_plan.stages if n.startswith("eval-val-")]
    stage = fixed_plan.stages["choose-teacher"]
    assert run_stage(str(tmp_path), stage.fn, stage.params)["epoch"] == 1
    teacher = json.loads((tmp_path / "plan" / "teacher.json").read_text())
    assert teacher["split"] is None and teacher["n_val"] is None and "fixed by the preset" in teacher["rule"]


def test_the_rule_without_a_validation_split_is_refused_before_any_work(tmp_path):
    no_val = apply_preset_overrides(TINY, ["train.set.data.val_per_class=0"])
    with pytest.raises(ValueError, match=r"the teacher rule \(appendix A.3\) needs a validation split") as err:
        validate_plan_inputs(no_val, None, tmp_path / "out")
    assert "set train.set: {data.val_per_class: N}" in str(err.value) and "\n" not in str(err.value)
    # a fixed teacher epoch reads no validation split: the full training set is fine
    validate_plan_inputs(apply_preset_overrides(no_val, ["teacher.fixed_epoch=2"]), None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_students_train_on_the_teachers_split(tmp_path):
    plan = build_plan(TINY, tmp_path)
    for name in ("train-st-s0", "train-at-s0", *SWEEP):
        assert plan.stages[name].params["config"]["data"]["val_per_class"] == 4, name


def test_evaluate_on_the_validation_split_uses_the_validation_images(chosen_copy, monkeypatch):
    run = at_run(chosen_copy)
    data = load_data(Run(run).config.data)
    assert len(data.y_val) == 40 and len(data.y_train) == 1400 - 40
    s = evaluate(run, 1, eps=0.2, n=8, n_iter=2, split="val")
    assert s["split"] == "val" and s["n"] == 8
    path = run / "eval" / "paper-val-epoch_001.npz"
    assert record_path(run, "paper", 1, "val") == path and path.is_file()
    assert record_path(run, "paper", 1) == run / "eval" / "paper-epoch_001.npz"
    rec = ProtocolResult.load(path)
    assert np.array_equal(rec.label, data.y_val[:8].numpy())
    with torch.no_grad():
        clean = load_model(Run(run), 1)(data.x_val[:8].float() / 255).numpy()
    np.testing.assert_allclose(rec.clean_logits, clean, rtol=1e-5, atol=1e-5)
    assert not list((run / "eval").glob("paper-epoch_*.json"))  # the test records' glob: no val record
    # the plan's own validation records of the sweep students: all 40 images
    teacher = json.loads((chosen_copy / "plan" / "teacher.json").read_text())
    for v in teacher["sweep"].values():
        saved = json.loads((chosen_copy / "runs" / v["run_id"] / "eval" / "paper-val-epoch_001.json").read_text())
        assert saved["split"] == "val" and saved["n"] == 40
    with pytest.raises(ValueError, match=r"^split='train': expected 'test' or 'val'$"):
        evaluate(run, 1, split="train")
    with pytest.raises(ValueError, match=r"^split='train': expected 'test' or 'val'$"):
        record_path(run, "paper", 1, "train")
    empty = dataclasses.replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
    monkeypatch.setattr(evaluation, "load_data", lambda cfg: empty)
    with pytest.raises(ValueError, match="has no validation images .*: set data.val_per_class") as err:
        evaluate(run, 2, n=8, n_iter=2, split="val")
    assert "\n" not in str(err.value)


def test_evaluate_takes_one_protocol_config_or_its_fields(chosen_copy):
    """A `ProtocolConfig` and the same settings as keywords are one evaluation (the second
    call finds the first's records: same settings); both at once, or a field the config does
    not have, is a one-line error."""
    from logitscope.config import ProtocolConfig

    run = at_run(chosen_copy)
    by_config = evaluate(run, 1, ProtocolConfig(eps=0.2, n_iter=2), n=6, split="val")
    by_keywords = evaluate(run, 1, eps=0.2, n_iter=2, n=6, split="val")
    assert by_keywords == by_config and by_config["settings"]["n_iter"] == 2
    assert evaluate(run, 1, n_iter=2, n=6, split="val")["eps"] == Run(run).config.attack.eps  # the run's own eps
    with pytest.raises(TypeError, match=r"not both: \['n_iter'\]"):
        evaluate(run, 1, ProtocolConfig(eps=0.2), n_iter=3)
    with pytest.raises(TypeError, match="unknown protocol setting 'iterations'"):
        evaluate(run, 1, iterations=3)


# -- 2. the analyses at the teacher epoch (the paper's epoch 40) -------------------------------


def test_analysis_at_the_teacher_epoch_waits_for_the_choice(tmp_path):
    preset = apply_preset_overrides(TINY, ["analysis.epoch=teacher"])
    before = build_plan(preset, tmp_path)
    assert "analyze" not in before.stages and any("analysis.epoch: teacher" in p for p in before.pending)
    assert before.waits_on == {"choose-teacher": ("distill", "evaluate", "manifolds", "analyze")}
    assert {s.name for s in before.select(["analyze"])} == set(CHOOSE)  # --only analyze: the choice first
    assert describe_plan(before, ["analyze"]).splitlines()[-1].endswith("; 2 group(s) pending")
    assert before.stages["report"].params["analysis_epoch"] is None

    after = with_choice(preset, tmp_path, 1)
    analyze = after.stages["analyze"]
    assert analyze.params["epoch"] == 1
    assert set(analyze.deps) == {"train-st-s0", "train-at-s0", "eval-train-st-s0-e1", "eval-train-at-s0-e1"}
    for m in ("st", "at"):
        ev = after.stages[f"eval-train-{m}-s0-e1"]
        assert ev.params["epoch"] == 1 and ev.deps == (f"train-{m}-s0",)
        assert 1 in after.stages[f"train-{m}-s0"].params["config"]["checkpoint_epochs"]  # ST keeps it too
    report = after.stages["report"]
    assert report.params["analysis_epoch"] == 1
    assert {"analyze", "eval-train-st-s0-e1", "eval-train-at-s0-e1"} <= set(report.deps)
    # the teacher at the last epoch: the last-epoch evaluations are the teacher epoch's
    last = with_choice(preset, tmp_path / "last", 2)
    assert set(last.stages["analyze"].deps) == {"train-st-s0", "train-at-s0", *LAST_EVALS}
    assert last.stages["report"].params["analysis_epoch"] == 2


def test_analysis_at_the_last_epoch_needs_no_choice(tmp_path):
    plan = build_plan(TINY, tmp_path)
    assert plan.stages["analyze"].params["epoch"] is None and plan.stages["report"].params["analysis_epoch"] is None
    assert plan.waits_on == {"choose-teacher": ("distill", "evaluate", "manifolds")}
    after = with_choice(TINY, tmp_path, 1)
    assert "eval-train-st-s0-e1" not in after.stages and "eval-train-at-s0-e1" in after.stages  # table 1's AT row
    assert set(after.stages["analyze"].deps) == {"train-st-s0", "train-at-s0", *LAST_EVALS}
    fixed = with_choice(apply_preset_overrides(TINY, ["analysis.epoch=1"]), tmp_path / "fixed", 2)
    assert fixed.stages["analyze"].params["epoch"] == 1 and fixed.stages["report"].params["analysis_epoch"] == 1


# -- 3. the cross-check against AutoAttack and ODI ---------------------------------------------


def test_crosscheck_stages_evaluate_the_first_n_test_images_of_three_models(tmp_path):
    preset = {**TINY, "crosscheck": CROSS}
    before = build_plan(preset, tmp_path)
    assert [n for n in before.stages if n.startswith("cross")] == ["crosscheck-autoattack-st", "crosscheck-odi-st"]
    assert set(before.stages["report"].params["crosscheck"]) == {"ST"}

    after = with_choice(preset, tmp_path, 1)
    models = {"st": ("train-st-s0", 2), "at": ("train-at-s0", 1), "normal": ("distill-normal-s0", 1)}
    names = [f"crosscheck-{p}-{m}" for m in models for p in CROSS["protocols"]]
    assert [n for n in after.stages if n.startswith("crosscheck-")] == names
    expected = {}
    for m, (dep, epoch) in models.items():
        run_id = RunConfig.from_dict(after.stages[dep].params["config"]).run_id
        for p in CROSS["protocols"]:
            s = after.stages[f"crosscheck-{p}-{m}"]
            assert (s.kind, s.fn, s.deps, s.gpu) == ("evaluate", "logitscope.plan.stages:evaluate_stage", (dep,), True)
            assert s.params["protocol"] == p and s.params["n"] == 10 and s.params["epoch"] == epoch
            assert s.params["run_id"] == run_id and s.params["eps"] == TINY["evaluate"]["eps"]
        label = {"st": "ST", "at": "AT teacher", "normal": "normal student"}[m]
        expected[label] = {"run_id": run_id, "epoch": epoch, "n": 10, "protocols": ["autoattack", "odi"]}
        # the paper protocol on the same images: the first n rows of the full-test record
        paper = f"eval-{dep}-e{epoch}"
        assert paper in after.stages and after.stages[paper].params["n"] == TINY["evaluate"]["n"]
        assert paper in after.stages["report"].deps
    report = after.stages["report"]
    assert report.params["crosscheck"] == expected and set(names) <= set(report.deps)
    # no section, or no models: none planned
    assert not [n for n in with_choice(TINY, tmp_path / "none", 1).stages if n.startswith("crosscheck-")]
    assert with_choice(TINY, tmp_path / "none", 1).stages["report"].params["crosscheck"] == {}
    off = with_choice({**TINY, "crosscheck": {**CROSS, "models": []}}, tmp_path / "off", 1)
    assert not [n for n in off.stages if n.startswith("crosscheck-")]


@pytest.mark.parametrize(
    ("crosscheck", "message"),
    [
        ({**CROSS, "models": ["st", "teacher"]}, "crosscheck.models has 'teacher': expected st, at, normal"),
        ({**CROSS, "protocols": ["paper"]}, "crosscheck.protocols has 'paper': expected autoattack, odi"),
        ({**CROSS, "n": 0}, "crosscheck.n=0: expected a positive number of test images"),
        ({**CROSS, "n": 2.5}, "crosscheck.n=2.5: expected an integer"),
        ({**CROSS, "n": 41}, "crosscheck.n=41: expected at most evaluate.n=40"),
        ({"models": ["st"], "n": 5}, "missing key crosscheck.protocols"),
    ],
)
def test_bad_crosscheck_settings_are_one_line_errors(tmp_path, crosscheck, message):
    with pytest.raises(ValueError) as err:
        validate_plan_inputs({**TINY, "crosscheck": crosscheck}, None, tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_crosscheck_with_autoattack_needs_the_extra(tmp_path, monkeypatch):
    from logitscope.attacks import autoattack_ref

    def missing() -> None:
        raise ImportError("protocol='autoattack' needs the optional extra: pip install 'logitscope[autoattack]'")

    monkeypatch.setattr(autoattack_ref, "load_pyautoattack", missing)
    with pytest.raises(ValueError, match="crosscheck.protocols has 'autoattack': protocol='autoattack' needs the"):
        validate_plan_inputs({**TINY, "crosscheck": CROSS}, None, tmp_path / "out")
    validate_plan_inputs({**TINY, "crosscheck": {**CROSS, "protocols": ["odi"]}}, None, tmp_path / "out")


def test_an_odi_crosscheck_stage_and_the_paper_records_first_rows(chosen_copy, tmp_path):
    """ODI through the evaluate stage writes its own records; the paper protocol on the first
    n images equals the first n rows of a record of more images (each image's attack is
    seeded by its index, whatever shares its batch): what the report compares with."""
    run = at_run(chosen_copy)
    params = {"run_id": run.name, "epoch": 1, "eps": 0.2, "n_iter": 3, "n_restarts": 1, "n": 5, "batch_size": 500}
    result = run_stage(str(chosen_copy), "logitscope.plan.stages:evaluate_stage", {**params, "protocol": "odi"})
    assert result["n"] == 5 and result["outputs"][0].endswith("eval/odi-epoch_001.npz")
    assert json.loads((run / "eval" / "odi-epoch_001.json").read_text())["protocol"] == "odi"
    # today's signature: the paper protocol on the test split
    full = run_stage(str(chosen_copy), "logitscope.plan.stages:evaluate_stage", {**params, "n": 12})
    assert full["outputs"][0].endswith("eval/paper-epoch_001.npz") and full["n"] == 12
    other = Path(shutil.copytree(run, tmp_path / "copy" / run.name))
    (other / "eval" / "paper-epoch_001.json").unlink()
    evaluate(other, 1, eps=0.2, n=5, n_iter=3, batch_size=2)
    a = ProtocolResult.load(run / "eval" / "paper-epoch_001.npz")
    b = ProtocolResult.load(other / "eval" / "paper-epoch_001.npz")
    assert np.array_equal(a.broken_by[:5], b.broken_by) and np.array_equal(a.robust[:5], b.robust)
    np.testing.assert_allclose(a.adv_logits[:5], b.adv_logits, rtol=1e-4, atol=1e-4)
