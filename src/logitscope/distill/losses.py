"""Distillation losses between a student's logits and fixed teacher targets.

The paper distills logits with an L1 loss (appendix A.3, figure A.7): it transfers more
robustness than KL divergence on softmax outputs and needs no temperature. L1 and MSE average
over every logit (batch and classes, as ``F.l1_loss`` does): summing over classes instead
multiplies the gradient by C and, at the learning rates of the ST recipe, makes students
collapse to a constant prediction. KL is averaged over the batch and scaled by T^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
            ``T^2 * KL(softmax(t/T) || softmax(s/T))`` (Hinton et al., 2015: the T^2 keeps the
            gradient scale independent of T).
        temperature: T > 0, for "kl" only (must stay 1 for "l1" and "mse").

    Returns:
        A 0-dim tensor.
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
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(target / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2
