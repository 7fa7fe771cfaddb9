"""The fast path's switches: bf16 autocast, channels_last, torch.compile with a clean fallback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from logitscope.config import PerfConfig

log = logging.getLogger(__name__)


class CompiledOrEager(nn.Module):
    """``torch.compile(module)`` that falls back to the eager module, once and for good, when
    compilation fails (no compiler, unsupported platform); the fallback is logged."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        # a plain attribute, not a child module: the parameters are registered once, via `module`
        object.__setattr__(self, "_compiled", torch.compile(module) if hasattr(torch, "compile") else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
                log.warning("torch.compile unavailable (%s: %s); running eager", type(exc).__name__, str(exc)[:200])
                object.__setattr__(self, "_compiled", None)
        return self.module(x)


def prepare(model: nn.Module, perf: PerfConfig) -> nn.Module:
    """Apply the memory format in place and return the module to train with."""
    if perf.channels_last:
        model.to(memory_format=torch.channels_last)
    return CompiledOrEager(model) if perf.compile else model


def to_format(x: torch.Tensor, perf: PerfConfig) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if perf.channels_last and x.ndim == 4 else x


@contextlib.contextmanager
def autocast(perf: PerfConfig, device: torch.device) -> Iterator[None]:
    """bf16 autocast of the forward passes when ``perf.precision == "bf16"``."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=perf.precision == "bf16"):
        yield
