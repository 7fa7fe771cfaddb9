"""Checkpoints as plain data (tensors, numbers, strings), loaded with ``weights_only=True``.

``checkpoints/epoch_040.pt`` holds the model of one epoch; ``checkpoints/last.pt`` the
latest trainer state (model, optimizer, epoch) from which a killed run resumes. Every file
carries its model spec (architecture, classes, input channels, normalization), so a
checkpoint of another architecture or class count is refused with a clear message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from logitscope.fileio import torchfile
from logitscope.fileio.errors import RERUN

_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pt$")


def checkpoint_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch_{epoch:03d}.pt"


def last_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically save a checkpoint of plain data."""
    return torchfile.save_plain(path, payload)


def load(path: str | os.PathLike, remedy: str | None = None) -> dict[str, Any]:
    """Load a checkpoint as plain data (`logitscope.fileio.torchfile.load_plain`, which says
    what it raises), with the remedy of a damaged checkpoint (``last.pt``: rerun with --resume)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torchfile.load_plain(path, remedy or _remedy(path))


def _remedy(path: Path) -> str:
    """What to do about a damaged ``path``: ``last.pt`` is only resume state."""
    if path.name == "last.pt":
        return "delete it and rerun the same command with --resume (training restarts from the start)"
    return RERUN


def stored_epochs(run_dir: str | os.PathLike) -> list[int]:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _EPOCH_RE.match(p.name)))


def check_spec(spec: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Refuse a checkpoint whose architecture/classes/channels differ from ``expected``."""
    for key in ("name", "n_classes", "in_channels"):
        if key in expected and expected[key] is not None and spec.get(key) != expected[key]:
            raise ValueError(f"checkpoint {where} has {key}={spec.get(key)!r}: expected {key}={expected[key]!r}")
