"""The theory stage's stored files, and their readers (numpy only: no torch, no matplotlib).

A theory folder holds

- ``theory.json`` (`logitscope.store.outputs.THEORY_JSON`): every number and statement of ``model.write_theory``,
  including what figures C.1-C.3 need (``n_classes``, ``options.error_rate``,
  ``options.eps``, ``thresholds``); the curves themselves are analytic
  (`logitscope.theory.appendix_c`).
- ``fgsm_gap.npz`` (``GAP_NPZ``), only when gap results were measured: the per-model results
  of ``fgsm_gap.measure_gap_change``. ``labels`` is the (M,) str array of model labels in
  order; ``model{i}/{key}`` is entry ``key`` of model ``i``'s results (per-sample (N,) arrays
  and 0-d fit values).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from logitscope.fileio.atomic import atomic_save_npz
from logitscope.fileio.errors import DamagedFileError, load_npz

GAP_NPZ = "fgsm_gap.npz"


def _member(i: int, key: str) -> str:
    return f"model{i}/{key}"


def save_gap_results(path: str | os.PathLike, gap_results: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """Write ``{label: measure_gap_change(...)}`` atomically to ``path`` (an ``.npz``)."""
    labels = [str(label) for label in gap_results]
    arrays: dict[str, np.ndarray] = {"labels": np.array(labels, dtype=str)}
    for i, res in enumerate(gap_results.values()):
        for key, val in res.items():
            arrays[_member(i, str(key))] = np.asarray(val)
    return atomic_save_npz(path, **arrays)


def load_gap_results(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """What :func:`save_gap_results` wrote, labels in their stored order.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: not a readable ``.npz`` of that layout.
    """
    arrays = load_npz(path)
    if "labels" not in arrays:
        raise DamagedFileError(path, "no 'labels' array: not a stored FGSM gap result")
    out: dict[str, dict[str, np.ndarray]] = {}
    for i, label in enumerate(arrays["labels"].tolist()):
        prefix = _member(i, "")
        out[str(label)] = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    return out
