"""Training throughput: images/s and peak memory of an ST and a PGD-AT epoch, and the cost
that the per-epoch logit snapshots add to an AT epoch (goal: under 10%).

CPU: the small CNN on digits. GPU (when available): ResNet-18 on CIFAR-shaped random uint8
data with the paper's settings (batch 128, PGD-10, eps 8/255, step 2/255).

    python benchmarks/train_throughput.py [--quick] [--device cpu|cuda]

The last line of output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from logitscope import train
from logitscope.config import run_preset


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cifar_shaped_npz(folder: Path, n_train: int, n_test: int) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "data.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, n_train),
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, n_test),
    )
    return path


def measure(cfg, out: Path) -> dict[str, float]:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = train(cfg, out=out, progress=False)
    wall = time.perf_counter() - t0
    rows = run.metrics()
    last = rows[-1]  # the last epoch: after any warm-up (compilation)
    return {
        "images_per_s": last["images_per_s"],
        "epoch_train_s": last["train_seconds"],
        "snapshot_s": last["snapshot_seconds"],
        "snapshot_overhead": last["snapshot_seconds"] / last["train_seconds"],
        "wall_s": wall,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.device == "cpu":
            epochs = 1 if args.quick else 2
            for method in ("st", "at"):
                cfg = run_preset("digits", method=method, epochs=epochs, device="cpu", **{"monitor.pgd_n": 0})
                results[f"digits_small_cnn_{method}"] = measure(cfg, tmp / method)
        else:
            n = 4096 if args.quick else 45_000
            data = cifar_shaped_npz(tmp, n, 1000)
            for method in ("st", "at"):
                cfg = run_preset(
                    "cifar10-paper",
                    method=method,
                    epochs=2,
                    device=args.device,
                    **{"data.name": "npz", "data.data_dir": str(data), "monitor.pgd_n": 0, "checkpoint_every": 0},
                )
                results[f"cifar_resnet18_{method}"] = measure(cfg, tmp / method)
    print(json.dumps({"device": args.device, "peak_rss_mb": round(peak_rss_mb(), 1), **results}))


if __name__ == "__main__":
    main()
