"""Distillation losses between a student's logits and fixed teacher targets.

The paper distills logits with an L1 loss (appendix A.3, figure A.7): it transfers more
robustness than KL divergence on softmax outputs and needs no temperature. L1 and MSE average
over every logit (batch and classes, as ``F.l1_loss`` does): summing over classes instead
multiplies the gradient by C and, at the learning rates of the ST recipe, makes students
collapse to a constant prediction.

KL is scaled by T, not by Hinton et al.'s T^2, so that figure A.7's KL students train stably
at the learning rate of the L1 students (same schedule for both losses). Per image, with
``q = softmax(s/T)`` and ``p = softmax(t/T)``::

    d/ds [c * KL(p || q)] = (c / T) * (q - p)

With ``c = T`` this is ``q - p``: the gradient of a cross-entropy on the soft labels ``p``,
the scale of the ST recipe's loss whatever T and the number of classes (per image its L1
norm is at most 2). Hinton's ``c = T^2`` keeps the gradient independent of T only in the
high-temperature limit (where it tends to ``(s - t) / C``); once the student's softmax is
sharp it is ``T (q - p)``, up to T times a cross-entropy gradient, and unlike cross-entropy
the soft target keeps the loss's curvature from vanishing as the student fits it. Measured on
digits (small CNN, SGD lr 0.05 as the L1 students, T = 4, 20 epochs, teacher epochs 5-30,
seeds 0-2): with T^2, for teachers of epochs 10-30, the first epoch's median gradient norm is
1.2-2.6 against 0.43-0.58 for L1 and spikes reach 30-1000; 2 of 3 students of the epoch-30
teacher collapse to chance (9 of 12 students at lr 0.1, 6 of them to NaN). With T all 12
converge at lr 0.05 and 11 of 12 at 0.1; with the digits preset's gradient clipping as well
(which L1 students never reach) all 12 at 0.1 and those of teachers 20 and 30 at 0.2.
Averaging KL over the C classes as well (the elementwise mean of ``nn.KLDivLoss()``, T^2 / C)
is stable too, but its gradient shrinks as 1/C: students of flat, early teachers sit at chance
for five epochs and end 5 points below the L1 ones (and CIFAR-100's would get a hundredth of
the L1 students' gradient scale).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from logitscope.training.objectives import Objective, Shard

LOSS_KINDS = ("l1", "kl", "mse")


def distill_loss(
    student_logits: torch.Tensor,
    target_logits: torch.Tensor,
    kind: str = "l1",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Distillation loss, a scalar averaged over the batch.

    Args:
        student_logits: (B, C) the student's logits (gradients flow through these).
        target_logits: (B, C) the teacher's target logits (treated as constants).
        kind: "l1": ``mean_{b,c} |s - t|``; "mse": ``mean_{b,c} (s - t)^2``; "kl":
            ``T * mean_b KL(softmax(t/T) || softmax(s/T))``, whose gradient with respect to
            the student's logits is ``(softmax(s/T) - softmax(t/T)) / B``, the scale of a
            cross-entropy gradient for every T (see the module's docstring; at T = 1 it is the
            plain KL divergence).
        temperature: T > 0, for "kl" only (must stay 1 for "l1" and "mse").

    Returns:
        A 0-dim tensor; finite for any finite logits.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"distill loss kind={kind!r}: expected one of {', '.join(LOSS_KINDS)}")
    if student_logits.ndim != 2 or student_logits.shape != target_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and targets "
            f"{tuple(target_logits.shape)}: expected the same (B, C) shape"
        )
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: expected > 0")
    if kind != "kl" and temperature != 1.0:
        raise ValueError(f"temperature={temperature} with kind={kind!r}: only 'kl' uses one")
    target = target_logits.detach().to(student_logits.dtype)
    if kind == "l1":
        return F.l1_loss(student_logits, target)
    if kind == "mse":
        return F.mse_loss(student_logits, target)
    # log-softmax is exact for any finite logits; kl_div with log_target never forms log(0)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(target / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature


def distill_objective(targets: torch.Tensor, loss: str = "l1", temperature: float = 1.0) -> Objective:
    """The engine's objective of a student: match each image's fixed teacher target
    (``targets``: (N, C) on the training device, looked up by the batch's dataset indices)."""

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, g: torch.Generator, shard: Shard
    ) -> torch.Tensor:
        return distill_loss(model(x), targets[idx], loss, temperature)

    return objective
