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


@pytest.fixture
def quick_rate(monkeypatch):
    """This machine's measured rate, stubbed: a ResNet-18 step on a loaded CPU takes seconds."""
    monkeypatch.setattr(preflight, "measure_rate", lambda cfg, shape, device: (100.0, 32))


def test_dry_run_of_cifar10_paper_without_the_tarball_prints_the_bill(tmp_path, capsys, quick_rate):
    out = tmp_path / "out"
    rc = main(
        [
            "reproduce",
            "--preset",
            "cifar10-paper",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--out",
            str(out),
            "--dry-run",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 1  # reproduce would refuse: the dry run says why, after the bill
    assert "data: cifar10 NOT READY: data folder" in text and "does not exist" in text
    # the published sizes stand in: 45,000 + 5,000 + 10,000 images
    assert "45,000 training, 5,000 validation, 10,000 test images" in text
    preset = resolve_preset("cifar10-paper", [], str(tmp_path / "nowhere"))
    store = project_store(preset, out, None, preflight.cifar_shape("cifar10"))
    assert store.describe() in text and store.total_bytes > 30e9  # tens of GB: the paper's plan
    assert "store.logits_dtype: float16" in text and "store.logits_every: 5" in text
    # students keep 10 checkpoints and last.pt at checkpoint_every 20: their last alone saves most
    assert "distill.set: {checkpoint_every: 0}" in text and store.lean_checkpoint_bytes < store.checkpoint_bytes / 3
    assert "peak memory about" in text and "GPU-hours at the paper's rates" in text
    # 3 ST (1.66 h) + 3 AT (18 h) + the students (3.83 h each) + evaluations: hundreds of GPU-hours
    total = next(line for line in text.splitlines() if line.strip().startswith("total"))
    gpu_hours = float(total.split("rates:")[1].strip(" )").replace(",", ""))
    n_students = store.runs - 6
    assert 3 * 1.66 + 3 * 18 + n_students * 3.83 < gpu_hours < 2 * (3 * 1.66 + 3 * 18 + n_students * 3.83)
    assert not out.exists()


def test_dry_run_on_a_checked_tarball_says_so(tmp_path, capsys, quick_rate, accept_synthetic_cifar):
    out = tmp_path / "out"
    args = ["reproduce", "--preset", "cifar10-smoke", "--data-dir", str(accept_synthetic_cifar), "--out", str(out)]
    assert main([*args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert f"from {accept_synthetic_cifar / 'cifar-10-python.tar.gz'}: md5" in text and "checked" in text
    assert "160 training, 20 validation, 100 test images, 10 classes, 3x32x32" in text
    assert "device: cpu" in text and "bf16 autocast, channels_last, torch.compile" in text


@pytest.mark.parametrize("damage", ["missing", "truncated", "other bytes"])
def test_reproduce_refuses_a_missing_or_corrupt_tarball_in_one_line(tmp_path, capsys, synthetic_cifar_dir, damage):
    """Without the test-only md5 fixture, before any work: nothing is written."""
    data = tmp_path / "data"
    data.mkdir()
    raw = (synthetic_cifar_dir / "cifar-10-python.tar.gz").read_bytes()
    if damage == "truncated":
        (data / "cifar-10-python.tar.gz").write_bytes(raw[: len(raw) // 2])
    elif damage == "other bytes":  # a well-formed tarball whose md5 is not the published one
        (data / "cifar-10-python.tar.gz").write_bytes(raw)
    out = tmp_path / "out"
    rc = main(["reproduce", "--preset", "cifar10-smoke", "--data-dir", str(data), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    expected = "no cifar-10-python.tar.gz" if damage == "missing" else "md5 mismatch"
    assert expected in err[0] and "expected" in err[0]
    assert not out.exists()
