"""Eps-ball points and layer activations for the manifold analysis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitscope.manifolds.activations import ball_points, choose_exemplars, layer_activations
from logitscope.models import build_model


def test_exemplars_balanced_and_seeded():
    labels = np.repeat(np.arange(10), 30)
    idx = choose_exemplars(labels, 40, seed=1)
    assert np.bincount(labels[idx], minlength=10).tolist() == [4] * 10
    assert np.array_equal(idx, choose_exemplars(labels, 40, seed=1))
    assert not np.array_equal(idx, choose_exemplars(labels, 40, seed=2))
    with pytest.raises(ValueError, match="p=0"):
        choose_exemplars(labels, 0)


@pytest.mark.parametrize("kind", ["adversarial", "uniform"])
def test_points_in_ball_and_activations_shape(kind):
    torch.manual_seed(0)
    model = build_model("small-cnn", 10, 1, [0.3], [0.4]).eval()
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    pts = ball_points(model, x, y, 0.1, 5, 10, kind=kind, steps=3)
    assert pts.shape == (6, 5, 1, 8, 8)
    assert (pts - x[:, None]).abs().max() <= 0.1 + 1e-6 and pts.min() >= 0 and pts.max() <= 1
    acts = layer_activations(model, pts, max_features=100)
    assert list(acts) == ["input", *model.layer_names]
    assert acts["conv1"].shape == (6, 100, 5)  # 2048 features projected to 100
    assert acts["logits"].shape == (6, 10, 5)
    with torch.no_grad():
        direct = model(pts.reshape(30, 1, 8, 8)).reshape(6, 5, 10).permute(0, 2, 1).double().numpy()
    np.testing.assert_allclose(acts["logits"], direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="unknown layer 'fc9'"):
        layer_activations(model, pts, layers=["fc9"])
