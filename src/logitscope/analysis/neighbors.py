"""Which images a model puts close together, and which it is confident in (section 4.3, B.2, B.3).

- Figure B.3: for a seed image, its nearest test images by cosine similarity of the logits;
  AT neighbors share colour and shape, ST neighbors share the class.
- Figure B.2: one class's images sorted into four quadrants by AT and ST confidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from logitscope.analysis.ranks import within_class_ranks

QUADRANTS = ("at_low_st_high", "at_high_st_high", "at_low_st_low", "at_high_st_low")


def cosine_similarity(logits: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine similarity between the logits of ``queries`` and every image.

    Args:
        logits: ``(N, C)``.
        queries: ``(S,)`` row indices into ``logits``.

    Returns:
        ``(S, N)`` float64 in [-1, 1]; an all-zero logit vector has similarity 0 to everything.
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits of shape {z.shape}: expected (N, C)")
    q = np.asarray(queries, np.int64)
    if q.size and (q.min() < -len(z) or q.max() >= len(z)):
        raise ValueError(f"query indices span [{q.min()}, {q.max()}]: expected rows of {len(z)} images")
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    unit = z / np.where(norm > 0, norm, 1.0)
    return unit[q] @ unit.T


def nearest_neighbors(logits: np.ndarray, seeds: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` images most cosine-similar to each seed, the seed itself excluded.

    Args:
        logits: ``(N, C)``.
        seeds: ``(S,)`` row indices.
        k: neighbors per seed, ``1 <= k < N``.

    Returns:
        ``(index (S, k) int64, similarity (S, k) float64)``, most similar first (ties by index).
    """
    n = np.asarray(logits).shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k={k}: expected 1 <= k < {n} (the number of images)")
    seeds = np.asarray(seeds, np.int64)
    sims = cosine_similarity(logits, seeds)
    sims[np.arange(len(seeds)), seeds] = -np.inf
    order = _smallest_first(-sims, k)
    return order, np.take_along_axis(sims, order, axis=1)


def _smallest_first(keys: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(keys, axis=1, kind="stable")[:, :k]`` for ``(S, N)`` keys, without sorting
    whole rows: a partition finds each row's k-th smallest key, and only the keys up to it (ties
    included, in index order) are sorted stably, so ties keep the lower index first as before."""
    if np.isnan(keys).any():  # NaNs sort last in argsort; keep its exact behaviour for them
        return np.argsort(keys, axis=1, kind="stable")[:, :k]
    kth = np.partition(keys, k - 1, axis=1)[:, k - 1]
    out = np.empty((len(keys), k), np.int64)
    for r, row in enumerate(keys):
        cand = np.flatnonzero(row <= kth[r])
        out[r] = cand[np.argsort(row[cand], kind="stable")[:k]]
    return out


def pick_seeds(labels: np.ndarray, n: int = 5, seed: int = 0) -> np.ndarray:
    """One random image from each of ``n`` classes spread evenly over the classes present.

    Returns:
        ``(n,)`` int64 row indices (fewer when fewer classes are present).
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    chosen = classes[np.unique(np.linspace(0, len(classes) - 1, min(n, len(classes))).round().astype(int))]
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(np.flatnonzero(labels == c)) for c in chosen], np.int64)


@dataclass(frozen=True)
class Neighbors:
    """Nearest images of each seed under several models (figure B.3).

    Attributes:
        seeds: ``(S,)`` seed row indices.
        index: ``{model label: (S, k) int64}`` neighbors, most similar first.
        similarity: ``{model label: (S, k) float64}`` their cosine similarities.
    """

    seeds: np.ndarray
    index: dict[str, np.ndarray]
    similarity: dict[str, np.ndarray]

    def same_class_fraction(self, labels: np.ndarray) -> dict[str, float]:
        """Per model, the share of neighbors in their seed's class."""
        labels = np.asarray(labels)
        return {m: float((labels[idx] == labels[self.seeds][:, None]).mean()) for m, idx in self.index.items()}


def logit_neighbors(logits: Mapping[str, np.ndarray], seeds: np.ndarray, k: int = 5) -> Neighbors:
    """`nearest_neighbors` of the same seeds under each model of ``logits`` (label -> (N, C))."""
    found = {m: nearest_neighbors(z, seeds, k) for m, z in logits.items()}
    return Neighbors(
        seeds=np.asarray(seeds, np.int64),
        index={m: f[0] for m, f in found.items()},
        similarity={m: f[1] for m, f in found.items()},
    )


@dataclass(frozen=True)
class ConfidenceQuadrants:
    """One class's images that AT and ST are confident or unconfident in (figure B.2).

    Attributes:
        cls: the class.
        index: ``{quadrant: (n_q,) int64}`` row indices, most typical of the quadrant first; keys
            are `QUADRANTS` (``"at_high_st_low"``: AT confident, ST not, ...).
    """

    cls: int
    index: dict[str, np.ndarray]


def confidence_quadrants(
    conf_at: np.ndarray,
    conf_st: np.ndarray,
    labels: np.ndarray,
    cls: int,
    per_quadrant: int = 9,
) -> ConfidenceQuadrants:
    """Split class ``cls`` by AT and ST confidence, each at its median within-class rank.

    An image is "high" for a model when its rank is in the most confident half of the class.
    Each quadrant lists up to ``per_quadrant`` images, those deepest inside it first (e.g. for
    AT high / ST low, the largest ST rank minus AT rank).

    Args:
        conf_at, conf_st: ``(N,)`` confidences of the two models (see `ranks.confidence`).
        labels: ``(N,)`` classes.
        cls: the class to show.
        per_quadrant: images per quadrant.
    """
    labels = np.asarray(labels)
    index = np.flatnonzero(labels == cls)
    if index.size == 0:
        raise ValueError(f"class {cls} has no images: classes present {np.unique(labels).tolist()}")
    ra = within_class_ranks(np.asarray(conf_at)[index], labels[index])
    rs = within_class_ranks(np.asarray(conf_st)[index], labels[index])
    half = index.size / 2
    at_high, st_high = ra <= half, rs <= half
    members = {
        "at_high_st_high": (at_high & st_high, -(ra + rs)),
        "at_high_st_low": (at_high & ~st_high, rs - ra),
        "at_low_st_high": (~at_high & st_high, ra - rs),
        "at_low_st_low": (~at_high & ~st_high, ra + rs),
    }
    out = {}
    for name in QUADRANTS:
        inside, score = members[name]
        cand = np.flatnonzero(inside)
        best = cand[np.argsort(-score[cand], kind="stable")[:per_quadrant]]
        out[name] = index[best]
    return ConfidenceQuadrants(cls=int(cls), index=out)
