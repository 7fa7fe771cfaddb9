"""The Ray executor on a real local Ray cluster of 2 worker CPUs: same results as local.

Bitwise equal on CPU because every Ray task runs one torch thread, as the local reference
does (the plan tests' fixture); two threads give other last bits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plan_helpers import CHOOSE, assert_same_results, plan_results

from logitscope.plan.dag import Plan, Stage, execute
from logitscope.plan.executors import RayExecutor
from logitscope.plan.graph import build_plan, resolve_preset
from logitscope.plan.reproduce import reproduce

ray = pytest.importorskip("ray")
EVAL = {"epoch": 1, "eps": 0.2, "n_iter": 1, "n_restarts": 1, "n": 1, "batch_size": 1}
CHOICE = {"sweep": {}, "fixed_epoch": 1, "loss": "l1"}


def test_ray_executor_equals_the_local_one(tmp_path, tiny_preset, chosen, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative output folder: workers do not share the driver's
    exe = RayExecutor(num_cpus=2)
    try:
        assert ray.cluster_resources()["CPU"] == 2
        preset = resolve_preset(str(tiny_preset), [], None)
        ran, failed = execute(lambda: build_plan(preset, tmp_path / "ray"), ["choose"], exe)
        assert ran == len(CHOOSE) and not failed
        # `reproduce --executor ray` joins the running instance; a rerun runs nothing
        done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "plan" / "done").iterdir()}
        assert reproduce(str(tiny_preset), Path("ray"), only=["choose"], executor="ray") == 0
        assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "plan" / "done").iterdir()} == done
        # a failing task: the rest of its wave still finishes and keeps its marker
        failing = Plan(
            tmp_path / "fail",
            [
                Stage("bad", "evaluate", "logitscope.plan.stages:evaluate_stage", {**EVAL, "run_id": "missing"}),
                Stage("good", "choose", "logitscope.plan.stages:choose_teacher_stage", CHOICE),
            ],
            [],
        )
        finished = exe.run(failing, list(failing.stages.values()))
        assert finished["good"] is None and finished["bad"].startswith("FileNotFoundError: ")
        assert "missing" in finished["bad"] and "\n" not in finished["bad"]
        assert failing.failure("bad")["error"] == finished["bad"]
        assert any("missing" in line for line in failing.failure("bad")["log_tail"])  # the worker's log
        assert [failing.is_done(n) for n in ("bad", "good")] == [False, True]
        assert failing.result("good")["epoch"] == 1
    finally:
        exe.shutdown()
    assert not ray.is_initialized()
    assert sorted(done) == sorted(f"{n}.json" for n in CHOOSE)
    for name in CHOOSE:
        marker = f"plan/done/{name}.json"
        key = json.loads((chosen / marker).read_text())["key"]
        assert json.loads((tmp_path / "ray" / marker).read_text())["key"] == key, name
    assert_same_results(plan_results(tmp_path / "ray"), plan_results(chosen))
