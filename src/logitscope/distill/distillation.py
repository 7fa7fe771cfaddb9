"""Distillation in the run store: teacher targets cached per (teacher, epoch, K), transformed,
kept with the student.

The raw targets of a teacher checkpoint (its logits averaged over K augmented passes, A.3)
are computed once and cached in the teacher's run folder
(`logitscope.store.targets.raw_targets_path`); every student of that teacher reuses them.
Each student keeps the targets it trained on (`targets_path`) with their provenance.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from logitscope.config import RunConfig, apply_overrides
from logitscope.data import Augment, Dataset
from logitscope.distill.losses import distill_objective
from logitscope.distill.targets import TargetProvenance, teacher_targets
from logitscope.distill.transforms import TransformSpec, apply_transform, parse_transform
from logitscope.fileio.atomic import atomic_save_npy, atomic_write_json
from logitscope.fileio.errors import DamagedFileError, load_npy, read_json
from logitscope.store import checkpoints
from logitscope.store.models import load_model
from logitscope.store.runs import Run
from logitscope.store.targets import provenance_path, raw_targets_path, targets_path
from logitscope.training.engine import ObjectiveFactory, train
from logitscope.training.objectives import Objective

log = logging.getLogger(__name__)


def distill_config(
    base: RunConfig,
    teacher: str,
    teacher_epoch: int | None = None,
    transform: str = "none",
    k: int = 1,
    loss: str = "l1",
    passes: int = 1,
    hybrid_order: str | None = None,
    temperature: float = 1.0,
) -> RunConfig:
    """A student config: ``base`` (data, model, schedule) with method distill and its teacher."""
    teacher_run = Run(teacher)
    epoch = teacher_run.resolve_epoch(teacher_epoch)
    if hybrid_order is None and transform == "hybrid":
        raise ValueError("transform hybrid needs --hybrid-order: the ST teacher run whose class order it uses")
    cfg = apply_overrides(
        base,
        {
            "method": "distill",
            "distill.teacher": str(teacher_run.dir.resolve()),
            "distill.teacher_epoch": epoch,
            "distill.transform": transform,
            "distill.k": k,
            "distill.loss": loss,
            "distill.passes": passes,
            "distill.temperature": temperature,
            "distill.hybrid_order": str(Path(hybrid_order).resolve()) if hybrid_order else None,
        },
    )
    spec = transform_spec(transform, k)  # refuse unknown names early
    if teacher_run.imported:  # a model trained elsewhere: its stored logits say its classes
        n_classes = int(teacher_run.logits.get(teacher_run.logits.splits[0], epoch).shape[1])
    else:
        n_classes = checkpoints.load(checkpoints.checkpoint_path(teacher_run.dir, epoch))["model_spec"]["n_classes"]
    if spec.name == "fix-k" and not 1 <= k <= n_classes:
        raise ValueError(f"k={k}: expected 1..{n_classes}, the teacher's number of classes")
    return cfg


def transform_spec(transform: str, k: int) -> TransformSpec:
    """The transform named in a config; ``k`` matters to fix-k only."""
    return parse_transform(transform, k if transform.startswith("fix-k") else None)


def _check_teacher(run: Run, student: RunConfig, data: Dataset, role: str) -> None:
    t = run.config.data
    if (
        t.name != student.data.name
        or t.split_seed != student.data.split_seed
        or t.val_per_class != student.data.val_per_class
    ):
        raise ValueError(
            f"{role} run {run.dir.name} is of dataset {t.name} (split seed {t.split_seed}): "
            f"expected {student.data.name} (split seed {student.data.split_seed}) like the student"
        )


def sibling_run(ref: str, student: Run) -> Run:
    """A teacher named by path, or by run id relative to the student's runs folder."""
    path = Path(ref)
    if not (path / "config.yaml").is_file() and (student.dir.parent / ref / "config.yaml").is_file():
        path = student.dir.parent / ref
    return Run(path)


def _cached_array(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """A cached ``(N, C)`` array, or ``None`` to compute it again.

    A cache is never trusted blindly nor fatal: a damaged file (truncated, corrupt, pickled)
    or one of another shape is logged and recomputed (then atomically replaced).
    """
    if not path.is_file():
        return None
    try:
        cached = load_npy(path)
    except DamagedFileError as exc:
        log.warning("recomputing %s: %s", exc.path, exc.problem)
        return None
    if cached.shape != shape:
        log.warning("recomputing %s: shape %s, expected %s", path, cached.shape, shape)
        return None
    return cached


def _saved_targets(student_dir: Path, prov: TargetProvenance, shape: tuple[int, int]) -> np.ndarray | None:
    """The student's stored targets if their provenance matches ``prov``; ``None`` to make them.

    Damaged files are logged and the targets recomputed, as for any cache: the teacher and
    the transform, not these files, define the targets.
    """
    prov_path = provenance_path(student_dir)
    if not (prov_path.is_file() and targets_path(student_dir).is_file()):
        return None
    try:
        saved = TargetProvenance.from_dict(read_json(prov_path, expect=dict))
    except DamagedFileError as exc:
        log.warning("recomputing the targets: %s: %s", exc.path, exc.problem)
        return None
    except (KeyError, TypeError, ValueError) as exc:  # valid JSON, but not a provenance record
        log.warning("recomputing the targets: %s: %s", prov_path, exc.args[0] if exc.args else type(exc).__name__)
        return None
    if replace(saved, reports=()) != prov:
        return None
    return _cached_array(targets_path(student_dir), shape)


def raw_targets(
    run: Run,
    epoch: int,
    passes: int,
    augment: Augment,
    bn_mode: str,
    seed: int,
    x_train: torch.Tensor,
    n_classes: int,
    device: torch.device,
) -> np.ndarray:
    """The teacher checkpoint's logits averaged over ``passes`` augmented passes (cached)."""
    random_passes = passes > 1 or not augment.identity or bn_mode == "batch"
    path = raw_targets_path(run.dir, epoch, passes, augment.describe(), bn_mode, seed if random_passes else 0)
    cached = _cached_array(path, (len(x_train), n_classes))
    if cached is not None:
        return cached
    model = load_model(run, epoch, expect={"n_classes": n_classes}, device=device)
    targets = teacher_targets(model, x_train, passes, augment, bn_mode=bn_mode, seed=seed, device=device)
    atomic_save_npy(path, targets)
    log.info("teacher targets of %s epoch %d cached at %s", run.dir.name, epoch, path)
    return targets


def prepare_targets(cfg: RunConfig, student: Run, data: Dataset, device: torch.device | None = None) -> np.ndarray:
    """The (N, C) float32 targets the student trains on (stored with the student)."""
    d = cfg.distill
    device = device or torch.device("cpu")
    spec = transform_spec(d.transform, d.k)
    teacher = sibling_run(d.teacher, student)
    _check_teacher(teacher, cfg, data, "teacher")
    epoch = teacher.resolve_epoch(d.teacher_epoch)
    augment = Augment(cfg.data.augment_pad, cfg.data.augment_flip)
    prov = TargetProvenance(
        teacher_run=str(teacher.dir),
        epoch=epoch,
        K=d.passes,
        augment=augment.describe(),
        bn_mode=d.bn_mode,
        seed=d.target_seed,
        transforms=(spec,),
    )
    saved = _saved_targets(student.dir, prov, (len(data.x_train), data.n_classes))
    if saved is not None:
        return saved
    common = (d.passes, augment, d.bn_mode, d.target_seed, data.x_train, data.n_classes, device)
    raw = raw_targets(teacher, epoch, *common)
    order = None
    if spec.name == "hybrid":
        if not d.hybrid_order:
            raise ValueError("transform hybrid needs distill.hybrid_order: the ST teacher run")
        order_run = sibling_run(d.hybrid_order, student)
        _check_teacher(order_run, cfg, data, "hybrid order")
        order = raw_targets(order_run, order_run.resolve_epoch(d.hybrid_order_epoch), *common)
    targets, report = apply_transform(spec, raw, data.y_train.numpy(), seed=d.target_seed, order_targets=order)
    targets = np.asarray(targets, np.float32)
    atomic_save_npy(targets_path(student.dir), targets)
    atomic_write_json(provenance_path(student.dir), replace(prov, reports=(report,)).to_dict())
    return targets


def student_objective(cfg: RunConfig) -> ObjectiveFactory:
    """The engine's objective of the student ``cfg``: its targets (`prepare_targets`, stored
    with the student) matched by ``distill.loss``."""

    def build(run: Run, data: Dataset, device: torch.device) -> Objective:
        targets = torch.from_numpy(prepare_targets(cfg, run, data, device)).to(device)
        return distill_objective(targets, cfg.distill.loss, cfg.distill.temperature)

    return build


def train_student(
    cfg: RunConfig,
    out: str | os.PathLike = "runs",
    resume: bool = False,
    progress: bool | None = None,
    stop_after_batches: int | None = None,
) -> Run:
    """Train the distillation run ``cfg`` (method distill) with the engine; returns its Run."""
    if cfg.objective != "distill":
        raise ValueError(f"method={cfg.method!r}: expected a distillation run (method distill)")
    return train(cfg, out, resume, progress, stop_after_batches, objective=student_objective(cfg))


def train_run(
    cfg: RunConfig,
    out: str | os.PathLike = "runs",
    resume: bool = False,
    progress: bool | None = None,
    stop_after_batches: int | None = None,
) -> Run:
    """Train one run of any method: ST and PGD-AT by the engine alone, students with their
    teacher's targets (`train_student`)."""
    if cfg.objective == "distill":
        return train_student(cfg, out, resume, progress, stop_after_batches)
    return train(cfg, out, resume, progress, stop_after_batches)


def distill(
    teacher: str,
    teacher_epoch: int | None = None,
    transform: str = "none",
    k: int = 1,
    loss: str = "l1",
    passes: int = 1,
    hybrid_order: str | None = None,
    temperature: float = 1.0,
    base: RunConfig | None = None,
    out: str = "runs",
    resume: bool = False,
) -> Run:
    """Train a student on a teacher's (transformed) logits on clean images; returns its Run.

    ``base`` sets data, model and schedule (default: the teacher's own config).
    """
    base = base or Run(teacher).config
    cfg = distill_config(base, teacher, teacher_epoch, transform, k, loss, passes, hybrid_order, temperature)
    return train_student(cfg, out=out, resume=resume)
