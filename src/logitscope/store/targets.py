"""Distillation targets in the run store: every path of them is built here.

A student keeps the targets it trained on, ``<student>/targets/targets.npy`` ((N, C)
float32, after the transform), with ``targets/provenance.json`` (teacher run, epoch, K,
transform and its report). A teacher caches its raw targets (logits averaged over K
augmented passes) per checkpoint and recipe in ``<teacher>/distill_targets/``, for every
student of it to reuse.
"""

from __future__ import annotations

import os
from pathlib import Path


def targets_dir(student_dir: str | os.PathLike) -> Path:
    return Path(student_dir) / "targets"


def targets_path(student_dir: str | os.PathLike) -> Path:
    """The student's ``targets/targets.npy``."""
    return targets_dir(student_dir) / "targets.npy"


def provenance_path(student_dir: str | os.PathLike) -> Path:
    """The student's ``targets/provenance.json``."""
    return targets_dir(student_dir) / "provenance.json"


def raw_targets_path(
    teacher_dir: str | os.PathLike, epoch: int, passes: int, augment: str, bn_mode: str, seed: int
) -> Path:
    """The teacher's cached raw targets of checkpoint ``epoch``: ``distill_targets/
    epoch_040-K8-<augment>-<bn_mode>-s<seed>.npy`` (``seed``: 0 where the passes are not random)."""
    name = f"epoch_{epoch:03d}-K{passes}-{augment}-{bn_mode}-s{seed}.npy"
    return Path(teacher_dir) / "distill_targets" / name
