"""Where ST and AT models disagree image by image (paper section 4.1, figure 3 and B.6).

- Confidence rank disagreement (figures 3A, 3B): within each class, rank the images by each
  model's confidence; count the images whose two ranks differ by more than half the largest rank
  (the paper: 11.8% between AT and ST, 1.1% between AT seeds on CIFAR-10).
- Error-class rank (figure 3C): a wrong prediction is usually a class ranked high in the true
  class's average logit vector.
- Average overlap (figures 3D, B.6): AO@k between two models' class orders on the same image,
  against a baseline that pairs each image with another image of its class.

Every function takes plain arrays: ``logits`` ``(N, C)`` in any float dtype, ``labels`` ``(N,)``
ints in ``[0, C)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from logitscope.stats import mean_sd, mean_sd_axis

CONFIDENCE_KINDS = ("true", "max")


def _check(logits: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits of shape {z.shape}: expected (N, C) with C >= 2 classes")
    if z.shape[0] == 0:
        raise ValueError("logits with no rows: expected at least one image")
    if labels is None:
        return z, np.zeros(0, np.int64)
    y = np.asarray(labels)
    if y.shape != (z.shape[0],):
        raise ValueError(f"labels of shape {y.shape}: expected ({z.shape[0]},) to match the logits")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels span [{y.min()}, {y.max()}]: expected classes in [0, {z.shape[1]})")
    return z, y.astype(np.int64)


def pair_group(a: str, b: str) -> str:
    """Name of a pair of model groups, order-free: ``pair_group("ST", "AT") == "AT-ST"``."""
    return "-".join(sorted((a, b)))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``(N, C)`` float64 log-probabilities, exact even where the softmax rounds to 1.

    log p_j = (z_j - z_max) - log1p(sum over j' != argmax of exp(z_j' - z_max)): the sum
    leaves out the top term (exactly 1) so log1p sees tiny remainders that log(1 + r) loses.
    """
    z, _ = _check(logits)
    z = z.astype(np.float64)
    rows = np.arange(len(z))
    top = z.argmax(axis=1)
    shifted = z - z[rows, top][:, None]
    rest = np.exp(shifted)
    rest[rows, top] = 0.0
    return shifted - np.log1p(rest.sum(axis=1))[:, None]


def confidence(logits: np.ndarray, labels: np.ndarray, kind: str = "true") -> np.ndarray:
    """Softmax confidence of each image, as a log-probability.

    The log is taken so that confident ST images, whose float32 softmax rounds to exactly 1,
    still rank apart; it orders images exactly as the probability does.

    Args:
        logits: ``(N, C)``.
        labels: ``(N,)`` true classes.
        kind: ``"true"`` (probability of the true class, the default) or ``"max"`` (largest
            probability).

    Returns:
        ``(N,)`` float64 log-probabilities (<= 0).
    """
    z, y = _check(logits, labels)
    if kind not in CONFIDENCE_KINDS:
        raise ValueError(f"confidence kind {kind!r}: expected one of {CONFIDENCE_KINDS}")
    logp = log_softmax(z)
    if kind == "max":
        return logp.max(axis=1)
    return logp[np.arange(len(y)), y]


def within_class_ranks(conf: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of each image among the images of its class, 1 = most confident.

    Args:
        conf: ``(N,)`` confidences (any increasing scale).
        labels: ``(N,)`` classes.

    Returns:
        ``(N,)`` float64 ranks in ``[1, n_c]`` where ``n_c`` is the image's class size; ties share
        their average rank.
    """
    conf = np.asarray(conf, np.float64)
    labels = np.asarray(labels)
    if conf.shape != labels.shape or conf.ndim != 1:
        raise ValueError(f"confidences {conf.shape} and labels {labels.shape}: expected equal (N,)")
    ranks = np.empty(len(conf), np.float64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        ranks[idx] = rankdata(-conf[idx], method="average")
    return ranks


def far_ranked(rank_a: np.ndarray, rank_b: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the two ranks differ by more than half the largest rank of the class."""
    sizes = np.bincount(labels)[labels]
    return np.abs(rank_a - rank_b) > sizes / 2


def rank_disagreement(conf_a: np.ndarray, conf_b: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the fraction of images two models rank far apart (figure 3B, one pair).

    Args:
        conf_a, conf_b: ``(N,)`` the two models' confidences on the same images.
        labels: ``(N,)`` classes.

    Returns:
        ``(classes (K,), fraction (K,))`` for the classes present, ascending.
    """
    labels = np.asarray(labels, np.int64)
    far = far_ranked(within_class_ranks(conf_a, labels), within_class_ranks(conf_b, labels), labels)
    classes = np.unique(labels)
    return classes, np.bincount(labels, weights=far)[classes] / np.bincount(labels)[classes]


@dataclass(frozen=True)
class RankScatter:
    """Two models' within-class confidence ranks of one class's images (figure 3A).

    Attributes:
        cls: the class.
        names: the two models' names (x axis, y axis).
        index: ``(n,)`` the images' indices in the split.
        rank_a, rank_b: ``(n,)`` ranks, 1 = most confident.
        far: ``(n,)`` bool, ranks more than ``n / 2`` apart.
    """

    cls: int
    names: tuple[str, str]
    index: np.ndarray
    rank_a: np.ndarray
    rank_b: np.ndarray
    far: np.ndarray


def rank_scatter(
    conf_a: np.ndarray,
    conf_b: np.ndarray,
    labels: np.ndarray,
    cls: int,
    names: tuple[str, str] = ("AT", "ST"),
) -> RankScatter:
    """Ranks of class ``cls``'s images under two models' confidences ``(N,)``."""
    labels = np.asarray(labels, np.int64)
    index = np.flatnonzero(labels == cls)
    if index.size == 0:
        raise ValueError(f"class {cls} has no images: classes present {np.unique(labels).tolist()}")
    ra = within_class_ranks(np.asarray(conf_a)[index], labels[index])
    rb = within_class_ranks(np.asarray(conf_b)[index], labels[index])
    return RankScatter(
        cls=int(cls),
        names=names,
        index=index,
        rank_a=ra,
        rank_b=rb,
        far=far_ranked(ra, rb, labels[index]),
    )


@dataclass(frozen=True)
class RankDisagreement:
    """Rank disagreement between every pair of models, per class (figure 3B).

    Attributes:
        names: ``(M,)`` model names; ``groups``: ``(M,)`` their groups (e.g. "ST", "AT").
        classes: ``(K,)`` classes.
        fraction: ``(M, M, K)`` far-ranked fraction per pair and class (symmetric, 0 diagonal).
    """

    names: tuple[str, ...]
    groups: tuple[str, ...]
    classes: np.ndarray
    fraction: np.ndarray

    def pairs(self) -> dict[str, list[tuple[int, int]]]:
        """Unordered pairs of distinct models by pair group (``"AT-AT"``, ``"AT-ST"``, ...)."""
        out: dict[str, list[tuple[int, int]]] = {}
        for i, j in itertools.combinations(range(len(self.names)), 2):
            out.setdefault(pair_group(self.groups[i], self.groups[j]), []).append((i, j))
        return out

    def summary(self) -> dict[str, dict[str, float | int | list[float]]]:
        """Per pair group: per-class mean and sd over pairs, and the mean and sd over pairs of
        the class-averaged fraction (the paper's 11.8% AT-ST, 1.1% AT-AT).

        The sd is over model pairs (runs), so it is `logitscope.stats`' sample sd: NaN for a
        group of one pair."""
        out = {}
        for group, pairs in self.pairs().items():
            per_pair = np.stack([self.fraction[i, j] for i, j in pairs])
            per_class_mean, per_class_sd = mean_sd_axis(per_pair)
            mean, sd = mean_sd(per_pair.mean(axis=1))
            out[group] = {
                "n_pairs": len(pairs),
                "per_class_mean": per_class_mean.tolist(),
                "per_class_sd": per_class_sd.tolist(),
                "mean": mean,
                "sd": sd,
            }
        return out


def pairwise_rank_disagreement(
    logits: Sequence[np.ndarray],
    labels: np.ndarray,
    names: Sequence[str],
    groups: Sequence[str],
    kind: str = "true",
) -> RankDisagreement:
    """Rank disagreement for every pair among M models on the same images.

    Args:
        logits: M arrays ``(N, C)``, same images in the same order.
        labels: ``(N,)`` classes.
        names, groups: M model names and their groups.
        kind: confidence kind, see `confidence`.
    """
    if not len(logits) == len(names) == len(groups):
        raise ValueError(f"{len(logits)} logits, {len(names)} names, {len(groups)} groups: expected equal")
    labels = np.asarray(labels, np.int64)
    confs = [confidence(z, labels, kind) for z in logits]
    ranks = [within_class_ranks(c, labels) for c in confs]
    classes = np.unique(labels)
    sizes = np.bincount(labels)[classes]
    m = len(logits)
    frac = np.zeros((m, m, len(classes)))
    for i, j in itertools.combinations(range(m), 2):
        far = far_ranked(ranks[i], ranks[j], labels)
        frac[i, j] = frac[j, i] = np.bincount(labels, weights=far)[classes] / sizes
    return RankDisagreement(tuple(names), tuple(groups), classes, frac)


def class_mean_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average logit vector of each class over its correctly classified images.

    Returns:
        ``(C, C)`` float64; row ``c`` is NaN when no image of class ``c`` is classified correctly.
    """
    z, y = _check(logits, labels)
    n_classes = z.shape[1]
    correct = z.argmax(axis=1) == y
    sums = np.zeros((n_classes, n_classes))
    np.add.at(sums, y[correct], z[correct].astype(np.float64))
    counts = np.bincount(y[correct], minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


@dataclass(frozen=True)
class ErrorClassRank:
    """Where wrong predictions fall in the true class's average-logit order (figure 3C).

    Attributes:
        counts: ``(C-1,)`` int64 wrong predictions whose predicted class has rank k = 1..C-1
            among the true class's average logits (true class excluded; ties take the best rank).
        n_errors: wrong predictions counted.
        n_skipped: wrong predictions of classes with no correct image (no average to rank by).
    """

    counts: np.ndarray
    n_errors: int
    n_skipped: int

    @property
    def fraction(self) -> np.ndarray:
        """``(C-1,)`` share of the counted errors at each rank (zeros when there are none)."""
        return self.counts / max(self.n_errors, 1)


def error_class_rank(logits: np.ndarray, labels: np.ndarray, predicted: np.ndarray | None = None) -> ErrorClassRank:
    """Rank of each wrong prediction's class in its true class's average logit vector.

    Args:
        logits: ``(N, C)`` clean logits; they define the class averages (over correct images).
        labels: ``(N,)`` true classes.
        predicted: ``(N,)`` predictions to score (e.g. argmax of adversarial logits);
            ``None``: the clean predictions ``argmax(logits)``.
    """
    z, y = _check(logits, labels)
    mu = class_mean_logits(z, y)
    pred = z.argmax(axis=1) if predicted is None else np.asarray(predicted, np.int64)
    if pred.shape != y.shape:
        raise ValueError(f"predictions of shape {pred.shape}: expected {y.shape}")
    wrong = pred != y
    defined = ~np.isnan(mu[:, 0])
    use = wrong & defined[y]
    yt, pt = y[use], pred[use]
    rows = mu[yt]
    other = np.ones_like(rows, bool)
    other[np.arange(len(yt)), yt] = False
    k = 1 + ((rows > rows[np.arange(len(yt)), pt][:, None]) & other).sum(axis=1)
    n_classes = z.shape[1]
    return ErrorClassRank(
        counts=np.bincount(k - 1, minlength=n_classes - 1).astype(np.int64),
        n_errors=int(use.sum()),
        n_skipped=int((wrong & ~defined[y]).sum()),
    )


def descending_positions(logits: np.ndarray) -> np.ndarray:
    """``(N, C)`` int64: position of each class in the row's descending order (0 = largest).

    Ties keep class-index order, so any increasing map of the logits leaves the positions alone.
    """
    z, _ = _check(logits)
    order = np.argsort(-z, axis=1, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(z.shape[1])[None, :], axis=1)
    return pos


def average_overlap(a: np.ndarray, b: np.ndarray, k_max: int | None = None) -> np.ndarray:
    """Average overlap AO@k between the class orders of two logit vectors per image.

    AO@k = (1/k) sum_{i=1..k} |top_i(a) ∩ top_i(b)| / i, where top_i is the set of the i
    largest classes (Webber et al. 2010, the paper's reference [40]).

    Args:
        a, b: ``(N, C)`` logits of the same shape (any monotone scale).
        k_max: largest k (``None``: C).

    Returns:
        ``(N, k_max)`` float64 in [0, 1]; column k-1 is AO@k.
    """
    pa, pb = descending_positions(a), descending_positions(b)
    if pa.shape != pb.shape:
        raise ValueError(f"logits of shapes {pa.shape} and {pb.shape}: expected equal shapes")
    n, c = pa.shape
    k_max = c if k_max is None else k_max
    if not 1 <= k_max <= c:
        raise ValueError(f"k_max={k_max}: expected 1 <= k_max <= {c}")
    # A class is in both top-i sets exactly when i > max(its two positions): counting those
    # maxima per row and accumulating gives every |top_i(a) ∩ top_i(b)| at once.
    last = np.maximum(pa, pb)
    hits = np.bincount((np.arange(n)[:, None] * c + last).ravel(), minlength=n * c).reshape(n, c)
    overlap = np.cumsum(hits[:, :k_max], axis=1) / np.arange(1, k_max + 1)
    return np.cumsum(overlap, axis=1) / np.arange(1, k_max + 1)


def _mean_average_overlap(a: np.ndarray, b: np.ndarray, k_max: int | None, chunk_rows: int = 8192) -> np.ndarray:
    """``(K,)`` mean over images of `average_overlap`, a chunk of rows at a time."""
    total = sum(
        average_overlap(a[s : s + chunk_rows], b[s : s + chunk_rows], k_max).sum(axis=0)
        for s in range(0, len(a), chunk_rows)
    )
    return total / len(a)


def same_class_partner(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random other image of the same class for every image.

    Each class's images are shuffled and each one is paired with the next in the shuffled
    cycle, so no image is paired with itself unless it is alone in its class.

    Returns:
        ``(N,)`` int64 index with ``labels[partner] == labels``.
    """
    labels = np.asarray(labels)
    partner = np.arange(len(labels))
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        partner[idx] = np.roll(idx, -1)
    return partner


@dataclass(frozen=True)
class AverageOverlap:
    """AO@k between every pair of models, with the same-class baseline (figures 3D, B.6).

    Attributes:
        k: ``(K,)`` 1..K.
        names, groups: the models and their groups.
        pairs: ``(P, 2)`` model indices of each pair (i < j).
        solid: ``(P, K)`` mean over images of AO@k between the two models on the same image.
        baseline: ``(P, K)`` the same with the second model's logits of a random other image of
            the same class.
    """

    k: np.ndarray
    names: tuple[str, ...]
    groups: tuple[str, ...]
    pairs: np.ndarray
    solid: np.ndarray
    baseline: np.ndarray

    @property
    def pair_groups(self) -> list[str]:
        return [pair_group(self.groups[i], self.groups[j]) for i, j in self.pairs]

    def summary(self) -> dict[str, dict[str, list[float] | int]]:
        """Per pair group: mean and sd over pairs of the solid and baseline curves.

        The sd is over model pairs (runs): `logitscope.stats`' sample sd, NaN for one pair."""
        groups = np.array(self.pair_groups)
        out = {}
        for g in sorted(set(groups)):
            sel = groups == g
            mean, sd = mean_sd_axis(self.solid[sel])
            base_mean, base_sd = mean_sd_axis(self.baseline[sel])
            out[g] = {
                "n_pairs": int(sel.sum()),
                "mean": mean.tolist(),
                "sd": sd.tolist(),
                "baseline_mean": base_mean.tolist(),
                "baseline_sd": base_sd.tolist(),
            }
        return out


def pairwise_average_overlap(
    logits: Sequence[np.ndarray],
    labels: np.ndarray,
    names: Sequence[str],
    groups: Sequence[str],
    k_max: int | None = None,
    seed: int = 0,
) -> AverageOverlap:
    """Mean AO@k over images for every pair of M models, and its same-class baseline.

    Args:
        logits: M arrays ``(N, C)`` on the same images.
        labels: ``(N,)`` classes (for the baseline's pairing).
        names, groups: M model names and groups.
        k_max: largest k (``None``: C).
        seed: seeds the baseline's pairing (a fresh pairing per model pair).
    """
    if not len(logits) == len(names) == len(groups):
        raise ValueError(f"{len(logits)} logits, {len(names)} names, {len(groups)} groups: expected equal")
    if len(logits) < 2:
        raise ValueError(f"{len(logits)} model(s): average overlap needs at least two")
    _check(logits[0], labels)
    rng = np.random.default_rng(seed)
    pairs = np.array(list(itertools.combinations(range(len(logits)), 2)), np.int64)
    solid, base = [], []
    for i, j in pairs:
        solid.append(_mean_average_overlap(logits[i], logits[j], k_max))
        partner = same_class_partner(labels, rng)
        base.append(_mean_average_overlap(logits[i], np.asarray(logits[j])[partner], k_max))
    solid_arr = np.stack(solid)
    return AverageOverlap(
        k=np.arange(1, solid_arr.shape[1] + 1),
        names=tuple(names),
        groups=tuple(groups),
        pairs=pairs,
        solid=solid_arr,
        baseline=np.stack(base),
    )
