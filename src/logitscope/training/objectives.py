"""Training objectives: one callable per method, all with the same signature.

``objective(model, x, y, idx, generator) -> loss`` where ``x`` is the augmented batch of
float images in [0, 1], ``y`` the labels and ``idx`` the batch's dataset indices (used by
distillation to look up each image's fixed target).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from logitscope.attacks.pgd import pgd
from logitscope.config import AttackConfig

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Cross-entropy on clean images (ST)."""
    return F.cross_entropy(model(x), y)


def pgd_at(attack: AttackConfig) -> Objective:
    """Cross-entropy on L-inf PGD examples (Madry et al., 2018; appendix A.2).

    The attack runs with BatchNorm in ``attack.bn_mode``: "train" (default) as the reference
    code the paper builds on does, which also lets the attack's forward passes update the
    running statistics; "eval" freezes them during the attack.
    """

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        if attack.bn_mode == "eval":
            model.eval()
        x_adv = pgd(model, x, y, attack.eps, attack.step_size, attack.steps, attack.random_start, g)
        model.train()
        return F.cross_entropy(model(x_adv), y)

    return objective


def distill(targets: torch.Tensor, loss: str = "l1", temperature: float = 1.0) -> Objective:
    """Match each image's fixed teacher target (``targets``: (N, C) on the training device)."""
    from logitscope.distill.losses import distill_loss

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        return distill_loss(model(x), targets[idx], loss, temperature)

    return objective
