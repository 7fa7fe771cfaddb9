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


@pytest.fixture(scope="session")
def synthetic_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with synthetic ``cifar-10-python.tar.gz`` (30 training and 10 test images per
    class) and ``cifar-100-python.tar.gz`` (8 and 4 per class) in the official format
    (tests/synthetic_cifar.py). Their md5s are not the published ones: tests that load them
    take ``accept_synthetic_cifar``. Shared by the session: read it, never write into it."""
    from synthetic_cifar import write_synthetic_cifar

    folder = tmp_path_factory.mktemp("synthetic-cifar")
    write_synthetic_cifar(folder, "cifar10", train_per_class=30, test_per_class=10)
    write_synthetic_cifar(folder, "cifar100", train_per_class=8, test_per_class=4)
    return folder


@pytest.fixture
def accept_synthetic_cifar(monkeypatch: pytest.MonkeyPatch, synthetic_cifar_dir: Path) -> Path:
    """The test-only way past the published-md5 check: for this test, the loader expects the
    synthetic tarballs' own md5s (in this process only: plans run with one job). Returns
    their folder."""
    from dataclasses import replace

    from logitscope.data import cifar
    from synthetic_cifar import md5

    for name, spec in cifar.SPECS.items():
        digest = md5(synthetic_cifar_dir / spec.tarball)
        monkeypatch.setitem(cifar.SPECS, name, replace(spec, tarball_md5=digest))
    return synthetic_cifar_dir
