"""CIFAR ResNet-18 (He et al., 2016) and PreAct ResNet-18 (He et al., 2016b).

The CIFAR variant: a 3x3 stride-1 stem, no max-pool, stages of widths 64-128-256-512 with two
basic blocks each (about 11.2M parameters for 10 classes), global average pooling and a
linear head: the model whose accuracy matches the paper's 94.5% (table 1) and the robust-
distillation code it builds on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from logitscope.models.base import Normalize, TappedModel


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class _Head(nn.Module):
    """Global average pooling then flatten: the pooled features."""

    def __init__(self, pre: nn.Module | None = None) -> None:
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.pre(x), 1), 1)


def _stages(block: type[nn.Module], widths: Sequence[int], blocks: Sequence[int]) -> list[nn.Sequential]:
    stages, in_planes = [], widths[0]
    for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
        layers = []
        for j in range(n):
            layers.append(block(in_planes, w, (1 if i == 0 else 2) if j == 0 else 1))
            in_planes = w
        stages.append(nn.Sequential(*layers))
    return stages


def _widths(width: int) -> tuple[int, int, int, int]:
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"model.width {width!r}: expected a positive integer (the paper's ResNet-18: 64)")
    return (width, 2 * width, 4 * width, 8 * width)


def resnet18(
    n_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] = (0.0,) * 3,
    std: Sequence[float] = (1.0,) * 3,
    width: int = 64,
) -> TappedModel:
    """CIFAR ResNet-18: taps ``stem, layer1..layer4, pool, logits``.

    ``width`` is the stem's and first stage's channel count (the paper's 64); the stages have
    ``width * (1, 2, 4, 8)`` channels. Smaller widths keep every layer, stride and tap: the
    CPU smoke presets run the whole CIFAR graph through them."""
    widths = _widths(width)
    stem = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
    )
    l1, l2, l3, l4 = _stages(BasicBlock, widths, (2, 2, 2, 2))
    stages = OrderedDict(
        stem=stem, layer1=l1, layer2=l2, layer3=l3, layer4=l4, pool=_Head(), logits=nn.Linear(widths[-1], n_classes)
    )
    return TappedModel(Normalize(mean, std), stages)


def preact_resnet18(
    n_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] = (0.0,) * 3,
    std: Sequence[float] = (1.0,) * 3,
    width: int = 64,
) -> TappedModel:
    """PreAct ResNet-18 (the robust-overfitting reference model): same taps and ``width`` as ResNet-18."""
    widths = _widths(width)
    stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
    l1, l2, l3, l4 = _stages(PreActBlock, widths, (2, 2, 2, 2))
    head = _Head(nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True)))
    stages = OrderedDict(
        stem=stem, layer1=l1, layer2=l2, layer3=l3, layer4=l4, pool=head, logits=nn.Linear(widths[-1], n_classes)
    )
    return TappedModel(Normalize(mean, std), stages)
