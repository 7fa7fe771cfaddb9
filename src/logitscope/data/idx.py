"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST) from a folder, gzipped or not."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from logitscope.data.base import Dataset, holdout_per_class

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (optionally gzipped): magic 0x0000 <type> <ndim>, big-endian sizes."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(f"{path}: header says {tuple(dims)} ({expected} bytes), body has {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(tuple(dims))


def _find(folder: Path, stem: str) -> Path:
    for cand in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no {stem}[.gz] in {folder}: expected the standard MNIST-format file names")


def load_idx(
    data_dir: str | os.PathLike | None, val_per_class: int = 0, split_seed: int = 0, name: str = "idx"
) -> Dataset:
    if data_dir is None:
        raise FileNotFoundError("the idx dataset needs --data-dir: a folder with MNIST-format IDX files")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist: expected a folder with IDX files")
    arrays = {k: read_idx(_find(folder, stem)) for k, stem in FILES.items()}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{folder}: {part} images {x.shape} and labels {y.shape} do not match")
    x_train = torch.from_numpy(arrays["x_train"].astype(np.uint8)[:, None].copy())
    y_train = torch.from_numpy(arrays["y_train"].astype(np.int64))
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    x_train, y_train, x_val, y_val = holdout_per_class(x_train, y_train, val_per_class, split_seed)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=torch.from_numpy(arrays["x_test"].astype(np.uint8)[:, None].copy()),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        class_names=tuple(str(i) for i in range(n_classes)),
    )
