"""Models from a run's checkpoints."""

from __future__ import annotations

import os
from typing import Any

import torch

from logitscope.models import TappedModel, build_model
from logitscope.store import checkpoints
from logitscope.store.runs import Run


def model_from_payload(payload: dict[str, Any], where: str, expect: dict[str, Any] | None = None) -> TappedModel:
    spec = payload.get("model_spec")
    if not isinstance(spec, dict):
        raise ValueError(f"checkpoint {where} has no model_spec: not a logitscope checkpoint")
    checkpoints.check_spec(spec, expect or {}, where)
    model = build_model(spec["name"], spec["n_classes"], spec["in_channels"], spec["mean"], spec["std"])
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"checkpoint {where} does not fit model {spec['name']}: {first}") from exc
    return model


def load_model(
    run: str | os.PathLike | Run,
    epoch: int | None = None,
    expect: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> TappedModel:
    """The model of ``run`` at ``epoch`` (default: its last checkpoint), in eval mode.

    Args:
        run: a run folder (or :class:`Run`).
        epoch: a stored checkpoint epoch; ``None`` for the last.
        expect: optional ``{"name":..., "n_classes":..., "in_channels":...}`` to enforce.
    """
    run = run if isinstance(run, Run) else Run(run)
    epoch = run.resolve_epoch(epoch)
    path = checkpoints.checkpoint_path(run.dir, epoch)
    model = model_from_payload(checkpoints.load(path), str(path), expect)
    return model.to(device).eval()
