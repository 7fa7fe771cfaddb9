"""Model shapes, parameter counts, normalization inside, named layer taps."""

from __future__ import annotations

import pytest
import torch

from logitscope.models import MODELS, build_model, count_parameters

CASES = {"resnet18": (3, 32), "preact-resnet18": (3, 32), "small-cnn": (1, 8), "mnist-cnn": (1, 28)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_and_taps(name):
    c, s = CASES[name]
    model = build_model(name, 10, c, [0.5] * c, [0.25] * c).eval()
    x = torch.rand(3, c, s, s)
    logits = model(x)
    assert logits.shape == (3, 10)
    taps = model.forward_intermediates(x)
    assert list(taps) == model.layer_names and list(taps)[-1] == "logits"
    assert torch.allclose(taps["logits"], logits)
    assert list(model.forward_intermediates(x, layers=["logits"])) == ["logits"]
    with pytest.raises(KeyError, match="unknown layer 'nope'"):
        model.forward_intermediates(x, layers=["nope"])


def test_resnet18_parameter_count_matches_cifar_variant():
    # 3x3 stem, no max-pool, 64-128-256-512: 11,173,962 parameters for 10 classes
    assert count_parameters(build_model("resnet18", 10, 3, [0] * 3, [1] * 3)) == 11_173_962
    assert count_parameters(build_model("resnet18", 100, 3, [0] * 3, [1] * 3)) == 11_173_962 + 90 * 513


def test_small_cnn_accepts_mnist_size():
    m = build_model("small-cnn", 10, 1, [0.1], [0.3])
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_mnist_cnn_parameter_count_and_size_refusal():
    # conv 1->16 5x5 (400 + 16), conv 16->32 5x5 (12,800 + 32), fc 32*4*4->128 (65,536 + 128),
    # fc 128->10 (1,280 + 10): 80,202 parameters
    m = build_model("mnist-cnn", 10, 1, [0.1], [0.3])
    assert count_parameters(m) == 80_202
    assert m.layer_names == ["conv1", "conv2", "fc1", "logits"]
    with pytest.raises(ValueError, match=r"mnist-cnn takes 28x28 images \(got about 32x32\)"):
        m(torch.rand(2, 1, 32, 32))


def test_normalization_is_inside_the_model():
    a = build_model("small-cnn", 10, 1, [0.0], [1.0]).eval()
    b = build_model("small-cnn", 10, 1, [0.5], [2.0]).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if "normalize" not in k}, strict=False)
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(a((x - 0.5) / 2.0), b(x), atol=1e-6)
    assert "normalize.mean" in b.state_dict()


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*resnet18"):
        build_model("vgg", 10, 3, [0] * 3, [1] * 3)


def _resnet18_parameters(w: int, n_classes: int) -> int:
    """ResNet-18's parameter count by hand: 3x3 convolutions, BatchNorm's two vectors, 1x1
    projection shortcuts where the width changes, a linear head."""

    def block(cin: int, cout: int) -> int:
        shortcut = cin * cout + 2 * cout if cin != cout else 0
        return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout + shortcut

    stem = 9 * 3 * w + 2 * w
    stages = sum(
        block(cin, cout) + block(cout, cout) for cin, cout in ((w, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w))
    )
    return stem + stages + 8 * w * n_classes + n_classes


@pytest.mark.parametrize("width", [64, 8, 3])
def test_resnet18_width_scales_every_stage_and_keeps_every_tap(width):
    assert _resnet18_parameters(64, 10) == 11_173_962  # the formula against the published count
    model = build_model("resnet18", 10, 3, [0] * 3, [1] * 3, width=width).eval()
    assert count_parameters(model) == _resnet18_parameters(width, 10)
    taps = model.forward_intermediates(torch.rand(2, 3, 32, 32))
    shapes = {k: tuple(v.shape) for k, v in taps.items()}
    w = width
    assert shapes == {
        "stem": (2, w, 32, 32),
        "layer1": (2, w, 32, 32),
        "layer2": (2, 2 * w, 16, 16),
        "layer3": (2, 4 * w, 8, 8),
        "layer4": (2, 8 * w, 4, 4),
        "pool": (2, 8 * w),
        "logits": (2, 10),
    }
    pre = build_model("preact-resnet18", 10, 3, [0] * 3, [1] * 3, width=width)
    assert pre.forward_intermediates(torch.rand(2, 3, 32, 32))["layer4"].shape == (2, 8 * w, 4, 4)


def test_width_is_refused_where_it_does_not_apply():
    from logitscope.config import ConfigError, run_preset

    with pytest.raises(ConfigError, match=r"model.width=8: expected null for small-cnn \(a width applies to resnet18"):
        run_preset("digits", **{"model.width": 8})
    with pytest.raises(ConfigError, match="model.width=0: expected a positive number of channels"):
        run_preset("cifar10-paper", **{"model.width": 0})
    with pytest.raises(ValueError, match="model.width 0: expected a positive integer"):
        build_model("resnet18", 10, 3, [0] * 3, [1] * 3, width=0)
