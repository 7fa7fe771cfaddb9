"""Read access to a run's per-epoch logits.

Layout (written by the training engine)::

    <run>/logits/<split>/labels.npy        (N,) int64, dataset order
    <run>/logits/<split>/epoch_040.npy     (N, C) float32, dataset order, no augmentation

`LogitStore` returns memory-mapped arrays so analyses over hundreds of epochs stream
instead of loading everything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from logitscope.fileio.atomic import atomic_save_npy
from logitscope.fileio.errors import load_npy

_EPOCH_RE = re.compile(r"^epoch_(\d+)\.npy$")
SPLIT_ORDER = ("train", "val", "test")
# Logits are written by training only: a damaged file means retraining that run.
_REMEDY = "delete the run folder and train it again (logitscope train, or logitscope reproduce)"


def epoch_filename(epoch: int) -> str:
    return f"epoch_{epoch:03d}.npy"


class LogitStore:
    """The logits of every sample at every stored epoch of one run.

    Args:
        run: the run folder (the one holding ``config.yaml``) or its ``logits`` folder.
    """

    def __init__(self, run: str | os.PathLike) -> None:
        root = Path(run)
        self.root = root if root.name == "logits" else root / "logits"
        if not self.root.is_dir():
            raise FileNotFoundError(f"no logits folder at {self.root}: expected a run folder")

    @property
    def splits(self) -> list[str]:
        """Splits with at least a labels file, in train/val/test order."""
        found = [p.name for p in self.root.iterdir() if (p / "labels.npy").is_file()]
        return sorted(found, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))

    def _split_dir(self, split: str) -> Path:
        d = self.root / split
        if not (d / "labels.npy").is_file():
            raise KeyError(f"unknown split {split!r}: this run has {self.splits}")
        return d

    def epochs(self, split: str = "train") -> list[int]:
        """Epochs stored for ``split``, ascending (epoch 0 is the untrained model)."""
        out = []
        for p in self._split_dir(split).iterdir():
            m = _EPOCH_RE.match(p.name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def labels(self, split: str) -> np.ndarray:
        """``(N,)`` int64 labels of ``split`` in dataset order."""
        return load_npy(self._split_dir(split) / "labels.npy", remedy=_REMEDY)

    def get(self, split: str, epoch: int | None = None) -> np.ndarray:
        """``(N, C)`` float32 logits (memory-mapped); ``epoch=None`` is the last stored epoch."""
        # The folder is listed only when needed (no epoch given, or the file is missing): listing
        # it on every call made reading all E epochs cost O(E^2).
        if epoch is None:
            epoch = self._stored(split)[-1]
        path = self._split_dir(split) / epoch_filename(epoch)
        if not path.is_file():
            raise KeyError(f"epoch {epoch} not stored for split {split!r}: stored epochs {self._stored(split)}")
        logits = load_npy(path, mmap_mode="r", remedy=_REMEDY)
        # float16 files (store.logits_dtype) are read into memory as float32: every analysis
        # computes in float32, whatever the stored precision
        return logits if logits.dtype == np.float32 else np.asarray(logits, np.float32)

    def _stored(self, split: str) -> list[int]:
        eps = self.epochs(split)
        if not eps:
            raise KeyError(f"split {split!r} has no stored epochs")
        return eps

    def iter_epochs(self, split: str) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(epoch, logits)`` for every stored epoch, memory-mapped one at a time."""
        for e in self.epochs(split):
            yield e, self.get(split, e)

    def __repr__(self) -> str:
        return f"LogitStore({self.root.parent}, splits={self.splits})"


def write_logits(
    run_dir: str | os.PathLike, split: str, epoch: int, logits: np.ndarray, dtype: str = "float32"
) -> Path:
    """Atomically store ``(N, C)`` logits of ``split`` at ``epoch`` as ``dtype`` (float32, or
    float16 for half the bytes: `LogitStore.get` reads either as float32)."""
    path = Path(run_dir) / "logits" / split / epoch_filename(epoch)
    return atomic_save_npy(path, np.asarray(logits, np.dtype(dtype)))


def write_labels(run_dir: str | os.PathLike, split: str, labels: np.ndarray) -> Path:
    return atomic_save_npy(Path(run_dir) / "logits" / split / "labels.npy", np.asarray(labels, np.int64))
