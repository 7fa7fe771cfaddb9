"""Distillation end to end: a tiny teacher, students sharing its cached targets, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import logitscope
from logitscope import train
from logitscope.distill import distillation
from logitscope.distill.distillation import distill_config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from logitscope.config import run_preset

    cfg = run_preset("digits", method="at", epochs=2, checkpoint_epochs=[1],
                     **{"attack.steps": 2, "monitor.pgd_n": 20, "monitor.pgd_steps": 2})
    return train(cfg, out=tmp_path_factory.mktemp("runs"), progress=False)


def test_students_share_cached_targets_and_keep_their_own(teacher, tmp_path, monkeypatch, tiny_config):
    calls = []
    real = distillation.teacher_targets
    monkeypatch.setattr(distillation, "teacher_targets", lambda *a, **k: calls.append(1) or real(*a, **k))
    base = tiny_config("st", epochs=1)
    runs = {}
    for transform, k in (("none", 1), ("fix-k-permute", 3), ("correct-fix-1", 1)):
        cfg = distill_config(base, teacher=str(teacher.dir), teacher_epoch=2, transform=transform, k=k)
        runs[transform] = train(cfg, out=tmp_path, progress=False)
    assert len(calls) == 1  # computed once per (teacher, epoch, K), reused by every student
    raw = np.load(next((teacher.dir / "distill_targets").glob("epoch_002-K1-*.npy")))
    normal = np.load(runs["none"].dir / "targets" / "targets.npy")
    np.testing.assert_array_equal(normal, raw)
    np.testing.assert_allclose(raw, teacher.logits.get("train", 2), rtol=1e-5, atol=1e-5)
    fixed = np.load(runs["correct-fix-1"].dir / "targets" / "targets.npy")
    assert (fixed.argmax(1) == teacher.logits.labels("train")).all()
    prov = json.loads((runs["fix-k-permute"].dir / "targets" / "provenance.json").read_text())
    assert prov["epoch"] == 2 and prov["K"] == 1 and prov["transforms"][0]["k"] == 3
    assert runs["none"].logits.epochs("train") == [1]  # students keep every epoch's logits too


def test_python_verb(teacher, tmp_path):
    student = logitscope.distill(teacher=str(teacher.dir), transform="fix-k-average", k=2, out=str(tmp_path),
                                 base=teacher.config.with_overrides(["epochs=1"]))
    assert student.complete and student.config.distill.transform == "fix-k-average"


def test_bad_inputs(teacher, tiny_config):
    base = tiny_config("st", epochs=1)
    with pytest.raises(FileNotFoundError, match="no checkpoint for epoch 7"):
        distill_config(base, teacher=str(teacher.dir), teacher_epoch=7)
    with pytest.raises(ValueError, match="k"):
        distill_config(base, teacher=str(teacher.dir), transform="fix-k-permute", k=11)
    with pytest.raises(ValueError, match="hybrid needs --hybrid-order"):
        distill_config(base, teacher=str(teacher.dir), transform="hybrid")
    with pytest.raises(ValueError, match="unknown|expected one of"):
        distill_config(base, teacher=str(teacher.dir), transform="fix-all")


def test_teacher_of_another_dataset_refused(teacher, tmp_path):
    from logitscope.config import run_preset

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (1400, 8, 8, 1), dtype=np.uint8),
             y_train=rng.integers(0, 10, 1400), x_test=rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8),
             y_test=rng.integers(0, 10, 20))
    base = run_preset("digits", epochs=1, **{"data.name": "npz", "data.data_dir": str(tmp_path / "d.npz"),
                                             "monitor.pgd_n": 0})
    cfg = distill_config(base, teacher=str(teacher.dir))
    with pytest.raises(ValueError, match="teacher run .* is of dataset digits .*expected npz"):
        train(cfg, out=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs" / cfg.run_id / "targets").exists()  # nothing trained on wrong targets
