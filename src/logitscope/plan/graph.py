"""The reproduce plan: a graph of stages whose inputs and outputs are files.

Each :class:`Stage` names a function (``module:function``) called as ``fn(out, **params)``
that reads what earlier stages wrote under ``out`` and writes its own outputs there. Its
cache key hashes its kind, function, parameters and the keys of the stages it depends on; a
finished stage leaves ``out/plan/done/<name>.json`` with that key. A rerun skips every stage
whose marker holds the current key; a changed setting changes the keys of exactly the
stages that depend on it. Training stages resume their run folders, so a killed
``reproduce`` continues where it stopped.

The graph has one decision: the AT teacher checkpoint (appendix A.3), chosen from the
figure A.6 sweep students' accuracies on the validation split (``eval-val-*`` stages; the
test split is read once, to report). Stages downstream of it (the students, the analyses at
the teacher epoch with ``analysis.epoch: teacher``, the cross-check of the AT teacher and
the normal student) appear once ``plan/teacher.json`` exists; the executor rebuilds the
plan until nothing is left to run. A decision enters its dependents' keys through the value
decided (the chosen epoch is in their parameters), not through its own key: a changed sweep
that picks the same epoch retrains no student.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logitscope.config import ConfigError, RunConfig, run_preset
from logitscope.plan import preflight
from logitscope.plan.preset import apply_preset_overrides, load_preset
from logitscope.plan.progress import Progress
from logitscope.store.atomic import atomic_write_json
from logitscope.store.errors import DamagedFileError, read_json

log = logging.getLogger(__name__)

STAGE_KINDS = ("train", "distill", "evaluate", "choose", "analyze", "manifolds", "theory", "report")
# Which ready stage a free worker takes first, by kind: the longest first (on the digits
# preset the manifold stage takes about 90 s and starts only once its students are done, an
# AT run about 55 s, a student 12 s, an evaluation 1-6 s), so that no long stage starts last.
URGENCY = ("manifolds", "train", "distill", "theory", "evaluate", "analyze", "choose", "report")
# Section 3's cross-check: preset model key -> the report's label.
CROSSCHECK_MODELS = {"st": "ST", "at": "AT teacher", "normal": "normal student"}
CROSSCHECK_PROTOCOLS = ("autoattack", "odi")
# Figure 5's models beside the ST and AT teachers: student tag -> the report's label.
MANIFOLD_STUDENTS = {
    "normal": "normal student",
    "fix1-average": "fix-1 (avg) student",
    "correct-fix1": "correct-fix-1 student",
    "hybrid": "hybrid student",
}
MANIFOLD_MODELS = ("ST teacher", "AT teacher", *MANIFOLD_STUDENTS.values())


@dataclass(frozen=True)
class Stage:
    """One stage. ``after_failures``: the stage also runs when some of its dependencies failed
    (the report: it is built from whatever finished and marks what failed)."""

    name: str
    kind: str
    fn: str
    params: dict[str, Any]
    deps: tuple[str, ...] = ()
    gpu: bool = False
    after_failures: bool = False
    key: str = field(default="", compare=False)


def _key(stage: Stage, dep_keys: list[str]) -> str:
    blob = json.dumps([stage.kind, stage.fn, stage.params, dep_keys], sort_keys=True, default=str)
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
            # a decision enters through its value (the stage's params); a batch stage only
            # speeds up runs that are what they are however trained (their ids say so)
            dep_keys = [keyed[d].key for d in s.deps if keyed[d].kind != "choose" and keyed[d].fn != BATCH_FN]
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


# -- building the plan ---------------------------------------------------------------------


def _run_config(preset: dict[str, Any], method: str, seed: int, data_dir: str | None, **extra: Any) -> RunConfig:
    tr = preset["train"]
    overrides: dict[str, Any] = {"method": method, "seed": seed, "epochs": tr["epochs"]}
    if method != "distill":
        overrides["checkpoint_epochs"] = sorted(
            {e for e in tr.get("checkpoint_epochs", []) + preset["teacher"]["epochs"] if e < tr["epochs"]}
        )
    if data_dir:
        overrides["data.data_dir"] = str(Path(data_dir).resolve())
    overrides.update(tr.get("set") or {})
    overrides.update(extra)
    return run_preset(tr["preset"], **overrides)


def _student_config(
    preset: dict[str, Any],
    teacher: RunConfig,
    out: Path,
    seed: int,
    data_dir: str | None,
    teacher_epoch: int,
    transform: str = "none",
    k: int = 1,
    loss: str | None = None,
    hybrid: RunConfig | None = None,
    tag: str = "",
) -> RunConfig:
    d = preset["distill"]
    loss = loss or d["loss"]
    extra = {
        "epochs": d["epochs"],
        "name": f"{teacher.data.name}-student-{tag}-s{seed}",
        "distill.teacher": teacher.run_id,  # a sibling run folder: the output folder stays movable
        "distill.teacher_epoch": teacher_epoch,
        "distill.transform": transform,
        "distill.k": k,
        "distill.loss": loss,
        "distill.temperature": d["temperature"] if loss == "kl" else 1.0,
        "distill.passes": d["passes"],
        "distill.target_seed": seed,
        **(d.get("set") or {}),
    }
    if hybrid is not None:
        extra["distill.hybrid_order"] = hybrid.run_id
        extra["distill.hybrid_order_epoch"] = None
    return _run_config(preset, "distill", seed, data_dir, **extra)


def _add_crosscheck(
    preset: dict[str, Any],
    stages: list[Stage],
    seed: int,
    st: RunConfig,
    at: RunConfig,
    last: int,
    chosen: int | None,
    students: dict[str, list[tuple[str, RunConfig]]],
    ev_params: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Section 3's cross-check: ``crosscheck-<protocol>-<model>`` evaluates the first
    ``crosscheck.n`` test images of seed 0's ST run (last epoch), AT run (teacher epoch) and
    normal student (last epoch) under AutoAttack and ODI; the latter two once the teacher is
    chosen. The paper protocol on the same images is the first n rows of each model's
    full-test record (every image's attack is seeded by its index, so its verdict does not
    depend on what shares its batch; logits agree to float rounding), so nothing else is
    evaluated. Returns the report's label -> run, epoch, n, protocols of the models planned."""
    cc = preset.get("crosscheck") or {}
    models: dict[str, tuple[RunConfig, int, str]] = {"st": (st, last, f"train-st-s{seed}")}
    if chosen is not None:
        models["at"] = (at, chosen, f"train-at-s{seed}")
        if students.get("normal"):
            name, cfg = students["normal"][0]
            models["normal"] = (cfg, cfg.epochs, name)
    planned: dict[str, dict[str, Any]] = {}
    for model in cc.get("models", ()):
        if model not in models or not cc.get("protocols"):
            continue
        cfg, epoch, dep = models[model]
        for protocol in cc["protocols"]:
            params = {"run_id": cfg.run_id, "epoch": epoch, **ev_params, "n": cc["n"], "protocol": protocol}
            stages.append(
                Stage(
                    f"crosscheck-{protocol}-{model}",
                    "evaluate",
                    "logitscope.plan.stages:evaluate_stage",
                    params,
                    (dep,),
                    gpu=True,
                )
            )
        planned[CROSSCHECK_MODELS[model]] = {
            "run_id": cfg.run_id,
            "epoch": epoch,
            "n": cc["n"],
            "protocols": list(cc["protocols"]),
        }
    return planned


def build_plan(
    preset: dict[str, Any], out: Path, data_dir: str | None = None, assume_teacher: int | None = None
) -> Plan:
    """The paper's graph for ``preset`` in ``out``. The students appear once the teacher is
    chosen; ``assume_teacher`` plans them as if that epoch were chosen (the store projection)."""
    out = Path(out)
    stages: list[Stage] = []
    pending: list[str] = []
    ev = preset["evaluate"]
    ev_params = {k: ev[k] for k in ("eps", "n_iter", "n_restarts", "n", "batch_size")}

    def add_train(name: str, cfg: RunConfig, deps: tuple[str, ...] = (), kind: str = "train") -> str:
        stages.append(
            Stage(name, kind, "logitscope.plan.stages:train_stage", {"config": cfg.to_dict()}, deps, gpu=True)
        )
        return name

    def add_batch(name: str, cfgs: list[RunConfig], deps: tuple[str, ...]) -> tuple[str, ...]:
        """A stage training ``cfgs`` as one batch (`logitscope.distill.batched`) that each of
        their own stages then finds complete; none when batching is off."""
        if len(cfgs) < 2 or not batches(preset, cfgs[0]):
            return ()
        params = {"configs": [c.to_dict() for c in cfgs]}
        stages.append(Stage(name, "distill", BATCH_FN, params, deps, gpu=True))
        return (name,)

    def add_eval(run_stage: str, cfg: RunConfig, epoch: int, split: str = "test") -> str:
        """The paper protocol on ``split`` (val: ``eval-val-<stage>-e<epoch>``, its own records)."""
        name = f"eval-{run_stage}-e{epoch}" if split == "test" else f"eval-{split}-{run_stage}-e{epoch}"
        params = {"run_id": cfg.run_id, "epoch": epoch, **ev_params, **({"split": split} if split != "test" else {})}
        stages.append(Stage(name, "evaluate", "logitscope.plan.stages:evaluate_stage", params, (run_stage,), gpu=True))
        return name

    bad = sorted(set(preset["manifolds"].get("simulate_models") or ()) - set(MANIFOLD_MODELS))
    if bad:
        raise ConfigError(f"manifolds.simulate_models: {bad[0]!r}: expected some of {', '.join(MANIFOLD_MODELS)}")
    seeds = list(preset["seeds"])
    st = {s: _run_config(preset, "st", s, data_dir) for s in seeds}
    at = {s: _run_config(preset, "at", s, data_dir) for s in seeds}
    last = preset["train"]["epochs"]
    evals: dict[str, list[str]] = {"st": [], "at": []}
    for s in seeds:
        add_train(f"train-st-s{s}", st[s])
        add_train(f"train-at-s{s}", at[s])
        evals["st"].append(add_eval(f"train-st-s{s}", st[s], last))
        evals["at"].append(add_eval(f"train-at-s{s}", at[s], last))

    # Figure A.6 / A.7 sweep: normal distillation from each teacher epoch, L1 and KL. Their
    # test evaluations are the figures'; the rule (unless the epoch is fixed) reads the
    # students of the distillation loss only (A.7's other loss is for the report), on the
    # validation split only.
    teacher = preset["teacher"]
    rule = teacher.get("fixed_epoch") is None
    sweep: dict[str, dict[str, Any]] = {}
    for s in preset["distill"]["sweep_seeds"]:
        grid = [(te, loss) for te in teacher["epochs"] for loss in ("l1", "kl")]
        cfgs = {
            key: _student_config(preset, at[s], out, s, data_dir, key[0], loss=key[1], tag=f"sweep-e{key[0]}-{key[1]}")
            for key in grid
        }
        batch = add_batch(f"distill-batch-sweep-s{s}", list(cfgs.values()), (f"train-at-s{s}",))
        for (te, loss), cfg in cfgs.items():
            name = add_train(f"distill-sweep-e{te}-{loss}-s{s}", cfg, (f"train-at-s{s}", *batch), kind="distill")
            sweep[name] = {
                "eval": add_eval(name, cfg, cfg.epochs),
                "run_id": cfg.run_id,
                "epoch": cfg.epochs,
                "teacher_epoch": te,
                "loss": loss,
                "seed": s,
            }
            if rule and loss == preset["distill"]["loss"]:
                sweep[name]["val_eval"] = add_eval(name, cfg, cfg.epochs, split="val")
    choose_deps = tuple(v["val_eval"] for v in sweep.values() if "val_eval" in v)
    stages.append(
        Stage(
            "choose-teacher",
            "choose",
            "logitscope.plan.stages:choose_teacher_stage",
            {
                "sweep": sweep,
                "fixed_epoch": teacher.get("fixed_epoch"),
                "natural_tolerance": teacher["natural_tolerance"],
                "loss": preset["distill"]["loss"],
            },
            choose_deps,
        )
    )

    partial = Plan(out, stages, [])
    chosen = int(partial.result("choose-teacher")["epoch"]) if partial.is_done("choose-teacher") else assume_teacher
    students: dict[str, list[tuple[str, RunConfig]]] = {}
    waits_on: dict[str, tuple[str, ...]] = {}
    at_teacher_epoch = preset["analysis"]["epoch"] == "teacher"
    if chosen is None:
        pending.append("students (figure 4, table 2), their evaluation, analyses and report: wait for choose-teacher")
        waits_on["choose-teacher"] = ("distill", "evaluate", "manifolds") + (("analyze",) if at_teacher_epoch else ())
    else:
        d = preset["distill"]
        variants: list[tuple[str, dict[str, Any]]] = [("normal", {})]
        for k in d["ks"]:
            variants += [
                (f"fix{k}-permute", {"transform": "fix-k-permute", "k": k}),
                (f"fix{k}-average", {"transform": "fix-k-average", "k": k}),
            ]
        variants += [("correct-fix1", {"transform": "correct-fix-1", "k": 1}), ("hybrid", {"transform": "hybrid"})]
        for s in d["seeds"]:
            ts = seeds[s % len(seeds)]
            cfgs = {
                tag: _student_config(
                    preset,
                    at[ts],
                    out,
                    s,
                    data_dir,
                    chosen,
                    hybrid=st[ts] if kw.get("transform") == "hybrid" else None,
                    tag=tag,
                    **kw,
                )
                for tag, kw in variants
            }
            batch_deps = ("choose-teacher", f"train-at-s{ts}", f"train-st-s{ts}")
            batch = add_batch(f"distill-batch-s{s}", list(cfgs.values()), batch_deps)
            for tag, kw in variants:
                cfg, hybrid = cfgs[tag], kw.get("transform") == "hybrid"
                deps = ("choose-teacher", f"train-at-s{ts}") + ((f"train-st-s{ts}",) if hybrid else ()) + batch
                name = add_train(f"distill-{tag}-s{s}", cfg, deps, kind="distill")
                add_eval(name, cfg, cfg.epochs)
                students.setdefault(tag, []).append((name, cfg))
        # Table 1's AT row at the teacher checkpoint (the paper: epoch 40), and the ST runs at
        # the same epoch when the analyses compare them there (table 1, figures 2, 3, B.2, B.3, B.5).
        if chosen != last:
            evals["at-teacher"] = [add_eval(f"train-at-s{s}", at[s], chosen) for s in seeds]
            if at_teacher_epoch:
                evals["st-teacher"] = [add_eval(f"train-st-s{s}", st[s], chosen) for s in seeds]
        else:
            evals["at-teacher"], evals["st-teacher"] = evals["at"], evals["st"]

    # The analyses at analysis.epoch: an epoch, null (the last) or "teacher" (the chosen one:
    # pending until it is chosen). They read the records of every ST and AT run at that epoch.
    analysis_epoch = chosen if at_teacher_epoch else preset["analysis"]["epoch"]
    if at_teacher_epoch and chosen is None:
        pending.append("analyses at the teacher epoch (analysis.epoch: teacher): wait for choose-teacher")
    else:
        analyzed = evals["st-teacher"] + evals["at-teacher"] if at_teacher_epoch else evals["st"] + evals["at"]
        stages.append(
            Stage(
                "analyze",
                "analyze",
                "logitscope.plan.stages:analyze_stage",
                {"st": [st[s].run_id for s in seeds], "at": [at[s].run_id for s in seeds], "epoch": analysis_epoch},
                tuple(f"train-{m}-s{s}" for m in ("st", "at") for s in seeds) + tuple(analyzed),
            )
        )
    s0 = seeds[0]
    crosscheck = _add_crosscheck(preset, stages, s0, st[s0], at[s0], last, chosen, students, ev_params)
    mf = preset["manifolds"]
    if chosen is not None:
        s0 = seeds[0]
        models = {"ST teacher": (st[s0], None, f"train-st-s{s0}"), "AT teacher": (at[s0], chosen, f"train-at-s{s0}")}
        for tag, label in MANIFOLD_STUDENTS.items():
            if tag in students:
                name, cfg = students[tag][0]
                models[label] = (cfg, None, name)
        stages.append(
            Stage(
                "manifolds",
                "manifolds",
                "logitscope.plan.stages:manifolds_stage",
                {
                    "models": {k: {"run_id": c.run_id, "epoch": e} for k, (c, e, _) in models.items()},
                    "eps": mf["eps"] if mf["eps"] is not None else ev["eps"],
                    "p": mf["p"],
                    "m": mf["m"],
                    "n_t": mf["n_t"],
                    "max_features": mf["max_features"],
                    "simulate": mf.get("simulate", True),
                    "n_dichotomies": mf.get("n_dichotomies", 50),
                    **({"simulate_models": mf["simulate_models"]} if mf.get("simulate_models") else {}),
                },
                tuple(n for _, _, n in models.values()),
                gpu=True,
            )
        )
    s0 = seeds[0]
    theory_params = {
        "classes": preset["theory"]["classes"],
        "st": st[s0].run_id,
        "at": at[s0].run_id,
        "eps": ev["eps"] / 10,
        "n": 500,
    }
    stages.append(
        Stage(
            "theory",
            "theory",
            "logitscope.plan.stages:theory_stage",
            theory_params,
            (f"train-st-s{s0}", f"train-at-s{s0}"),
        )
    )
    # The report waits for everything (the students appear once the teacher is chosen) and is
    # built even when some of it failed, marking what did.
    report_deps = tuple(s.name for s in stages if s.kind in ("evaluate", "analyze", "manifolds", "theory", "choose"))
    stages.append(
        Stage(
            "report",
            "report",
            "logitscope.plan.stages:report_stage",
            {
                "preset": preset,
                "runs": {"st": [st[s].run_id for s in seeds], "at": [at[s].run_id for s in seeds]},
                "students": {tag: [c.run_id for _, c in v] for tag, v in students.items()},
                "sweep": sweep,
                "teacher_epoch": chosen,
                "last_epoch": last,
                "analysis_epoch": analysis_epoch,
                "crosscheck": crosscheck,
            },
            report_deps,
            after_failures=True,
        )
    )
    return Plan(out, stages, pending, waits_on)


# -- running it ----------------------------------------------------------------------------


BATCHED = ("auto", "always", "never")
BATCH_FN = "logitscope.plan.stages:train_batched_stage"


def batches(preset: dict[str, Any], student: RunConfig) -> bool:
    """Whether the plan trains the students of one seed as one batch (``distill.batched``):
    "never"; "always" (for a model without BatchNorm, which batched training refuses); or
    "auto": that, on CUDA only, where a small student cannot fill the device (on CPU cores it
    is compute-bound, and two workers training two students at once use the cores as well as
    one batch: `logitscope.distill.batched`)."""
    from logitscope.distill.batched import batchable_model

    mode = preset["distill"].get("batched", "auto")
    if mode not in BATCHED:
        raise ConfigError(f"distill.batched={mode!r}: expected one of {', '.join(BATCHED)}")
    if mode == "never" or not batchable_model(student):
        return False
    if mode == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return True


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


def describe(plan: Plan, only: list[str] | None) -> str:
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


def resolve_preset(preset: str, overrides: list[str], data_dir: str | None) -> dict[str, Any]:
    p = apply_preset_overrides(load_preset(preset), overrides)
    return p


def validate_plan_inputs(
    preset: dict[str, Any], data_dir: str | None, out: Path = Path("out"), only: list[str] | None = None
) -> Any:
    """Fail before any work: every run config valid, the dataset present, ``only`` known.
    Returns the dataset (as the AT runs read it)."""
    from logitscope.attacks.protocol import ProtocolConfig
    from logitscope.data import load_data
    from logitscope.distill.pipeline import transform_spec

    seeds = preset["seeds"]
    if not seeds:
        raise ValueError("seeds=[]: expected at least one seed, e.g. [0, 1, 2]")
    stray = [s for s in preset["distill"]["sweep_seeds"] if s not in seeds]
    if stray:
        raise ValueError(f"distill.sweep_seeds has {stray[0]}: expected seeds among seeds={seeds}")
    for te in preset["teacher"]["epochs"]:
        if not 1 <= te <= preset["train"]["epochs"]:
            raise ValueError(
                f"teacher.epochs has {te}: expected epochs between 1 and train.epochs={preset['train']['epochs']}"
            )
    fixed = preset["teacher"].get("fixed_epoch")
    if fixed is not None and fixed not in preset["teacher"]["epochs"]:
        raise ValueError(f"teacher.fixed_epoch={fixed}: expected one of teacher.epochs {preset['teacher']['epochs']}")
    epoch = preset["analysis"]["epoch"]
    if epoch != "teacher" and epoch is not None and not (_is_int(epoch) and 1 <= epoch <= preset["train"]["epochs"]):
        raise ValueError(
            f"analysis.epoch={epoch!r}: expected an epoch between 1 and train.epochs={preset['train']['epochs']}, "
            "null (the last) or 'teacher' (the teacher epoch)"
        )
    cfg = _run_config(preset, "at", seeds[0], data_dir)
    try:
        data = load_data(cfg.data)
    except (FileNotFoundError, ValueError) as exc:  # missing, corrupt, or not the published md5
        raise DataUnavailable(str(exc)) from exc
    if fixed is None and not len(data.y_val):
        raise ValueError(
            f"teacher.fixed_epoch=null: the teacher rule (appendix A.3) needs a validation split and {cfg.data.name} "
            f"holds none out (data.val_per_class={cfg.data.val_per_class}): set train.set: {{data.val_per_class: N}}, "
            "or fix teacher.fixed_epoch"
        )
    student = _student_config(preset, cfg, out, seeds[0], data_dir, preset["teacher"]["epochs"][0], tag="check")
    for key in ("name", "val_per_class", "split_seed"):
        if getattr(student.data, key) != getattr(cfg.data, key):
            raise ValueError(
                f"distill.set gives the students data.{key}={getattr(student.data, key)!r}: expected the teachers' "
                f"{getattr(cfg.data, key)!r} (students train on the teachers' training split; set it in train.set)"
            )
    for k in preset["distill"]["ks"]:
        transform_spec("fix-k-permute", k)
        if k > data.n_classes:
            raise ValueError(f"distill.ks has {k}: expected k <= {data.n_classes}, the classes of {cfg.data.name}")
    ev = preset["evaluate"]
    ProtocolConfig(eps=ev["eps"], n_iter=ev["n_iter"], n_restarts=ev["n_restarts"], batch_size=ev["batch_size"])
    if ev["n"] is not None and (not isinstance(ev["n"], int) or ev["n"] < 1):
        raise ValueError(f"evaluate.n={ev['n']}: expected a positive number of test images or null for all")
    _validate_crosscheck(preset.get("crosscheck"), ev["n"], len(data.y_test), cfg.data.name)
    build_plan(preset, out, data_dir).select(only)  # every stage's run config, and the kinds in ``only``
    return data


class DataUnavailable(ValueError):
    """The plan's dataset cannot be read (missing, corrupt, or not the published files)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_crosscheck(cc: dict[str, Any] | None, eval_n: int | None, n_test: int, dataset: str) -> None:
    """The ``crosscheck`` section (absent: none): models among st/at/normal, n a positive
    number of test images that the paper protocol's records cover, protocols among
    autoattack/odi (autoattack: the optional extra installed)."""
    if cc is None:
        return
    if not isinstance(cc, dict) or set(cc) != {"models", "n", "protocols"}:
        raise ValueError(f"crosscheck={cc!r}: expected a mapping with models, n and protocols")
    for key, allowed in (("models", tuple(CROSSCHECK_MODELS)), ("protocols", CROSSCHECK_PROTOCOLS)):
        values = cc[key]
        if not isinstance(values, list):
            raise ValueError(f"crosscheck.{key}={values!r}: expected a list of {', '.join(allowed)}")
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"crosscheck.{key} has {bad[0]!r}: expected {', '.join(allowed)}")
        twice = [v for i, v in enumerate(values) if v in values[:i]]
        if twice:
            raise ValueError(f"crosscheck.{key} has {twice[0]!r} twice: expected each at most once")
    n = cc["n"]
    if not _is_int(n) or n < 1:
        raise ValueError(f"crosscheck.n={n!r}: expected a positive number of test images")
    if n > n_test:
        raise ValueError(f"crosscheck.n={n}: expected at most the {n_test} test images of {dataset}")
    if eval_n is not None and n > eval_n:
        raise ValueError(
            f"crosscheck.n={n}: expected at most evaluate.n={eval_n} (the paper protocol it is compared with "
            "is evaluated on the first evaluate.n test images)"
        )
    if "autoattack" in cc["protocols"] and cc["models"]:
        from logitscope.attacks.autoattack_ref import load_pyautoattack

        try:
            load_pyautoattack()
        except ImportError as exc:
            why = f"crosscheck.protocols has 'autoattack': {exc}; or set crosscheck.protocols=[odi]"
            raise ValueError(why) from None


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
    from logitscope.plan.executors import make_executor

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
        print(describe(plan_fn(), only))
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
    report = out / "report" / "index.html"
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
