"""Progress lines of a reproduce run: counts, bar, elapsed time and the ETA rule."""

from __future__ import annotations

import logging

import pytest
from test_graph import run_toy

from logitscope.plan.progress import Progress, clock_text


def test_clock_text():
    assert [clock_text(s) for s in (0, 9.4, 59.6, 75, 3599, 3725, 90000)] == [
        "0s",
        "9s",
        "1m00s",
        "1m15s",
        "59m59s",
        "1h02m",
        "25h00m",
    ]


def test_eta_is_the_remaining_stages_at_their_kinds_mean_over_the_workers():
    now = [100.0]
    p = Progress(workers=2, clock=lambda: now[0])
    assert p.eta() is None  # nothing measured yet
    p.plan(total=4, finished=0, todo_kinds=["train", "train", "evaluate", "report"], pending=1)
    now[0] = 110.0
    line = p.stage_done("a", "train", 10.0)
    # left: train (its mean, 10) + evaluate and report (not measured: the overall mean, 10); 2 workers
    assert p.eta() == pytest.approx((10 + 10 + 10) / 2)
    assert line.startswith("[1/4] " + "#" * 6 + "-" * 18 + "  25%")
    assert "done a (10.0 s)" in line and "elapsed 10s" in line
    assert "ETA 15s + 1 group(s) not yet planned" in line
    line = p.stage_done("b", "evaluate", 2.0, error="RuntimeError: boom")
    assert p.eta() == pytest.approx((10 + 6) / 2)  # train 10, report at the overall mean (10 + 2) / 2
    assert line.startswith("[2/4] " + "#" * 12 + "-" * 12) and "failed b (2.0 s)" in line and "ETA 8s" in line
    p.stage_done("c", "train", 30.0)
    assert p.eta() == pytest.approx(14 / 2)  # report at the overall mean (10 + 2 + 30) / 3
    assert "ETA" not in p.stage_done("d", "report", 1.0)  # nothing left
    with pytest.raises(ValueError, match="workers=0: expected at least 1"):
        Progress(workers=0)


def test_execute_logs_one_progress_line_per_stage(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="logitscope.plan.dag"):
        run_toy(tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[")]
    assert [line.split()[0] for line in lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert "done a" in lines[0] and "ETA" in lines[0] and "done d" in lines[3] and "100%" in lines[3]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="logitscope.plan.dag"):
        run_toy(tmp_path, b=5)  # a rerun counts what was done before: b and d are left
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[")]
    assert [line.split()[0] for line in lines] == ["[3/4]", "[4/4]"]


def test_runs_of_a_reproduce_folder_show_the_plans_state(chosen_copy, capsys):
    from logitscope.cli import main
    from logitscope.plan.reproduce import saved_plan

    plan = saved_plan(chosen_copy)
    done = [n for n in plan.stages if plan.is_done(n)]
    assert 0 < len(done) < len(plan.stages)
    assert main(["runs", str(chosen_copy)]) == 0
    out = capsys.readouterr().out.splitlines()
    left = len(plan.stages) - len(done)
    assert out[0] == f"plan: {len(done)}/{len(plan.stages)} stages done, 0 failed, {left} to run"
    assert out[1].split()[:3] == ["run", "method", "status"]
    trained = {line.split()[0] for line in out[2:]}
    assert {n for n in trained if "-at-" in n or "-st-" in n} and all(" complete " in line for line in out[2:])


def sleep_stage(out, seconds: float) -> dict:
    import time

    time.sleep(seconds)
    return {}


def test_a_pool_records_each_stages_own_time_not_its_time_in_the_queue(tmp_path):
    import json
    import time

    from logitscope.plan.dag import Plan, Stage, execute
    from logitscope.plan.executors import LocalExecutor

    fn = f"{__name__}:sleep_stage"
    names = ("a", "b", "c", "d")
    stages = [Stage(n, "train", fn, {"seconds": 0.5}) for n in names]
    exe = LocalExecutor(jobs=2)  # a pool of two workers: the four are submitted at once, two queue
    t0 = time.perf_counter()
    try:
        assert execute(lambda: Plan(tmp_path, stages, []), None, exe) == (4, {})
    finally:
        exe.shutdown()
    wall = time.perf_counter() - t0
    recorded = [json.loads((tmp_path / "plan" / "done" / f"{n}.json").read_text())["seconds"] for n in names]
    # each worker runs its stages one after another: their own times add up to at most 2 x the
    # wall time. Counted from submission, the queued two would also count the first two's time
    # and all four the workers' start: about 4 x start + 3 s against 2 x (start + 1 s).
    assert all(r >= 0.5 for r in recorded) and sum(recorded) <= 2 * wall
