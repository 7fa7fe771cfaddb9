"""The run folder: config, status, metrics, resume.

::

    <out>/<run-id>/            run-id: readable name + short hash of the resolved config
      config.yaml              everything needed to rerun
      meta.json                versions, git commit, device, timings, status
      metrics.csv              one row per epoch
      checkpoints/             epoch_040.pt, last.pt
      logits/<split>/          labels.npy, epoch_040.npy
      eval/                    per-sample robustness records
      targets/                 (students) the targets they trained on
"""

from __future__ import annotations

import csv
import io
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from logitscope._version import __version__
from logitscope.config import ConfigError, RunConfig, to_plain
from logitscope.fileio.atomic import atomic_write_json, atomic_write_text
from logitscope.fileio.errors import DamagedFileError, detail, read_json, read_text, read_yaml
from logitscope.store import checkpoints
from logitscope.store.logits import LogitStore

IMPORT_EPOCH = 1  # the one "epoch" of an imported run: its logits are stored as epoch_001
_SHORT = object()  # csv restval: a field missing from a row
# A run's own files are written by training; damage to them means retraining (meta.json
# only records status, so losing it loses no results).
_CONFIG_REMEDY = "restore it or delete the run folder and train it again (logitscope train, or logitscope reproduce)"
_META_REMEDY = "delete it (the run's status is then unknown) and rerun the same logitscope train with --resume"
_METRICS_REMEDY = "delete the run folder and train it again (logitscope train, or logitscope reproduce)"


class RunExistsError(ConfigError):
    """A run folder exists and the request does not match it."""


def _diff(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _diff(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else f"{prefix[:-1]}: {a!r} there vs {b!r} now"


def environment() -> dict[str, Any]:
    import numpy
    import torch

    def git_commit() -> str | None:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parent,
            )
            return out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    return {
        "logitscope": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


class Run:
    """A run folder on disk."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.dir = Path(path)
        if not (self.dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{self.dir} is not a run folder (no config.yaml)")
        self.config = read_config(self.dir / "config.yaml")

    # -- creation ---------------------------------------------------------------------
    @classmethod
    def create(cls, out: str | os.PathLike, config: RunConfig, resume: bool = False) -> Run:
        """Open the folder for ``config`` under ``out``, creating it if new.

        An existing folder must hold the same config; an unfinished one is continued only
        with ``resume``. Nothing already written is touched when a check fails.
        """
        path = Path(out) / config.run_id
        if (path / "config.yaml").is_file():
            existing = read_config(path / "config.yaml")
            a, b = existing.to_dict(), config.to_dict()
            a.pop("device"), b.pop("device")
            diff = _diff(a, b)
            if diff:
                raise RunExistsError(
                    f"run folder {path} exists with a different config ({diff}): use another --name or --out"
                )
            run = cls(path)
            if not run.complete and not resume and run.last_epoch > 0:
                raise RunExistsError(
                    f"run {path} exists and stopped at epoch {run.last_epoch}/{config.epochs}: "
                    "pass --resume to continue it"
                )
            return run
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "config.yaml", config.to_yaml())
        atomic_write_json(path / "meta.json", {"status": "created", "created": time.time(), "env": environment()})
        return cls(path)

    # -- status -----------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        p = self.dir / "meta.json"
        return read_json(p, _META_REMEDY, expect=dict) if p.is_file() else {}

    def update_meta(self, **fields: Any) -> None:
        meta = self.meta
        meta.update(fields)
        atomic_write_json(self.dir / "meta.json", meta)

    @property
    def status(self) -> str:
        return self.meta.get("status", "unknown")

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def last_epoch(self) -> int:
        """The last fully finished epoch (its logits, metrics and trainer state written)."""
        return int(self.meta.get("last_epoch", 0))

    # -- contents ---------------------------------------------------------------------
    @property
    def logits(self) -> LogitStore:
        return LogitStore(self.dir)

    @property
    def imported(self) -> bool:
        """A model trained elsewhere (`logitscope.importing`): one "epoch", no checkpoints."""
        return self.config.objective == "imported"

    def checkpoint_epochs(self) -> list[int]:
        if self.imported:
            return [IMPORT_EPOCH] if self.complete else []
        return checkpoints.stored_epochs(self.dir)

    def metrics(self) -> list[dict[str, Any]]:
        p = self.dir / "metrics.csv"
        if not p.is_file():
            return []
        return read_metrics(p)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.dir / "metrics.csv", buf.getvalue())

    def resolve_epoch(self, epoch: int | None) -> int:
        """``epoch`` if its checkpoint exists (``None``: the last one); a clear error otherwise."""
        stored = self.checkpoint_epochs()
        if not stored:
            raise FileNotFoundError(f"run {self.dir} has no checkpoints yet")
        if epoch is None:
            return stored[-1]
        if epoch not in stored:
            raise FileNotFoundError(f"run {self.dir} has no checkpoint for epoch {epoch}: stored epochs {stored}")
        return epoch

    def summary(self) -> dict[str, Any]:
        rows = self.metrics()
        last = rows[-1] if rows else {}
        warnings = self.meta.get("warnings") or []  # training's (training.monitor.collapse_warning)
        return {
            "run": self.dir.name,
            "method": self.config.method,
            "dataset": self.config.data.name,
            "model": self.config.model.name,
            "status": self.status,
            "epoch": f"{self.last_epoch}/{self.config.epochs}",
            "test_acc": last.get("test_acc"),
            "pgd_acc": last.get("pgd_acc"),
            "warning": warnings[0] if warnings else None,
        }

    def __repr__(self) -> str:
        return f"Run({self.dir})"


def read_config(path: Path) -> RunConfig:
    """A run's ``config.yaml``; a file that is not YAML (or asks YAML to build Python
    objects) is a one-line :class:`DamagedFileError`, a bad key a :class:`ConfigError` naming the file."""
    data = read_yaml(path, _CONFIG_REMEDY)
    if data is not None and not isinstance(data, dict):
        problem = f"holds a YAML {type(data).__name__}, expected a mapping of settings"
        raise DamagedFileError(path, problem, _CONFIG_REMEDY)
    try:
        return RunConfig.from_dict(data or {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.csv``; a row with fewer fields than the header means the file was
    cut short or edited, and is refused rather than read as missing values."""
    try:
        reader = csv.DictReader(io.StringIO(read_text(path, _METRICS_REMEDY)), restval=_SHORT)
        rows = list(reader)
    except csv.Error as exc:
        raise DamagedFileError(path, f"not a readable CSV ({detail(exc)})", _METRICS_REMEDY) from None
    width = len(reader.fieldnames or [])
    for line, row in enumerate(rows, start=2):
        if None in row or _SHORT in row.values():
            problem = f"not a complete metrics table (line {line} lacks the header's {width} fields: truncated?)"
            raise DamagedFileError(path, problem, _METRICS_REMEDY)
    return [{k: _num(v) for k, v in r.items()} for r in rows]


def _num(v: str) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def list_runs(out: str | os.PathLike) -> list[Run]:
    """Every run folder directly under ``out`` (or below it, one level of nesting)."""
    root = Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}: expected a folder of runs")
    found = sorted({p.parent for p in root.glob("*/config.yaml")} | {p.parent for p in root.glob("*/*/config.yaml")})
    return [Run(p) for p in found]


__all__ = ["Run", "RunExistsError", "environment", "list_runs", "to_plain"]
