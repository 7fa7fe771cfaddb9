"""Training objectives: one callable per method, all with the same signature.

``objective(model, x, y, idx, generator, shard) -> loss`` where ``x`` is the augmented batch
of float images in [0, 1], ``y`` the labels, ``idx`` the batch's dataset indices (used by
distillation to look up each image's fixed target) and ``shard = (start, stop, n)`` says that
this process holds rows ``start:stop`` of a global batch of ``n`` (data-parallel training;
``(0, len(x), len(x))`` otherwise): random draws are made for the global batch and sliced, so
every rank consumes the generator exactly as one process would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from logitscope.attacks.pgd import pgd
from logitscope.config import AttackConfig

Shard = tuple[int, int, int]
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator, Shard], torch.Tensor]


def standard(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, g: torch.Generator, shard: Shard
) -> torch.Tensor:
    """Cross-entropy on clean images (ST)."""
    return F.cross_entropy(model(x), y)


def attack_at_epoch(attack: AttackConfig, epoch: int) -> AttackConfig:
    """The training attack of ``epoch`` (1-based) under ``attack.warmup_epochs`` (eps warm-up).

    With ``warmup_epochs = W > 0``, epoch ``e`` attacks at ``eps * min(1, e / W)`` with the
    step size scaled by the same factor (the steps, and so the ratio step/eps, stay as set):
    eps/W in epoch 1, eps from epoch W on. ``W = 0`` (off) and every epoch ``e >= W`` return
    ``attack`` itself, so a run without warm-up is bitwise what it was. A pure function of
    the epoch: a resumed run attacks each epoch as an uninterrupted one does.
    """
    if epoch < 1:
        raise ValueError(f"epoch={epoch}: epochs are 1-based")
    w = attack.warmup_epochs
    if w <= 0 or epoch >= w:
        return attack
    factor = epoch / w
    return replace(attack, eps=attack.eps * factor, step_size=attack.step_size * factor)


def pgd_at(attack: AttackConfig) -> Objective:
    """Cross-entropy on L-inf PGD examples (Madry et al., 2018; appendix A.2).

    The attack runs with BatchNorm in ``attack.bn_mode``: "train" (default) as the reference
    code the paper builds on does, which also lets the attack's forward passes update the
    running statistics; "eval" freezes them during the attack.
    """

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, g: torch.Generator, shard: Shard
    ) -> torch.Tensor:
        start, stop, n = shard
        noise = torch.rand((n, *x.shape[1:]), generator=g, device=x.device)[start:stop]
        if attack.bn_mode == "eval":
            model.eval()
        # the attack needs input gradients only: it bypasses DDP's gradient synchronisation
        attack_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        x_adv = pgd(
            attack_model, x, y, attack.eps, attack.step_size, attack.steps, attack.random_start, g, start_noise=noise
        )
        model.train()
        return F.cross_entropy(model(x_adv), y)

    return objective
