"""The checks that always run before a robustness number is trusted."""

from __future__ import annotations

import logging

import pytest
import torch
from attack_models import linear_model, mlp, prototype_data
from torch import nn

from logitscope.attacks.checks import (
    check_accuracies,
    check_zero_gradients,
    perturbation_norms,
)
from logitscope.attacks.protocol import evaluate_model
from logitscope.config import ProtocolConfig


def run(model, x, y, **settings):
    return evaluate_model(model, x, y, ProtocolConfig(**settings), progress=False)


class Noisy(nn.Module):
    """A randomized defense: Gaussian noise on the input at every pass, even in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + 0.05 * torch.randn_like(x))


class Masked(nn.Module):
    """Masks gradients completely: the forward pass sees ``x``, the backward pass zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.detach() + 0 * x)


def test_train_mode_is_switched_to_eval_with_a_warning_and_restored(caplog):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 10))
    model.train()
    x, y = prototype_data(model.eval(), 30)
    model.train()
    with caplog.at_level(logging.WARNING):
        res = run(model, x, y, eps=0.03, n_iter=5)  # dropout would be refused as randomized
    assert "train mode" in caplog.text
    assert model.training
    with torch.no_grad():
        clean = model.eval()(x)
    torch.testing.assert_close(torch.from_numpy(res.clean_logits), clean)


def test_randomized_model_is_refused_unless_allowed(caplog):
    model = Noisy(mlp()).eval()
    x, y = prototype_data(mlp(), 30)
    with pytest.raises(ValueError, match="randomized"):
        run(model, x, y, eps=0.03, n_iter=5)
    with caplog.at_level(logging.WARNING):
        run(model, x, y, eps=0.03, n_iter=5, allow_randomized=True)
    assert "randomized" in caplog.text


class NaNOnSome(nn.Module):
    """A diverged model: NaN logits on the images whose first pixel is above a threshold."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        bad = x.flatten(1)[:, 0] > 0.5
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def test_nan_outputs_are_reported_as_such_never_as_randomness():
    base = mlp()
    x, y = prototype_data(base, 30)
    flat = x.clone().view(len(x), -1)
    flat[:, 0] = 0.0
    flat[:7, 0] = 1.0  # 7 of 30 images give NaN logits: counted, not called "randomized"
    # the determinism probe sees the first 16 images, 7 of them NaN
    with pytest.raises(ValueError, match=r"^model outputs NaN/inf on 7 of 16 images") as err:
        run(NaNOnSome(base).eval(), flat.view_as(x), y, eps=0.03, n_iter=5)
    assert "randomized" not in str(err.value)
    assert "\n" not in str(err.value)


def test_probabilities_are_refused():
    base = mlp()
    x, y = prototype_data(base, 20)
    with pytest.raises(ValueError, match="probabilities"):
        run(nn.Sequential(base, nn.Softmax(dim=1)), x, y)


def test_dlr_with_two_classes_is_refused_but_odi_runs():
    model = linear_model(n_classes=2, dtype=torch.float32)
    x = torch.rand(20, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(ValueError, match="DLR loss needs at least 3 classes"):
        run(model, x, y)
    res = run(model, x, y, protocol="odi", eps=0.05, odi_restarts=2)
    assert res.clean_accuracy == 1.0


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"eps": 1.5}, "eps=1.5"),
        ({"eps": -0.1}, "eps=-0.1"),
        ({"protocol": "fgsm"}, "protocol='fgsm'"),
        ({"norm": "L1"}, "norm='L1'"),
        ({"protocol": "odi", "norm": "L2"}, "L-inf only"),
        ({"precision": "fp16"}, "precision='fp16'"),
        ({"n_iter": 0}, "n_iter=0"),
        ({"seed": -1}, "seed=-1"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_settings_are_one_line_errors(settings, match):
    with pytest.raises(ValueError, match=match) as err:
        ProtocolConfig(**settings)
    assert "\n" not in str(err.value)


def test_bad_inputs_are_one_line_errors():
    model = mlp()
    x, y = prototype_data(model, 10)
    cases = [
        (x * 2, y, r"\[0, 1\]"),
        (x - 0.5, y, r"\[0, 1\]"),
        (x.masked_fill(x > 0.7, float("nan")), y, "NaN"),
        (x, y[:5], "one per image"),
        (x, y + 10, "the model has 10 classes"),
        (x, y.float(), "integers"),
        (x.long(), y, "dtype"),
    ]
    for xb, yb, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            run(model, xb, yb, n_iter=2)
        assert "\n" not in str(err.value)


def test_points_outside_the_ball_or_box_are_caught():
    x = torch.full((3, 1, 2, 2), 0.5)
    ok = x + 0.1
    torch.testing.assert_close(perturbation_norms(ok, x, 0.1, "Linf"), torch.full((3,), 0.1))
    with pytest.raises(RuntimeError, match="distance"):
        perturbation_norms(x + 0.11, x, 0.1, "Linf")
    with pytest.raises(RuntimeError, match="distance"):
        perturbation_norms(x + 0.1, x, 0.1, "L2")  # L2 norm 0.2
    with pytest.raises(RuntimeError, match="box"):
        perturbation_norms(torch.full((3, 1, 2, 2), 1.05), torch.ones(3, 1, 2, 2), 0.1, "Linf")


def test_robust_without_clean_correct_is_caught():
    check_accuracies(torch.tensor([True, True, False]), torch.tensor([True, False, False]))
    with pytest.raises(RuntimeError, match="robust accuracy > clean"):
        check_accuracies(torch.tensor([True, False]), torch.tensor([False, True]))


def test_gradient_masking_is_flagged_at_large_eps(caplog):
    # At eps = 0.5 every image's ball holds the gray image: only its class can stay robust.
    x = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    honest = linear_model(10, 64, dtype=torch.float32)
    for model, masked in ((honest, False), (Masked(honest).eval(), True)):
        with torch.no_grad():
            y = model(x).argmax(1)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            res = run(model, x, y, eps=0.5, n_iter=10)
        assert ("gradient masking suspected" in caplog.text) == masked
        assert ("zero input gradient" in caplog.text) == masked  # seen at DLR's start
        assert (res.robust_accuracy > 0.5) == masked


def test_zero_gradient_count():
    g = torch.zeros(4, 1, 2, 2)
    g[1, 0, 0, 0] = 1e-30
    assert check_zero_gradients(g) == 3
