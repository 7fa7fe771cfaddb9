"""L-inf projected gradient descent (Madry et al., 2018), for training and evaluation.

Inputs are images in [0, 1]; every returned point lies in the eps-ball around ``x`` and in
the box [0, 1]. Only input gradients are computed (``torch.autograd.grad`` on the
perturbation), never weight gradients: the attack costs one forward and one input-backward
per step. The caller chooses the model's mode (train-mode BatchNorm during the training
attack, as in the reference code the paper builds on; eval mode for evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from logitscope.config import check_eps

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def pgd(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    loss_fn: LossFn = ce_sum,
    start_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Maximise ``loss_fn(model(x'), y)`` over ``|x' - x|_inf <= eps``, ``x'`` in [0, 1].

    Args:
        model: maps (B, C, H, W) float images in [0, 1] to (B, K) logits.
        x: (B, C, H, W) float images in [0, 1].
        y: (B,) int64 labels.
        eps: L-inf radius, in the [0, 1] pixel scale (8/255 for CIFAR).
        step_size: signed-gradient step (2/255 for CIFAR).
        steps: number of steps (0 with ``random_start`` is uniform noise).
        random_start: start from a uniform point of the eps-ball (as Madry et al.).
        generator: seeds the random start.
        start_noise: uniform [0, 1) noise shaped like ``x`` to use for the random start instead
            of drawing it (data-parallel training draws the whole batch's noise on every rank
            and passes each rank its slice, so ranks stay in step with one process).

    Returns:
        (B, C, H, W) adversarial images, detached.
    """
    eps = check_eps(eps)
    x = x.detach()
    if random_start and eps > 0:
        noise = start_noise if start_noise is not None else torch.rand(x.shape, generator=generator, device=x.device)
        delta = (2 * noise.to(x.dtype) - 1) * eps
    else:
        delta = torch.zeros_like(x)
    delta = (x + delta).clamp_(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = (delta + step_size * grad.sign()).clamp_(-eps, eps)
            delta = (x + delta).clamp_(0, 1) - x
    return (x + delta).detach()


def fgsm(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    loss_fn: LossFn = ce_sum,
) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` from ``x`` (Goodfellow et al., 2015)."""
    return pgd(model, x, y, eps, step_size=eps, steps=1, random_start=False, loss_fn=loss_fn)
