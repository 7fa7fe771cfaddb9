"""What every logitscope model shares: [0, 1] inputs, built-in normalization, named layers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; mean and std travel with the checkpoint as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TappedModel(nn.Module):
    """A model as an ordered sequence of named stages, from the normalized input to logits.

    ``forward(x)`` returns logits; ``forward_intermediates(x)`` returns every stage's output
    by name (the layer taps of the manifold analysis). Inputs are float images in [0, 1].
    """

    def __init__(self, normalize: Normalize, stages: OrderedDict[str, nn.Module]) -> None:
        super().__init__()
        self.normalize = normalize
        self.stages = nn.ModuleDict(stages)

    @property
    def layer_names(self) -> list[str]:
        return list(self.stages.keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalize(x)
        for stage in self.stages.values():
            h = stage(h)
        return h

    def forward_intermediates(
        self, x: torch.Tensor, layers: Sequence[str] | None = None
    ) -> OrderedDict[str, torch.Tensor]:
        """Outputs of the named stages (all of them, or those in ``layers``), in order."""
        if layers is not None:
            unknown = [n for n in layers if n not in self.stages]
            if unknown:
                raise KeyError(f"unknown layer {unknown[0]!r}: this model has {self.layer_names}")
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        h = self.normalize(x)
        for name, stage in self.stages.items():
            h = stage(h)
            if layers is None or name in layers:
                out[name] = h
        return out
