"""PGD stays in the eps-ball and the box while raising the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from logitscope.attacks.pgd import fgsm, pgd
from logitscope.models import build_model


@settings(max_examples=15, deadline=None)
@given(eps=st.floats(0.0, 0.5), steps=st.integers(0, 5), seed=st.integers(0, 10_000))
def test_pgd_in_ball_and_box(eps, steps, seed):
    torch.manual_seed(seed)
    model = build_model("small-cnn", 10, 1, [0.3], [0.4]).eval()
    x = torch.rand(8, 1, 8, 8)
    x[0] = 0.0  # images at the box's edges
    x[1] = 1.0
    y = torch.randint(0, 10, (8,))
    xa = pgd(model, x, y, eps, eps / 4 + 1e-3, steps, True, torch.Generator().manual_seed(seed))
    assert (xa - x).abs().max() <= eps + 1e-6
    assert xa.min() >= 0 and xa.max() <= 1


def test_pgd_raises_the_loss_and_beats_fgsm_and_noise():
    torch.manual_seed(0)
    model = build_model("small-cnn", 10, 1, [0.3], [0.4]).eval()
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    eps = 0.1
    points = {
        "noise": pgd(model, x, y, eps, 0.0, 0),
        "one": fgsm(model, x, y, eps),
        "many": pgd(model, x, y, eps, eps / 4, 10),
    }
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
        noise, one, many = (F.cross_entropy(model(points[k]), y).item() for k in ("noise", "one", "many"))
    assert many > one > clean and many > noise


def test_pgd_computes_no_weight_gradients():
    model = build_model("small-cnn", 10, 1, [0.3], [0.4]).eval()
    pgd(model, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), 0.1, 0.03, 3)
    assert all(p.grad is None for p in model.parameters())


def test_eps_outside_unit_interval_refused():
    model = build_model("small-cnn", 10, 1, [0.3], [0.4])
    with pytest.raises(ValueError, match=r"eps=1.5: expected a value in \[0, 1\]"):
        pgd(model, torch.rand(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), 1.5, 0.1, 1)
