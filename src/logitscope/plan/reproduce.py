"""``logitscope reproduce``: check the inputs and the bill (`preflight`), then run the paper's
plan (`graph`) on an executor until nothing is left; and what reads a finished folder back."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from logitscope.fileio.atomic import atomic_write_json
from logitscope.fileio.errors import read_json
from logitscope.plan import preflight
from logitscope.plan.dag import Plan, describe_plan, execute, record_outcome, run_stage, stage_log
from logitscope.plan.executors import make_executor
from logitscope.plan.graph import DataUnavailable, build_plan, resolve_preset, validate_plan_inputs
from logitscope.store.outputs import report_dir

log = logging.getLogger(__name__)


def reproduce(
    preset: str = "digits",
    out: Path = Path("out"),
    overrides: list[str] | None = None,
    data_dir: str | None = None,
    dry_run: bool = False,
    only: list[str] | None = None,
    executor: str = "local",
    address: str | None = None,
    jobs: int = 1,
) -> int:
    """``logitscope reproduce``: build the plan, print it (dry run) or run what is not done.

    ``jobs``: local worker processes (1: stages run in this process).
    """
    resolved = resolve_preset(preset, overrides or [], data_dir)
    out = Path(out)
    try:
        data, problem = validate_plan_inputs(resolved, data_dir, out, only), None
    except DataUnavailable as exc:
        if not dry_run:
            raise exc.__cause__ from None  # the loader's own error (FileNotFoundError, md5 ValueError)
        data, problem = None, str(exc)  # a dry run still shows the plan and its bill
    exe = make_executor(executor, address, jobs)  # fail on a missing Ray before any work
    checks = preflight.run_preflight(resolved, out, data_dir, data, problem)

    def plan_fn() -> Plan:
        return build_plan(resolved, out, data_dir)

    if dry_run:
        print(describe_plan(plan_fn(), only))
        print(checks.describe())
        return 1 if problem else 0
    for line in checks.lines:
        log.info("preflight: %s", line)
    preflight.check_disk(checks.store, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "plan" / "preset.json", {"preset": resolved, "data_dir": data_dir})
    t0 = time.perf_counter()
    try:
        ran, failed = execute(plan_fn, only, exe)
    finally:
        if hasattr(exe, "shutdown") and executor == "local":
            exe.shutdown()
    report = report_dir(out) / "index.html"
    log.info("reproduce: %d stage(s) run in %.1f s; report at %s", ran, time.perf_counter() - t0, report)
    if failed:
        raised = {n: e for n, e in failed.items() if not e.startswith("not run:")}
        log.error(
            "reproduce: %d stage(s) failed and %d could not run; the report marks them. Rerun the same "
            "command to retry them (finished stages are kept):",
            len(raised),
            len(failed) - len(raised),
        )
        for name, error in raised.items():
            log.error("  failed: %s: %s (log: %s)", name, error, stage_log(out, name))
        for name, error in failed.items():
            if name not in raised:
                log.error("  %s: %s", name, error)
        return 1
    return 0


def saved_plan(out: Path) -> Plan:
    """The plan of a reproduce output folder, from the preset it saved (``plan/preset.json``)."""
    saved = Path(out) / "plan" / "preset.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{out} holds no reproduce output (no plan/preset.json)")
    info = read_json(saved, remedy="rerun logitscope reproduce with the same preset to rewrite it", expect=dict)
    return build_plan(info["preset"], Path(out), info.get("data_dir"))


def plan_state(out: Path) -> str:
    """One line: the stages of a reproduce folder's plan done, failed and left."""
    plan = saved_plan(out)
    names = list(plan.stages)
    done = sum(plan.is_done(n) for n in names)
    failed = sum(plan.failure(n) is not None for n in names)
    pending = f"; {len(plan.pending)} group(s) not yet planned" if plan.pending else ""
    return f"plan: {done}/{len(names)} stages done, {failed} failed, {len(names) - done - failed} to run{pending}"


def rebuild_report(out: Path) -> Path:
    """``logitscope report OUT``: rebuild the report from the stores alone."""
    plan = saved_plan(out)
    s = plan.stages["report"]
    result = run_stage(str(out), s.fn, s.params)
    record_outcome(plan, s, result, 0.0)
    return Path(result["html"])
