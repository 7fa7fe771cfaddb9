"""Analysis results as files: frozen dataclasses of arrays and plain values, in one ``.npz``.

A stage writes what it measured (`write_results`); the report reads it back
(`read_results`) and draws. The file holds every array under a numbered key and a JSON
manifest (``__manifest__``) that rebuilds the structure: dataclasses by type name, dicts,
lists, tuples, numbers, strings, None. Reading never unpickles and builds only the types the
caller names; anything else is a `DamagedFileError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from logitscope.fileio.atomic import atomic_save_npz
from logitscope.fileio.errors import RERUN, DamagedFileError, load_npz

MANIFEST = "__manifest__"


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"array": key}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _encode(getattr(obj, f.name), arrays) for f in dataclasses.fields(obj)}
        return {"type": type(obj).__name__, "fields": fields}
    if isinstance(obj, Mapping):
        return {"dict": [[str(k), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return {"tuple" if isinstance(obj, tuple) else "list": [_encode(v, arrays) for v in obj]}
    raise TypeError(f"{type(obj).__name__} cannot be stored as a result: expected dataclasses, arrays, plain values")


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Atomically write ``results`` (name -> dataclass, array, dict, list, plain value)."""
    arrays: dict[str, np.ndarray] = {}
    manifest = {name: _encode(value, arrays) for name, value in results.items()}
    return atomic_save_npz(path, **arrays, **{MANIFEST: np.array(json.dumps(manifest))})


def _decode(node: Any, arrays: Mapping[str, np.ndarray], types: Mapping[str, type], where: Path) -> Any:
    if not isinstance(node, dict):
        return node
    if "array" in node:
        if node["array"] not in arrays:
            raise DamagedFileError(where, f"the manifest names an array {node['array']!r} it does not hold", RERUN)
        return arrays[node["array"]]
    if "type" in node:
        cls = types.get(node["type"])
        if cls is None:
            problem = f"holds a {node['type']!r}: expected one of {', '.join(sorted(types)) or 'no types'}"
            raise DamagedFileError(where, problem, RERUN)
        return cls(**{k: _decode(v, arrays, types, where) for k, v in node["fields"].items()})
    if "dict" in node:
        return {k: _decode(v, arrays, types, where) for k, v in node["dict"]}
    if "tuple" in node:
        return tuple(_decode(v, arrays, types, where) for v in node["tuple"])
    if "list" in node:
        return [_decode(v, arrays, types, where) for v in node["list"]]
    raise DamagedFileError(where, f"unreadable manifest entry with keys {sorted(node)}", RERUN)


def read_results(path: str | os.PathLike, types: Mapping[str, type]) -> dict[str, Any]:
    """What `write_results` wrote, rebuilding dataclasses of ``types`` (type name -> class).

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: unreadable, no manifest, or a type not among ``types``.
    """
    path = Path(path)
    arrays = load_npz(path)
    if MANIFEST not in arrays:
        raise DamagedFileError(path, "not a results file (no manifest)", RERUN)
    try:
        manifest = json.loads(str(arrays.pop(MANIFEST)))
    except json.JSONDecodeError as exc:
        raise DamagedFileError(path, f"unreadable manifest ({exc.msg})", RERUN) from None
    try:
        return {name: _decode(node, arrays, types, path) for name, node in manifest.items()}
    except (TypeError, KeyError) as exc:  # fields of another version of a type
        raise DamagedFileError(path, f"manifest does not match the types ({exc})", RERUN) from None
