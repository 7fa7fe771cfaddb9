"""Distillation losses against hand-computed values."""

import math

import pytest
import torch

from logitscope.distill.losses import distill_loss

S = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
T = torch.tensor([[2.0, 0.0, 3.0], [1.0, -1.0, 0.5]])


def test_l1_is_the_default_and_averages_every_logit():
    # row 0: |1-2| + |2-0| + 0 = 3; row 1: 1 + 1 + 0.5 = 2.5; over 2 x 3 logits
    assert distill_loss(S, T).item() == pytest.approx(5.5 / 6)
    assert distill_loss(S, T, "l1").item() == pytest.approx(5.5 / 6)


def test_mse_by_hand():
    # row 0: 1 + 4 + 0 = 5; row 1: 1 + 1 + 0.25 = 2.25
    assert distill_loss(S, T, "mse").item() == pytest.approx(7.25 / 6)


def _kl_by_hand(s_row, t_row, temp):
    zs = [v / temp for v in s_row]
    zt = [v / temp for v in t_row]
    ps = [math.exp(v) / sum(math.exp(u) for u in zs) for v in zs]
    pt = [math.exp(v) / sum(math.exp(u) for u in zt) for v in zt]
    return sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_kl_by_hand_scaled_by_the_temperature(temp):
    want = temp * sum(_kl_by_hand(s, t, temp) for s, t in zip(S.tolist(), T.tolist(), strict=True)) / 2
    got = distill_loss(S, T, "kl", temperature=temp).item()
    assert got == pytest.approx(want, rel=1e-5)


def test_kl_at_temperature_one_is_the_plain_kl_divergence():
    # teacher softmax (3/4, 1/4), student uniform: KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    s = torch.zeros(1, 2)
    t = torch.tensor([[math.log(3.0), 0.0]])
    assert distill_loss(s, t, "kl").item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0, 30.0])
def test_kl_gradient_is_the_soft_label_cross_entropy_gradient_at_every_temperature(temp):
    # targets chosen so that softmax(t / T) = (3/4, 1/4) for every T; the student is uniform,
    # so d/ds = (q - p) / B = (1/2 - 3/4, 1/2 - 1/4) / 2 for each of the B = 2 rows, whatever T
    # (Hinton's T^2 scaling would give T times this)
    s = torch.zeros(2, 2, requires_grad=True)
    t = torch.tensor([[temp * math.log(3.0), 0.0], [0.0, temp * math.log(3.0)]])
    loss = distill_loss(s, t, "kl", temperature=temp)
    assert loss.item() == pytest.approx(temp * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(s.grad, torch.tensor([[-0.125, 0.125], [0.125, -0.125]]))


def test_kl_of_opposite_saturated_logits_by_hand():
    # p = (0, 1), log q = (0, -2e4 / T): T * KL = T * (2e4 / T) = 2e4 for every T; d/ds = q - p
    s = torch.tensor([[1e4, -1e4]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4]])
    for temp in (1.0, 4.0):
        s.grad = None
        loss = distill_loss(s, t, "kl", temperature=temp)
        assert loss.item() == pytest.approx(2e4, rel=1e-6)
        loss.backward()
        torch.testing.assert_close(s.grad, torch.tensor([[1.0, -1.0]]))


@pytest.mark.parametrize("kind", ["l1", "mse", "kl"])
@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_finite_for_extreme_logits_with_bounded_kl_gradients(kind, scale):
    g = torch.Generator().manual_seed(0)
    b, c = 16, 10
    s = ((torch.rand(b, c, generator=g) * 2 - 1) * scale).requires_grad_()
    t = (torch.rand(b, c, generator=g) * 2 - 1) * scale
    t[0] = s.detach()[0]  # one row matched exactly, one with every logit tied
    t[1] = scale
    for temp in (1.0, 4.0) if kind == "kl" else (1.0,):
        s.grad = None
        loss = distill_loss(s, t, kind, temperature=temp)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() >= 0
        assert torch.isfinite(s.grad).all()
        if kind == "kl":
            # (q - p) / B: each row sums to 0 and has L1 norm at most 2 / B, whatever T and scale
            torch.testing.assert_close(s.grad.sum(1), torch.zeros(b), atol=1e-6, rtol=0)
            assert s.grad.abs().sum(1).max().item() <= 2 / b + 1e-6
        if kind == "l1":
            assert s.grad.abs().max().item() <= 1 / (b * c) + 1e-9


def test_zero_when_the_student_matches():
    for kind in ("l1", "mse", "kl"):
        assert distill_loss(T, T, kind).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_ignores_a_per_row_shift_of_the_logits_l1_does_not():
    shifted = T + torch.tensor([[5.0], [-2.0]])
    assert distill_loss(shifted, T, "kl").item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(shifted, T, "l1").item() == pytest.approx((15 + 6) / 6)


def test_gradients_reach_the_student_only():
    s = S.clone().requires_grad_()
    t = T.clone().requires_grad_()
    distill_loss(s, t, "l1").backward()
    # d/ds mean_{b,c} |s - t| = sign(s - t) / (B C)
    torch.testing.assert_close(s.grad, torch.sign(S - T) / 6)
    assert t.grad is None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((S, T, "ce"), "expected one of l1, kl, mse"),
        ((S, T[:, :2], "l1"), "same \\(B, C\\) shape"),
        ((S[0], T[0], "l1"), "same \\(B, C\\) shape"),
        ((S, T, "kl", 0.0), "temperature=0.0"),
        ((S, T, "l1", 2.0), "only 'kl' uses one"),
    ],
)
def test_bad_inputs_raise_one_line(args, match):
    with pytest.raises(ValueError, match=match) as err:
        distill_loss(*args)
    assert "\n" not in str(err.value)
