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
def test_kl_by_hand_with_temperature_squared(temp):
    want = (
        temp**2
        * sum(_kl_by_hand(s, t, temp) for s, t in zip(S.tolist(), T.tolist(), strict=True))
        / 2
    )
    got = distill_loss(S, T, "kl", temperature=temp).item()
    assert got == pytest.approx(want, rel=1e-5)


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
