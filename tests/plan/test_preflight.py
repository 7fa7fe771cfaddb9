"""The store projection of a reproduce plan and the refusal of a disk too small for it."""

from __future__ import annotations

import pytest

from logitscope.cli import main
from logitscope.config import run_preset
from logitscope.data import get_dataset
from logitscope.plan import preflight
from logitscope.plan.graph import resolve_preset
from logitscope.plan.preflight import project_store, run_store_bytes


def test_a_cifar10_paper_run_stores_480_mb_of_logits():
    # the figure: 200 epochs x 60,000 images (train, validation and test) x 10 classes x 4 B
    cfg = run_preset("cifar10-paper", method="at")
    logits, ckpt = run_store_bytes(cfg, 60_000, 10, numel=1000, n_params=900)
    assert logits == 200 * 60_000 * 10 * 4 + 60_000 * 8
    # checkpoint_every 20: epochs 20, 40, ..., 200 (10 kept) + last.pt (weights and momentum)
    assert ckpt == 10 * 1000 * 4 + (1000 + 900) * 4
    logits100, _ = run_store_bytes(run_preset("cifar100-paper", method="at"), 60_000, 100, 1000, 900)
    assert logits100 == 10 * (logits - 60_000 * 8) + 60_000 * 8  # 4.8 GB


def test_the_projection_counts_every_run_of_the_plan_students_included(tmp_path, tiny_preset):
    from logitscope.models import build_model

    preset = resolve_preset(str(tiny_preset), [], None)
    data = get_dataset("digits", val_per_class=4)
    proj = project_store(preset, tmp_path, None, data)
    # the tiny preset: ST + AT, 4 sweep students (2 teacher epochs x L1/KL), then the students
    # of the chosen teacher (normal, fix-1 permute/average, correct-fix-1 (two), hybrid)
    model = build_model("small-cnn", 10, 1, [0.0], [1.0])
    numel = sum(t.numel() for t in model.state_dict().values())
    n_params = sum(p.numel() for p in model.parameters())
    n_images = 1400 + 397
    expected_logits = expected_ckpt = 0
    for epochs, kept in ((2, 2), (2, 2)):  # ST and AT: 2 epochs, checkpoint_epochs [1] + the last
        expected_logits += epochs * n_images * 10 * 4 + n_images * 8
        expected_ckpt += (kept + 1) * numel * 4 + n_params * 4
    n_students = proj.runs - 2
    expected_logits += n_students * (1 * n_images * 10 * 4 + n_images * 8)  # 1-epoch students
    expected_ckpt += n_students * (2 * numel * 4 + n_params * 4)
    assert n_students > 4  # the students of the chosen teacher, not only the sweep
    assert (proj.logits_bytes, proj.checkpoint_bytes, proj.existing_bytes) == (expected_logits, expected_ckpt, 0)


def test_a_disk_too_small_is_a_one_line_error_before_any_work(tmp_path, tiny_preset, monkeypatch, capsys):
    monkeypatch.setattr(preflight, "free_bytes", lambda out: 1_000_000)
    out = tmp_path / "out"
    assert main(["reproduce", "--preset", str(tiny_preset), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1.0 MB is free there" in err[0] and "more (" in err[0]
    assert not out.exists()
    assert main(["reproduce", "--preset", str(tiny_preset), "--out", str(out), "--dry-run"]) == 0
    assert "to write; 1.0 MB free under" in capsys.readouterr().out


@pytest.mark.parametrize("n", [0, 10**8, 10**9 + 5 * 10**7])
def test_gb(n):
    assert preflight.gb(n) == {0: "0.0 MB", 10**8: "0.10 GB", 10**9 + 5 * 10**7: "1.05 GB"}[n]
