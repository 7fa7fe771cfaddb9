"""Shared fixtures. Tests run on CPU with few threads so the suite is repeatable and fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOGITSCOPE_SHARED", REPO.parent / "shared"))


@pytest.fixture
def tiny_config():
    """A 2-epoch digits config small enough for end-to-end tests."""
    from logitscope.config import run_preset

    def make(method: str = "st", **overrides):
        base = {"epochs": 2, "monitor.pgd_n": 50, "monitor.pgd_steps": 3, "attack.steps": 2}
        base.update(overrides)
        return run_preset("digits", method=method, **base)

    return make
