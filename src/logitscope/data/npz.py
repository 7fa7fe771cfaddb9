"""Bring your own arrays: an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Images may be uint8 NHWC or NCHW, or float in [0, 1]; optional ``x_val``/``y_val`` and
``class_names``. Loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from logitscope.data.base import Dataset, holdout_per_class, to_uint8_nchw
from logitscope.fileio.errors import load_npz as read_arrays

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def load_npz_dataset(
    data_dir: str | os.PathLike | None, val_per_class: int = 0, split_seed: int = 0, name: str = "npz"
) -> Dataset:
    if data_dir is None:
        raise FileNotFoundError("the npz dataset needs --data-dir: an .npz file or a folder with data.npz")
    path = Path(data_dir)
    if path.is_dir():
        path = path / "data.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no npz file at {path}: expected arrays {REQUIRED}")
    arr = read_arrays(path, remedy=f"write it again with numpy.savez (arrays {', '.join(REQUIRED)}, no object arrays)")
    missing = [k for k in REQUIRED if k not in arr]
    if missing:
        raise ValueError(f"{path} lacks {missing}: expected arrays {REQUIRED}")
    parts = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arr:
            continue
        x = torch.from_numpy(to_uint8_nchw(arr[f"x_{split}"], f"{path}:x_{split}"))
        y = arr[f"y_{split}"]
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
            raise ValueError(f"{path}:y_{split}: expected {len(x)} integer labels, got {y.dtype} {y.shape}")
        parts[split] = (x, torch.from_numpy(y.astype(np.int64)))
    n_classes = int(max(int(p[1].max()) for p in parts.values() if len(p[1]))) + 1
    names = (
        tuple(str(n) for n in arr["class_names"]) if "class_names" in arr else tuple(str(i) for i in range(n_classes))
    )
    x_train, y_train = parts["train"]
    if "val" in parts:
        x_val, y_val = parts["val"]
    else:
        x_train, y_train, x_val, y_val = holdout_per_class(x_train, y_train, val_per_class, split_seed)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=parts["test"][0],
        y_test=parts["test"][1],
        class_names=names,
    )
