"""The protocol against the authors' AutoAttack (pyautoattack) on the same model and images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attack_models import mlp, prototype_data

from logitscope.attacks.protocol import evaluate_model
from logitscope.config import ProtocolConfig

pyautoattack = pytest.importorskip(
    "pyautoattack", reason="pyautoattack (the reference, an optional extra) is not installed"
)


def test_paper_protocol_agrees_with_reference_apgd_ce_then_dlr():
    model = mlp()
    x, y = prototype_data(model, 200, seed=3)
    eps = 0.1
    ours = evaluate_model(model, x, y, ProtocolConfig(eps=eps, batch_size=64), progress=False)
    aa = pyautoattack.AutoAttack(model, attacks=["apgd-ce", "apgd-dlr"], version="custom", eps=eps, seed=0)
    aa.apgd.n_restarts = 1  # "custom" keeps the constructor's 5 restarts; the paper's has 1
    aa.logger.disabled = True
    x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=64)
    ref_robust = (y_adv == y).numpy()
    assert 0.2 < ours.robust_accuracy < ours.accuracy_after["apgd-ce"] < ours.clean_accuracy
    # Different random starts: verdicts agree on nearly every image, accuracies within 2 points.
    assert abs(ours.robust_accuracy - ref_robust.mean()) <= 0.02
    assert np.mean(ours.robust == ref_robust) >= 0.97
    with torch.no_grad():
        ref_clean = (model(x).argmax(1) == y).float().mean().item()
    assert ours.clean_accuracy == pytest.approx(ref_clean)
