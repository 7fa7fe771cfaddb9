"""A teacher's distillation targets: one fixed logit vector per training image (appendix A.3).

In ordinary distillation the target is the teacher's output on the current (augmented) batch,
so a sample's target changes every epoch with the augmentation and, through BatchNorm, with the
batch it lands in. The paper assigns a single target per image instead: the teacher's logits
averaged over K augmented passes over the training set. The student then learns from a fixed
``(N, C)`` array that the target transforms can manipulate and that is stored with the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from logitscope.data.augment import Augment
from logitscope.distill.transforms import TransformSpec

log = logging.getLogger(__name__)

BN_MODES = ("eval", "batch")


def teacher_targets(
    model: nn.Module,
    x: torch.Tensor,
    K: int,
    augment: Augment,
    batch_size: int = 512,
    bn_mode: str = "eval",
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The teacher's logits for every image, averaged over ``K`` augmented passes.

    Args:
        model: the teacher, already on ``device``; maps (B, C, H, W) float images in [0, 1] to
            (B, n_classes) logits. Its parameters, buffers and train/eval flags are the same
            after the call as before.
        x: (N, C, H, W) uint8 training images, dataset order (on any device).
        K: number of augmented passes (>= 1). With the identity augment and ``bn_mode="eval"``
            every pass gives the same logits.
        augment: applied to each batch of every pass (``Augment()`` is the identity).
        batch_size: images per forward pass.
        bn_mode: "eval" uses BatchNorm's running statistics (a sample's logits do not depend
            on its batch); "batch" normalises with each batch's own statistics, as a teacher
            queried during training would, without updating the running statistics; each pass
            then visits the images in a fresh seeded random order so batch composition varies.
            Other modules (dropout) stay in eval mode in both.
        seed: seeds the augmentation and the batch order of every pass.
        device: where the forward passes run.

    Returns:
        (N, n_classes) float32 array: the mean over the K passes of each image's logits.
    """
    if x.ndim != 4 or x.dtype != torch.uint8:
        raise ValueError(f"images {tuple(x.shape)} {x.dtype}: expected (N, C, H, W) uint8")
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K={K!r}: expected an integer number of passes >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode={bn_mode!r}: expected one of {', '.join(BN_MODES)}")
    n = len(x)
    n_min = 2 if bn_mode == "batch" else 1
    if n < n_min:
        raise ValueError(f"{n} images: bn_mode={bn_mode!r} needs at least {n_min}")
    device = torch.device(device)
    param = next(model.parameters(), None)
    if param is not None and param.device.type != device.type:
        raise ValueError(f"teacher on {param.device}, device={device}: move the teacher first")

    # Near-equal batches (no tiny last batch whose BatchNorm statistics would be degenerate).
    n_batches = -(-n // batch_size)
    flags = [(m, m.training) for m in model.modules()]
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    total: torch.Tensor | None = None
    try:
        model.eval()
        if bn_mode == "batch":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        with (
            torch.inference_mode(),
            tqdm(
                total=K * n_batches, desc="teacher targets", unit="batch", disable=None, leave=False
            ) as bar,
        ):
            for p in range(K):
                order_gen, aug_gen = _pass_generators(seed, p, device)
                order = torch.randperm(n, generator=order_gen) if bn_mode == "batch" else torch.arange(n)
                for idx in order.tensor_split(n_batches):
                    xb = augment(x[idx.to(x.device)].to(device), aug_gen)
                    logits = model(xb.float().div_(255)).double().cpu()
                    if total is None:
                        total = logits.new_zeros(n, logits.shape[1])
                    total.index_add_(0, idx, logits)
                    bar.update()
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
        for m, training in flags:
            m.training = training
    log.info(
        "teacher targets: %d images, K=%d, augment=%s, bn_mode=%s",
        n,
        K,
        augment.describe(),
        bn_mode,
    )
    return (total / K).numpy().astype(np.float32)


def _pass_generators(
    seed: int, p: int, device: torch.device
) -> tuple[torch.Generator, torch.Generator]:
    """Independent generators for pass ``p``'s batch order (CPU) and augmentation (device)."""
    s_order, s_aug = np.random.SeedSequence([seed, p]).generate_state(2, dtype=np.uint64)
    order_gen = torch.Generator().manual_seed(int(s_order) >> 1)
    aug_gen = torch.Generator(device=device).manual_seed(int(s_aug) >> 1)
    return order_gen, aug_gen


@dataclass(frozen=True)
class TargetProvenance:
    """Where a student's stored targets came from (``targets/provenance.json``).

    Attributes:
        teacher_run: the teacher's run folder or run id.
        epoch: the teacher checkpoint's epoch (the paper uses epoch 40).
        K: augmented passes averaged (`teacher_targets`).
        augment: the augmentation's description (``Augment.describe()``).
        bn_mode: "eval" or "batch".
        seed: the seed of the passes and of the transforms.
        transforms: the manipulations applied, in order.
        reports: one report per transform (`apply_transform`).
    """

    teacher_run: str
    epoch: int
    K: int
    augment: str
    bn_mode: str
    seed: int = 0
    transforms: tuple[TransformSpec, ...] = (TransformSpec("none"),)
    reports: tuple[dict[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode={self.bn_mode!r}: expected one of {', '.join(BN_MODES)}")
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "reports", tuple(dict(r) for r in self.reports))

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher_run": self.teacher_run,
            "epoch": self.epoch,
            "K": self.K,
            "augment": self.augment,
            "bn_mode": self.bn_mode,
            "seed": self.seed,
            "transforms": [t.to_dict() for t in self.transforms],
            "reports": [dict(r) for r in self.reports],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetProvenance:
        required = {"teacher_run", "epoch", "K", "augment", "bn_mode"}
        optional = {"seed", "transforms", "reports"}
        missing, unknown = required - set(d), set(d) - required - optional
        if missing or unknown:
            raise KeyError(
                f"target provenance keys: missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        kw = dict(d)
        if "transforms" in kw:
            kw["transforms"] = tuple(TransformSpec.from_dict(t) for t in kw["transforms"])
        if "reports" in kw:
            kw["reports"] = tuple(kw["reports"])
        return cls(**kw)
