"""The bill of a plan: image passes counted by hand, MACs against published figures, and the
paper's own runs projecting to the paper's table 3."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from logitscope.config import run_preset
from logitscope.plan.cost import (
    FORWARD,
    PAPER_HOURS,
    DataShape,
    build_for,
    cifar_shape,
    eval_passes,
    measure_rate,
    model_macs,
    paper_rates,
    run_passes,
)
from logitscope.plan.preflight import manifold_memory

CIFAR10 = DataShape(45_000, 5_000, 10_000, 10, (3, 32, 32))


def test_cifar_shape_is_the_published_split_after_the_cuts():
    assert cifar_shape("cifar10") == CIFAR10  # appendix A.2: 500 per class held out
    assert cifar_shape("cifar100") == DataShape(50_000, 0, 10_000, 100, (3, 32, 32))
    assert cifar_shape("cifar10", 2, 20, 10) == DataShape(200, 20, 100, 10, (3, 32, 32))


def test_macs_of_a_hand_computed_net_and_of_the_papers_resnet18():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 1, groups=2), nn.Flatten(), nn.Linear(8 * 25, 7))
    # conv 5x5x4 outputs x 3*3*3 each; grouped 1x1: 5x5x8 outputs x (4/2) each; linear 200 x 7
    assert model_macs(net, (3, 5, 5)) == 100 * 27 + 200 * 2 + 200 * 7
    # ResNet-18 for CIFAR (the paper's [9] implementation): 0.56 GMACs per 32x32 image
    macs = model_macs(build_for(run_preset("cifar10-paper"), CIFAR10), (3, 32, 32))
    assert macs == pytest.approx(0.556e9, rel=0.01)
    # width 32: every convolution has half the input and half the output channels
    half = model_macs(build_for(run_preset("cifar10-paper", **{"model.width": 32}), CIFAR10), (3, 32, 32))
    assert half == pytest.approx(macs / 4, rel=0.02)


def test_run_passes_counted_by_hand():
    st = run_preset("cifar10-paper")
    shape = DataShape(100, 10, 20, 10, (3, 32, 32))
    monitor = 20 * (10 + FORWARD)  # pgd_n 1000 capped at the 20 test images, PGD-10 and a forward
    assert run_passes(st, shape) == pytest.approx(200 * (100 + 130 * FORWARD + monitor))
    at = run_preset("cifar10-paper", method="at")  # 10 PGD steps per training image
    assert run_passes(at, shape) == pytest.approx(200 * (100 * 11 + 130 * FORWARD + monitor))
    kd = run_preset("cifar10-paper", method="distill", epochs=3, **{"distill.teacher": "t", "distill.passes": 8})
    assert run_passes(kd, shape) == pytest.approx(3 * (100 + 130 * FORWARD + monitor) + 8 * 100 * FORWARD)
    # a lean student: 20 epochs, logits every 5th (snapshots on 2, the collapse check's, and on
    # 5, 10, 15, 20; checkpoint_every 20 keeps only the last), the PGD monitor on 10 and 20
    lean = kd.with_overrides({"epochs": 20, "store.logits_every": 5, "monitor.pgd_every": 10, "distill.passes": 1})
    assert run_passes(lean, shape) == pytest.approx(20 * 100 + 5 * 130 * FORWARD + 2 * monitor + 100 * FORWARD)


def test_eval_passes_are_the_attacks_upper_bounds():
    paper = {"n_iter": 100, "n_restarts": 1, "n": None}
    assert eval_passes(paper, 1000, 50) == pytest.approx(1000 * (200 + FORWARD))  # APGD-CE + APGD-DLR
    assert eval_passes({**paper, "n": 10}, 1000, 50) == pytest.approx(10 * (200 + FORWARD))
    assert eval_passes({**paper, "split": "val"}, 1000, 50) == pytest.approx(50 * (200 + FORWARD))
    assert eval_passes({**paper, "n": 5, "protocol": "odi"}, 1000, 50) == pytest.approx(5 * (20 * 22 + FORWARD))


def test_the_papers_runs_cost_what_table_3_says():
    rates = paper_rates()
    macs = model_macs(build_for(run_preset("cifar10-paper"), CIFAR10), (3, 32, 32))
    runs = {
        "standard": run_preset("cifar10-paper"),
        "pgd-at": run_preset("cifar10-paper", method="at"),
        "distill": run_preset("cifar10-paper", method="distill", **{"distill.teacher": "t", "distill.passes": 8}),
    }
    for kind, cfg in runs.items():
        assert rates.hours(kind, run_passes(cfg, CIFAR10), macs) == pytest.approx(PAPER_HOURS[kind])
    # half the epochs of a quarter-cost model: an eighth of the hours
    quarter = run_preset("cifar10-paper", epochs=100, **{"model.width": 32})
    hours = rates.hours("standard", run_passes(quarter, CIFAR10), model_macs(build_for(quarter, CIFAR10), (3, 32, 32)))
    assert hours == pytest.approx(1.66 / 8, rel=0.02)


def test_measured_rate_is_a_positive_rate_at_the_cpu_batch():
    cfg = run_preset("digits")
    rate, batch = measure_rate(cfg, DataShape(1200, 0, 397, 10, (1, 8, 8)), torch.device("cpu"), seconds=0.05)
    assert rate > 0 and batch == 32  # the digits recipe's 64, capped at 32 on a CPU


def test_manifold_memory_from_the_layer_taps_by_hand():
    cfg = run_preset("cifar10-paper", **{"model.width": 8})
    shape = DataShape(10, 0, 10, 10, (3, 32, 32))
    mem = manifold_memory(cfg, shape, p=10, m=4, max_features=5000)
    model = build_for(cfg, shape)
    taps = model.forward_intermediates(torch.zeros(1, 3, 32, 32))
    dims = [3072] + [int(t.numel()) for t in taps.values()]
    assert mem.layers == len(dims) == 1 + len(model.layer_names)
    assert 8 * 32 * 32 in dims  # the stem at width 8: 8 channels of 32x32 (8,192 > max_features)
    wide = [d for d in dims if d > 5000]
    assert mem.projections == sum(d * 5000 * 8 for d in wide)
    assert mem.activations == 2 * 10 * 4 * sum(min(d, 5000) for d in dims) * 8
    assert mem.mftma == 4 * 10 * 4 * 5000 * 8
    assert mem.batch == 40 * sum(dims) * 4 + 40 * max(dims) * 8  # 40 points: one batch
    assert mem.total == mem.projections + mem.batch + mem.activations + mem.attack + mem.mftma
    assert "max_features" in mem.describe() and "peak memory about" in mem.describe()
