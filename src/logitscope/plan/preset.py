"""Reproduce presets: YAML files describing the whole paper's graph, with overrides."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from logitscope.config import ConfigError, Preset, parse_float
from logitscope.fileio.errors import detail, one_line, parse_yaml, read_yaml

PRESET_DIR = "presets"
SECTIONS = (
    "name",
    "seeds",
    "train",
    "evaluate",
    "teacher",
    "distill",
    "analysis",
    "manifolds",
    "theory",
    "crosscheck",
)
# Sections a preset may leave out (crosscheck: none is planned).
OPTIONAL_SECTIONS = ("crosscheck",)
# Keys that may be null, with an example of their other values' type.
NULLABLE = {
    "evaluate.n": 0,
    "teacher.fixed_epoch": 0,
    "teacher.natural_tolerance": 0.0,
    "analysis.epoch": 0,
    "manifolds.eps": 0.0,
}
# Keys a preset may leave out (their section's default), with an example of their type.
OPTIONAL_KEYS = {"teacher.rule": "robustness", "teacher.natural_tolerance": 0.0}
# Keys that also take these words: analysis.epoch: teacher (the teacher epoch, once chosen).
WORDS = {"analysis.epoch": ("teacher",)}
_FIX_PRESET = "fix it, or start again from a copy of a built-in preset (e.g. digits)"


def preset_names() -> list[str]:
    folder = resources.files("logitscope.plan") / PRESET_DIR
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A built-in preset by name, or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} does not exist")
        preset = read_yaml(path, _FIX_PRESET)
    else:
        if name_or_path not in preset_names():
            raise ConfigError(
                f"unknown preset {name_or_path!r}: expected one of {', '.join(preset_names())} or a YAML file"
            )
        resource = resources.files("logitscope.plan") / PRESET_DIR / f"{name_or_path}.yaml"
        preset = parse_yaml(resource.read_text(), str(resource), "reinstall logitscope")
    if not isinstance(preset, dict):
        raise ConfigError(f"preset {name_or_path}: expected a mapping of sections {SECTIONS}")
    unknown = sorted(set(preset) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"preset {name_or_path}: unknown section {unknown[0]!r}: expected {', '.join(SECTIONS)}")
    missing = [s for s in SECTIONS if s not in preset and s not in OPTIONAL_SECTIONS]
    if missing:
        raise ConfigError(f"preset {name_or_path}: missing section {missing[0]!r}")
    Preset.from_dict(preset, name_or_path)  # every value of its field's type (config.Preset)
    return preset


def _or_words(key: str) -> str:
    """The other values a key takes, for its errors: ", null or 'teacher'" (or nothing)."""
    words = (["null"] if key in NULLABLE else []) + [repr(w) for w in WORDS.get(key, ())]
    if not words or key not in WORDS:
        return ""
    return ", " + ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


def _typed(value: str, current: Any, key: str) -> Any:
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:  # a command-line value, e.g. "[1, 2" or a Python tag
        why = one_line(getattr(exc, "problem", None) or detail(exc), 120)
        raise ConfigError(
            f"{key}={value!r}: not a plain YAML value ({why}): expected e.g. 3, 0.1, [1, 2] or text"
        ) from None
    if key in NULLABLE:
        if parsed is None:
            return None
        current = NULLABLE[key]
    if parsed in WORDS.get(key, ()):
        return parsed
    if isinstance(current, bool):
        if not isinstance(parsed, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return parsed
    if isinstance(current, float) or (isinstance(current, int) and isinstance(parsed, float)):
        try:
            return parse_float(value)
        except ConfigError as exc:
            raise ConfigError(f"{key}={value!r}: expected a number") from exc
    if isinstance(current, int):
        if isinstance(parsed, bool) or not isinstance(parsed, int):
            raise ConfigError(f"{key}={value!r}: expected an integer{_or_words(key)}")
        return parsed
    if isinstance(current, list) and not isinstance(parsed, list):
        raise ConfigError(f"{key}={value!r}: expected a list, e.g. [1, 2, 3]")
    if isinstance(current, dict) and not isinstance(parsed, dict):
        raise ConfigError(f"{key}={value!r}: expected a mapping")
    if isinstance(current, str) and not isinstance(parsed, str):
        return value.strip()
    return parsed


def apply_preset_overrides(preset: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides; the ``set`` mappings take any RunConfig key."""
    out = copy.deepcopy(preset)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=50")
        key, value = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        node: Any = out
        for i, p in enumerate(parts):
            if isinstance(node, dict) and p == "set" and i < len(parts) - 1:
                node[p] = node.get(p) or {}
                node[p][".".join(parts[i + 1 :])] = value
                break
            if isinstance(node, dict) and p not in node and key in OPTIONAL_KEYS and i == len(parts) - 1:
                node[p] = _typed(value, OPTIONAL_KEYS[key], key)
                break
            if not isinstance(node, dict) or p not in node:
                where = ".".join(parts[:i]) or "the preset"
                options = ", ".join(sorted(node)) if isinstance(node, dict) else "no sub-keys"
                raise ConfigError(f"unknown key {key!r}: {where} has {options}")
            if i == len(parts) - 1:
                node[p] = _typed(value, node[p], key)
            else:
                node = node[p]
    return out
