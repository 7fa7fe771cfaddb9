"""Batched data augmentation on uint8 image tensors, on whatever device they live.

No per-image Python: a batch is padded once, and every image's crop window is gathered with
one advanced-indexing call; flips are one ``torch.where``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Augment:
    """Random crop with zero padding ``pad`` pixels and optional horizontal flip.

    ``Augment(pad=4, flip=True)`` is the CIFAR recipe of the paper (appendix A.2);
    ``Augment()`` is the identity (digits: never flip digits, and shifts break AT at 8x8).
    """

    pad: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"augment pad={self.pad}: expected a non-negative number of pixels")

    @property
    def identity(self) -> bool:
        return self.pad == 0 and not self.flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment ``x``: (B, C, H, W) uint8 or float; returns the same shape and dtype."""
        if self.identity:
            return x
        b, _, h, w = x.shape
        dev = x.device
        if self.pad:
            p = self.pad
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=dev)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=dev)
            rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (B, H, 1)
            cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # (B, 1, W)
            idx = torch.arange(b, device=dev)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2).contiguous()
        if self.flip:
            mask = torch.rand(b, generator=generator, device=dev) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x

    def describe(self) -> str:
        if self.identity:
            return "none"
        parts = [f"crop(pad={self.pad})"] if self.pad else []
        return "+".join(parts + (["hflip"] if self.flip else []))
