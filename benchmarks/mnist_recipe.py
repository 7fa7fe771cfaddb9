"""The mnist recipe's speed on this machine: images/s of an ST and a PGD-AT epoch and the
seconds of the epoch's logit snapshot, for the `mnist` preset's model (mnist-cnn) and, side by
side in the same run, the small CNN the default recipe gave 28x28 images before (small-cnn).

Data: MNIST-shaped random uint8 images (28x28, 10 classes; the speed does not depend on the
pixels), 8,000 training images for ST (the size of the trial that found ~120 images/s and a
30 s snapshot) and 2,000 for PGD-AT (10 steps).

    python benchmarks/mnist_recipe.py [--quick]

The last line of output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from logitscope import train
from logitscope.config import run_preset


def mnist_shaped_npz(folder: Path, n_train: int, n_test: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "data.npz",
        x_train=rng.integers(0, 256, (n_train, 28, 28, 1), dtype=np.uint8),
        y_train=rng.integers(0, 10, n_train),
        x_test=rng.integers(0, 256, (n_test, 28, 28, 1), dtype=np.uint8),
        y_test=rng.integers(0, 10, n_test),
    )
    return folder


def one_epoch(tmp: Path, data_dir: Path, model: str, method: str) -> dict[str, float]:
    cfg = run_preset(
        "mnist",
        method=method,
        epochs=1,
        **{"data.name": "npz", "data.data_dir": str(data_dir), "model.name": model, "monitor.pgd_n": 0},
    )
    row = train(cfg, out=tmp / f"{model}-{method}", progress=False).metrics()[-1]
    return {"images_per_s": row["images_per_s"], "snapshot_seconds": row["snapshot_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a quarter of the images")
    args = ap.parse_args()
    scale = 4 if args.quick else 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sizes = {"st": 8000 // scale, "at": 2000 // scale}
        data = {m: mnist_shaped_npz(tmp / f"data-{m}", n, 1000 // scale) for m, n in sizes.items()}
        res = {
            f"{model}/{method}": one_epoch(tmp, data[method], model, method)
            for method in ("st", "at")
            for model in ("mnist-cnn", "small-cnn")
        }
    for key, r in res.items():
        print(f"{key:16s} {r['images_per_s']:8.0f} images/s  snapshot {r['snapshot_seconds']:.2f} s")
    speedup = {m: res[f"mnist-cnn/{m}"]["images_per_s"] / res[f"small-cnn/{m}"]["images_per_s"] for m in ("st", "at")}
    print(f"mnist-cnn against small-cnn at 28x28: {speedup['st']:.1f}x (ST), {speedup['at']:.1f}x (PGD-AT)")
    print(json.dumps({"results": res, "speedup": speedup, "train_images": sizes}))


if __name__ == "__main__":
    main()
