"""Part 4: the measured gap change under FGSM on tiny models built here."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from logitscope.theory.fgsm_gap import measure_gap_change
from logitscope.theory.stored import load_gap_results, save_gap_results


def _linear_model(seed: int = 0, n_classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, n_classes)).double().eval()


def _smooth_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(64, 16),
            nn.Tanh(),
            nn.Linear(16, 5),
        )
        .double()
        .eval()
    )


def _data(n: int, n_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(n_classes, (n,), generator=g)
    return x, y


def test_linear_model_matches_hand_computation():
    model = _linear_model()
    x, y = _data(64, 4)
    eps = 0.05
    res = measure_gap_change(model, x, y, eps)
    w = model[1].weight.detach().numpy()
    b = model[1].bias.detach().numpy()
    xf = x.flatten(1).numpy()
    z = xf @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(4)[y.numpy()]
    step = eps * np.sign((p - onehot) @ w)
    z_adv = np.clip(xf + step, 0, 1) @ w.T + b
    rows = np.arange(64)
    masked = z.copy()
    masked[rows, y.numpy()] = -np.inf
    runner = masked.argmax(1)
    np.testing.assert_array_equal(res["runner_up"], runner)
    gap = z[rows, y.numpy()] - z[rows, runner]
    np.testing.assert_allclose(res["gap_before"], gap, rtol=1e-12)
    masked_adv = z_adv.copy()
    masked_adv[rows, y.numpy()] = -np.inf
    np.testing.assert_allclose(res["gap_after"], z_adv[rows, y.numpy()] - masked_adv.max(1), rtol=1e-12)
    # a linear model's first-order prediction is exact
    np.testing.assert_allclose(res["change_fixed_pair"], res["predicted_linear"], atol=1e-12)
    np.testing.assert_array_equal(res["correct"], z.argmax(1) == y.numpy())


def test_linearisation_error_is_second_order_in_eps():
    model = _smooth_cnn()
    x, y = _data(32, 5, seed=1)
    errs = []
    for eps in (0.02, 0.01, 0.005):
        res = measure_gap_change(model, x, y, eps)
        errs.append(np.abs(res["change_fixed_pair"] - res["predicted_linear"]).max())
    assert 3.0 < errs[0] / errs[1] < 5.0
    assert 3.0 < errs[1] / errs[2] < 5.0


def test_l2_step_has_length_eps():
    model = _linear_model(2)
    x, y = _data(16, 4, seed=2)
    eps = 0.03
    res = measure_gap_change(model, x, y, eps, norm="l2")
    w = model[1].weight.detach().numpy()
    xf = x.flatten(1).numpy()
    z = xf @ w.T + model[1].bias.detach().numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(4)[y.numpy()]) @ w
    step = eps * grad / np.linalg.norm(grad, axis=1, keepdims=True)
    dw = w[y.numpy()] - w[res["runner_up"]]
    np.testing.assert_allclose(res["predicted_linear"], np.sum(dw * step, axis=1), atol=1e-12)


def test_fit_is_least_squares_over_correct_samples():
    model = _smooth_cnn(3)
    x, _ = _data(80, 5, seed=3)
    y = model(x).argmax(1)
    y[:10] = (y[:10] + 1) % 5
    res = measure_gap_change(model, x, y, 0.02)
    ok = res["correct"]
    assert 0 < ok.sum() < 80
    slope, icpt = np.polyfit(res["gap_before"][ok] ** 2, res["change"][ok], 1)
    assert float(res["fit_slope"]) == pytest.approx(slope, rel=1e-9)
    assert float(res["fit_intercept"]) == pytest.approx(icpt, rel=1e-9, abs=1e-15)
    np.testing.assert_allclose(res["predicted_quadratic"], slope * res["gap_before"] ** 2 + icpt, rtol=1e-9)
    assert 0.0 <= float(res["fit_r2"]) <= 1.0


def test_zero_eps_changes_nothing_and_batches_agree():
    model = _smooth_cnn(4)
    x, y = _data(40, 5, seed=4)
    res = measure_gap_change(model, x, y, 0.0)
    assert np.all(res["change"] == 0)
    assert np.all(res["predicted_linear"] == 0)
    a = measure_gap_change(model, x, y, 0.01, batch_size=7)
    b = measure_gap_change(model, x, y, 0.01, batch_size=40)
    for key in ("gap_before", "gap_after", "predicted_linear"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-15)


def test_train_mode_warns_and_bad_args_raise(caplog):
    model = _linear_model().train()
    x, y = _data(4, 4)
    with caplog.at_level(logging.WARNING, logger="logitscope.theory.fgsm_gap"):
        measure_gap_change(model, x, y, 0.01)
    assert "training mode" in caplog.text
    with pytest.raises(ValueError):
        measure_gap_change(model.eval(), x, y, 0.01, norm="l1")
    with pytest.raises(ValueError):
        measure_gap_change(model, x, y[:2], 0.01)


def test_gap_results_round_trip(tmp_path):
    model = _smooth_cnn(5)
    x, _ = _data(30, 5, seed=5)
    y = model(x).argmax(1)
    results = {"ST": measure_gap_change(model, x, y, 0.01), "AT": measure_gap_change(model, x, y, 0.005)}
    path = save_gap_results(tmp_path / "fgsm_gap.npz", results)
    back = load_gap_results(path)
    assert list(back) == ["ST", "AT"]
    for name, res in results.items():
        assert set(back[name]) == set(res)
        for key, val in res.items():
            assert back[name][key].dtype == val.dtype and back[name][key].shape == val.shape
            np.testing.assert_array_equal(back[name][key], val)
