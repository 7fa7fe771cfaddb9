"""ODI-PGD: margin loss, early exit, per-image seeding, the ball and the box."""

from __future__ import annotations

import torch
from attack_models import mlp, prototype_data

from logitscope.attacks.odi import margin_loss, odi_pgd


def test_margin_loss_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    torch.testing.assert_close(margin_loss(logits, torch.tensor([0, 0])), torch.tensor([-1.0, 5.0]))


def test_early_exit_gives_the_verdicts_of_running_every_step():
    model = mlp(dtype=torch.float64)
    x, y = prototype_data(model, 80, dtype=torch.float64)
    full = odi_pgd(model, x, y, 0.05, restarts=3, early_exit=False)
    fast = odi_pgd(model, x, y, 0.05, restarts=3)
    assert 0 < int(fast.broken.sum()) < 80
    assert torch.equal(full.broken, fast.broken)
    assert torch.equal(full.x_adv, fast.x_adv)
    assert fast.n_grad.sum() < 3 * 23 * 80


def test_points_in_ball_and_box_and_independent_of_batches():
    model = mlp(dtype=torch.float64)
    x, y = prototype_data(model, 60, dtype=torch.float64)
    x[:4] = 1.0
    whole = odi_pgd(model, x, y, 0.04, restarts=2, seed=5)
    d = (whole.x_adv - x).flatten(1).abs().amax(1)
    assert float(d.max()) <= 0.04 + 1e-12 and 0 <= float(whole.x_adv.min()) <= float(whole.x_adv.max()) <= 1
    halves = [
        odi_pgd(model, x[s], y[s], 0.04, restarts=2, seed=5, indices=torch.arange(60)[s])
        for s in (slice(0, 31), slice(31, 60))
    ]
    assert torch.equal(torch.cat([h.broken for h in halves]), whole.broken)
    torch.testing.assert_close(torch.cat([h.x_adv for h in halves]), whole.x_adv, rtol=0, atol=1e-12)


def test_more_restarts_break_at_least_as_many():
    model = mlp()
    x, y = prototype_data(model, 80)
    few = odi_pgd(model, x, y, 0.04, restarts=1, steps=5)
    many = odi_pgd(model, x, y, 0.04, restarts=4, steps=5)
    assert bool((many.broken | ~few.broken).all())
    with torch.no_grad():
        torch.testing.assert_close(many.logits, model(many.x_adv))
