"""The paper's reproduce plan, as a graph of stages (`logitscope.plan.dag`).

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

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logitscope.config import TEACHER_RULES, ConfigError, Preset, RunConfig, run_preset
from logitscope.plan.dag import Plan, Stage
from logitscope.plan.preset import apply_preset_overrides, load_preset

log = logging.getLogger(__name__)

# The analyze and theory stages store their figures' inputs (analysis/results.npz,
# theory/fgsm_gap.npz), from which the report draws: version 1 of their outputs. A folder
# finished by an earlier logitscope (version 0: the stages drew their figures) runs these two
# stages again, seconds, so that its report has every figure.
RESULTS_VERSION = 1
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


def _run_config(preset: Preset, method: str, seed: int, data_dir: str | None, **extra: Any) -> RunConfig:
    tr = preset.train
    overrides: dict[str, Any] = {"method": method, "seed": seed, "epochs": tr.epochs}
    if method != "distill":
        overrides["checkpoint_epochs"] = sorted(
            {e for e in tr.checkpoint_epochs + preset.teacher.epochs if e < tr.epochs}
        )
    if data_dir:
        overrides["data.data_dir"] = str(Path(data_dir).resolve())
    overrides.update(tr.set)
    overrides.update(extra)
    return run_preset(tr.preset, **overrides)


def _student_config(
    preset: Preset,
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
    d = preset.distill
    loss = loss or d.loss
    extra = {
        "epochs": d.epochs,
        "name": f"{teacher.data.name}-student-{tag}-s{seed}",
        "distill.teacher": teacher.run_id,  # a sibling run folder: the output folder stays movable
        "distill.teacher_epoch": teacher_epoch,
        "distill.transform": transform,
        "distill.k": k,
        "distill.loss": loss,
        "distill.temperature": d.temperature if loss == "kl" else 1.0,
        "distill.passes": d.passes,
        "distill.target_seed": seed,
        **d.set,
    }
    if hybrid is not None:
        extra["distill.hybrid_order"] = hybrid.run_id
        extra["distill.hybrid_order_epoch"] = None
    return _run_config(preset, "distill", seed, data_dir, **extra)


def _add_crosscheck(
    preset: Preset,
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
    cc = preset.crosscheck
    models: dict[str, tuple[RunConfig, int, str]] = {"st": (st, last, f"train-st-s{seed}")}
    if chosen is not None:
        models["at"] = (at, chosen, f"train-at-s{seed}")
        if students.get("normal"):
            name, cfg = students["normal"][0]
            models["normal"] = (cfg, cfg.epochs, name)
    planned: dict[str, dict[str, Any]] = {}
    for model in cc.models if cc is not None else ():
        if model not in models or not cc.protocols:
            continue
        cfg, epoch, dep = models[model]
        for protocol in cc.protocols:
            params = {"run_id": cfg.run_id, "epoch": epoch, **ev_params, "n": cc.n, "protocol": protocol}
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
            "n": cc.n,
            "protocols": list(cc.protocols),
        }
    return planned


def build_plan(
    preset: dict[str, Any], out: Path, data_dir: str | None = None, assume_teacher: int | None = None
) -> Plan:
    """The paper's graph for ``preset`` in ``out``. The students appear once the teacher is
    chosen; ``assume_teacher`` plans them as if that epoch were chosen (the store projection)."""
    out = Path(out)
    b = _Builder(preset, out, data_dir)
    typed = b.preset
    evals = _add_teacher_runs(b)
    sweep = _add_sweep(b)
    _add_choice(b, sweep)
    partial = Plan(out, b.stages, [])
    chosen = int(partial.result("choose-teacher")["epoch"]) if partial.is_done("choose-teacher") else assume_teacher
    pending: list[str] = []
    students: dict[str, list[tuple[str, RunConfig]]] = {}
    waits_on: dict[str, tuple[str, ...]] = {}
    at_teacher_epoch = typed.analysis.epoch == "teacher"
    if chosen is None:
        pending.append("students (figure 4, table 2), their evaluation, analyses and report: wait for choose-teacher")
        waits_on["choose-teacher"] = ("distill", "evaluate", "manifolds") + (("analyze",) if at_teacher_epoch else ())
    else:
        students = _add_students(b, chosen)
        _add_teacher_epoch_evals(b, evals, chosen, at_teacher_epoch)
    analysis_epoch = _add_analysis(b, evals, chosen, pending)
    s0 = b.seeds[0]
    crosscheck = _add_crosscheck(typed, b.stages, s0, b.st[s0], b.at[s0], b.last, chosen, students, b.ev_params)
    if chosen is not None:
        _add_manifolds(b, chosen, students)
    _add_theory(b)
    _add_report(b, students, sweep, chosen, analysis_epoch, crosscheck)
    return Plan(out, b.stages, pending, waits_on)


class _Builder:
    """A plan's stages in the making, in plan order, with what its groups of stages share:
    the preset, the folders, the evaluation settings, the seeds, the ST and AT run config of
    each seed, and the last epoch."""

    def __init__(self, preset: dict[str, Any], out: Path, data_dir: str | None) -> None:
        self.raw = preset  # as written: the report's parameter
        self.preset = typed = Preset.from_dict(preset)
        self.out, self.data_dir = out, data_dir
        self.stages: list[Stage] = []
        self.ev_params = typed.evaluate.protocol_settings()
        bad = sorted(set(typed.manifolds.simulate_models or ()) - set(MANIFOLD_MODELS))
        if bad:
            raise ConfigError(f"manifolds.simulate_models: {bad[0]!r}: expected some of {', '.join(MANIFOLD_MODELS)}")
        self.seeds = list(typed.seeds)
        self.st = {s: _run_config(typed, "st", s, data_dir) for s in self.seeds}
        self.at = {s: _run_config(typed, "at", s, data_dir) for s in self.seeds}
        self.last = typed.train.epochs

    def train(self, name: str, cfg: RunConfig, deps: tuple[str, ...] = (), kind: str = "train") -> str:
        self.stages.append(
            Stage(name, kind, "logitscope.plan.stages:train_stage", {"config": cfg.to_dict()}, deps, gpu=True)
        )
        return name

    def batch(self, name: str, cfgs: list[RunConfig], deps: tuple[str, ...]) -> tuple[str, ...]:
        """A stage training ``cfgs`` as one batch (`logitscope.distill.batched`) that each of
        their own stages then finds complete; none when batching is off."""
        if len(cfgs) < 2 or not batches(self.preset, cfgs[0]):
            return ()
        params = {"configs": [c.to_dict() for c in cfgs]}
        self.stages.append(Stage(name, "distill", BATCH_FN, params, deps, gpu=True, in_keys=False))
        return (name,)

    def eval(self, run_stage: str, cfg: RunConfig, epoch: int, split: str = "test") -> str:
        """The paper protocol on ``split`` (val: ``eval-val-<stage>-e<epoch>``, its own records)."""
        name = f"eval-{run_stage}-e{epoch}" if split == "test" else f"eval-{split}-{run_stage}-e{epoch}"
        params = {
            "run_id": cfg.run_id,
            "epoch": epoch,
            **self.ev_params,
            **({"split": split} if split != "test" else {}),
        }
        self.stages.append(
            Stage(name, "evaluate", "logitscope.plan.stages:evaluate_stage", params, (run_stage,), gpu=True)
        )
        return name


def _add_teacher_runs(b: _Builder) -> dict[str, list[str]]:
    """The ST and AT run of every seed and their test evaluations at the last epoch; the
    evaluation stages of each ("st", "at")."""
    evals: dict[str, list[str]] = {"st": [], "at": []}
    for s in b.seeds:
        b.train(f"train-st-s{s}", b.st[s])
        b.train(f"train-at-s{s}", b.at[s])
        evals["st"].append(b.eval(f"train-st-s{s}", b.st[s], b.last))
        evals["at"].append(b.eval(f"train-at-s{s}", b.at[s], b.last))
    return evals


def _add_sweep(b: _Builder) -> dict[str, dict[str, Any]]:
    """Figure A.6 / A.7 sweep: normal distillation from each teacher epoch, L1 and KL. Their
    test evaluations are the figures'; the rule (unless the epoch is fixed) reads the
    students of the distillation loss only (A.7's other loss is for the report), on the
    validation split only. Returns each sweep student's stage -> its evaluations and run."""
    preset = b.preset
    teacher = preset.teacher
    rule = teacher.fixed_epoch is None
    sweep: dict[str, dict[str, Any]] = {}
    for s in preset.distill.sweep_seeds:
        grid = [(te, loss) for te in teacher.epochs for loss in ("l1", "kl")]
        cfgs = {
            key: _student_config(
                preset, b.at[s], b.out, s, b.data_dir, key[0], loss=key[1], tag=f"sweep-e{key[0]}-{key[1]}"
            )
            for key in grid
        }
        batch = b.batch(f"distill-batch-sweep-s{s}", list(cfgs.values()), (f"train-at-s{s}",))
        for (te, loss), cfg in cfgs.items():
            name = b.train(f"distill-sweep-e{te}-{loss}-s{s}", cfg, (f"train-at-s{s}", *batch), kind="distill")
            sweep[name] = {
                "eval": b.eval(name, cfg, cfg.epochs),
                "run_id": cfg.run_id,
                "epoch": cfg.epochs,
                "teacher_epoch": te,
                "loss": loss,
                "seed": s,
            }
            if rule and loss == preset.distill.loss:
                sweep[name]["val_eval"] = b.eval(name, cfg, cfg.epochs, split="val")
    return sweep


def _add_choice(b: _Builder, sweep: dict[str, dict[str, Any]]) -> None:
    """The decision: ``choose-teacher``, after the sweep's validation evaluations."""
    teacher = b.preset.teacher
    choose_deps = tuple(v["val_eval"] for v in sweep.values() if "val_eval" in v)
    b.stages.append(
        Stage(
            "choose-teacher",
            "choose",
            "logitscope.plan.stages:choose_teacher_stage",
            {
                "sweep": sweep,
                "fixed_epoch": teacher.fixed_epoch,
                "rule": teacher.rule,
                "natural_tolerance": teacher.natural_tolerance,
                "loss": b.preset.distill.loss,
            },
            choose_deps,
        )
    )


def _student_variants(ks: Sequence[int]) -> list[tuple[str, dict[str, Any]]]:
    """Figure 4's and table 2's students: tag -> the `_student_config` arguments of its transform."""
    variants: list[tuple[str, dict[str, Any]]] = [("normal", {})]
    for k in ks:
        variants += [
            (f"fix{k}-permute", {"transform": "fix-k-permute", "k": k}),
            (f"fix{k}-average", {"transform": "fix-k-average", "k": k}),
        ]
    variants += [("correct-fix1", {"transform": "correct-fix-1", "k": 1}), ("hybrid", {"transform": "hybrid"})]
    return variants


def _add_students(b: _Builder, chosen: int) -> dict[str, list[tuple[str, RunConfig]]]:
    """Every student of every distillation seed from the AT teacher at epoch ``chosen`` (in
    one batch per seed where batching is on), with its test evaluation at its last epoch.
    Returns tag -> (stage, run config) per seed."""
    d = b.preset.distill
    variants = _student_variants(d.ks)
    students: dict[str, list[tuple[str, RunConfig]]] = {}
    for s in d.seeds:
        ts = b.seeds[s % len(b.seeds)]
        cfgs = {
            tag: _student_config(
                b.preset,
                b.at[ts],
                b.out,
                s,
                b.data_dir,
                chosen,
                hybrid=b.st[ts] if kw.get("transform") == "hybrid" else None,
                tag=tag,
                **kw,
            )
            for tag, kw in variants
        }
        batch_deps = ("choose-teacher", f"train-at-s{ts}", f"train-st-s{ts}")
        batch = b.batch(f"distill-batch-s{s}", list(cfgs.values()), batch_deps)
        for tag, kw in variants:
            cfg, hybrid = cfgs[tag], kw.get("transform") == "hybrid"
            deps = ("choose-teacher", f"train-at-s{ts}") + ((f"train-st-s{ts}",) if hybrid else ()) + batch
            name = b.train(f"distill-{tag}-s{s}", cfg, deps, kind="distill")
            b.eval(name, cfg, cfg.epochs)
            students.setdefault(tag, []).append((name, cfg))
    return students


def _add_teacher_epoch_evals(b: _Builder, evals: dict[str, list[str]], chosen: int, at_teacher_epoch: bool) -> None:
    """Table 1's AT row at the teacher checkpoint (the paper: epoch 40), and the ST runs at
    the same epoch when the analyses compare them there (table 1, figures 2, 3, B.2, B.3,
    B.5): ``evals["at-teacher"]`` and ``evals["st-teacher"]``."""
    if chosen != b.last:
        evals["at-teacher"] = [b.eval(f"train-at-s{s}", b.at[s], chosen) for s in b.seeds]
        if at_teacher_epoch:
            evals["st-teacher"] = [b.eval(f"train-st-s{s}", b.st[s], chosen) for s in b.seeds]
    else:
        evals["at-teacher"], evals["st-teacher"] = evals["at"], evals["st"]


def _add_analysis(b: _Builder, evals: dict[str, list[str]], chosen: int | None, pending: list[str]) -> Any:
    """The analyses at analysis.epoch: an epoch, null (the last) or "teacher" (the chosen one:
    pending until it is chosen). They read the records of every ST and AT run at that epoch.
    Returns the analysis epoch."""
    seeds, at_teacher_epoch = b.seeds, b.preset.analysis.epoch == "teacher"
    analysis_epoch = chosen if at_teacher_epoch else b.preset.analysis.epoch
    if at_teacher_epoch and chosen is None:
        pending.append("analyses at the teacher epoch (analysis.epoch: teacher): wait for choose-teacher")
        return analysis_epoch
    analyzed = evals["st-teacher"] + evals["at-teacher"] if at_teacher_epoch else evals["st"] + evals["at"]
    b.stages.append(
        Stage(
            "analyze",
            "analyze",
            "logitscope.plan.stages:analyze_stage",
            {"st": [b.st[s].run_id for s in seeds], "at": [b.at[s].run_id for s in seeds], "epoch": analysis_epoch},
            tuple(f"train-{m}-s{s}" for m in ("st", "at") for s in seeds) + tuple(analyzed),
            version=RESULTS_VERSION,
        )
    )
    return analysis_epoch


def _add_manifolds(b: _Builder, chosen: int, students: dict[str, list[tuple[str, RunConfig]]]) -> None:
    """Figure 5: the manifold analysis of seed 0's ST teacher (last epoch), AT teacher (epoch
    ``chosen``) and the first student of each of `MANIFOLD_STUDENTS` (last epoch)."""
    mf, s0 = b.preset.manifolds, b.seeds[0]
    models = {"ST teacher": (b.st[s0], None, f"train-st-s{s0}"), "AT teacher": (b.at[s0], chosen, f"train-at-s{s0}")}
    for tag, label in MANIFOLD_STUDENTS.items():
        if tag in students:
            name, cfg = students[tag][0]
            models[label] = (cfg, None, name)
    b.stages.append(
        Stage(
            "manifolds",
            "manifolds",
            "logitscope.plan.stages:manifolds_stage",
            {
                "models": {k: {"run_id": c.run_id, "epoch": e} for k, (c, e, _) in models.items()},
                "eps": mf.eps if mf.eps is not None else b.preset.evaluate.eps,
                "p": mf.p,
                "m": mf.m,
                "n_t": mf.n_t,
                "max_features": mf.max_features,
                "simulate": mf.simulate,
                "n_dichotomies": mf.n_dichotomies,
                **({"simulate_models": list(mf.simulate_models)} if mf.simulate_models else {}),
            },
            tuple(n for _, _, n in models.values()),
            gpu=True,
        )
    )


def _add_theory(b: _Builder) -> None:
    """Appendix C's analytical model, beside seed 0's ST and AT runs."""
    s0 = b.seeds[0]
    theory_params = {
        "classes": b.preset.theory.classes,
        "st": b.st[s0].run_id,
        "at": b.at[s0].run_id,
        "eps": b.preset.evaluate.eps / 10,
        "n": 500,
    }
    b.stages.append(
        Stage(
            "theory",
            "theory",
            "logitscope.plan.stages:theory_stage",
            theory_params,
            (f"train-st-s{s0}", f"train-at-s{s0}"),
            version=RESULTS_VERSION,
        )
    )


def _add_report(
    b: _Builder,
    students: dict[str, list[tuple[str, RunConfig]]],
    sweep: dict[str, dict[str, Any]],
    chosen: int | None,
    analysis_epoch: Any,
    crosscheck: dict[str, dict[str, Any]],
) -> None:
    """The report waits for everything (the students appear once the teacher is chosen) and is
    built even when some of it failed, marking what did."""
    seeds = b.seeds
    report_deps = tuple(s.name for s in b.stages if s.kind in ("evaluate", "analyze", "manifolds", "theory", "choose"))
    b.stages.append(
        Stage(
            "report",
            "report",
            "logitscope.plan.stages:report_stage",
            {
                "preset": b.raw,
                "runs": {"st": [b.st[s].run_id for s in seeds], "at": [b.at[s].run_id for s in seeds]},
                "students": {tag: [c.run_id for _, c in v] for tag, v in students.items()},
                "sweep": sweep,
                "teacher_epoch": chosen,
                "last_epoch": b.last,
                "analysis_epoch": analysis_epoch,
                "crosscheck": crosscheck,
            },
            report_deps,
            after_failures=True,
        )
    )


BATCHED = ("auto", "always", "never")
BATCH_FN = "logitscope.plan.stages:train_batched_stage"


def batches(preset: Preset, student: RunConfig) -> bool:
    """Whether the plan trains the students of one seed as one batch (``distill.batched``):
    "never"; "always" (for a model without BatchNorm, which batched training refuses); or
    "auto": that, on CUDA only, where a small student cannot fill the device (on CPU cores it
    is compute-bound, and two workers training two students at once use the cores as well as
    one batch: `logitscope.distill.batched`)."""
    from logitscope.distill.batched import batchable_model

    mode = preset.distill.batched
    if mode not in BATCHED:
        raise ConfigError(f"distill.batched={mode!r}: expected one of {', '.join(BATCHED)}")
    if mode == "never" or not batchable_model(student):
        return False
    if mode == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return True


def resolve_preset(preset: str, overrides: list[str], data_dir: str | None) -> dict[str, Any]:
    """The preset named (or a YAML file) with ``overrides``, every value type-checked."""
    p = apply_preset_overrides(load_preset(preset), overrides)
    Preset.from_dict(p, preset)
    return p


def _check_teacher_rule(teacher: dict[str, Any]) -> None:
    """``teacher.rule`` one of `TEACHER_RULES`, ``natural_tolerance`` given exactly for trade-off."""
    rule, tolerance = teacher.get("rule", "robustness"), teacher.get("natural_tolerance")
    if rule not in TEACHER_RULES:
        raise ValueError(f"teacher.rule={rule!r}: expected one of {', '.join(TEACHER_RULES)}")
    if rule == "trade-off" and (tolerance is None or not 0 <= tolerance <= 1):
        raise ValueError(f"teacher.natural_tolerance={tolerance!r}: expected a number in [0, 1] for rule trade-off")
    if rule != "trade-off" and tolerance is not None:
        raise ValueError(
            f"teacher.natural_tolerance={tolerance!r}: applies to rule trade-off only (teacher.rule={rule!r}); "
            "remove it, or set teacher.rule: trade-off"
        )


def validate_plan_inputs(
    preset: dict[str, Any], data_dir: str | None, out: Path = Path("out"), only: list[str] | None = None
) -> Any:
    """Fail before any work: every run config valid, the dataset present, ``only`` known.
    Returns the dataset (as the AT runs read it)."""
    from logitscope.data import load_data
    from logitscope.distill.distillation import transform_spec

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
    _check_teacher_rule(preset["teacher"])
    epoch = preset["analysis"]["epoch"]
    if epoch != "teacher" and epoch is not None and not (_is_int(epoch) and 1 <= epoch <= preset["train"]["epochs"]):
        raise ValueError(
            f"analysis.epoch={epoch!r}: expected an epoch between 1 and train.epochs={preset['train']['epochs']}, "
            "null (the last) or 'teacher' (the teacher epoch)"
        )
    typed = Preset.from_dict(preset)
    cfg = _run_config(typed, "at", seeds[0], data_dir)
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
    student = _student_config(typed, cfg, out, seeds[0], data_dir, typed.teacher.epochs[0], tag="check")
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
    typed.evaluate.protocol_config()  # the protocol's own checks (eps in [0, 1], positive counts)
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
