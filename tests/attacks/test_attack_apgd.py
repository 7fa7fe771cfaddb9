"""APGD: losses, schedule, random start, early exit, seeding, and step-by-step agreement with
the authors' reference implementation (pyautoattack)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from attack_models import closed_form_margin, linear_model, mlp, prototype_data
from hypothesis import given, settings
from hypothesis import strategies as st

from logitscope.attacks.apgd import (
    apgd,
    apgd_run,
    checkpoint_schedule,
    dlr_loss,
    dlr_targeted_loss,
    per_sample_noise,
    random_start,
)

HAVE_REFERENCE = importlib.util.find_spec("pyautoattack") is not None
needs_reference = pytest.mark.skipif(
    not HAVE_REFERENCE, reason="pyautoattack (the reference) is not installed: pip install pyautoattack==0.2.0"
)


def test_checkpoint_schedule_for_100_iterations():
    # Windows 22, 19, 16, 13, 10, 7, then 6 (the floor): checkpoints after iterations
    # 22, 41, 57, 70, 80, 87, 93, 99 (1-based).
    assert checkpoint_schedule(100) == {21: 22, 40: 19, 56: 16, 69: 13, 79: 10, 86: 7, 92: 6, 98: 6}
    assert checkpoint_schedule(1) == {0: 1}
    assert checkpoint_schedule(10) == {1: 2, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1}


def test_dlr_loss_by_hand():
    logits = torch.tensor([[4.0, 1.0, 2.0, 0.0], [1.0, 4.0, 2.0, 0.0]])
    y = torch.tensor([0, 0])
    # Correct: -(4 - 2) / (4 - 1); wrong: -(1 - 4) / (4 - 1).
    torch.testing.assert_close(dlr_loss(logits, y), torch.tensor([-2 / 3, 1.0]))
    target = torch.tensor([3, 1])
    # -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2): -(4 - 0) / (4 - 0.5); -(1 - 4) / (4 - 0.5).
    torch.testing.assert_close(dlr_targeted_loss(logits, y, target), torch.tensor([-4 / 3.5, 3 / 3.5]))


@settings(max_examples=30, deadline=None)
@given(
    shift=st.floats(-50, 50),
    scale=st.floats(0.1, 20),
    seed=st.integers(0, 2**16),
)
def test_dlr_is_shift_and_scale_invariant(shift, scale, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(8, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (8,), generator=g)
    torch.testing.assert_close(dlr_loss(scale * z + shift, y), dlr_loss(z, y))


def test_random_start_reaches_eps_and_is_per_sample():
    x = torch.full((6, 1, 5, 5), 0.5)
    idx = torch.arange(10, 16)
    s = random_start(x, 0.1, "Linf", idx, (0, 1, 0))
    linf = (s - x).flatten(1).abs().amax(1)
    torch.testing.assert_close(linf, torch.full((6,), 0.1), atol=1e-6, rtol=0)
    s2 = random_start(x, 0.3, "L2", idx, (0, 1, 0))
    torch.testing.assert_close((s2 - x).flatten(1).norm(dim=1), torch.full((6,), 0.3), atol=1e-6, rtol=0)
    # The same image index gives the same start whatever batch it travels in.
    s_part = random_start(x[3:5], 0.1, "Linf", idx[3:5], (0, 1, 0))
    assert torch.equal(s_part, s[3:5])
    assert not torch.equal(random_start(x, 0.1, "Linf", idx, (0, 1, 1)), s)  # another restart
    assert not torch.equal(per_sample_noise((4,), [0], (1, 1, 0)), per_sample_noise((4,), [0], (2, 1, 0)))


@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 0.1)])
def test_linear_model_attack_finds_the_closed_form_optimum(norm, eps):
    # For logits W x + b the worst case over the ball is known; the cascade CE -> DLR must
    # break exactly the images whose worst-case margin is negative.
    model = linear_model()
    g = torch.Generator().manual_seed(1)
    x = (0.3 + 0.4 * torch.rand(150, 1, 4, 4, generator=g)).double()
    with torch.no_grad():
        y = model(x).argmax(1)
    ce = apgd(model, x, y, eps, norm=norm, loss="ce")
    keep = ~ce.broken
    dlr = apgd(model, x[keep], y[keep], eps, norm=norm, loss="dlr", indices=keep.nonzero()[:, 0])
    robust = keep.clone()
    robust[keep] = ~dlr.broken
    margin = closed_form_margin(model, x, y, eps, norm)
    clear = margin.abs() > 1e-3
    assert 0.1 < robust.double().mean() < 0.9
    assert torch.equal(robust[clear], (margin > 0)[clear])


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
def test_every_point_is_in_the_ball_and_box(norm, loss):
    model = mlp()
    x, y = prototype_data(model, 60)
    x[:5] = 0.0  # images on the box's corner
    eps = 0.1 if norm == "Linf" else 0.5
    res = apgd(model, x, y, eps, norm=norm, loss=loss, n_iter=20, n_target_classes=3)
    d = (res.x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    with torch.no_grad():
        torch.testing.assert_close(res.logits, model(res.x_adv))  # logits belong to the points
    assert torch.equal(res.broken, res.logits.argmax(1) != y)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_early_exit_gives_the_verdicts_of_running_every_iteration(loss):
    model = mlp(dtype=torch.float64)
    x, y = prototype_data(model, 120, dtype=torch.float64)
    start = random_start(x, 0.08, "Linf", torch.arange(120), (0, 1, 0))
    full = apgd_run(model, x, y, start, 0.08, loss=loss, early_exit=False)
    fast = apgd_run(model, x, y, start, 0.08, loss=loss, early_exit=True)
    assert 0 < int(full.broken.sum()) < 120
    assert torch.equal(full.broken, fast.broken)
    # Broken images stop at the same first adversarial iterate; the others run to the end.
    assert torch.equal(full.x_adv, fast.x_adv)
    assert torch.equal(full.n_grad, fast.n_grad)
    assert float(fast.n_grad[fast.broken].double().mean()) < 101


def test_results_do_not_depend_on_batch_composition():
    model = mlp(dtype=torch.float64)
    x, y = prototype_data(model, 90, dtype=torch.float64)
    whole = apgd(model, x, y, 0.06, loss="dlr", n_restarts=2, seed=3)
    perm = torch.randperm(90, generator=torch.Generator().manual_seed(0))
    parts = [apgd(model, x[p], y[p], 0.06, loss="dlr", n_restarts=2, seed=3, indices=p) for p in perm.split(25)]
    broken = torch.cat([r.broken for r in parts])
    x_adv = torch.cat([r.x_adv for r in parts])
    assert torch.equal(broken, whole.broken[perm])
    torch.testing.assert_close(x_adv, whole.x_adv[perm], rtol=0, atol=1e-12)
    other_seed = apgd(model, x, y, 0.06, loss="dlr", n_restarts=2, seed=4)
    assert not torch.equal(other_seed.x_adv, whole.x_adv)


def test_restarts_never_lose_a_broken_image_and_keep_the_best_loss():
    model = mlp()
    x, y = prototype_data(model, 80)
    one = apgd(model, x, y, 0.05, n_iter=10, n_restarts=1)
    three = apgd(model, x, y, 0.05, n_iter=10, n_restarts=3)
    assert bool((three.broken | ~one.broken).all())  # restart 0 is shared: never fewer broken
    unbroken = ~three.broken
    assert bool((three.loss[unbroken] >= one.loss[unbroken]).all())


def test_targeted_needs_four_classes_and_dlr_three():
    model3 = linear_model(n_classes=3)
    x = torch.full((2, 1, 4, 4), 0.5, dtype=torch.float64)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="at least 4 classes"):
        apgd(model3, x, y, 0.1, loss="dlr-targeted")
    with pytest.raises(ValueError, match="at least 3 classes"):
        apgd(linear_model(n_classes=2), x, y, 0.1, loss="dlr")
    with pytest.raises(ValueError, match="eps=1.5"):
        apgd(model3, x, y, 1.5)


@needs_reference
@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 0.5)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_one_run_matches_the_reference_step_for_step(norm, eps, loss):
    from pyautoattack.autopgd_base import APGDAttack

    model = mlp()
    x, y = prototype_data(model, 100)
    y = model(x).argmax(1).detach()
    start = random_start(x, eps, norm, torch.arange(100), (0, 1, 0))
    ref = APGDAttack(model, n_iter=100, norm=norm, eps=eps, loss=loss, device="cpu")
    ref.init_hyperparam(x)
    x_best, acc, loss_best, _ = ref.attack_single_run(x, y, x_init=start)
    ours = apgd_run(model, x, y, start, eps, norm=norm, loss=loss, early_exit=False)
    assert 0 < int(ours.broken.sum()) < 100
    assert torch.equal(~ours.broken, acc)
    unbroken = ~ours.broken
    # Same floats: every step, step-size halving and best-point update coincide.
    assert torch.equal(ours.x_adv[unbroken], x_best[unbroken])
    assert torch.equal(ours.loss[unbroken], loss_best[unbroken])


@needs_reference
def test_targeted_run_matches_the_reference():
    from pyautoattack.autopgd_base import APGDAttack_targeted

    model = mlp()
    x, y = prototype_data(model, 80)
    y = model(x).argmax(1).detach()
    target = model(x).sort(dim=1).indices[:, -2].detach()
    start = random_start(x, 0.05, "Linf", torch.arange(80), (0, 12, 0))
    ref = APGDAttack_targeted(model, n_iter=50, eps=0.05, device="cpu")
    ref.init_hyperparam(x)
    ref.y_target = target
    x_best, acc, loss_best, _ = ref.attack_single_run(x, y, x_init=start)
    ours = apgd_run(model, x, y, start, 0.05, loss="dlr-targeted", n_iter=50, y_target=target, early_exit=False)
    assert torch.equal(~ours.broken, acc)
    assert torch.equal(ours.x_adv[~ours.broken], x_best[~ours.broken])
