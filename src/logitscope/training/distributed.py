"""Data-parallel training as a small switch (``torchrun --nproc_per_node K -m logitscope train``).

When ``torchrun`` sets ``WORLD_SIZE > 1`` the engine splits each global batch across ranks
(every rank draws the batch's order, augmentation and attack noise from the same generator
and keeps its own slice, so the ranks together compute exactly what one process would, up
to float summation order), averages gradients with DistributedDataParallel, gathers every
sample's logits into one store, and lets only rank 0 write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, device_type: str) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not tdist.is_initialized():
            tdist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return cls(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous slice of ``n`` rows (sizes differ by at most one)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            t = t.clone()
            tdist.all_reduce(t)
        return t

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        """Concatenate every rank's rows (rank order) into the full ``(n, ...)`` array."""
        if not self.enabled:
            return local
        width = local.shape[1:]
        size = -(-n // self.world)
        padded = torch.zeros((size, *width), dtype=torch.float32)
        padded[: len(local)] = torch.from_numpy(np.ascontiguousarray(local, dtype=np.float32))
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        tdist.all_gather(parts, padded)
        rows = [p[: Dist(r, self.world).shard(n)[1] - Dist(r, self.world).shard(n)[0]] for r, p in enumerate(parts)]
        return torch.cat(rows).numpy()

    def close(self) -> None:
        if self.enabled and tdist.is_initialized():
            tdist.destroy_process_group()
