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


@pytest.fixture(scope="session")
def idx_digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits at 28x28 with MNIST's contrast as MNIST-format IDX files (1,400 train, 397
    test; tests/idx_digits.py). Shared by the session: read it, never write into it."""
    from idx_digits import write_idx_digits

    return write_idx_digits(tmp_path_factory.mktemp("idx-digits"))
