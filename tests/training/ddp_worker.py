"""One rank of the data-parallel tests: ``torchrun --nproc_per_node K ddp_worker.py SPEC.json``.

Kept out of the test module so that each rank imports only what it runs. ``SPEC`` names an
``out`` folder, run configs (plain dicts) to train one after the other in the same process
group, and ``gather`` cases (``[n, *row_shape]``): every rank passes its shard of
:func:`gather_case` to :meth:`Dist.gather_rows` and writes what it got back, so the test
can check the reassembled array on every rank, bit for bit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def gather_case(n: int, row_shape: tuple[int, ...]) -> np.ndarray:
    """A float32 ``(n, *row_shape)`` array whose every row is distinct and whose values include
    signed zeros, infinities, NaN and a subnormal: any arithmetic on the rows, or any misplaced
    row, changes its bits."""
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, *row_shape)).astype(np.float32)
    flat = a.reshape(n, -1)
    flat[:, 0] = np.arange(n, dtype=np.float32)  # row identity
    specials = np.array([-0.0, np.inf, -np.inf, np.nan, np.float32(1e-45)], dtype=np.float32)
    if flat.shape[1] > 1:
        flat[: min(n, len(specials)), 1] = specials[: min(n, len(specials))]
    return a


def main(spec_path: str) -> None:
    import torch  # imported here: the test module imports gather_case without starting anything

    from logitscope.config import RunConfig
    from logitscope.training.distributed import Dist
    from logitscope.training.engine import train

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    dist = Dist.from_env("cpu")
    assert torch.get_num_threads() == 1, "ranks run one thread each (OMP_NUM_THREADS=1)"
    for i, (n, *shape) in enumerate(spec.get("gather", [])):
        full = gather_case(n, tuple(shape))
        a, b = dist.shard(n)
        np.save(out / f"gather-{i}-rank{dist.rank}.npy", dist.gather_rows(full[a:b], n))
    for config in spec.get("configs", []):
        train(RunConfig.from_dict(config), out=out, progress=False)
    dist.barrier()
    dist.close()


if __name__ == "__main__":
    main(sys.argv[1])
