"""Fixtures of the reproduce-plan tests: a tiny preset and one finished teacher choice."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from plan_helpers import TINY, one_thread

from logitscope.plan.reproduce import reproduce


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="session")
def chosen(tmp_path_factory: pytest.TempPathFactory, tiny_preset: Path) -> Path:
    """The tiny plan run by ``reproduce`` up to the teacher choice. Read-only: copy it."""
    out = tmp_path_factory.mktemp("chosen") / "out"
    with one_thread():
        assert reproduce(str(tiny_preset), out, only=["choose"]) == 0
    return out


@pytest.fixture
def chosen_copy(chosen: Path, tmp_path: Path) -> Path:
    """A private copy of ``chosen`` (an output folder is movable)."""
    return Path(shutil.copytree(chosen, tmp_path / "out"))
