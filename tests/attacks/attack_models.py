"""Tiny models and data for the attack tests, built here (no dependency on logitscope.models)."""

from __future__ import annotations

import torch
from torch import nn


def linear_model(n_classes: int = 4, dim: int = 16, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """Logits ``W x + b`` of flattened (B, 1, 4, 4) images, in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, n_classes)).to(dtype).eval()


def mlp(n_classes: int = 10, dim: int = 64, seed: int = 0, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, n_classes)
    )
    return model.to(dtype).eval()


def prototype_data(
    model: nn.Module, n: int = 120, shape=(1, 8, 8), seed: int = 0, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0.2, 0.8] labeled by the model itself (all clean-correct), but for every
    10th image, whose label is shifted (misclassified clean)."""
    g = torch.Generator().manual_seed(seed)
    x = (0.2 + 0.6 * torch.rand(n, *shape, generator=g)).to(dtype)
    with torch.no_grad():
        y = model(x).argmax(1)
    k = model(x[:1]).shape[1]
    y[::10] = (y[::10] + 1) % k
    return x, y


def closed_form_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Worst-case margin of a linear model over the eps-ball (box inactive): for logits
    ``W x + b``, ``min_j (z_y - z_j) - eps * ||w_y - w_j||_*`` with the dual norm (L1 for
    L-inf, L2 for L2). Positive iff the image is robust. (N,)"""
    lin = model[1]
    w = lin.weight.detach()
    with torch.no_grad():
        z = model(x)
    margins = z.gather(1, y[:, None]) - z
    diff = w[y][:, None, :] - w[None, :, :]
    dual = diff.abs().sum(-1) if norm == "Linf" else diff.norm(dim=-1)
    worst = margins - eps * dual
    worst[torch.arange(len(y)), y] = float("inf")
    return worst.min(1).values
