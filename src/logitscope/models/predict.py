"""Logits of stored images: uint8 in, float32 ``(N, C)`` out, in order, in eval mode."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> np.ndarray:
    """``(N, C)`` float32 logits of uint8 images ``x`` in eval mode, in order."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device, non_blocking=True).float().div_(255)
        out.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
