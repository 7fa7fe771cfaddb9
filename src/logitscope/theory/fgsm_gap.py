"""Beyond the paper: the logit-gap change of a trained model under FGSM, measured per sample.

Appendix C predicts (10) that an FGSM step shrinks the gap of correctly classified samples by
an amount growing with the square of the gap. Here we take a real model, apply one FGSM step
of small eps, and set the measured change of each sample's gap beside

- the linearised prediction: ``eps``-first-order change ``grad_x (z_y - z_r) . delta_x`` with
  the runner-up class r fixed (the model's own linear response, no theory);
- the quadratic law: a least-squares fit ``change = slope * gap^2 + intercept`` over correctly
  classified samples, with its R^2, beside a straight-line fit and a log-log power fit.

The gap is the margin ``z_y - max_{j != y} z_j`` (positive iff the sample is classified
correctly; for those it is the paper's ``max - 2nd max``).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

Norm = Literal["linf", "l2"]


def _margin(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_y - max_{j != y} z_j, argmax_{j != y} z_j)``."""
    others = logits.scatter(1, y[:, None], float("-inf"))
    best, runner = others.max(dim=1)
    return logits.gather(1, y[:, None])[:, 0] - best, runner


def _fit(x: NDArray[np.float64], t: NDArray[np.float64]) -> tuple[float, float, float]:
    """Least squares ``t = slope x + intercept``; returns ``(slope, intercept, R^2)``."""
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan")
    slope, icpt = np.polyfit(x, t, 1)
    resid = t - (slope * x + icpt)
    total = np.sum((t - t.mean()) ** 2)
    r2 = 1.0 - np.sum(resid**2) / total if total > 0 else float("nan")
    return float(slope), float(icpt), float(r2)


def _fgsm_batch(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: Norm
) -> dict[str, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    margin, runner = _margin(logits, y)
    loss = F.cross_entropy(logits, y, reduction="sum")
    pair = logits.gather(1, y[:, None])[:, 0] - logits.gather(1, runner[:, None])[:, 0]
    # two input gradients from one forward: the attack's and the gap's (for the linearisation);
    # samples are independent in eval mode, so summing over the batch gives per-sample grads
    (grad_loss,) = torch.autograd.grad(loss, x, retain_graph=True)
    (grad_pair,) = torch.autograd.grad(pair.sum(), x)
    if norm == "linf":
        step = eps * grad_loss.sign()
    else:
        flat = grad_loss.flatten(1).norm(dim=1).clamp_min(1e-30)
        step = eps * grad_loss / flat.view(-1, *([1] * (x.dim() - 1)))
    with torch.no_grad():
        x_adv = (x + step).clamp(0.0, 1.0)
        delta = x_adv - x
        logits_adv = model(x_adv)
        margin_adv, _ = _margin(logits_adv, y)
        pair_adv = logits_adv.gather(1, y[:, None])[:, 0] - logits_adv.gather(1, runner[:, None])[:, 0]
        predicted = (grad_pair * delta).flatten(1).sum(dim=1)
    return {
        "gap_before": margin.detach(),
        "gap_after": margin_adv,
        "change_fixed_pair": pair_adv - pair.detach(),
        "predicted_linear": predicted,
        "runner_up": runner,
        "pred_before": logits.detach().argmax(1),
    }


def measure_gap_change(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: Norm = "linf",
    batch_size: int = 256,
) -> dict[str, NDArray]:
    """One FGSM step per sample; the change of its logit gap against the paper's law.

    Args:
        model: maps (B, C, H, W) float images in [0, 1] to (B, K) logits; used as given
            (put it in eval mode first: a warning is logged otherwise).
        x: (N, C, H, W) float images in [0, 1].
        y: (N,) int64 labels.
        eps: step size in the [0, 1] pixel scale: L-inf radius (``norm="linf"``, the usual
            FGSM) or L2 length (``norm="l2"``, the normalised gradient of the paper's (6)).
        norm: ``"linf"`` or ``"l2"``.
        batch_size: samples per forward pass.

    Returns:
        Per-sample (N,) float64 arrays ``gap_before``, ``gap_after``, ``change``
        (after - before, runner-up recomputed), ``change_fixed_pair`` (same two classes as
        before), ``predicted_linear``, ``predicted_quadratic`` (the fitted law at each gap),
        (N,) bool ``correct``, (N,) int64 ``runner_up``; 0-d arrays ``eps``, ``fit_slope``,
        ``fit_intercept``, ``fit_r2`` (change vs gap^2 over correct samples), ``linear_fit_r2``
        (change vs gap), ``power_exponent`` (log-log slope of -change vs gap over correct
        samples whose gap shrank; 2 under the paper's law) and ``linear_response_r2`` (R^2 of
        the measured change about the linearised prediction, over correct samples).
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm={norm!r}: expected 'linf' or 'l2'")
    if eps < 0:
        raise ValueError(f"eps={eps}: expected a non-negative step")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples, y has {y.shape[0]}")
    if model.training:
        logger.warning("measure_gap_change: the model is in training mode; results depend on it")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else x.device
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device=device, dtype=dtype)
        yb = y[start : start + batch_size].to(device=device, dtype=torch.int64)
        for key, val in _fgsm_batch(model, xb, yb, eps, norm).items():
            parts.setdefault(key, []).append(val.detach().cpu())
    out: dict[str, NDArray] = {
        key: torch.cat(val).numpy().astype(np.int64 if key in ("runner_up", "pred_before") else np.float64)
        for key, val in parts.items()
    }
    out["correct"] = out.pop("pred_before") == y.cpu().numpy()
    out["change"] = out["gap_after"] - out["gap_before"]
    ok = out["correct"] & (out["gap_before"] > 0)
    gap, change = out["gap_before"][ok], out["change"][ok]
    slope, icpt, r2 = _fit(gap**2, change)
    _, _, lin_r2 = _fit(gap, change)
    shrank = change < 0
    power, _, _ = _fit(np.log(gap[shrank]), np.log(-change[shrank])) if shrank.sum() >= 2 else (float("nan"), 0.0, 0.0)
    pred = out["predicted_linear"][ok]
    total = np.sum((change - change.mean()) ** 2)
    resp_r2 = 1.0 - np.sum((change - pred) ** 2) / total if change.size >= 2 and total > 0 else float("nan")
    out["predicted_quadratic"] = slope * out["gap_before"] ** 2 + icpt
    for key, val in (
        ("eps", eps),
        ("fit_slope", slope),
        ("fit_intercept", icpt),
        ("fit_r2", r2),
        ("linear_fit_r2", lin_r2),
        ("power_exponent", power),
        ("linear_response_r2", resp_r2),
    ):
        out[key] = np.asarray(val, dtype=np.float64)
    logger.info(
        "FGSM eps=%g: %d/%d correct, change = %.4g gap^2 + %.4g (R^2 %.3f), power %.3f",
        eps,
        int(ok.sum()),
        ok.size,
        slope,
        icpt,
        r2,
        power,
    )
    return out
