"""Torch files as plain data (tensors, numbers, strings): saved atomically, loaded with
``weights_only=True`` so that nothing but plain data is ever built from a file.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from logitscope.fileio.atomic import atomic_write_bytes
from logitscope.fileio.errors import RERUN, DamagedFileError, detail, one_line


def save_plain(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically ``torch.save`` a dict of plain data."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_plain(path: str | os.PathLike, remedy: str = RERUN) -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: truncated or corrupt, not a logitscope checkpoint, or refused
            because unpickling it would build objects other than plain data (nothing ran).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of foreign files; the error below says it all
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, str(exc), remedy) from None
    except _LOAD_ERRORS as exc:
        why = "empty file" if path.stat().st_size == 0 else detail(exc).split(". ")[0]  # torch adds advice
        problem = f"not a loadable checkpoint (truncated or corrupt: {why})"
        raise DamagedFileError(path, problem, remedy) from None
    if not isinstance(payload, dict):
        problem = f"not a logitscope checkpoint (holds {type(payload).__name__}, expected a dict)"
        raise DamagedFileError(path, problem, remedy)
    return payload


# What torch.load raises for a short or scrambled file: RuntimeError "PytorchStreamReader
# failed ...", EOFError (empty), KeyError/struct errors (legacy format garbage), zip errors.
_LOAD_ERRORS = (RuntimeError, EOFError, KeyError, ValueError, TypeError, IndexError, struct.error, zipfile.BadZipFile)
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def _unpickling_error(path: Path, text: str, remedy: str) -> DamagedFileError:
    """Tell a refused object (``GLOBAL os.system``) from a scrambled pickle stream: torch's
    ``weights_only`` reader raises ``UnpicklingError`` for both."""
    found = _GLOBAL_RE.search(text)
    if found:
        problem = (
            f"refused: it would unpickle objects other than plain data ({found.group(1)}; weights_only=True); "
            "nothing in it was run"
        )
        return DamagedFileError(path, problem, f"{remedy}; do not load it elsewhere unless you trust its source")
    reason = text.split("WeightsUnpickler error:", 1)[-1]
    skip = ("Weights only load failed", "Check the documentation", "Please file an issue", "(1)", "(2)", "In PyTorch")
    lines = [ln.strip() for ln in reason.splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    why = one_line(lines[0], 120) if lines else "unreadable pickle"
    problem = f"not a loadable checkpoint (corrupt, or a pickle the weights_only=True reader refuses: {why})"
    return DamagedFileError(path, problem, remedy)
