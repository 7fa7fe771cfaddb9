"""A graph of stages whose inputs and outputs are files: stages, cache keys, markers, and
the loop that runs them (`execute`) on any executor (`logitscope.plan.executors`).

Each :class:`Stage` names a function (``module:function``) called as ``fn(out, **params)``
that reads what earlier stages wrote under ``out`` and writes its own outputs there. Its
cache key hashes its kind, function, parameters and the keys of the stages it depends on; a
finished stage leaves ``out/plan/done/<name>.json`` with that key. A rerun skips every stage
whose marker holds the current key; a changed setting changes the keys of exactly the
stages that depend on it. A decision stage (kind "choose") enters its dependents' keys
through the value decided (in their parameters), not through its own key; a stage with
``in_keys=False`` (a batch that only speeds up runs) enters no key at all.

Nothing here knows the paper: `logitscope.plan.graph` builds the paper's graph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logitscope.fileio.atomic import atomic_write_json
from logitscope.fileio.errors import DamagedFileError, read_json
from logitscope.plan.progress import Progress

log = logging.getLogger(__name__)

STAGE_KINDS = ("train", "distill", "evaluate", "choose", "analyze", "manifolds", "theory", "report")
# Which ready stage a free worker takes first, by kind: the longest first (on the digits
# preset the manifold stage takes about 90 s and starts only once its students are done, an
# AT run about 55 s, a student 12 s, an evaluation 1-6 s), so that no long stage starts last.
URGENCY = ("manifolds", "train", "distill", "theory", "evaluate", "analyze", "choose", "report")


@dataclass(frozen=True)
class Stage:
    """One stage. ``after_failures``: the stage also runs when some of its dependencies failed
    (the report: it is built from whatever finished and marks what failed). ``in_keys=False``:
    the stage's key enters no dependent's key (a batch stage only speeds up runs that are what
    they are however trained: their ids say so). ``version``: the format of the stage's
    outputs; raising it changes the stage's key (0, the first format, leaves keys as they
    were), so that a folder's finished stages of an earlier format run again."""

    name: str
    kind: str
    fn: str
    params: dict[str, Any]
    deps: tuple[str, ...] = ()
    gpu: bool = False
    after_failures: bool = False
    in_keys: bool = True
    version: int = 0
    key: str = field(default="", compare=False)


def _key(stage: Stage, dep_keys: list[str]) -> str:
    parts = [stage.kind, stage.fn, stage.params, dep_keys] + ([stage.version] if stage.version else [])
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Plan:
    """Stages in dependency order, with keys, plus the stages still waiting on a decision.

    ``waits_on`` maps a decision stage (kind "choose") to the stage kinds that appear once it
    is done, so that ``select`` of those kinds makes the decision first.
    """

    def __init__(
        self, out: Path, stages: list[Stage], pending: list[str], waits_on: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        self.out = out
        keyed: dict[str, Stage] = {}
        for s in stages:
            missing = [d for d in s.deps if d not in keyed]
            if missing:
                raise ValueError(f"stage {s.name} depends on {missing[0]}, which is not defined before it")
            # a decision enters through its value (the stage's params); see Stage.in_keys
            dep_keys = [keyed[d].key for d in s.deps if keyed[d].kind != "choose" and keyed[d].in_keys]
            keyed[s.name] = Stage(**{**s.__dict__, "key": _key(s, dep_keys)})
        self.stages = keyed
        self.pending = pending
        self.waits_on = waits_on or {}
        self.progress: Progress | None = None  # set by execute: what record_outcome reports to

    def marker(self, name: str) -> Path:
        return self.out / "plan" / "done" / f"{name}.json"

    def by_urgency(self, ready: list[Stage]) -> list[Stage]:
        """``ready`` in the order a worker that frees up should take them: first what a pending
        decision waits on (the teacher choice: every student waits on it), then the longest
        kinds (`URGENCY`: the manifold stage, run last, is the longest), then plan order."""
        gating: set[str] = set()
        stack = [name for name in self.waits_on if name in self.stages]
        while stack:
            name = stack.pop()
            if name not in gating:
                gating.add(name)
                stack.extend(self.stages[name].deps)
        rank = {kind: i for i, kind in enumerate(URGENCY)}
        order = {name: i for i, name in enumerate(self.stages)}
        return sorted(ready, key=lambda s: (s.name not in gating, rank.get(s.kind, len(rank)), order.get(s.name, 0)))

    def pending_for(self, only: list[str] | None) -> list[str]:
        """The pending groups that concern a run of the kinds in ``only`` (None: all)."""
        waiting = not only or any(set(kinds) & set(only) for kinds in self.waits_on.values())
        return self.pending if waiting else []

    def failure_marker(self, name: str) -> Path:
        return failure_marker(self.out, name)

    def _read_marker(self, path: Path) -> dict[str, Any] | None:
        """A marker of the stage's current key, or None (absent, stale, or damaged: a damaged
        marker is never trusted, so the stage runs again)."""
        try:
            info = read_json(path, expect=dict)
        except FileNotFoundError:
            return None
        except DamagedFileError as exc:
            log.warning("%s; the stage runs again", exc)
            return None
        name = path.stem
        if name not in self.stages or info.get("key") != self.stages[name].key:
            return None
        return info

    def is_done(self, name: str) -> bool:
        """Finished with the current key, and every output its marker lists still there at the
        size it was written with (a deleted or truncated record makes the stage run again). A
        report built while stages had failed is not done: a rerun rebuilds it once those
        stages are retried."""
        info = self._read_marker(self.marker(name))
        if info is None or info.get("partial", False):
            return False
        for rel, size in (info.get("outputs") or {}).items():
            path = self.out / rel
            if not path.is_file() or path.stat().st_size != size:
                log.warning(
                    "%s of stage %s is missing or changed since it was written: the stage runs again", path, name
                )
                return False
        return True

    def failure(self, name: str) -> dict[str, Any] | None:
        """The recorded failure of the stage's current key (error, log tail), or None."""
        return self._read_marker(self.failure_marker(name))

    def result(self, name: str) -> dict[str, Any]:
        info = self._read_marker(self.marker(name))
        return info.get("result", {}) if info else {}

    def select(self, only: list[str] | None) -> list[Stage]:
        """Stages of the kinds in ``only`` and everything they need (all when ``only`` is None)."""
        if not only:
            return list(self.stages.values())
        bad = [k for k in only if k not in STAGE_KINDS]
        if bad:
            raise ValueError(f"--only {bad[0]!r}: expected one of {', '.join(STAGE_KINDS)}")
        wanted: set[str] = set()
        todo = [s.name for s in self.stages.values() if s.kind in only]
        todo += [d for d, kinds in self.waits_on.items() if set(kinds) & set(only)]
        while todo:
            n = todo.pop()
            if n not in wanted:
                wanted.add(n)
                todo.extend(self.stages[n].deps)
        return [s for s in self.stages.values() if s.name in wanted]


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def stage_log(out: str | Path, name: str) -> Path:
    """The log of a stage's last attempt: ``out/plan/logs/<name>.log``."""
    return Path(out) / "plan" / "logs" / f"{name}.log"


def failure_marker(out: str | Path, name: str) -> Path:
    return Path(out) / "plan" / "failed" / f"{name}.json"


def run_stage(
    out: str, fn: str, params: dict[str, Any], threads: int | None = None, name: str | None = None
) -> dict[str, Any]:
    """Import and call one stage function (also what a pool or Ray worker executes).

    ``threads`` sets torch's intra-op threads first: CPU results depend on the thread count,
    so a Ray task runs with its CPU request, whatever the worker's defaults. With ``name``,
    the stage's log (and the traceback of an error) also goes to :func:`stage_log`, which
    the executor quotes when the stage fails.
    """
    import importlib

    root = logging.getLogger()
    if not root.handlers:  # a fresh worker process: log like the CLI does
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")
    handler, level = None, root.level
    if name is not None:
        path = stage_log(out, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="w")
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(min(level, logging.INFO))
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        module, attr = fn.split(":")
        return getattr(importlib.import_module(module), attr)(Path(out), **params) or {}
    except Exception:
        logging.getLogger(__name__).exception("stage %s failed", name or fn)
        raise
    finally:
        if handler is not None:
            root.removeHandler(handler)
            root.setLevel(level)
            handler.close()


def timed_run_stage(
    out: str, fn: str, params: dict[str, Any], threads: int | None = None, name: str | None = None
) -> tuple[dict[str, Any] | Exception, float]:
    """`run_stage` in the worker, with the seconds the stage itself ran (an executor's clock
    would also count the time the stage queued for a worker). An exception is returned with
    its time, not raised."""
    t0 = time.perf_counter()
    try:
        return run_stage(out, fn, params, threads, name), time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - recorded by the executor, as a raised one would be
        return exc, time.perf_counter() - t0


def error_line(exc: BaseException) -> str:
    """One line for an error: its type and the first line of its message (Ray wraps a task's
    error; the cause it carries is what the user needs)."""
    exc = getattr(exc, "cause", None) or exc
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def log_tail(out: str | Path, name: str, lines: int = 20) -> list[str]:
    path = stage_log(out, name)
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def mark_done(plan: Plan, stage: Stage, result: dict[str, Any], seconds: float, partial: bool = False) -> None:
    """Record a finished stage (``partial``: built while some dependencies had failed). The
    files a stage lists in ``result["outputs"]`` (paths inside the output folder) are recorded
    with their sizes, so that ``is_done`` notices one deleted or cut short."""
    info: dict[str, Any] = {"key": stage.key, "kind": stage.kind, "result": result, "seconds": seconds}
    outputs = [Path(p).resolve() for p in result.get("outputs", ())]  # as the stage named them
    if outputs:
        root = plan.out.resolve()
        info["outputs"] = {str(p.relative_to(root)): p.stat().st_size for p in outputs if p.is_file()}
    if partial:
        info["partial"] = True
    atomic_write_json(plan.marker(stage.name), info)
    plan.failure_marker(stage.name).unlink(missing_ok=True)


def mark_failed(plan: Plan, stage: Stage, error: str, seconds: float, blocked_by: str | None = None) -> None:
    """Record a stage that raised (with its error and the tail of its log), or that could not
    run because a dependency failed (``blocked_by``)."""
    info = {
        "key": stage.key,
        "kind": stage.kind,
        "error": error,
        "blocked_by": blocked_by,
        "log": str(stage_log(plan.out, stage.name)),
        "log_tail": [] if blocked_by else log_tail(plan.out, stage.name),
        "seconds": seconds,
        "time": time.time(),
    }
    atomic_write_json(plan.failure_marker(stage.name), info)


def record_outcome(plan: Plan, stage: Stage, outcome: dict[str, Any] | BaseException, seconds: float) -> str | None:
    """Write the done or failed marker of a stage that returned ``outcome``; returns the error
    line if it failed. What every executor calls when a stage comes back."""
    error = error_line(outcome) if isinstance(outcome, BaseException) else None
    if error is not None:
        mark_failed(plan, stage, error, seconds)
        log.error("%s failed after %.1f s: %s (log: %s)", stage.name, seconds, error, stage_log(plan.out, stage.name))
    else:
        partial = stage.after_failures and any(plan.failure(d) is not None for d in stage.deps)
        mark_done(plan, stage, outcome, seconds, partial=partial)  # type: ignore[arg-type]
    if plan.progress is not None:
        log.info("%s", plan.progress.stage_done(stage.name, stage.kind, seconds, error))
    elif error is None:
        log.info("done %s (%.1f s)", stage.name, seconds)
    return error


def plan_failures(out: str | Path) -> dict[str, dict[str, Any]]:
    """Every recorded failure under ``out/plan/failed`` (stage name -> its record). The
    executor removes stale ones (another key, a stage no longer planned) before each run."""
    folder = Path(out) / "plan" / "failed"
    found: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found[p.stem] = read_json(p, expect=dict)
        except DamagedFileError as exc:
            found[p.stem] = {"error": str(exc), "blocked_by": None, "log_tail": []}
    return found


def _prune_failures(plan: Plan) -> None:
    """Drop failure records that no longer apply (another key, a stage no longer planned)."""
    for name in plan_failures(plan.out):
        if plan.failure(name) is None:
            plan.failure_marker(name).unlink(missing_ok=True)


def execute(plan_fn: Any, only: list[str] | None, executor: Any) -> tuple[int, dict[str, str]]:
    """Run every runnable stage, rebuilding the plan after each wave until nothing is left.

    A stage that raises is recorded under ``plan/failed/`` (its error and the tail of its log)
    and everything that does not depend on it still runs; a stage that depends on it is
    recorded as not run; a stage with ``after_failures`` (the report) runs once each of its
    dependencies is done or failed. Nothing failed is retried within one call; a rerun
    retries exactly the failed stages and what depends on them.

    Returns:
        (stages run, failures: stage name -> one-line reason).
    """
    ran = 0
    failed: dict[str, str] = {}
    attempted: set[str] = set()
    progress = Progress(workers=getattr(executor, "jobs", 1))
    _prune_failures(plan_fn())
    while True:
        plan = plan_fn()
        selected = plan.select(only)
        todo = [s for s in selected if not plan.is_done(s.name) and s.name not in attempted | set(failed)]
        for s in todo:  # in dependency order, so a block propagates down the graph in one pass
            bad = None if s.after_failures else next((d for d in s.deps if d in failed), None)
            if bad is not None:
                root = failed[bad].split(", which failed: ", 1)[-1]
                failed[s.name] = f"not run: it depends on {bad}, which failed: {root}"
                mark_failed(plan, s, failed[s.name], 0.0, blocked_by=bad)
        todo = [s for s in todo if s.name not in failed]
        if not todo:
            return ran, failed
        progress.plan(len(selected), len(selected) - len(todo), [s.kind for s in todo], len(plan.pending_for(only)))
        plan.progress = progress
        ready = [s for s in todo if all(plan.is_done(d) or (s.after_failures and d in failed) for d in s.deps)]
        if not ready and not getattr(executor, "busy", False):
            raise RuntimeError(f"no stage can run: {todo[0].name} waits on {todo[0].deps}")
        finished = executor.run(plan, ready)
        for name, error in finished.items():
            attempted.add(name)
            if error is not None:
                failed[name] = error
        ran += len(finished)


def describe_plan(plan: Plan, only: list[str] | None) -> str:
    """One line per selected stage (done, ready or waiting), the pending groups, a count."""
    lines = []
    selected = plan.select(only)
    for s in selected:
        failure = plan.failure(s.name)
        if plan.is_done(s.name):
            state = "done"
        elif failure is not None:
            state = "failed"
        else:
            state = "ready" if all(plan.is_done(d) for d in s.deps) else "waiting"
        reason = f"  ({failure['error']})" if failure else ""
        lines.append(f"{state:8s} {s.kind:10s} {s.name}  [{s.key}]{reason}")
    pending = plan.pending_for(only)
    lines += [f"pending  {p}" for p in pending]
    n_done = sum(plan.is_done(s.name) for s in selected)
    lines.append(f"{n_done}/{len(selected)} stages done" + (f"; {len(pending)} group(s) pending" if pending else ""))
    return "\n".join(lines)
