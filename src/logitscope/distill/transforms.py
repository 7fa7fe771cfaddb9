"""Manipulations of a teacher's distillation targets (section 4.2, figure 4A, table 2).

Each transform is a pure function of ``(targets, labels, seed)`` (plus the ST teacher's
targets for ``hybrid``) returning new ``(N, C)`` targets and a small JSON-ready report of what
it did. Everything is vectorised over samples: ranks come from one ``argsort`` and the per-row
random permutations from an ``argsort`` of uniform random keys.

Names (the string form used in configs and on the command line):

- ``none``: the teacher's targets unchanged (normal distillation);
- ``fix-k-permute``: keep each sample's k largest values on their classes; the other C - k
  values go to the other C - k classes in a uniformly random order (per sample, seeded);
- ``fix-k-average``: keep the k largest; the other C - k values are all set to their mean;
- ``correct``: where the teacher's top class is not the label, swap the top class's value and
  the label's value (the paper's teacher got 19.6% +- 0.6% of CIFAR-10 training images wrong);
- ``correct-fix-1`` / ``correct-fix-1-average``: ``correct`` then ``fix-1-permute`` /
  ``fix-1-average``;
- ``hybrid``: the AT teacher's sorted values placed in the ST teacher's class order: the value
  of rank r goes to the ST teacher's rank-r class.

A concrete k may be written into the name (``fix-3-permute``); a list of specs is applied in
order by `apply_transforms` (``"correct+fix-3-average"`` parses to two specs). With tied
values the ranks break ties by the lower class index.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BASE_NAMES = ("none", "fix-k", "correct", "correct-fix-1", "hybrid")
FILLS = ("permute", "average")
VALID_NAMES = (
    "none",
    "fix-k-permute",
    "fix-k-average",
    "correct",
    "correct-fix-1",
    "correct-fix-1-average",
    "hybrid",
)
_FIX_RE = re.compile(r"^fix-(k|\d+)-(permute|average)$")


@dataclass(frozen=True)
class TransformSpec:
    """One target manipulation.

    Attributes:
        name: one of ``BASE_NAMES``: "none", "fix-k", "correct", "correct-fix-1", "hybrid".
        k: how many of each sample's largest values stay in place ("fix-k"; 1 for
            "correct-fix-1"; unused, and left at 1, otherwise). Checked against the number of
            classes when applied.
        fill: what happens to the other values: "permute" or "average" ("fix-k" and
            "correct-fix-1"; left at "permute" otherwise).
    """

    name: str
    k: int = 1
    fill: str = "permute"

    def __post_init__(self) -> None:
        if self.name not in BASE_NAMES:
            raise ValueError(
                f"unknown transform {self.name!r}: expected one of {', '.join(VALID_NAMES)}"
            )
        if self.fill not in FILLS:
            raise ValueError(f"transform fill={self.fill!r}: expected one of {', '.join(FILLS)}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"transform k={self.k!r}: expected an integer >= 1")
        if self.name in ("none", "correct", "hybrid") and (self.k != 1 or self.fill != "permute"):
            raise ValueError(
                f"transform {self.name!r} takes no k or fill (got k={self.k}, fill={self.fill!r})"
            )
        if self.name == "correct-fix-1" and self.k != 1:
            raise ValueError(f"transform 'correct-fix-1' fixes k=1, got k={self.k}")
        object.__setattr__(self, "k", int(self.k))

    @property
    def label(self) -> str:
        """The string form: "fix-3-permute", "correct-fix-1-average", "hybrid", ..."""
        if self.name == "fix-k":
            return f"fix-{self.k}-{self.fill}"
        if self.name == "correct-fix-1" and self.fill == "average":
            return "correct-fix-1-average"
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformSpec:
        unknown = set(d) - {"name", "k", "fill"}
        if unknown:
            raise KeyError(f"unknown transform spec keys {sorted(unknown)}: expected name, k, fill")
        if "name" not in d:
            raise KeyError("transform spec without 'name'")
        return cls(**d)


def parse_transform(name: str, k: int | None = None) -> TransformSpec:
    """Parse a transform's string form into a `TransformSpec`.

    Args:
        name: one of ``VALID_NAMES``, or a fix-k name with k written in ("fix-3-average").
        k: the k of "fix-k-permute" / "fix-k-average"; must agree with a k in the name.

    Examples:
        ``parse_transform("fix-k-permute", k=3) == parse_transform("fix-3-permute")``
    """
    name = name.strip()
    m = _FIX_RE.match(name)
    if m:
        k_name = None if m.group(1) == "k" else int(m.group(1))
        if k is not None and k_name is not None and k != k_name:
            raise ValueError(f"transform {name!r} names k={k_name} but k={k} was given")
        k = k if k is not None else k_name
        if k is None:
            raise ValueError(f"transform {name!r} needs k (an integer >= 1)")
        return TransformSpec("fix-k", k=k, fill=m.group(2))
    if name not in VALID_NAMES:
        raise ValueError(f"unknown transform {name!r}: expected one of {', '.join(VALID_NAMES)}")
    if k is not None and not (name.startswith("correct-fix-1") and k == 1):
        raise ValueError(f"transform {name!r} takes no k (got k={k})")
    if name == "correct-fix-1-average":
        return TransformSpec("correct-fix-1", fill="average")
    return TransformSpec(name)


def parse_transforms(text: str) -> tuple[TransformSpec, ...]:
    """Parse a "+"-separated composition, e.g. ``"correct+fix-3-average"``, applied in order."""
    parts = [p for p in text.split("+") if p.strip()]
    if not parts:
        raise ValueError(f"empty transform list {text!r}: expected e.g. 'fix-3-permute'")
    return tuple(parse_transform(p) for p in parts)


def format_transforms(specs: Sequence[TransformSpec]) -> str:
    """The "+"-joined string form of a composition (the inverse of `parse_transforms`)."""
    return "+".join(s.label for s in specs)


def apply_transform(
    spec: TransformSpec | str,
    targets: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    order_targets: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply one manipulation to a teacher's targets.

    Args:
        spec: the manipulation, or its string form (see `parse_transform`).
        targets: (N, C) float teacher targets (logits), e.g. the AT teacher's.
        labels: (N,) int ground-truth labels in [0, C).
        seed: seeds the per-sample permutations (the result is a function of the seed).
        order_targets: (N, C) the ST teacher's targets; required by "hybrid" only.

    Returns:
        ``(new_targets, report)``: (N, C) targets of the input's float dtype (a new array), and
        a JSON-ready dict with the transform's label, ``rows``, ``rows_changed``,
        ``argmax_changed`` (fraction of rows), ``accuracy_before`` / ``accuracy_after`` (argmax
        equals the label), ``mean_abs_change``, plus per-transform entries: ``k`` and ``fill``
        (fix-k), ``corrected`` and ``teacher_error_rate`` (correct), ``top1_agreement`` of the
        two teachers (hybrid).
    """
    if isinstance(spec, str):
        spec = parse_transform(spec)
    targets, labels = _check(targets, labels)
    n, c = targets.shape
    extra: dict[str, Any] = {}
    if spec.name == "none":
        out = targets.copy()
    elif spec.name == "fix-k":
        out = _fix_k(targets, _check_k(spec.k, c), spec.fill, np.random.default_rng(seed))
        extra = {"k": spec.k, "fill": spec.fill}
    elif spec.name == "correct":
        out, corrected = _correct(targets, labels)
        extra = {"corrected": corrected, "teacher_error_rate": corrected / n}
    elif spec.name == "correct-fix-1":
        fixed, corrected = _correct(targets, labels)
        out = _fix_k(fixed, 1, spec.fill, np.random.default_rng(seed))
        extra = {
            "k": 1,
            "fill": spec.fill,
            "corrected": corrected,
            "teacher_error_rate": corrected / n,
        }
    else:
        if order_targets is None:
            raise ValueError("transform 'hybrid' needs order_targets (the ST teacher's targets)")
        order_targets = np.asarray(order_targets)
        if order_targets.shape != targets.shape:
            raise ValueError(
                f"hybrid order_targets shape {order_targets.shape}: expected "
                f"{targets.shape}, the shape of the targets"
            )
        if not np.isfinite(order_targets).all():
            raise ValueError("hybrid order_targets contain NaN or inf: expected finite logits")
        out = _hybrid(targets, order_targets)
        extra = {"top1_agreement": float(np.mean(targets.argmax(1) == order_targets.argmax(1)))}
    report = {"transform": spec.label, **_summary(targets, out, labels), **extra}
    log.info("target transform %s: %s", spec.label, report)
    return out, report


def apply_transforms(
    specs: Iterable[TransformSpec | str],
    targets: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    order_targets: np.ndarray | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply ``specs`` in order; step i draws from ``np.random.SeedSequence([seed, i])``.

    Returns:
        ``(new_targets, reports)``: the final (N, C) targets and one report per step.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("apply_transforms got no specs: expected at least one ('none' for none)")
    out = np.asarray(targets)
    reports = []
    for i, spec in enumerate(specs):
        step_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        out, report = apply_transform(spec, out, labels, step_seed, order_targets)
        reports.append(report)
    return out, reports


def _check(targets: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets)
    labels = np.asarray(labels)
    if targets.ndim != 2 or targets.shape[0] < 1 or targets.shape[1] < 2:
        raise ValueError(
            f"targets shape {targets.shape}: expected (N, C) with N >= 1 rows and C >= 2 classes"
        )
    if not np.issubdtype(targets.dtype, np.floating):
        targets = targets.astype(np.float32)
    if labels.shape != (targets.shape[0],):
        raise ValueError(
            f"labels shape {labels.shape}: expected ({targets.shape[0]},), one "
            f"label per row of the targets"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels dtype {labels.dtype}: expected integers")
    if labels.min() < 0 or labels.max() >= targets.shape[1]:
        raise ValueError(
            f"labels in [{labels.min()}, {labels.max()}]: expected [0, {targets.shape[1] - 1}]"
        )
    if not np.isfinite(targets).all():
        raise ValueError("targets contain NaN or inf: expected finite logits")
    return targets, labels


def _check_k(k: int, c: int) -> int:
    if not 1 <= k <= c:
        raise ValueError(f"fix-k k={k}: expected 1..{c} (the number of classes)")
    return k


def _ranks(targets: np.ndarray) -> np.ndarray:
    """(N, C) class indices of each row by decreasing value, ties to the lower index."""
    return np.argsort(-targets, axis=1, kind="stable")


def _fix_k(targets: np.ndarray, k: int, fill: str, rng: np.random.Generator) -> np.ndarray:
    out = targets.copy()
    n, c = targets.shape
    if k == c:
        return out
    rest = _ranks(targets)[:, k:]  # (N, C-k) classes below rank k
    values = np.take_along_axis(targets, rest, axis=1)
    if fill == "permute":
        perm = np.argsort(rng.random((n, c - k)), axis=1)  # uniform per-row permutations
        new = np.take_along_axis(values, perm, axis=1)
    else:
        mean = values.mean(axis=1, dtype=np.float64, keepdims=True)
        new = np.broadcast_to(mean, values.shape).astype(targets.dtype)
    np.put_along_axis(out, rest, new, axis=1)
    return out


def _correct(targets: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Swap the top value and the label's value where the label's value is not the largest."""
    out = targets.copy()
    top = targets.argmax(axis=1)
    rows = np.arange(len(targets))
    wrong = np.flatnonzero(targets[rows, labels] < targets[rows, top])
    t, y = top[wrong], labels[wrong]
    out[wrong, t] = targets[wrong, y]
    out[wrong, y] = targets[wrong, t]
    return out, int(wrong.size)


def _hybrid(values_from: np.ndarray, order_from: np.ndarray) -> np.ndarray:
    out = np.empty_like(values_from)
    sorted_desc = -np.sort(-values_from, axis=1)
    np.put_along_axis(out, _ranks(order_from), sorted_desc, axis=1)
    return out


def _summary(before: np.ndarray, after: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    top_before, top_after = before.argmax(axis=1), after.argmax(axis=1)
    return {
        "rows": len(before),
        "rows_changed": int(np.any(before != after, axis=1).sum()),
        "argmax_changed": float(np.mean(top_before != top_after)),
        "accuracy_before": float(np.mean(top_before == labels)),
        "accuracy_after": float(np.mean(top_after == labels)),
        "mean_abs_change": float(np.abs(after.astype(np.float64) - before).mean()),
    }
