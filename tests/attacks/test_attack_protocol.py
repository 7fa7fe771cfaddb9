"""The paper's protocol: closed-form cases, records, batch-size independence, resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from attack_models import closed_form_margin, linear_model, mlp, prototype_data
from torch import nn

from logitscope.attacks.protocol import (
    BY_APGD_CE,
    BY_APGD_DLR,
    MISCLASSIFIED,
    ROBUST,
    ProtocolConfig,
    ProtocolResult,
    evaluate_model,
)


def linear_data(
    model: nn.Module, n: int = 120, seed: int = 1, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0.3, 0.7] (the box stays inactive for eps <= 0.3), labeled by the model but
    for every 10th image."""
    g = torch.Generator().manual_seed(seed)
    x = (0.3 + 0.4 * torch.rand(n, 1, 4, 4, generator=g)).to(dtype)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::10] = (y[::10] + 1) % 4
    return x, y


def run(model, x, y, **settings) -> ProtocolResult:
    return evaluate_model(model, x, y, ProtocolConfig(**settings), progress=False)


@pytest.mark.parametrize("protocol", ["paper", "odi"])
def test_linear_model_robust_iff_closed_form_margin_survives(protocol):
    model = linear_model()
    x, y = linear_data(model)
    res = run(model, x, y, protocol=protocol, eps=0.04, batch_size=50, odi_restarts=5)
    margin = closed_form_margin(model, x, y, 0.04, "Linf")
    correct = torch.from_numpy(res.broken_by != MISCLASSIFIED)
    expected = (margin > 0) & correct
    clear = margin.abs() > 1e-3
    assert 0.1 < res.robust_accuracy < res.clean_accuracy
    assert torch.equal(torch.from_numpy(res.robust)[clear], expected[clear])


def test_records_are_consistent():
    model = mlp()
    x, y = prototype_data(model, 100)
    res = run(model, x, y, eps=0.05, batch_size=32)
    n, k = 100, 10
    assert res.label.dtype == np.int64 and res.label.shape == (n,)
    assert res.clean_logits.shape == res.adv_logits.shape == (n, k)
    assert res.clean_logits.dtype == res.adv_logits.dtype == np.float32
    assert res.robust.dtype == bool and res.broken_by.dtype == np.int8 and res.linf.dtype == np.float32
    codes = set(np.unique(res.broken_by).tolist())
    assert codes <= {MISCLASSIFIED, ROBUST, BY_APGD_CE, BY_APGD_DLR} and BY_APGD_CE in codes
    mis = res.broken_by == MISCLASSIFIED
    assert np.array_equal(mis, res.clean_logits.argmax(1) != res.label)
    assert np.array_equal(res.adv_logits[mis], res.clean_logits[mis]) and not res.linf[mis].any()
    # The final point's logits decide the verdict; every point is inside the ball.
    assert np.array_equal(res.robust, (res.adv_logits.argmax(1) == res.label) & ~mis)
    assert np.array_equal(res.robust, res.broken_by == ROBUST)
    assert res.linf.max() <= 0.05 + 1e-6
    # Unbroken images carry their highest-loss point, not the clean one.
    assert (res.linf[res.robust] > 0).all()
    after = res.accuracy_after
    assert list(after) == ["clean", "apgd-ce", "apgd-dlr"]
    assert after["clean"] == pytest.approx(0.9)
    assert after["clean"] >= after["apgd-ce"] >= after["apgd-dlr"] == res.robust_accuracy


def test_robust_accuracy_is_monotone_in_eps():
    model = linear_model()
    x, y = linear_data(model)
    accs = [run(model, x, y, eps=eps, batch_size=64).robust_accuracy for eps in (0.0, 0.01, 0.02, 0.04, 0.08)]
    assert accs == sorted(accs, reverse=True)
    assert accs[0] == pytest.approx(0.9) and accs[-1] < accs[0]


def test_results_do_not_depend_on_batch_size():
    model = mlp(dtype=torch.float64)
    x, y = prototype_data(model, 90, dtype=torch.float64)
    a = run(model, x, y, eps=0.06, batch_size=7)
    b = run(model, x, y, eps=0.06, batch_size=90)
    assert np.array_equal(a.broken_by, b.broken_by)
    np.testing.assert_allclose(a.adv_logits, b.adv_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.linf, b.linf, rtol=0, atol=1e-7)


class Killable(nn.Module):
    """Wraps a model; raises after ``fail_after`` forward passes (not part of the state dict)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fail_after: int | None = None
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return self.model(x)


def test_killed_evaluation_resumes_to_the_same_result(tmp_path):
    model = Killable(mlp(dtype=torch.float64)).eval()
    x, y = prototype_data(model, 100, dtype=torch.float64)
    cfg = ProtocolConfig(eps=0.06, batch_size=20)
    reference = evaluate_model(model, x, y, cfg, progress=False)
    state = tmp_path / "eval" / "paper.state.npz"
    model.calls, model.fail_after = 0, 400
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(model, x, y, cfg, state_path=state, progress=False)
    assert state.exists()
    model.fail_after = None
    # Resumes with another batch size: results do not depend on it.
    resumed = evaluate_model(model, x, y, ProtocolConfig(eps=0.06, batch_size=33), state_path=state, progress=False)
    for key in ("label", "clean_logits", "adv_logits", "robust", "broken_by", "linf"):
        np.testing.assert_array_equal(getattr(resumed, key), getattr(reference, key))
    # A finished state file answers at once, without attacking.
    model.calls = 0
    again = evaluate_model(model, x, y, cfg, state_path=state, progress=False)
    assert np.array_equal(again.broken_by, reference.broken_by) and model.calls <= 3


def test_state_file_refuses_other_settings_data_or_model(tmp_path):
    model = mlp()
    x, y = prototype_data(model, 20)
    state = tmp_path / "s.npz"
    evaluate_model(model, x, y, ProtocolConfig(eps=0.03, n_iter=5), state_path=state, progress=False)
    with pytest.raises(ValueError, match="eps"):
        evaluate_model(model, x, y, ProtocolConfig(eps=0.04, n_iter=5), state_path=state, progress=False)
    with pytest.raises(ValueError, match="images"):
        evaluate_model(model, x * 0.5, y, ProtocolConfig(eps=0.03, n_iter=5), state_path=state, progress=False)
    with pytest.raises(ValueError, match="model"):
        evaluate_model(mlp(seed=1), x, y, ProtocolConfig(eps=0.03, n_iter=5), state_path=state, progress=False)


def test_save_and_load_round_trip(tmp_path):
    model = mlp()
    x, y = prototype_data(model, 30)
    res = run(model, x, y, eps=0.03, n_iter=10, seed=7)
    path = res.save(tmp_path / "eval" / "paper-epoch_040.npz")
    back = ProtocolResult.load(path)
    assert back.config == res.config
    for key in ("label", "clean_logits", "adv_logits", "robust", "broken_by", "linf", "n_grad"):
        np.testing.assert_array_equal(getattr(back, key), getattr(res, key))
    raw = np.load(path)
    assert float(raw["eps"]) == 0.03 and int(raw["seed"]) == 7


def test_bf16_precision_records_fp32_verdicts():
    model = mlp()
    x, y = prototype_data(model, 40)
    res = run(model, x, y, eps=0.05, n_iter=20, precision="bf16")
    with torch.no_grad():
        assert res.clean_accuracy == pytest.approx(0.9)
        # Logits are recomputed in fp32 at the final points: consistent with the verdicts.
        assert np.array_equal(res.robust, (res.adv_logits.argmax(1) == res.label) & (res.broken_by == ROBUST))


def test_uint8_images_are_scaled():
    model = mlp()
    x, y = prototype_data(model, 20)
    x8 = (x * 255).round().to(torch.uint8)
    res = run(model, x8, y, eps=0.03, n_iter=5)
    with torch.no_grad():
        np.testing.assert_allclose(res.clean_logits, model(x8.float() / 255).numpy(), rtol=1e-6, atol=1e-6)


def test_autoattack_protocol_through_the_reference_package():
    pytest.importorskip("pyautoattack", reason="pyautoattack (optional extra) is not installed")
    model = linear_model(dtype=torch.float32)  # the package computes in float32
    x, y = linear_data(model, n=40, dtype=torch.float32)
    res = run(model, x, y, protocol="autoattack", eps=0.04, batch_size=40)
    margin = closed_form_margin(model, x, y, 0.04, "Linf")
    clear = margin.abs() > 1e-3
    expected = (margin > 0) & torch.from_numpy(res.broken_by != MISCLASSIFIED)
    assert torch.equal(torch.from_numpy(res.robust)[clear], expected[clear])
    assert list(res.accuracy_after) == ["clean", "apgd-ce", "apgd-t/fab-t/square"]
    assert res.linf.max() <= 0.04 + 1e-6


class ConvNet(nn.Module):
    """conv-relu-maxpool-linear; ``use_view`` flattens with ``.view`` (fails channels-last)."""

    def __init__(self, use_view: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 10)
        self.use_view = use_view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(h.view(h.shape[0], -1) if self.use_view else h.flatten(1))


@pytest.mark.parametrize("use_view", [False, True])
def test_memory_format_changes_no_verdict_and_restores_the_weights(use_view, caplog):
    # float64, as every verdict-equality test here: in float32 the channels-last and
    # contiguous convolution kernels round differently (1e-7 on this model), and over 20
    # sign-gradient iterations a gradient component that is zero up to rounding can flip and
    # move an image's whole trajectory, so equal verdicts would hold on one machine's
    # kernels and not another's; in float64 a flip needs a tie within ~1e-16.
    model = ConvNet(use_view).double().eval()
    x, y = prototype_data(model, 60, dtype=torch.float64)
    pointer = model.conv.weight.data_ptr()
    contiguous = run(model, x, y, eps=0.08, n_iter=20, memory_format="contiguous")
    with caplog.at_level(logging.INFO, logger="logitscope.attacks.protocol"):
        cl = run(model, x, y, eps=0.08, n_iter=20, memory_format="channels_last")
    assert ("cannot run channels-last" in caplog.text) == use_view
    assert 0 < cl.robust_accuracy < cl.clean_accuracy
    assert np.array_equal(cl.broken_by, contiguous.broken_by)
    np.testing.assert_allclose(cl.adv_logits, contiguous.adv_logits, rtol=1e-4, atol=1e-4)
    assert model.conv.weight.data_ptr() == pointer and model.conv.weight.is_contiguous()
