"""The store a reproduce plan will write, projected before any work, against the free disk.

Every training and distillation run keeps the float32 logits of every image of every split
(train, validation, test) at every epoch, its labels, the checkpoints it keeps (the epochs of
``checkpoint_epochs`` and ``checkpoint_every`` and the last; each the model's state_dict) and
``last.pt`` (the state_dict and SGD's momentum buffers, one tensor per parameter). For
cifar10-paper that is 200 x 60,000 x 10 x 4 B = 480 MB of logits per run (4.8 GB for
CIFAR-100) and 0.54 GB of checkpoints (10 kept, every 20th epoch, of 44.7 MB, and
last.pt). The students of a plan appear only once the teacher is chosen; the projection
counts them by planning the graph as if the last teacher epoch were chosen (the sizes do
not depend on which epoch it is).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logitscope.config import RunConfig

FLOAT = 4  # bytes of a float32 weight
LABEL = 8  # bytes of an int64 label


@dataclass(frozen=True)
class StoreProjection:
    runs: int
    logits_bytes: int
    checkpoint_bytes: int
    existing_bytes: int  # already under out/runs (finished or partial runs)

    @property
    def total_bytes(self) -> int:
        return self.logits_bytes + self.checkpoint_bytes

    @property
    def needed_bytes(self) -> int:
        return max(0, self.total_bytes - self.existing_bytes)

    def describe(self) -> str:
        return (
            f"store: about {gb(self.total_bytes)} for {self.runs} runs (logits of every image at every epoch "
            f"{gb(self.logits_bytes)}, checkpoints {gb(self.checkpoint_bytes)}); {gb(self.existing_bytes)} already "
            f"written, {gb(self.needed_bytes)} to write"
        )


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def run_store_bytes(cfg: RunConfig, n_images: int, n_classes: int, numel: int, n_params: int) -> tuple[int, int]:
    """(logits and labels, checkpoints) bytes of one run of ``n_images`` images over all splits."""
    from logitscope.training.engine import should_checkpoint, stores_logits

    stored = sum(stores_logits(cfg, e) for e in range(1, cfg.epochs + 1))
    width = np.dtype(cfg.store.logits_dtype).itemsize
    logits = stored * n_images * n_classes * width + n_images * LABEL
    kept = sum(should_checkpoint(cfg, e) for e in range(1, cfg.epochs + 1))
    return logits, (kept + 1) * numel * FLOAT + n_params * FLOAT  # + last.pt: weights and momentum


def project_store(preset: dict[str, Any], out: Path, data_dir: str | None, data: Any) -> StoreProjection:
    """The projection of the whole plan of ``preset`` (students included) on ``data``."""
    from logitscope.plan.graph import build_plan

    plan = build_plan(preset, out, data_dir, assume_teacher=preset["teacher"]["epochs"][-1])
    n_images = len(data.y_train) + len(data.y_val) + len(data.y_test)
    channels = int(data.x_train.shape[1])
    sizes: dict[str, tuple[int, int]] = {}
    logits = ckpt = runs = 0
    for stage in plan.stages.values():
        if stage.kind not in ("train", "distill"):
            continue
        cfg = RunConfig.from_dict(stage.params["config"])
        key = f"{cfg.model.name}:{cfg.model.width}"
        if key not in sizes:
            sizes[key] = _sizes(cfg.model.name, data.n_classes, channels, cfg.model.width)
        numel, n_params = sizes[key]
        a, b = run_store_bytes(cfg, n_images, data.n_classes, numel, n_params)
        logits, ckpt, runs = logits + a, ckpt + b, runs + 1
    return StoreProjection(runs, logits, ckpt, _du(out / "runs"))


def _sizes(model: str, n_classes: int, channels: int, width: int | None) -> tuple[int, int]:
    from logitscope.models import build_model

    m = build_model(model, n_classes, channels, [0.0] * channels, [1.0] * channels, width)
    return sum(t.numel() for t in m.state_dict().values()), sum(p.numel() for p in m.parameters())


def _du(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def free_bytes(out: Path) -> int:
    """Free bytes on the file system that holds (or will hold) ``out``."""
    probe = Path(out).resolve()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_disk(projection: StoreProjection, out: Path) -> None:
    """Refuse, in one line, a plan whose store does not fit in the free disk under ``out``."""
    free = free_bytes(out)
    if projection.needed_bytes > free:
        raise ValueError(
            f"--out {out}: the plan writes about {gb(projection.needed_bytes)} more ({projection.runs} runs' logits "
            f"and checkpoints) and {gb(free)} is free there: expected room for it; choose another --out, free space, "
            "or shrink the store (fewer epochs, fewer seeds, checkpoint_every=0 in train.set)"
        )


__all__ = ["StoreProjection", "check_disk", "free_bytes", "project_store", "run_store_bytes"]
