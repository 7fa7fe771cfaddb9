"""Data-parallel training as a small switch (``torchrun --nproc_per_node K -m logitscope train``).

When ``torchrun`` sets ``WORLD_SIZE > 1`` the engine splits each global batch across ranks
(every rank draws the batch's order, augmentation and attack noise from the same generator
and keeps its own contiguous slice), weights each rank's mean loss by its share of the batch,
averages gradients with DistributedDataParallel, gathers every sample's logits into one
store, and lets only rank 0 write.

What one run over K ranks makes exact, and what it does not (tests/training/test_ddp.py tests
exactly the first list):

- Exact: the rows (the slices tile every batch in rank order, so the ranks together see each
  sample once per epoch, in one process's order); the random draws (each rank's slice of the
  order, augmentation and PGD start is the slice of what one process draws, and every rank's
  generator stays in step); the gradient of a step, as an expression: the share-weighted
  average of the ranks' mean gradients is the whole batch's mean gradient; the parameters,
  identical on every rank after every step; ``gather_rows``, bit for bit (float32 rows).
- Not exact: float summation order. One process and K ranks sum the batch's gradient in a
  different order, so one step agrees to rounding only while no value sits within rounding of
  a kink: a ReLU or max-pool input, or a PGD input gradient whose sign() picks the attack
  step, that is zero up to rounding flips one sample's whole contribution (about 1-2% of a
  step's update on the digits CNN). Over many steps training amplifies such differences, so
  K ranks and one process give different logits after a few epochs (equal accuracy, not
  equal floats), and the per-machine kernels decide by how much.
- BatchNorm (the ResNets) is not exact either, and differs in method, not only in rounding:
  in train mode each rank normalises with the statistics of its own shard (batch/K images),
  as "ghost batch norm" does, and the training attack (``attack.bn_mode="train"``) runs on
  each rank's unwrapped module with those shard statistics too. Running statistics drift
  apart between ranks (each rank updates its own; DDP re-broadcasts rank 0's at the start of
  each training forward pass), so the epoch snapshot's rows of rank r > 0 are computed with
  rank r's running statistics, not those of the checkpoint rank 0 writes. The engine does not
  convert to ``SyncBatchNorm``; that would give the global batch's statistics on CUDA (nccl)
  only: PyTorch's SyncBatchNorm refuses CPU tensors, so gloo runs keep per-shard statistics.
- Tail batches with fewer rows than ranks leave some ranks an empty shard (mean loss nan,
  weight 0); see the xfail test in tests/training/test_ddp.py.
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

    def any(self, flag: torch.Tensor) -> bool:
        """Whether ``flag`` (a bool scalar) is true on some rank; every rank gets the same answer."""
        return bool(self.sum(flag.to(torch.float32)) > 0)

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Overwrite every rank's buffers (BatchNorm running statistics) with rank 0's."""
        if self.enabled:
            for b in model.buffers():
                tdist.broadcast(b, 0)

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        """Concatenate every rank's rows (rank order) into the full ``(n, ...)`` array.

        Rows travel as float32 (logits are float32: nothing is rounded); every rank's shard
        is padded to ``ceil(n / world)`` rows for ``all_gather`` and cut back to its size.
        """
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
