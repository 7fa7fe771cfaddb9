"""Evaluation records in the run store: every path of ``<run>/eval/`` is built here.

``<run>/eval/<protocol>-epoch_040.npz`` holds a protocol's per-sample records of the test
split at epoch 40 and ``<protocol>-epoch_040.json`` its summary; the validation split's are
``<protocol>-val-epoch_040.*`` (a name the test split's pattern does not match).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

EVAL_SPLITS = ("test", "val")


def check_split(split: str) -> str:
    """``split`` if it is one the protocol evaluates ("test" or "val"); a one-line error otherwise."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"split={split!r}: expected 'test' or 'val'")
    return split


def record_path(run_dir: str | os.PathLike, protocol: str, epoch: int, split: str = "test") -> Path:
    """The per-sample records ``<run>/eval/<protocol>[-val]-epoch_XXX.npz``."""
    infix = "" if check_split(split) == "test" else f"-{split}"
    return Path(run_dir) / "eval" / f"{protocol}{infix}-epoch_{epoch:03d}.npz"


def summary_path(run_dir: str | os.PathLike, protocol: str, epoch: int, split: str = "test") -> Path:
    """The summary ``<run>/eval/<protocol>[-val]-epoch_XXX.json`` beside the records."""
    return record_path(run_dir, protocol, epoch, split).with_suffix(".json")


def record_epochs(run_dir: str | os.PathLike, protocol: str = "paper", split: str = "test") -> list[int]:
    """The epochs with records of ``protocol`` on ``split``, ascending."""
    folder = Path(run_dir) / "eval"
    infix = "" if check_split(split) == "test" else f"-{split}"
    pattern = re.compile(rf"^{re.escape(protocol)}{infix}-epoch_(\d+)\.npz$")
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name)))


def find_record(
    run_dir: str | os.PathLike, epoch: int | None = None, protocol: str = "paper", split: str = "test"
) -> Path | None:
    """The records at ``epoch`` (None: the latest epoch with records), or None if there are none."""
    if epoch is None:
        epochs = record_epochs(run_dir, protocol, split)
        if not epochs:
            return None
        epoch = epochs[-1]
    path = record_path(run_dir, protocol, epoch, split)
    return path if path.is_file() else None


def find_summary(
    run_dir: str | os.PathLike, epoch: int | None = None, protocol: str = "paper", split: str = "test"
) -> Path | None:
    """The summary beside `find_record`'s records (None when it is absent)."""
    record = find_record(run_dir, epoch, protocol, split)
    path = None if record is None else record.with_suffix(".json")
    return path if path is not None and path.is_file() else None
