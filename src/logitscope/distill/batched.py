"""Runs that share one data stream, trained as one batched computation (``torch.func``).

The students of one seed (every distillation variant, and the teacher-epoch x loss sweep) see
the same images in the same order: order and augmentation are drawn from ``(seed, epoch)``,
and every run of a seed starts from the same initialization. `train_batched` stacks their
parameters (`torch.func.stack_module_state`) and runs one vmapped forward and backward per
batch. Each run keeps its own loss, gradient clipping, SGD step, divergence check, logit
snapshot, PGD monitor, checkpoints and records, written by the engine's own functions: each
run folder is what `logitscope.distill.distillation.train_student` writes for that run alone, up to float
rounding (a vmapped convolution is a grouped one, whose sums run in another order;
``tests/distill/test_batched.py`` checks batched runs against one-at-a-time ones). A run
that diverges is marked failed and leaves the group; the others go on.

Where it pays: where a small model cannot fill the device, i.e. on a GPU, where a digits
student leaves it idle between kernel launches. On CPU cores a small CNN is compute-bound:
``benchmarks/reproduce_digits.py`` measures the speed-up side by side (on 2 cores: about 1x),
so the reproduce plan batches only on CUDA unless ``distill.batched`` says otherwise.

Falls back to one run at a time (logged) for: models with BatchNorm (running statistics under
``vmap``), data-parallel launches, the fast-path switches (compile, bf16, channels-last), and
runs resumed at different epochs. Runs must differ in nothing but their distillation targets
and loss (`group_key`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from logitscope.config import PerfConfig, RunConfig
from logitscope.data import Augment, Dataset, load_data
from logitscope.distill import distillation
from logitscope.distill.losses import distill_loss
from logitscope.runtime import resolve_device
from logitscope.store.runs import Run
from logitscope.training import engine
from logitscope.training.schedules import learning_rate

log = logging.getLogger(__name__)


def group_key(cfg: RunConfig) -> str | None:
    """Runs with equal keys can train as one batch: distillation runs equal in everything but
    their name and ``distill`` section. ``None``: the run trains alone."""
    if cfg.objective != "distill":
        return None
    d = cfg.to_dict()
    for key in ("name", "distill"):
        d.pop(key)
    return json.dumps(d, sort_keys=True)


@dataclass
class _Member:
    cfg: RunConfig
    run: Run
    model: nn.Module
    opt: torch.optim.SGD
    spec: dict[str, Any]
    start: int
    targets: torch.Tensor | None = None
    rows: list[dict] | None = None


def batchable_model(cfg: RunConfig) -> bool:
    """Whether ``cfg``'s model can train batched: a built-in model without BatchNorm."""
    from logitscope.models import MODELS, build_model

    if cfg.model.name not in MODELS:
        return False
    model = build_model(cfg.model.name, 10, 3, (0.0,) * 3, (1.0,) * 3, cfg.model.width)
    return not _has_batchnorm(model)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _alone_reason(members: Sequence[_Member]) -> str | None:
    """Why these runs cannot train as one batch, or None."""
    if len(members) < 2:
        return "a single run"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "a data-parallel launch"
    if members[0].cfg.perf != PerfConfig():
        return f"perf settings {members[0].cfg.perf} (batched training runs eager fp32)"
    if _has_batchnorm(members[0].model):
        return "a model with BatchNorm"
    starts = sorted({m.start for m in members})
    if len(starts) > 1:
        return f"runs resumed at different epochs ({', '.join(map(str, starts))})"
    return None


def train_batched(configs: Sequence[RunConfig], out: str | os.PathLike = "runs", resume: bool = False) -> list[Run]:
    """Train distillation runs that share one data stream as one batched computation.

    Args:
        configs: runs with one `group_key` (e.g. the students of one seed).
        out: folder under which each run folder is created.
        resume: continue unfinished runs (all at the same epoch; otherwise one at a time).

    Returns:
        The runs, in the order of ``configs``; a run that diverged is marked failed in its
        ``meta.json`` (status, reason) and keeps its last good checkpoint.
    """
    configs = list(configs)
    keys = [group_key(c) for c in configs]
    if not configs or None in keys or len(set(keys)) != 1:
        names = ", ".join(c.run_id for c, k in zip(configs, keys, strict=True) if k is None or k != keys[0]) or "none"
        raise ValueError(
            f"train_batched: runs {names} differ from the first in more than their distillation targets and loss "
            "(or are not distillation runs): expected runs sharing one data stream"
        )
    runs = [Run.create(out, c, resume=resume) for c in configs]
    todo = [(c, r) for c, r in zip(configs, runs, strict=True) if not r.complete]
    if not todo:
        return runs
    device = resolve_device(configs[0].device)
    data = load_data(configs[0].data)
    members = []
    for cfg, run in todo:
        model, spec = engine.initial_model(cfg, data, device)
        opt = engine.new_optimizer(cfg, model.parameters())
        members.append(_Member(cfg, run, model, opt, spec, engine.resume_state(run, model, opt, spec)))
    reason = _alone_reason(members)
    if reason is not None:
        log.info("training %d run(s) one at a time: %s", len(members), reason)
        for m in members:
            try:
                distillation.train_student(m.cfg, out=out, resume=True)
            except engine.TrainingDiverged as exc:  # recorded in its meta.json; the others go on
                log.error("%s", exc)
        return runs
    for m in members:
        m.rows = engine.begin(m.run, m.cfg, data, device, m.start)
        m.targets = torch.from_numpy(distillation.prepare_targets(m.cfg, m.run, data, device)).to(device)
    _train_group(members, data, device)
    return runs


class _Stack:
    """The members' parameters stacked (leading dimension: member) with their SGD state."""

    def __init__(self, members: Sequence[_Member]) -> None:
        self.members = list(members)
        params, self.buffers = stack_module_state([m.model for m in members])
        self.params = {k: v.detach().requires_grad_() for k, v in params.items()}
        self.opt = engine.new_optimizer(members[0].cfg, list(self.params.values()))
        for name, p in self.params.items():
            bufs = [m.opt.state.get(dict(m.model.named_parameters())[name], {}).get("momentum_buffer") for m in members]
            if all(b is not None for b in bufs):
                self.opt.state[p]["momentum_buffer"] = torch.stack(bufs)
        base = copy.deepcopy(members[0].model).to("meta")

        def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (x,))

        self.forward = vmap(forward, in_dims=(0, 0, None))

    def keep(self, rows: list[int]) -> None:
        """Keep only the members ``rows`` (their current state; the others leave the batch)."""
        index = torch.tensor(rows, device=next(iter(self.params.values())).device)
        lr = self.opt.param_groups[0]["lr"]
        old = self.opt
        self.members = [self.members[r] for r in rows]
        self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}
        params = {k: v.detach().index_select(0, index).requires_grad_() for k, v in self.params.items()}
        self.opt = engine.new_optimizer(self.members[0].cfg, list(params.values())) if rows else old
        for group in self.opt.param_groups:
            group["lr"] = lr
        for name, p in self.params.items():
            buf = old.state.get(p, {}).get("momentum_buffer")
            if buf is not None and rows:
                self.opt.state[params[name]]["momentum_buffer"] = buf.index_select(0, index)
        self.params = params

    def write_back(self) -> None:
        """Copy each member's slice of the parameters and momentum into its own model and SGD."""
        lr = self.opt.param_groups[0]["lr"]
        with torch.no_grad():
            for r, m in enumerate(self.members):
                own = dict(m.model.named_parameters())
                for name, p in self.params.items():
                    own[name].copy_(p[r])
                    buf = self.opt.state.get(p, {}).get("momentum_buffer")
                    if buf is not None:
                        m.opt.state[own[name]]["momentum_buffer"] = buf[r].clone()
                for name, b in m.model.named_buffers():
                    b.copy_(self.buffers[name][r])
                for group in m.opt.param_groups:
                    group["lr"] = lr

    def clip(self, max_norm: float) -> None:
        """`torch.nn.utils.clip_grad_norm_` of each member's gradient, on the stack."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        total = torch.stack([g.flatten(1).norm(2, dim=1) for g in grads], dim=1).norm(2, dim=1)
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.ndim - 1))))


def _train_group(members: list[_Member], data: Dataset, device: torch.device) -> None:
    cfg = members[0].cfg
    stack = _Stack(members)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    augment = Augment(cfg.data.augment_pad, cfg.data.augment_flip)
    n, bs = len(y_train), cfg.optim.batch_size
    for epoch in range(members[0].start + 1, cfg.epochs + 1):
        lr = learning_rate(cfg, epoch)
        for group in stack.opt.param_groups:
            group["lr"] = lr
        g = engine.epoch_generator(cfg, epoch, device)
        order = torch.randperm(n, generator=g, device=device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros(len(stack.members), device=device)
        first_bad = torch.full((len(stack.members),), -1, dtype=torch.long, device=device)
        bad_value = torch.zeros(len(stack.members), device=device)
        for i in range(0, n, bs):
            batch = order[i : i + bs]
            xb = augment(x_train[batch], g).float().div_(255)
            logits = stack.forward(stack.params, stack.buffers, xb)
            losses = torch.stack(
                [
                    distill_loss(logits[r], m.targets[batch], m.cfg.distill.loss, m.cfg.distill.temperature)
                    for r, m in enumerate(stack.members)
                ]
            )
            # as the engine: the first non-finite batch per member, read every batch on CPU and
            # every few on CUDA; the members are independent slices (each gradient is its own
            # loss's), so a diverged member leaves and the others go on untouched
            new_bad = (first_bad < 0) & ~torch.isfinite(losses.detach())
            first_bad = torch.where(new_bad, torch.full_like(first_bad, i // bs + 1), first_bad)
            bad_value = torch.where(new_bad, losses.detach(), bad_value)
            stack.opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            if cfg.optim.grad_clip is not None:
                stack.clip(cfg.optim.grad_clip)
            stack.opt.step()
            loss_sum += losses.detach() * len(batch)
            check = device.type != "cuda" or (i // bs + 1) % engine.NONFINITE_CHECK_EVERY_CUDA == 0 or i + bs >= n
            if check and bool((first_bad >= 0).any()):
                bad = (first_bad >= 0).nonzero().flatten().tolist()
                for r in bad:
                    what = f"loss {float(bad_value[r])} at batch {int(first_bad[r])}"
                    log.error("%s", engine.diverged(stack.members[r].run, epoch, what, True))
                rows = [r for r in range(len(stack.members)) if r not in bad]
                stack.keep(rows)
                if not rows:
                    return
                loss_sum, first_bad, bad_value = loss_sum[rows], first_bad[rows], bad_value[rows]
        share = (time.perf_counter() - t0) / len(stack.members)  # each run's share of the epoch
        stack.write_back()
        ok = []
        for r, m in enumerate(stack.members):
            t1 = time.perf_counter()
            try:
                accs = engine.snapshot(m.run, m.cfg, m.model, data, epoch, device)
            except engine.TrainingDiverged as exc:  # recorded in its meta.json by snapshot
                log.error("%s", exc)
                continue
            ok.append(r)
            row = {
                "lr": lr,
                "loss": float(loss_sum[r]) / n,
                **accs,
                "train_seconds": share,
                "snapshot_seconds": time.perf_counter() - t1,
            }
            engine.record_epoch(m.run, m.cfg, m.model, m.opt, m.spec, data, m.rows, epoch, row, device)
        if len(ok) < len(stack.members):
            stack.keep(ok)
            if not ok:
                return
    for m in stack.members:
        m.run.update_meta(status="complete", finished=time.time(), last_epoch=cfg.epochs)


__all__ = ["batchable_model", "group_key", "train_batched"]
