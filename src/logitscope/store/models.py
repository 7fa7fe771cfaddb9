"""Models from a run's checkpoints, or the model file of an imported run (``<run>/model/``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from logitscope.fileio.errors import DamagedFileError, detail
from logitscope.models import TappedModel, build_model
from logitscope.store import checkpoints
from logitscope.store.runs import Run

_SPEC_KEYS = ("name", "n_classes", "in_channels", "mean", "std")


def model_from_payload(payload: dict[str, Any], where: str, expect: dict[str, Any] | None = None) -> TappedModel:
    """The model a checkpoint payload describes; a payload that is plain data but not a
    logitscope checkpoint (no spec, no weights, weights of another shape) is a
    :class:`DamagedFileError` naming ``where``."""
    spec = payload.get("model_spec")
    if not isinstance(spec, dict):
        raise DamagedFileError(where, "not a logitscope checkpoint (no model_spec)")
    missing = [k for k in _SPEC_KEYS if k not in spec]
    if missing or not isinstance(payload.get("model"), dict):
        what = f"model_spec lacks {missing[0]!r}" if missing else "no model weights"
        raise DamagedFileError(where, f"not a complete logitscope checkpoint ({what})")
    checkpoints.check_spec(spec, expect or {}, where)
    model = build_model(
        spec["name"], spec["n_classes"], spec["in_channels"], spec["mean"], spec["std"], spec.get("width")
    )
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise DamagedFileError(where, f"its weights do not fit model {spec['name']} ({detail(exc)})") from None
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
    if run.imported:
        return load_imported(run).to(device).eval()  # type: ignore[return-value]
    path = checkpoints.checkpoint_path(run.dir, epoch)
    model = model_from_payload(checkpoints.load(path), str(path), expect)
    return model.to(device).eval()


IMPORTED_FILES = {"torchscript": "model.ts", "factory": "weights.safetensors"}
_IMPORT_REMEDY = "import the model again (logitscope import, or logitscope.import_model)"


def imported_model_path(run_dir: str | os.PathLike, kind: str) -> Path:
    """``<run>/model/model.ts`` (TorchScript) or ``<run>/model/weights.safetensors`` (factory)."""
    return Path(run_dir) / "model" / IMPORTED_FILES[kind]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_imported(run: Run) -> Any:
    """The `ImportedModel` of an imported run (CPU, eval mode), its stored file checked
    against the hash recorded when it was imported."""
    from logitscope.models.imported import ImportedModel, from_factory, load_torchscript, load_weights

    src = run.config.source
    path = imported_model_path(run.dir, src.kind)
    if not path.is_file():
        raise DamagedFileError(path, "missing (the imported model of this run)", _IMPORT_REMEDY)
    if src.sha256 and file_sha256(path) != src.sha256:
        raise DamagedFileError(
            path, "changed since it was imported (its sha256 differs from config.yaml's)", _IMPORT_REMEDY
        )
    if src.kind == "torchscript":
        module = load_torchscript(path)
    else:
        module = from_factory(src.factory or "", load_weights(path), str(path), src.root)
    return ImportedModel(module, src.layers, sequential=src.kind == "torchscript").eval()
