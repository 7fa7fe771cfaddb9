"""The training engine: one epoch loop for every method (ST, PGD-AT, distillation).

Read top to bottom: set up (data on the device as uint8, model, optimizer), resume from
``checkpoints/last.pt`` if present, then per epoch: shuffle and augment in batches on the
device, step the objective, snapshot the logits of every sample of every split (eval mode,
no augmentation, dataset order; on the epochs whose logits are stored), measure (the PGD
monitor every ``monitor.pgd_every`` epochs), checkpoint, and record.

Determinism: every random draw of an epoch (order, augmentation, attack starts) comes from a
generator seeded by (seed, epoch) and the learning rate is a function of the epoch, so a run
killed at any moment and resumed ends bitwise equal to an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from logitscope.config import RunConfig
from logitscope.data import Augment, Dataset, load_data
from logitscope.models import build_model
from logitscope.models.predict import predict_logits
from logitscope.runtime import derive_seed, resolve_device
from logitscope.store import checkpoints
from logitscope.store.logits import write_labels, write_logits
from logitscope.store.runs import Run
from logitscope.training import objectives, perf
from logitscope.training.distributed import Dist
from logitscope.training.monitor import COLLAPSE_MARK, collapse_warning, left_chance, monitor_subset, pgd_accuracy
from logitscope.training.schedules import learning_rate, monitors_pgd, should_checkpoint, stores_logits, takes_snapshot

ObjectiveFactory = Callable[[Run, Dataset, torch.device], objectives.Objective]
"""Builds a run's objective once its folder and data exist (distillation: the student's
targets, computed from its teacher); `logitscope.distill` hands one to `train`."""

log = logging.getLogger(__name__)


def model_spec(cfg: RunConfig, data: Dataset) -> dict[str, Any]:
    return {
        "name": cfg.model.name,
        "n_classes": data.n_classes,
        "in_channels": data.image_shape[0],
        "mean": list(data.mean),
        "std": list(data.std),
        **({"width": cfg.model.width} if cfg.model.width is not None else {}),
    }


class TrainingDiverged(RuntimeError):
    """A non-finite loss or snapshot: the run stops at once; its last good checkpoint and
    logits stay as they were (nothing of the diverged epoch is written)."""


# On CUDA, checking the loss every batch would synchronize the device every step: the first
# non-finite batch is tracked on the device and read every this many batches (and at the end
# of the epoch, before anything of the epoch is written). On CPU every batch is checked.
NONFINITE_CHECK_EVERY_CUDA = 50


def diverged(run: Run, epoch: int, what: str, record: bool) -> TrainingDiverged:
    """The error to raise; ``record``: this process writes the run's ``meta.json`` (rank 0)."""
    msg = f"run {run.dir.name} diverged at epoch {epoch}: {what}; lower optim.lr or set optim.grad_clip"
    if record:
        run.update_meta(status="failed", reason=msg, failed=time.time())
    return TrainingDiverged(msg)


def _record_warnings(run: Run, cfg: RunConfig, row: dict[str, Any], n_classes: int, **meta: Any) -> None:
    """Update ``meta.json`` with ``meta`` and the collapse warning of the metrics ``row`` (if
    any), logging it once: each warning is kept once in ``warnings``, across resumes. A later
    row whose training accuracy has left chance withdraws it (``withdrawn_warnings``)."""
    epoch, acc = int(row["epoch"]), float(row.get("train_acc", math.nan))
    warning = collapse_warning(cfg, epoch, acc, n_classes)
    warnings = list(run.meta.get("warnings") or [])
    new = warning is not None and warning not in warnings
    if new:
        log.warning("run %s: %s", run.dir.name, warning)
        warnings.append(warning)
    stale = [w for w in warnings if COLLAPSE_MARK in w] if warning is None and left_chance(acc, n_classes) else []
    if stale:
        log.info(
            "run %s: training accuracy %.1f%% after epoch %d: it learns; collapse warning withdrawn",
            run.dir.name,
            100 * acc,
            epoch,
        )
        warnings = [w for w in warnings if w not in stale]
        withdrawn = list(run.meta.get("withdrawn_warnings") or [])
        withdrawn += [f"{w} (withdrawn: training accuracy {100 * acc:.1f}% after epoch {epoch})" for w in stale]
        meta["withdrawn_warnings"] = withdrawn
    if meta or new or stale:
        run.update_meta(**meta, **({"warnings": warnings} if new or stale else {}))


def epoch_generator(cfg: RunConfig, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(derive_seed(cfg.seed, "epoch", epoch))


def build_objective(
    cfg: RunConfig, run: Run, data: Dataset, device: torch.device, objective: ObjectiveFactory | None = None
) -> objectives.Objective:
    """The run's objective: ST and PGD-AT from the config, any other through ``objective``."""
    if objective is not None:
        return objective(run, data, device)
    if cfg.objective == "standard":
        return objectives.standard
    if cfg.objective == "pgd-at":
        return objectives.pgd_at(cfg.attack)  # warm-up: the epoch loop rebuilds it per epoch (attack_at_epoch)
    raise ValueError(_needs_objective(cfg))


def _needs_objective(cfg: RunConfig) -> str:
    return (
        f"method={cfg.method!r} trains with an objective built outside the engine: "
        "expected logitscope.train or logitscope.distill.train_student (they build the student's targets)"
    )


def new_optimizer(cfg: RunConfig, params: Any) -> torch.optim.SGD:
    o = cfg.optim
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)


def initial_model(cfg: RunConfig, data: Dataset, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The run's model at its seeded initialization (every run of a seed starts alike), and its spec."""
    spec = model_spec(cfg, data)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = build_model(cfg.model.name, data.n_classes, spec["in_channels"], data.mean, data.std, cfg.model.width)
    return model.to(device), spec


def resume_state(run: Run, model: nn.Module, opt: torch.optim.Optimizer, spec: dict[str, Any]) -> int:
    """Load ``checkpoints/last.pt`` into ``model`` and ``opt`` if present; the epoch it ends (0: none)."""
    path = checkpoints.last_path(run.dir)
    if not path.is_file():
        return 0
    state = checkpoints.load(path)
    checkpoints.check_spec(state["model_spec"], spec, str(path))
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    log.info("resuming %s after epoch %d", run.dir.name, int(state["epoch"]))
    return int(state["epoch"])


def begin(run: Run, cfg: RunConfig, data: Dataset, device: torch.device, start: int, world: int = 1) -> list[dict]:
    """Write the labels and the running status; the metrics rows up to ``start`` (main process)."""
    rows = [r for r in run.metrics() if int(r["epoch"]) <= start]
    for split in data.splits():
        write_labels(run.dir, split, data.split(split)[1].numpy())
    run.update_meta(
        status="running", reason=None, device=str(device), world_size=world, started=time.time(), last_epoch=start
    )
    for row in rows:  # a kill between an epoch's trainer state and its meta.json: its warning
        _record_warnings(run, cfg, row, data.n_classes)
    return rows


def snapshot(
    run: Run,
    cfg: RunConfig,
    model: nn.Module,
    data: Dataset,
    epoch: int,
    device: torch.device,
    dist: Dist | None = None,
) -> dict[str, float]:
    """The epoch's accuracy per split from its logit snapshot (stored on `stores_logits` epochs,
    taken on `takes_snapshot` epochs, nan otherwise); raises on non-finite logits."""
    dist = dist or Dist()
    accs = {f"{split}_acc": math.nan for split in data.splits()}
    for split in data.splits() if takes_snapshot(cfg, epoch) else ():
        x, y = data.split(split)
        a, b = dist.shard(len(y))
        logits = dist.gather_rows(predict_logits(model, x[a:b], cfg.monitor.eval_batch_size, device), len(y))
        finite = np.isfinite(logits).all(axis=1)
        if not finite.all():
            what = f"non-finite logits on {int((~finite).sum())} of {len(y)} {split} images"
            raise diverged(run, epoch, what, dist.is_main)
        if dist.is_main and stores_logits(cfg, epoch):
            write_logits(run.dir, split, epoch, logits, cfg.store.logits_dtype)
        accs[f"{split}_acc"] = float((logits.argmax(1) == y.numpy()).mean())
    return accs


def record_epoch(
    run: Run,
    cfg: RunConfig,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    spec: dict[str, Any],
    data: Dataset,
    rows: list[dict],
    epoch: int,
    row: dict[str, Any],
    device: torch.device,
) -> None:
    """Measure the PGD monitor, then checkpoint and record the epoch (main process): ``row``
    holds what training measured (lr, loss, accuracies, seconds)."""
    mon_idx = monitor_subset(len(data.y_test), cfg.monitor.pgd_n)
    x_mon, y_mon = data.x_test[mon_idx], data.y_test[mon_idx]
    t0 = time.perf_counter()
    pgd_acc = pgd_accuracy(model, x_mon, y_mon, cfg, device) if monitors_pgd(cfg, epoch) else math.nan
    pgd_s = time.perf_counter() - t0
    model.train()
    train_s, measured = row["train_seconds"], dict(row)
    row = {
        "epoch": epoch,
        "lr": measured["lr"],
        "loss": measured["loss"],
        **{k: v for k, v in measured.items() if k.endswith("_acc")},
        "pgd_acc": pgd_acc,
        **({"train_eps": measured["train_eps"]} if "train_eps" in measured else {}),
        "train_seconds": round(train_s, 4),
        "snapshot_seconds": round(measured["snapshot_seconds"], 4),
        "pgd_seconds": round(pgd_s, 4),
        "images_per_s": round(len(data.y_train) / train_s, 1) if train_s > 0 else math.inf,
    }
    rows.append(row)
    payload = {"model": model.state_dict(), "epoch": epoch, "model_spec": spec}
    if should_checkpoint(cfg, epoch):
        checkpoints.save(checkpoints.checkpoint_path(run.dir, epoch), payload)
    run.write_metrics(rows)
    checkpoints.save(checkpoints.last_path(run.dir), {**payload, "optimizer": opt.state_dict()})
    # with last_epoch, in one write: an epoch's warning is recorded exactly when the epoch is
    _record_warnings(run, cfg, row, data.n_classes, last_epoch=epoch)
    log.info(
        "%s epoch %d: loss %.4f test %.4f pgd %.4f (%.0f img/s)",
        run.dir.name,
        epoch,
        row["loss"],
        row.get("test_acc", float("nan")),
        pgd_acc,
        row["images_per_s"],
    )


def train(
    config: RunConfig,
    out: str | os.PathLike = "runs",
    resume: bool = False,
    progress: bool | None = None,
    stop_after_batches: int | None = None,
    objective: ObjectiveFactory | None = None,
) -> Run:
    """Train one run and keep the logits of every sample at every epoch.

    Args:
        config: the resolved run configuration.
        out: folder under which the run folder ``<run-id>`` is created.
        resume: continue an unfinished run of the same config.
        progress: show progress bars (default: when stderr is a terminal).
        stop_after_batches: for tests: raise ``KeyboardInterrupt`` after this many batches,
            as a kill mid-epoch would.
        objective: builds the objective of a method the engine does not define itself
            (distillation; see `logitscope.distill.train_student`); ST and PGD-AT need none.

    Returns:
        The :class:`Run`; an already complete run is returned untouched.
    """
    cfg = config
    if objective is None and cfg.objective not in ("standard", "pgd-at"):
        raise ValueError(_needs_objective(cfg))
    device = resolve_device(cfg.device)
    dist = Dist.from_env(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    run = _open_run(out, config, resume, dist)
    if run.complete:
        log.info("run %s is complete; nothing to do", run.dir.name)
        return run
    t = _set_up(cfg, run, device, dist, objective)
    show = sys.stderr.isatty() if progress is None else progress
    for epoch in range(t.start + 1, cfg.epochs + 1):
        lr = learning_rate(cfg, epoch)
        for group in t.opt.param_groups:
            group["lr"] = lr
        train_attack = objectives.attack_at_epoch(cfg.attack, epoch) if cfg.objective == "pgd-at" else None
        if train_attack is not None and cfg.attack.warmup_epochs:
            t.step_objective = objectives.pgd_at(train_attack)
        loss_sum, train_s = _train_epoch(t, epoch, show, stop_after_batches)
        measured = {"lr": lr, **({"train_eps": train_attack.eps} if train_attack is not None else {})}
        _end_epoch(t, epoch, loss_sum, train_s, measured)
    if dist.is_main:
        run.update_meta(status="complete", finished=time.time(), last_epoch=cfg.epochs)
    dist.barrier()
    return run


@dataclass
class _Training:
    """What the epochs of `train` share once it is set up. ``train_model``: the module the
    batches step (compiled, or wrapped in DDP) sharing ``model``'s parameters;
    ``batches_done``: the batches of this process's call, for the ``stop_after_batches`` hook."""

    cfg: RunConfig
    run: Run
    device: torch.device
    dist: Dist
    data: Dataset
    model: nn.Module
    spec: dict[str, Any]
    opt: torch.optim.Optimizer
    start: int
    rows: list[dict]
    train_model: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    augment: Augment
    step_objective: objectives.Objective
    batches_done: int = 0


def _open_run(out: str | os.PathLike, config: RunConfig, resume: bool, dist: Dist) -> Run:
    """The run folder: created (or resumed) by the main process, then opened by the others."""
    if dist.is_main:
        run = Run.create(out, config, resume=resume)
    dist.barrier()
    if not dist.is_main:
        run = Run(Path(out) / config.run_id)
    return run


def _set_up(
    cfg: RunConfig, run: Run, device: torch.device, dist: Dist, objective: ObjectiveFactory | None
) -> _Training:
    """Data, model and optimizer (resumed from ``checkpoints/last.pt`` if present), the
    training data on the device as uint8, and the objective."""
    data = load_data(cfg.data)
    model, spec = initial_model(cfg, data, device)
    if dist.enabled and device.type == "cuda":
        # BatchNorm over the global batch, as one process (SyncBatchNorm refuses CPU tensors, so
        # gloo runs keep per-shard statistics); the parameters and buffers are the same tensors
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = new_optimizer(cfg, model.parameters())
    start = resume_state(run, model, opt, spec)
    rows = begin(run, cfg, data, device, start, dist.world) if dist.is_main else []
    train_model = perf.prepare(model, cfg.perf)  # compiled (or eager) module sharing model's parameters
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)

    x_train = data.x_train.to(device)
    y_train = data.y_train.to(device)
    augment = Augment(cfg.data.augment_pad, cfg.data.augment_flip)
    if not dist.is_main:
        dist.barrier()  # rank 0 computes and caches distillation targets first; the others read them
    step_objective = build_objective(cfg, run, data, device, objective)
    if dist.is_main:
        dist.barrier()
    return _Training(
        cfg=cfg,
        run=run,
        device=device,
        dist=dist,
        data=data,
        model=model,
        spec=spec,
        opt=opt,
        start=start,
        rows=rows,
        train_model=train_model,
        x_train=x_train,
        y_train=y_train,
        augment=augment,
        step_objective=step_objective,
    )


def _train_epoch(t: _Training, epoch: int, show: bool, stop_after_batches: int | None) -> tuple[torch.Tensor, float]:
    """One epoch's batches, shuffled and augmented by the epoch's generator; raises on a
    non-finite loss (every rank at the same batch). Returns the loss summed over this
    process's samples (on the device) and the seconds."""
    cfg, device, dist = t.cfg, t.device, t.dist
    n, bs = len(t.y_train), cfg.optim.batch_size
    g = epoch_generator(cfg, epoch, device)
    order = torch.randperm(n, generator=g, device=device)
    t.train_model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite batch
    bad_value = torch.zeros((), device=device)
    bar = tqdm(total=n, desc=f"{t.run.dir.name} epoch {epoch}/{cfg.epochs}", unit="img", disable=not show, leave=False)
    for i in range(0, n, bs):
        batch = order[i : i + bs]
        s0, s1 = dist.shard(len(batch))
        loss = _batch_loss(t, batch, s0, s1, g)
        batch_no = i // bs + 1
        # an empty shard (a tail batch with fewer rows than ranks) has a nan mean and weight 0
        loss_d = loss.detach().float() if s1 > s0 else torch.zeros((), device=device)
        new_bad = (first_bad < 0) & ~torch.isfinite(loss_d)
        first_bad = torch.where(new_bad, torch.full_like(first_bad, batch_no), first_bad)
        bad_value = torch.where(new_bad, loss_d, bad_value)
        check = device.type != "cuda" or batch_no % NONFINITE_CHECK_EVERY_CUDA == 0 or i + bs >= n
        if check and dist.any(first_bad >= 0):  # every rank stops at the same batch
            bar.close()
            what = "non-finite loss on another rank"
            if int(first_bad) >= 0:
                what = f"loss {float(bad_value)} at batch {int(first_bad)}"
            raise diverged(t.run, epoch, what, dist.is_main)
        _step(t, loss, s1 - s0, len(batch))
        if s1 > s0:
            loss_sum += loss.detach() * (s1 - s0)
        bar.update(len(batch))
        t.batches_done += 1
        if stop_after_batches is not None and t.batches_done >= stop_after_batches:
            bar.close()
            raise KeyboardInterrupt(f"stopped after {t.batches_done} batches (test hook)")
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return loss_sum, time.perf_counter() - t0


def _batch_loss(t: _Training, batch: torch.Tensor, s0: int, s1: int, g: torch.Generator) -> torch.Tensor:
    """The objective's mean loss on this process's rows ``s0:s1`` of ``batch`` (the whole
    batch is augmented, so that every rank draws alike)."""
    idx = batch[s0:s1]
    xb = perf.to_format(t.augment(t.x_train[batch], g)[s0:s1].float().div_(255), t.cfg.perf)
    with perf.autocast(t.cfg.perf, t.device):
        return t.step_objective(t.train_model, xb, t.y_train[idx], idx, g, (s0, s1, len(batch)))


def _step(t: _Training, loss: torch.Tensor, rows: int, batch_size: int) -> None:
    """One optimizer step on ``loss``, the mean over this process's ``rows`` of the batch."""
    t.opt.zero_grad(set_to_none=True)
    # DDP averages gradients over ranks; weight each rank's mean by its share of the batch
    scale = rows * t.dist.world / batch_size
    (loss * scale if scale != 1 else loss).backward()
    if t.cfg.optim.grad_clip is not None:  # after DDP's all-reduce: every rank clips alike
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.optim.grad_clip)
    t.opt.step()


def _end_epoch(t: _Training, epoch: int, loss_sum: torch.Tensor, train_s: float, measured: dict[str, Any]) -> None:
    """Snapshot the epoch's logits (every rank), then measure, checkpoint and record it (rank
    0); ``measured``: the epoch's lr (and training eps)."""
    dist = t.dist
    t1 = time.perf_counter()
    loss_total = float(dist.sum(loss_sum))
    dist.broadcast_buffers(t.model)  # BatchNorm: every rank snapshots with rank 0's (the checkpoint's) statistics
    accs = snapshot(t.run, t.cfg, t.model, t.data, epoch, t.device, dist)
    if not dist.is_main:
        dist.barrier()  # rank 0 measures, checkpoints and records the epoch
        return
    row = {
        "lr": measured["lr"],
        "loss": loss_total / len(t.y_train),
        **accs,
        **({"train_eps": measured["train_eps"]} if "train_eps" in measured else {}),
        "train_seconds": train_s,
        "snapshot_seconds": time.perf_counter() - t1,
    }
    record_epoch(t.run, t.cfg, t.model, t.opt, t.spec, t.data, t.rows, epoch, row, t.device)
    dist.barrier()


__all__ = ["ObjectiveFactory", "TrainingDiverged", "train"]
