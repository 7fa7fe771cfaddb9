"""Checks run before trusting a robustness number (after fra31/auto-attack's ``checks.py``).

Bad input raises a one-line `ValueError`; a broken invariant of our own code raises
`RuntimeError`; doubtful but legal situations log a warning. All checks are cheap (a few
forward passes at most) and always on in `logitscope.attacks.protocol`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], torch.Tensor]

# Relative change between two identical forward passes above which a model is randomized.
RANDOMIZED_RTOL = 1e-4
# Rows of non-negative outputs summing to 1 within this are probabilities, not logits.
PROBABILITY_ATOL = 1e-5


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode, then restore its mode.

    A model in train mode attacks a different function (batch statistics, dropout), so it is
    switched, with a warning.
    """
    was_training = model.training
    if was_training:
        logger.warning("model was in train mode: switched to eval mode for the attack")
        model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_images(x: torch.Tensor) -> torch.Tensor:
    """Validate images and return them as floats in [0, 1].

    Args:
        x: (N, ...) float images in [0, 1], or uint8 images (divided by 255).
    """
    if x.dim() < 2:
        raise ValueError(f"images of shape {tuple(x.shape)}: expected (N, C, H, W) or (N, D)")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise ValueError(f"images of dtype {x.dtype}: expected float in [0, 1] or uint8")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or infinite values: expected floats in [0, 1]")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(
            f"images range over [{float(x.min()):.4g}, {float(x.max()):.4g}]: expected [0, 1] "
            "(normalization belongs inside the model)"
        )
    return x


def check_labels(y: torch.Tensor, n: int) -> torch.Tensor:
    """Validate (N,) integer labels for N images; returns them as int64."""
    if y.shape != (n,):
        raise ValueError(f"labels of shape {tuple(y.shape)}: expected ({n},), one per image")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels of dtype {y.dtype}: expected integers")
    y = y.long()
    if n and int(y.min()) < 0:
        raise ValueError(f"label {int(y.min())}: expected class indices >= 0")
    return y


def check_logits(logits: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse outputs that are not logits: probabilities, NaN, or too few classes for ``y``.

    Args:
        logits: (B, K) model outputs on clean images.
        y: (B,) int64 labels.
    """
    if logits.dim() != 2:
        raise ValueError(f"model output of shape {tuple(logits.shape)}: expected (B, n_classes) logits")
    check_finite_outputs(logits)
    k = logits.shape[1]
    if y.numel() and int(y.max()) >= k:
        raise ValueError(f"label {int(y.max())}: the model has {k} classes (0 to {k - 1})")
    rows_sum_to_one = bool(((logits.sum(1) - 1).abs() < PROBABILITY_ATOL).all())
    if rows_sum_to_one and float(logits.min()) > -PROBABILITY_ATOL and logits.shape[0] > 0:
        raise ValueError(
            "model output looks like probabilities (rows are non-negative and sum to 1): "
            "expected logits (remove the softmax)"
        )


def min_classes(loss: str) -> int:
    """Fewest classes for which ``loss`` is defined (2 for CE and margin, 3 for DLR, 4 for
    targeted DLR, whose denominator uses the 4th largest logit)."""
    return {"dlr": 3, "dlr-targeted": 4}.get(loss, 2)


def check_n_classes(n_classes: int, losses: tuple[str, ...]) -> None:
    """DLR needs 3 classes and targeted DLR 4: refuse fewer."""
    for loss in losses:
        need = min_classes(loss)
        if n_classes < need:
            raise ValueError(f"the {loss.upper()} loss needs at least {need} classes: the model has {n_classes}")


def check_finite_outputs(*outputs: torch.Tensor) -> None:
    """Refuse NaN/inf model outputs, naming them as such (a diverged or corrupt model is not a
    randomized one: NaN differs from itself, so a comparison of passes would say "random")."""
    for out in outputs:
        bad = ~torch.isfinite(out).all(dim=1) if out.dim() == 2 else ~torch.isfinite(out.reshape(len(out), -1)).all(1)
        if bool(bad.any()):
            raise ValueError(
                f"model outputs NaN/inf on {int(bad.sum())} of {len(out)} images: expected finite logits "
                "(a diverged training run or a damaged checkpoint; retrain or choose another epoch)"
            )


@torch.no_grad()
def check_deterministic(model: Model, x: torch.Tensor, allow_randomized: bool = False) -> bool:
    """Two forward passes on the same images must agree; else the model is randomized.

    A randomized model (dropout at test time, input noise) needs an expectation over its
    randomness (EOT) to be attacked: refused unless ``allow_randomized``, then warned.

    Args:
        x: (B, ...) a few images.

    Returns:
        True if the passes agree.
    """
    a, b = model(x).float(), model(x).float()
    check_finite_outputs(a, b)
    diff = float((a - b).norm(dim=1).div(a.norm(dim=1) + 1e-10).max()) if x.shape[0] else 0.0
    if diff <= RANDOMIZED_RTOL:
        return True
    msg = (
        f"two forward passes on the same images differ (relative {diff:.2g}): the model is "
        "randomized, and a gradient attack without EOT overestimates its robustness"
    )
    if not allow_randomized:
        raise ValueError(msg + "; pass allow_randomized=True to evaluate it anyway")
    logger.warning(msg)
    return False


def check_zero_gradients(grad: torch.Tensor) -> int:
    """Warn when some images have an all-zero input gradient (an attack cannot move them);
    returns their number. ``grad``: (B, ...). One host sync."""
    n_zero = int((grad.flatten(1).abs().amax(1) == 0).sum()) if grad.numel() else 0
    if n_zero:
        logger.warning(
            "%d image(s) have a zero input gradient: gradient attacks cannot move them and may overestimate robustness",
            n_zero,
        )
    return n_zero


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Verify every point lies in the eps-ball around ``x`` and in [0, 1].

    Args:
        x_adv, x: (B, ...) adversarial and clean images.
        eps: radius; norm: "Linf" or "L2" (the ball checked).

    Returns:
        (B,) float32 L-inf norms of ``x_adv - x``.
    """
    d = (x_adv - x).flatten(1).float()
    linf = d.abs().amax(1) if d.shape[1] else torch.zeros(d.shape[0], device=d.device)
    size = linf if norm == "Linf" else d.norm(dim=1)
    tol = 1e-6 + 1e-5 * eps
    if x_adv.numel() and float(size.max()) > eps + tol:
        raise RuntimeError(f"an attack returned a point at {norm} distance {float(size.max())} > eps={eps}")
    if x_adv.numel() and (float(x_adv.min()) < 0.0 or float(x_adv.max()) > 1.0):
        raise RuntimeError("an attack returned a point outside the box [0, 1]")
    return linf


def check_accuracies(clean_correct: torch.Tensor, robust: torch.Tensor) -> None:
    """Robust accuracy never exceeds clean accuracy: robust images are a subset of correct ones."""
    if bool((robust & ~clean_correct).any()):
        raise RuntimeError("an image counted robust is misclassified clean: robust accuracy > clean")


@torch.no_grad()
def check_gradient_masking(
    model: Model, x: torch.Tensor, y: torch.Tensor, robust: torch.Tensor, eps: float, norm: str
) -> int:
    """Warn when the attack missed an adversarial point known in closed form.

    The uniform gray image (every pixel 0.5) lies in the eps-ball of every image within eps
    of it (for L-inf: every image once eps >= 0.5). Where its predicted class differs from an
    image's label, that image cannot be robust; an attack that leaves it robust did not find a
    point a constant image reaches, the signature of masked gradients. At large eps the
    robust accuracy should therefore fall to at most the share of the gray image's class.

    Args:
        x: (N, ...) clean images in [0, 1] (on any device).
        y: (N,) labels; robust: (N,) bool verdicts of the attack.

    Returns:
        The number of images proven non-robust that the attack counted robust.
    """
    if x.shape[0] == 0:
        return 0
    device = next((p.device for p in _tensors(model)), x.device)
    gray = torch.full((1, *x.shape[1:]), 0.5, dtype=x.dtype, device=device)
    pred = int(model(gray).argmax(1)[0])
    d = (x.to(torch.float32) - 0.5).flatten(1)
    dist = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    missed = (dist <= eps) & (y.to(dist.device) != pred) & robust.to(dist.device)
    n_missed = int(missed.sum())
    if n_missed:
        logger.warning(
            "gradient masking suspected: %d image(s) counted robust at eps=%g although the gray "
            "image in their eps-ball is classified %d, not their label; the robust accuracy "
            "overestimates robustness",
            n_missed,
            eps,
            pred,
        )
    return n_missed


def _tensors(model: Model) -> Iterator[torch.Tensor]:
    if isinstance(model, nn.Module):
        yield from model.parameters()
        yield from model.buffers()
