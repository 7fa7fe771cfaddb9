"""The robustness protocol on a run's checkpoint, with its records in the run store.

``evaluate(run, epoch)`` loads the checkpoint, runs the protocol on the test split (first
``n`` images) and writes ``<run>/eval/<protocol>-epoch_040.npz`` (per-sample records) and
``.json`` (the summary). ``split="val"`` evaluates the run's validation hold-out instead
(``data.val_per_class``), written as ``<protocol>-val-epoch_040.npz``: choices (the teacher
epoch) read those, so the test split is read once, to report. A killed evaluation resumes
from ``eval/.<name>.state.npz``; an evaluation already written with the same settings is
returned without recomputing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logitscope.attacks.protocol import ProtocolResult, evaluate_model
from logitscope.config import ProtocolConfig
from logitscope.data import load_data
from logitscope.fileio.atomic import atomic_write_json
from logitscope.fileio.errors import DamagedFileError, load_npz, read_json
from logitscope.runtime import resolve_device
from logitscope.store.evaluations import check_split, record_path
from logitscope.store.models import load_model
from logitscope.store.runs import Run

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)


def _saved_summary(path: Path, summary_path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of an evaluation already written with ``settings``, or ``None`` to evaluate.

    Both files are checked before they are trusted: a damaged summary or record (truncated,
    corrupt, pickled) is logged and recomputed, never returned.
    """
    if not (summary_path.is_file() and path.is_file()):
        return None
    try:
        saved = read_json(summary_path, expect=dict)
        if saved.get("settings") != settings:
            return None
        ProtocolResult.load(path)
    except DamagedFileError as exc:
        log.warning("evaluating again: %s: %s", exc.path, exc.problem)
        return None
    except (KeyError, ValueError, TypeError) as exc:  # readable, but not a robustness record
        log.warning("evaluating again: %s: %s", path, exc.args[0] if exc.args else type(exc).__name__)
        return None
    return saved


def _drop_if_damaged(state: Path) -> None:
    """A damaged resume state of a killed evaluation is deleted (it only saves time)."""
    if not state.is_file():
        return
    try:
        load_npz(state)
    except DamagedFileError as exc:
        log.warning("starting the evaluation afresh: %s: %s", exc.path, exc.problem)
        state.unlink(missing_ok=True)


def evaluate(
    run: str | os.PathLike | Run,
    epoch: int | None = None,
    config: ProtocolConfig | None = None,
    n: int | None = None,
    split: str = "test",
    device: str = "auto",
    **settings: Any,
) -> dict[str, Any]:
    """Evaluate ``run`` at ``epoch`` (default: last checkpoint) on its test (or validation) split.

    Args:
        config: the protocol and its settings (`logitscope.config.ProtocolConfig`). Or give
            its fields as keywords (``eps=0.2, n_iter=100, protocol="odi"``, ...): a
            `ProtocolConfig` of those, at the run's own training eps unless ``eps`` is given.
        n: evaluate the first ``n`` images of the split (``None``: all).
        split: "test", or "val": the run's validation hold-out (``data.val_per_class`` images
            per class, held out of its training set), for choices made before the test split
            is read.

    Returns:
        The summary (also written as JSON beside the records), with ``split``.
    """
    check_split(split)
    run = run if isinstance(run, Run) else Run(run)
    epoch = run.resolve_epoch(epoch)
    cfg = protocol_config(run, config, **settings)
    protocol = cfg.protocol
    path = record_path(run.dir, protocol, epoch, split)
    recorded = {**cfg.result_settings(), "n": n, "epoch": epoch}
    saved = _saved_summary(path, path.with_suffix(".json"), recorded)
    if saved is not None:
        return {**saved, "split": split}  # summaries written before the split was recorded: test
    if n is not None and n < 1:
        raise ValueError(f"n={n}: expected a positive number of {split} images (or none for all)")
    dev = resolve_device(device)
    x, y = _split_images(run, split, n)
    model = load_model(run, epoch, device=dev)
    state = path.parent / f".{path.stem}.state.npz"
    result, seconds = _run_protocol(model, x, y, cfg, dev, state)
    head = {"run": run.dir.name, "epoch": epoch, "protocol": protocol, "split": split, "eps": cfg.eps, "n": len(y)}
    return _write_records(head, recorded, path, state, result, seconds)


def protocol_config(run: Run, config: ProtocolConfig | None = None, **settings: Any) -> ProtocolConfig:
    """``config``, or a `ProtocolConfig` of ``settings`` at the run's training eps unless
    ``eps`` is among them (``eps=None`` too: the run's)."""
    if config is not None:
        if settings:
            raise TypeError(
                f"evaluate: give the protocol's settings in config or as keywords, not both: {sorted(settings)}"
            )
        return config
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(ProtocolConfig)})
    if unknown:
        raise TypeError(f"evaluate: unknown protocol setting {unknown[0]!r}: expected fields of ProtocolConfig")
    eps = settings.pop("eps", None)
    return ProtocolConfig(eps=run.config.attack.eps if eps is None else float(eps), **settings)


def _split_images(run: Run, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images (uint8) and labels of the run's ``split``: "val" must hold some."""
    data = load_data(run.config.data)
    x, y = data.split(split)
    if split == "val" and not len(y):
        raise ValueError(
            f"run {run.dir.name} has no validation images (data.val_per_class={run.config.data.val_per_class}): "
            "set data.val_per_class to hold some out of its training set"
        )
    return x[:n], y[:n]


def _run_protocol(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ProtocolConfig, dev: torch.device, state: Path
) -> tuple[ProtocolResult, float]:
    """The protocol's result on ``x``, ``y`` (resumed from ``state`` unless it is damaged) and its seconds."""
    t0 = time.perf_counter()
    _drop_if_damaged(state)
    result = evaluate_model(model, x.float().div(255).to(dev), y.to(dev), cfg, state_path=state)
    return result, time.perf_counter() - t0


def _write_records(
    head: dict[str, Any],
    settings: dict[str, Any],
    path: Path,
    state: Path,
    result: ProtocolResult,
    seconds: float,
) -> dict[str, Any]:
    """Write the per-sample records at ``path`` and the summary (``head``: run, epoch,
    protocol, split, eps, n; then the accuracies) beside them, drop the resume ``state``;
    the summary."""
    result.save(path)
    summary = {
        **head,
        "clean_acc": result.clean_accuracy,
        "robust_acc": result.robust_accuracy,
        "accuracy_after": result.accuracy_after,
        "seconds": round(seconds, 3),
        "settings": settings,
        "records": str(path),
    }
    atomic_write_json(path.with_suffix(".json"), summary)
    state.unlink(missing_ok=True)
    log.info(
        "%s epoch %d: clean %.4f robust %.4f (%s, %s split, eps %.4g, %.1f s)",
        head["run"],
        head["epoch"],
        result.clean_accuracy,
        result.robust_accuracy,
        head["protocol"],
        head["split"],
        head["eps"],
        seconds,
    )
    return summary
