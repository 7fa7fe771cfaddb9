"""One run on several processes (torchrun, gloo on CPU) writes the same store as one process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from logitscope import LogitStore, train

ARGS = ["--dataset", "digits", "--method", "at", "--epochs", "2", "--steps", "2",
        "--set", "monitor.pgd_n=40", "--set", "monitor.pgd_steps=2", "--set", "optim.batch_size=64"]


def test_two_processes_match_one(tmp_path, tiny_config):
    cfg = tiny_config("at", epochs=2, **{"attack.steps": 2, "monitor.pgd_n": 40, "monitor.pgd_steps": 2})
    single = train(cfg, out=tmp_path / "one", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "logitscope", "train", *ARGS, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "two").iterdir())
    assert [r.name for r in runs] == [single.dir.name]  # same config, same run id
    a, b = LogitStore(single.dir), LogitStore(runs[0])
    assert a.epochs("train") == b.epochs("train") == [1, 2]
    for split in ("train", "test"):
        for e in (1, 2):
            np.testing.assert_allclose(a.get(split, e), b.get(split, e), rtol=1e-3, atol=1e-3)
    assert (np.asarray(a.get("test")).argmax(1) == np.asarray(b.get("test")).argmax(1)).mean() > 0.99


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (2, 4)])
def test_shards_cover_rows_once(n, world):
    from logitscope.training.distributed import Dist

    parts = [Dist(r, world).shard(n) for r in range(world)]
    rows = [i for a, b in parts for i in range(a, b)]
    assert rows == list(range(n)) and max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1
