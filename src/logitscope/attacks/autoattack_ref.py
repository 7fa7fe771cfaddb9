"""The full standard AutoAttack, run by its authors' ``pyautoattack`` package (a dependency).

Standard version (Croce & Hein, 2020): APGD-CE (100 iterations, 1 restart), APGD-T (9
target classes), FAB-T (9 target classes), Square (5000 queries), each on the images the
previous ones left unbroken. We drive the package's attack objects, set up by its
``AutoAttack(version="standard")``, in the order and with the settings of its
``run_standard_evaluation``, so that we learn which attack broke each image. Randomness is
the package's own: it reseeds the global generator before every attack call, so its results
depend on the batch composition; we restore the caller's generator state afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

import torch
from torch import nn

from logitscope.attacks.checks import Model

# broken_by codes of the per-sample records.
APGD_CE, OTHER = 1, 3
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


def load_pyautoattack() -> ModuleType:
    """Import ``pyautoattack`` or say how to install it."""
    try:
        import pyautoattack
    except ImportError as err:
        raise ImportError(
            "protocol='autoattack' needs pyautoattack==0.2.0 (a logitscope dependency): pip install pyautoattack==0.2.0"
        ) from err
    return pyautoattack


@contextlib.contextmanager
def frozen_parameters(model: Model) -> Iterator[None]:
    """Parameters stop requiring gradients inside the block (FAB calls ``backward``, which
    would otherwise fill the model's ``.grad``); restored afterwards."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


@torch.no_grad()
def autoattack_standard(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "Linf",
    seed: int = 0,
    n_classes: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard AutoAttack on B images, attack by attack on the still unbroken ones.

    Args:
        model: maps (B, ...) images in [0, 1] to (B, K) logits (in eval mode).
        x: (B, ...) clean images in [0, 1], correctly classified.
        y: (B,) int64 labels.
        eps: radius, in the [0, 1] pixel scale; norm: "Linf" or "L2".
        seed: the package's seed (reset before each attack call).
        n_classes: K; the targeted attacks use min(9, K - 1) target classes.

    Returns:
        ``x_adv`` (B, ...) (the clean image where no attack succeeded) and ``broken_by``
        (B,) int8: 0 unbroken, 1 APGD-CE, 3 another attack.
    """
    aa = load_pyautoattack().AutoAttack(model, device=x.device, eps=eps, norm=norm, seed=seed, version="standard")
    aa.apgd_targeted.n_target_classes = min(9, n_classes - 1)
    aa.fab.n_target_classes = min(9, n_classes - 1)
    x_adv = x.clone()
    broken_by = torch.zeros(x.shape[0], dtype=torch.int8, device=x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    with frozen_parameters(model), torch.random.fork_rng(devices=devices):
        for name in STANDARD_ATTACKS:
            todo = (broken_by == 0).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            adv = _run_attack(aa, name, x[todo], y[todo])
            fooled = model(adv).argmax(1) != y[todo]
            x_adv[todo[fooled]] = adv[fooled]
            broken_by[todo[fooled]] = APGD_CE if name == "apgd-ce" else OTHER
    return x_adv, broken_by


def _run_attack(aa, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One attack of the cascade, set up as ``AutoAttack.run_standard_evaluation`` does."""
    if name == "apgd-ce":
        aa.apgd.loss = "ce"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if name == "apgd-t":
        aa.apgd_targeted.seed = aa.get_seed()
        return aa.apgd_targeted.perturb(x, y)
    if name == "fab-t":
        aa.fab.targeted = True
        aa.fab.n_restarts = 1
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    aa.square.seed = aa.get_seed()
    return aa.square.perturb(x, y)
