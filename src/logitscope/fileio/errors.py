"""Reading back what logitscope wrote, with one-line errors for damaged or hostile files.

Every file a run folder holds (checkpoints, logits, eval records, targets, plan markers,
presets, meta.json, config.yaml) may be truncated by a full disk, corrupted by a copy, or
replaced by someone else's file. The readers here turn each way a load can fail into one
:class:`DamagedFileError` naming the file, what is wrong and what to do, instead of a
library traceback; a missing file stays a ``FileNotFoundError`` (callers treat "not written
yet" and "written but unreadable" differently). Nothing here unpickles: arrays are read
with ``allow_pickle=False`` and YAML with ``safe_load``, so a hostile file is refused before
anything in it can run.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

RERUN = "delete it and rerun the stage that wrote it (logitscope reproduce resumes)"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_DETAIL = 160


class DamagedFileError(ValueError):
    """A file exists but cannot be trusted: truncated, corrupt, or asking to run code.

    The message is one line, ``<path>: <what is wrong>; <what to do>``, so the command line
    prints it as is. ``path``, ``problem`` and ``remedy`` are kept for callers that recover
    (a damaged cache is recomputed, a damaged marker makes its stage run again).
    """

    def __init__(self, path: str | os.PathLike, problem: str, remedy: str = RERUN) -> None:
        self.path = Path(path)
        self.problem = one_line(problem)
        self.remedy = one_line(remedy)
        super().__init__(f"{self.path}: {self.problem}; {self.remedy}")


def one_line(text: object, limit: int = _MAX_DETAIL * 2) -> str:
    """``text`` as one line: ANSI colours dropped, whitespace collapsed, cut at ``limit``."""
    flat = " ".join(_ANSI.sub("", str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def detail(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none),
    short enough to sit inside a one-line error."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    return one_line(lines[0] if lines else type(exc).__name__, _MAX_DETAIL)


def _hostile_numpy(exc: BaseException) -> bool:
    """numpy's refusals of pickled content (``allow_pickle=False``), as opposed to damage."""
    text = str(exc)
    return "pickle" in text or "Python objects" in text


def _numpy_error(path: Path, exc: BaseException, remedy: str) -> DamagedFileError:
    if _hostile_numpy(exc):
        problem = (
            "refused: it would unpickle objects other than plain arrays (allow_pickle=False); nothing in it was run"
        )
    else:
        problem = f"not a readable array file (truncated or corrupt: {detail(exc)})"
    return DamagedFileError(path, problem, remedy)


# Errors numpy raises for a short, corrupt or pickled .npy/.npz (besides FileNotFoundError).
_NUMPY_ERRORS = (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, KeyError)


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None, remedy: str = RERUN) -> np.ndarray:
    """One ``.npy`` array, never unpickled; memory-mapped when ``mmap_mode`` is given.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: truncated, corrupt, pickled, or not a single array.
    """
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise
    except _NUMPY_ERRORS as exc:
        raise _numpy_error(path, exc, remedy) from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()
        raise DamagedFileError(path, f"not a .npy array (holds {type(arr).__name__})", remedy)
    return arr


def load_npz(path: str | os.PathLike, remedy: str = RERUN) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read fully, never unpickled.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: truncated, corrupt, pickled, or not an ``.npz``.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except _NUMPY_ERRORS as exc:
        raise _numpy_error(path, exc, remedy) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DamagedFileError(path, f"not an .npz archive (holds a single {type(data).__name__})", remedy)
    try:
        with data:  # members are read (and CRC-checked) here, not at open
            return {k: data[k] for k in data.files}
    except _NUMPY_ERRORS as exc:
        raise _numpy_error(path, exc, remedy) from None


def read_text(path: str | os.PathLike, remedy: str = RERUN) -> str:
    """A UTF-8 text file; binary content is a :class:`DamagedFileError`."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})", remedy) from None


_JSON_KINDS = {dict: "a JSON object", list: "a JSON list", str: "a JSON string"}


def read_json(path: str | os.PathLike, remedy: str = RERUN, expect: type | None = None) -> Any:
    """A JSON file; with ``expect`` (e.g. ``dict``) its top-level value must be of that type.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: not UTF-8, not JSON (e.g. cut short), nested too deeply to read, or
            of another top-level type than ``expect``.
    """
    path = Path(path)
    text = read_text(path, remedy)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        where = "empty" if not text.strip() else f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise DamagedFileError(path, f"not valid JSON, truncated or corrupt ({where})", remedy) from None
    except RecursionError:
        raise DamagedFileError(path, "not readable JSON (nested too deeply)", remedy) from None
    if expect is not None and not isinstance(value, expect):
        want = _JSON_KINDS.get(expect, expect.__name__)
        raise DamagedFileError(path, f"holds {type(value).__name__}, expected {want}", remedy)
    return value


def parse_yaml(text: str, where: str | os.PathLike, remedy: str) -> Any:
    """``yaml.safe_load(text)`` with a one-line error naming ``where`` and the bad line.

    A tag asking for a Python object (``!!python/object/apply:os.system``) is refused by
    ``safe_load`` before anything is built; the message says so.
    """
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        problem = one_line(exc.problem or exc.context or type(exc).__name__, _MAX_DETAIL)
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        if isinstance(exc, yaml.constructor.ConstructorError) and "python/" in problem:
            tag = re.search(r"'([^']*python/[^']*)'", problem)
            name = tag.group(1) if tag else "a Python tag"
            msg = f"refused: {name} at {at} asks YAML to build a Python object; only plain values are read"
            raise DamagedFileError(where, msg, remedy) from None
        raise DamagedFileError(where, f"not valid YAML at {at}: {problem}", remedy) from None
    except yaml.YAMLError as exc:
        raise DamagedFileError(where, f"not valid YAML ({detail(exc)})", remedy) from None
    except RecursionError:
        raise DamagedFileError(where, "not readable YAML (nested too deeply)", remedy) from None


def read_yaml(path: str | os.PathLike, remedy: str = RERUN) -> Any:
    """A YAML file read with ``safe_load`` (see :func:`parse_yaml`)."""
    return parse_yaml(read_text(path, remedy), path, remedy)
