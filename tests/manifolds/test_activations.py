"""Eps-ball points and layer activations for the manifold analysis."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from logitscope.manifolds.activations import ball_points, choose_exemplars, layer_activations, point_target
from logitscope.models import Normalize, TappedModel, build_model


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


@pytest.mark.parametrize("n_classes", [2, 3, 10, 100])
@pytest.mark.parametrize("m", [1, 2, 20, 40, 41, 250])
def test_targeted_points_never_target_the_label(n_classes, m):
    y = torch.arange(n_classes)
    targets = [point_target(j, y, n_classes) for j in range(m)]
    for j, t in enumerate(targets):
        assert (t is None) == (j % 2 == 0), j  # even points untargeted, odd ones targeted
        if t is not None:
            assert ((t >= 0) & (t < n_classes) & (t != y)).all(), (j, t)
            assert all(point_target(j, int(c), n_classes) == int(t[c]) for c in range(n_classes))
    # consecutive targeted points cycle over all C - 1 wrong classes before repeating one
    odd = [t for t in targets if t is not None]
    for start in range(0, len(odd) - (n_classes - 1) + 1, n_classes - 1):
        window = torch.stack(odd[start : start + n_classes - 1], 1)
        assert all(set(row.tolist()) == set(range(n_classes)) - {c} for c, row in enumerate(window))


def test_point_target_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 classes"):
        point_target(1, 0, 1)
    with pytest.raises(ValueError, match="j=-1"):
        point_target(-1, 0, 10)
    model = build_model("small-cnn", 10, 1, [0.3], [0.4]).eval()
    with pytest.raises(ValueError, match=r"labels in \[0, 10\] for n_classes=10"):
        ball_points(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 10]), 0.1, 2, 10)


def _prototype_classifier(n_classes: int, g: torch.Generator) -> tuple[TappedModel, torch.Tensor]:
    """A confident linear classifier of 8x8 images whose class c is near prototype c."""
    protos = torch.rand(n_classes, 1, 8, 8, generator=g)
    lin = nn.Linear(64, n_classes)
    with torch.no_grad():
        lin.weight.copy_((protos - 0.5).flatten(1) * 0.5)
        lin.bias.zero_()
    return TappedModel(Normalize([0.5], [1.0]), OrderedDict(flat=nn.Flatten(), logits=lin)).eval(), protos


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_no_adversarial_point_lowers_the_true_class_loss(n_classes):
    """Every point of an adversarial ball, targeted ones included, has at least the clean
    image's cross-entropy on its label (the old rule targeted the label at j = 2C - 1)."""
    g = torch.Generator().manual_seed(n_classes)
    model, protos = _prototype_classifier(n_classes, g)
    y = torch.arange(n_classes)
    x = (protos[y] + 0.05 * torch.randn(len(y), 1, 8, 8, generator=g)).clamp(0, 1)
    m = 2 * n_classes  # the old rule's point j = 2C - 1 was pulled towards y
    pts = ball_points(model, x, y, 0.05, m, n_classes, steps=3)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()
        clean = F.cross_entropy(model(x), y, reduction="none")
        loss = F.cross_entropy(model(pts.flatten(0, 1)), y.repeat_interleave(m), reduction="none").view(len(y), m)
    assert (loss > clean[:, None]).all(), (loss - clean[:, None]).min(0).values
