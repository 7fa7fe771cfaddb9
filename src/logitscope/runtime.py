"""Seeds and devices: the helpers every layer shares (a seed per component, a device by name)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def derive_seed(seed: int, *tags: Any) -> int:
    """A 63-bit seed derived from ``seed`` and tags (stable across processes and versions)."""
    h = hashlib.sha256(repr((seed, *tags)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available on this machine (use cpu or auto)")
    return dev
