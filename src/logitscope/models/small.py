"""Small CNNs: ``small_cnn`` for 8x8 (digits) and up; ``mnist_cnn`` for 28x28 (MNIST-format) images."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from logitscope.models.base import Normalize, TappedModel


def small_cnn(
    n_classes: int = 10,
    in_channels: int = 1,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    width: int = 32,
) -> TappedModel:
    """conv(32)-conv(64)-pool-conv(128)-pool-[2x2 avg]-fc(128)-fc(classes); taps
    ``conv1, conv2, conv3, fc1, logits``. Works for any input of at least 4x4 pixels."""
    w = width
    stages = OrderedDict(
        conv1=nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU()),
        conv2=nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        conv3=nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2)),
        fc1=nn.Sequential(nn.Flatten(), nn.Linear(16 * w, 128), nn.ReLU()),
        logits=nn.Linear(128, n_classes),
    )
    return TappedModel(Normalize(mean, std), stages)


MNIST_SIZE = 28  # the input side mnist_cnn is built for: 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4


class _Flatten4x4(nn.Flatten):
    """Flatten conv2's (B, C, 4, 4) maps; another size means an input that is not 28x28."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (4, 4):
            side = 4 * x.shape[-1] + 12  # invert 28 -> 4 (two valid 5x5 convs, two 2x2 pools)
            raise ValueError(
                f"mnist-cnn takes {MNIST_SIZE}x{MNIST_SIZE} images (got about {side}x{side}): "
                "use small-cnn for other sizes"
            )
        return super().forward(x)


def mnist_cnn(
    n_classes: int = 10,
    in_channels: int = 1,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    width: int = 16,
) -> TappedModel:
    """LeNet-style conv5x5(16)-pool-conv5x5(32)-pool-fc(128)-fc(classes) for 28x28 images;
    taps ``conv1, conv2, fc1, logits``.

    Sized for speed on CPUs: unpadded ("valid") 5x5 convolutions and a 2x2 pool after each
    keep the maps at 24x24x16 and 8x8x32 (about 1.1M multiply-adds per image, 80,202
    parameters for 10 classes). ``benchmarks/mnist_recipe.py`` on 2 CPU cores, the `mnist`
    preset (batch 32): 5,800 images/s standard training and 430 images/s PGD-AT (10 steps),
    against 710 and 52 for ``small_cnn`` at 28x28 (whose unpooled 3x3 convolutions run at full
    resolution), 8x faster; an epoch's logit snapshot of 8,000 images 0.5 s against 6.6 s.
    """
    w = width
    stages = OrderedDict(
        conv1=nn.Sequential(nn.Conv2d(in_channels, w, 5), nn.ReLU(), nn.MaxPool2d(2)),
        conv2=nn.Sequential(nn.Conv2d(w, 2 * w, 5), nn.ReLU(), nn.MaxPool2d(2)),
        fc1=nn.Sequential(_Flatten4x4(), nn.Linear(2 * w * 16, 128), nn.ReLU()),
        logits=nn.Linear(128, n_classes),
    )
    return TappedModel(Normalize(mean, std), stages)
