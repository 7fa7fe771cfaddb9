"""A small CNN for 8x8 (digits) and 28x28 (MNIST-format) images: 3 conv + 2 fully connected."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

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
