"""Batched training (torch.func) against the oracle: the same runs trained one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitscope import train
from logitscope.data import load_data
from logitscope.distill import distillation
from logitscope.distill.batched import group_key, train_batched
from logitscope.distill.distillation import distill_config
from logitscope.store import checkpoints

# One step from the same state: the batched gradients are each run's own up to float32
# rounding (a vmapped convolution is a grouped one, whose sums run in another order): a few
# eps (1.2e-7) relative to the largest entry; a wrong target, loss or clip is off by O(1).
STEP_RTOL = 1e-4
# Whole runs: rounding differences are amplified along training where a step is not smooth in
# the weights (the L1 loss's sign, ReLU and max-pool switches): measured after the two
# epochs below, the batched weights differ from the one-at-a-time ones by 5e-7 to 5e-3 of the
# distance they moved from their initialization; a wrong target, lr or momentum puts it near
# 1. The bound sits an order of magnitude from both.
RUN_RTOL = 0.05


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from logitscope.config import run_preset

    cfg = run_preset("digits", method="st", epochs=2, checkpoint_epochs=[1], **{"monitor.pgd_n": 20})
    return train(cfg, out=tmp_path_factory.mktemp("teacher"), progress=False)


@pytest.fixture(scope="module")
def students(teacher):
    from logitscope.config import run_preset

    base = run_preset(
        "digits",
        method="st",
        epochs=2,
        **{"monitor.pgd_n": 20, "monitor.pgd_steps": 2, "optim.grad_clip": 1.0, "optim.milestones": [1]},
    )
    variants = [
        ("none", 1, "l1", 1.0),
        ("fix-k-permute", 1, "l1", 1.0),
        ("correct-fix-1", 1, "l1", 1.0),
        ("none", 1, "kl", 4.0),
    ]
    out = []
    for epoch in (1, 2):
        for transform, k, loss, t in variants:
            cfg = distill_config(base, str(teacher.dir), epoch, transform, k, loss, temperature=t)
            out.append(cfg.with_overrides([f"name=s-{transform}-{loss}-e{epoch}"]))
    return out


def _final(run):
    return checkpoints.load(checkpoints.checkpoint_path(run.dir, run.config.epochs))["model"]


def _deviation(b: dict, a: dict, start: dict) -> float:
    """||b - a|| / ||a - start|| over every parameter: the batched run's distance from the
    one-at-a-time run as a share of the distance that run trained."""
    num = sum(float(((b[k] - a[k]) ** 2).sum()) for k in a)
    den = sum(float(((a[k] - start[k]) ** 2).sum()) for k in a)
    return (num / den) ** 0.5


def test_one_batched_step_is_each_runs_own_step(students):
    from logitscope.distill import batched
    from logitscope.distill.losses import distill_loss
    from logitscope.training import engine

    cfgs = students[:4]
    data = load_data(cfgs[0].data)
    dev = torch.device("cpu")
    members = []
    for i, cfg in enumerate(cfgs):
        model, spec = engine.initial_model(cfg, data, dev)
        with torch.no_grad():  # different weights per member: a stack that mixed them up shows
            for p in model.parameters():
                p.add_(0.01 * i * torch.randn_like(p))
        m = batched._Member(cfg, None, model, engine.new_optimizer(cfg, model.parameters()), spec, 0)
        m.targets = torch.randn(len(data.y_train), data.n_classes) * (i + 1)
        members.append(m)
    stack = batched._Stack(members)
    x = data.x_train[:64].float() / 255
    idx = torch.arange(64)
    logits = stack.forward(stack.params, stack.buffers, x)
    losses = torch.stack(
        [
            distill_loss(logits[r], m.targets[idx], m.cfg.distill.loss, m.cfg.distill.temperature)
            for r, m in enumerate(members)
        ]
    )
    losses.sum().backward()
    for r, m in enumerate(members):
        own = distill_loss(m.model(x), m.targets[idx], m.cfg.distill.loss, m.cfg.distill.temperature)
        own.backward()
        torch.testing.assert_close(losses[r].detach(), own.detach(), rtol=STEP_RTOL, atol=0)
        for name, p in m.model.named_parameters():
            g, ref = stack.params[name].grad[r], p.grad
            assert float((g - ref).abs().max()) <= STEP_RTOL * float(ref.abs().max()), name
    # per-run clipping: each run's gradient norm is clipped on its own
    norms = [float(torch.cat([p.grad.flatten() for p in m.model.parameters()]).norm()) for m in members]
    stack.clip(max_norm=min(norms) * 0.5)
    for r in range(len(members)):
        clipped = float(torch.cat([p.grad[r].flatten() for p in stack.params.values()]).norm())
        assert clipped == pytest.approx(min(norms) * 0.5, rel=1e-4)


def test_batched_runs_follow_the_one_at_a_time_runs(students, tmp_path):
    from logitscope.training import engine

    assert len({group_key(c) for c in students}) == 1  # one data stream: one group
    batched = train_batched(students, out=tmp_path / "batched")
    alone = [train(c, out=tmp_path / "alone", progress=False) for c in students]
    data = load_data(students[0].data)
    start = engine.initial_model(students[0], data, torch.device("cpu"))[0].state_dict()
    for b, a in zip(batched, alone, strict=True):
        assert b.complete and b.dir.name == a.dir.name
        pb, pa = _final(b), _final(a)
        assert pb.keys() == pa.keys()
        assert _deviation(pb, pa, start) < RUN_RTOL, b.dir.name
        for split in ("train", "test"):
            assert b.logits.epochs(split) == a.logits.epochs(split) == [1, 2]
            agree = (b.logits.get(split, 2).argmax(1) == a.logits.get(split, 2).argmax(1)).mean()
            assert agree >= 0.98, (b.dir.name, split, agree)
        rb, ra = b.metrics(), a.metrics()
        assert [r["epoch"] for r in rb] == [r["epoch"] for r in ra] and [r["lr"] for r in rb] == [r["lr"] for r in ra]
        assert [float(r["lr"]) for r in rb] == pytest.approx([0.05, 0.005])  # the milestone after epoch 1
        np.testing.assert_array_equal(
            np.load(b.dir / "targets" / "targets.npy"), np.load(a.dir / "targets" / "targets.npy")
        )
        assert sorted(p.name for p in (b.dir / "checkpoints").iterdir()) == sorted(
            p.name for p in (a.dir / "checkpoints").iterdir()
        )
    # the students differ from one another (a stack that shared one model would not)
    assert not torch.equal(_final(batched[0])["stages.logits.weight"], _final(batched[1])["stages.logits.weight"])
    # a complete group is returned untouched
    mtime = (batched[0].dir / "metrics.csv").stat().st_mtime_ns
    train_batched(students, out=tmp_path / "batched")
    assert (batched[0].dir / "metrics.csv").stat().st_mtime_ns == mtime


def test_a_diverging_run_leaves_the_group_and_the_others_finish(students, tmp_path, monkeypatch):
    group = students[:3]
    real = distillation.prepare_targets

    def poisoned(cfg, run, data, device=None):
        t = real(cfg, run, data, device)
        return np.full_like(t, np.nan) if cfg.distill.transform == "fix-k-permute" else t

    monkeypatch.setattr(distillation, "prepare_targets", poisoned)
    runs = train_batched(group, out=tmp_path / "b")
    monkeypatch.setattr(distillation, "prepare_targets", real)
    bad = runs[1]
    assert bad.meta["status"] == "failed" and "diverged at epoch 1: loss nan at batch 1" in bad.meta["reason"]
    assert not checkpoints.last_path(bad.dir).is_file()  # nothing of the diverged epoch is written
    from logitscope.training import engine

    data = load_data(group[0].data)
    start = engine.initial_model(group[0], data, torch.device("cpu"))[0].state_dict()
    for b, cfg in ((runs[0], group[0]), (runs[2], group[2])):
        a = train(cfg, out=tmp_path / "a", progress=False)
        assert b.complete
        assert _deviation(_final(b), _final(a), start) < RUN_RTOL


def test_one_at_a_time_a_diverging_run_does_not_stop_the_others(students, tmp_path, monkeypatch):
    """The fallback (here: runs resumed at different epochs) trains each run alone; one that
    diverges is recorded failed and the next ones still train."""

    bad, behind, fresh = students[4], students[1], students[2]  # bad: transform none, L1
    with pytest.raises(KeyboardInterrupt):  # killed after its first epoch (19 batches)
        distillation.train_student(behind, out=tmp_path, progress=False, stop_after_batches=20)
    real = distillation.prepare_targets

    def poisoned(cfg, run, data, device=None):
        t = real(cfg, run, data, device)
        return np.full_like(t, np.nan) if cfg.distill.transform == "none" else t

    monkeypatch.setattr(distillation, "prepare_targets", poisoned)
    runs = train_batched([bad, behind, fresh], out=tmp_path, resume=True)
    assert runs[0].meta["status"] == "failed" and "diverged at epoch 1" in runs[0].meta["reason"]
    assert runs[1].complete and runs[2].complete
    assert [int(r["epoch"]) for r in runs[1].metrics()] == [1, 2]


def test_runs_of_different_streams_are_refused(students, tiny_config):
    other_seed = students[1].with_overrides(["seed=5"])
    with pytest.raises(ValueError, match=r"differ from the first in more than their distillation targets"):
        train_batched([students[0], other_seed])
    with pytest.raises(ValueError, match="not distillation runs"):
        train_batched([tiny_config("st")])
    assert group_key(tiny_config("st")) is None
    assert group_key(students[0]) == group_key(students[0].with_overrides(["distill.k=3", "name=x"]))


def test_a_killed_batch_resumes_to_the_same_runs(students, tmp_path, monkeypatch):
    """Killed in epoch 2: every run's last.pt holds epoch 1, and the rerun continues the batch
    from there, bitwise as the uninterrupted batch. Killed between two runs' records of epoch
    2: the runs stand at different epochs and each continues alone (as `train` would)."""
    from logitscope.distill import batched
    from logitscope.training import engine

    group = students[:3]
    whole = train_batched(group, out=tmp_path / "whole")
    calls = {"n": 0}
    real_loss = batched.distill_loss

    def dying_loss(*a, **k):
        calls["n"] += 1
        if calls["n"] > 19 * len(group) + 5:  # 19 batches of 64 per epoch: in epoch 2
            raise KeyboardInterrupt("killed (test)")
        return real_loss(*a, **k)

    monkeypatch.setattr(batched, "distill_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train_batched(group, out=tmp_path / "killed")
    monkeypatch.setattr(batched, "distill_loss", real_loss)
    assert {checkpoints.load(checkpoints.last_path(r.dir))["epoch"] for r in whole} == {2}
    resumed = train_batched(group, out=tmp_path / "killed", resume=True)
    for a, b in zip(whole, resumed, strict=True):
        assert b.complete and [r["loss"] for r in b.metrics()] == [r["loss"] for r in a.metrics()]
        for name, ref in _final(a).items():
            assert torch.equal(_final(b)[name], ref), (b.dir.name, name)

    real_record = engine.record_epoch
    seen = {"n": 0}

    def dying_record(run, cfg, *a, **k):
        if a[5] == 2:  # epoch 2: the first run records it, the kill comes before the second
            seen["n"] += 1
            if seen["n"] == 2:
                raise KeyboardInterrupt("killed between records (test)")
        return real_record(run, cfg, *a, **k)

    monkeypatch.setattr(engine, "record_epoch", dying_record)
    with pytest.raises(KeyboardInterrupt):
        train_batched(group, out=tmp_path / "split")
    monkeypatch.setattr(engine, "record_epoch", real_record)
    epochs = [checkpoints.load(checkpoints.last_path(tmp_path / "split" / c.run_id))["epoch"] for c in group]
    assert epochs == [2, 1, 1]
    split = train_batched(group, out=tmp_path / "split", resume=True)
    data = load_data(group[0].data)
    start = engine.initial_model(group[0], data, torch.device("cpu"))[0].state_dict()
    for a, b in zip(whole, split, strict=True):
        assert b.complete and [int(r["epoch"]) for r in b.metrics()] == [1, 2]
        assert _deviation(_final(b), _final(a), start) < RUN_RTOL
