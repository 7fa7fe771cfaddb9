"""Distributions of the max logit and the logit gap over training (paper section 4.1).

The paper's first two findings: AT max logits come from a distribution with a lower mean and a
more positive skew than ST ones (figures 1, B.4), and AT logit gaps (max minus second largest)
are smaller, with a peak at zero (figures 2A, B.1, B.5); yet among AT images, a larger clean gap
means a higher chance of surviving the attack (figure 2B).

Everything here streams over a `LogitStore` one epoch (and one chunk of rows) at a time, so a
run of 200 epochs x 50,000 samples never sits in memory: only one epoch's two ``(N,)`` value
vectors do. Histograms of different runs, splits and epochs share bin edges so they can be
compared bin by bin; finding the edges takes one pass (`value_range`), the statistics a second.
A `Top2Cache` carries each epoch's per-image top-2 logits (8 bytes per image for float32) from
the first pass to the second within a memory budget, so that each file is read once while it lasts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from logitscope.stats import mean_sd_axis
from logitscope.store.logits import LogitStore

log = logging.getLogger(__name__)

STATISTICS = ("max_logit", "gap")
DEFAULT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
CHUNK_ROWS = 65536


def top2(logits: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> dict[str, np.ndarray]:
    """Max logit and logit gap of every row, read ``chunk_rows`` rows at a time.

    Args:
        logits: ``(N, C)`` logits, ``C >= 2``; a memory map is read chunk by chunk.
        chunk_rows: rows per chunk (bounds the temporary copy to ``chunk_rows x C``).

    Returns:
        ``{"max_logit": (N,), "gap": (N,)}`` float64, in logit units; the gap is the largest
        logit minus the second largest (0 when they tie).
    """
    first, second = _top2_raw(logits, chunk_rows)
    return {"max_logit": first.astype(np.float64), "gap": np.subtract(first, second, dtype=np.float64)}


def _top2_raw(
    logits: np.ndarray, chunk_rows: int = CHUNK_ROWS, out: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` largest and second largest logit of every row, in the logits' dtype (`top2`
    without its float64 conversion: ``max_logit = first`` and ``gap = first - second`` in float64),
    written into ``out`` (two ``(N,)`` arrays of that dtype) when given.
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits of shape {logits.shape}: expected (N, C) with C >= 2 classes")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows}: expected a positive number of rows")
    n, c = logits.shape
    first, second = out if out is not None else (np.empty(n, logits.dtype), np.empty(n, logits.dtype))
    buffer = None
    for start in range(0, n, chunk_rows):
        chunk = np.asarray(logits[start : start + chunk_rows])
        if buffer is None:
            buffer = np.empty((c, min(len(chunk), _TOP2_BLOCK)), chunk.dtype)
        for s in range(0, len(chunk), _TOP2_BLOCK):
            block = chunk[s : s + _TOP2_BLOCK]
            columns = buffer[:, : len(block)]
            np.copyto(columns, block.T)  # into a reused buffer: cheaper than a fresh transposed copy
            # min and max propagate NaN, so both are finite exactly when every value is.
            if not (np.isfinite(columns.min()) and np.isfinite(columns.max())):
                raise ValueError(f"non-finite logits in rows {start}..{start + len(chunk) - 1}")
            rows = slice(start + s, start + s + len(block))
            _top2_columns(columns, first[rows], second[rows])
    return first, second


_TOP2_BLOCK = 8192
"""Rows transposed at a time by `top2`: ``C x 8192`` values stay in cache while the columns are
compared (the transposed copy is what makes the column-wise comparison fast)."""


def _top2_columns(columns: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
    """Write the largest and second largest value of each column of ``(C, n)`` ``columns``,
    ``C >= 2``, into ``first`` and ``second`` ``(n,)``: the values
    ``np.partition(columns.T, -2, axis=1)[:, -2:]`` holds, a tie at the top giving the top value
    twice. One running (max, runner-up) pair per column, updated row by row with elementwise
    max/min, costs ``3 C`` vector operations instead of a partition per column."""
    np.maximum(columns[0], columns[1], out=first)
    np.minimum(columns[0], columns[1], out=second)
    loser = np.empty_like(first)
    for row in columns[2:]:
        np.minimum(first, row, out=loser)  # the smaller of the current max and the new value ...
        np.maximum(second, loser, out=second)  # ... is a candidate for the runner-up
        np.maximum(first, row, out=first)


def describe(values: np.ndarray, quantile_levels: Sequence[float] = DEFAULT_QUANTILES) -> dict[str, float | np.ndarray]:
    """Mean, standard deviation, skewness and quantiles of a sample.

    Args:
        values: ``(N,)`` sample, ``N >= 1``.
        quantile_levels: levels in [0, 1].

    Returns:
        ``{"mean", "sd", "skew", "quantiles" (Q,)}``; ``sd`` is the population standard deviation
        and ``skew`` the Fisher-Pearson coefficient m3 / m2^1.5 (scipy's ``skew(bias=True)``),
        0 for a constant sample.
    """
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("empty sample: expected at least one value")
    return _describe_sorted(v, np.sort(v), quantile_levels)


def _describe_sorted(v: np.ndarray, ordered: np.ndarray, quantile_levels: Sequence[float]) -> dict:
    """`describe` of float64 ``v`` given ``ordered = np.sort(v)``: the moments are summed over ``v``
    in its own order, the quantiles read off ``ordered``."""
    mean = v.mean()
    d = v - mean
    dd = d * d
    m2 = np.mean(dd)
    m3 = np.mean(np.multiply(dd, d, out=dd))  # (d * d) * d, as d * d * d evaluates
    skew = float(m3 / m2**1.5) if m2 > 0 else 0.0
    return {
        "mean": float(mean),
        "sd": float(np.sqrt(m2)),
        "skew": skew,
        "quantiles": sorted_quantiles(ordered, quantile_levels),
    }


def sorted_quantiles(ordered: np.ndarray, quantile_levels: Sequence[float]) -> np.ndarray:
    """``np.quantile(ordered, quantile_levels)`` (method ``"linear"``) of an ascending float64
    sample ``(N,)``, ``N >= 1``, bit for bit, without the partitions ``np.quantile`` makes.

    It repeats numpy's arithmetic step by step: virtual index ``(N - 1) q``, its floor and the next
    index (both the last index where the virtual one reaches it), weight ``virtual - floor``, and
    numpy's two-sided lerp (``a + (b - a) g``, or ``b - (b - a)(1 - g)`` where ``g >= 0.5``).
    """
    q = np.asarray(quantile_levels, np.float64)
    if not ((q >= 0) & (q <= 1)).all():
        raise ValueError(f"quantile levels {q.tolist()}: expected levels in [0, 1]")
    n = len(ordered)
    virtual = (n - 1) * q.ravel()
    previous = np.floor(virtual)
    following = previous + 1
    at_end = virtual >= n - 1
    previous[at_end] = following[at_end] = -1
    previous_i = previous.astype(np.intp)
    a, b = ordered[previous_i], ordered[following.astype(np.intp)]
    gamma = virtual - previous_i
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return out.reshape(q.shape)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value for ``(B+1,)`` edges: bin i holds ``[e_i, e_{i+1})``, the last bin also
    its right edge; values beyond either end go to the end bins. Returns ``(N,)`` int64."""
    idx = np.searchsorted(edges, np.asarray(values, np.float64), side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(B,)`` int64 counts of ``values`` in the bins of ``edges`` (see `bin_index`)."""
    return np.bincount(bin_index(values, edges), minlength=len(edges) - 1).astype(np.int64)


def sorted_histogram(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`histogram` of an ascending sample ``(N,)`` (no NaN), by ``B - 1`` binary searches.

    `bin_index` puts a value in bin ``i`` or above exactly when it is ``>= e_i`` (``0 < i < B``),
    so the counts are the differences of ``#{v < e_i}`` over the inner edges.
    """
    inner = np.searchsorted(ordered, np.asarray(edges, np.float64)[1:-1], side="left")
    return np.diff(np.concatenate(([0], inner, [len(ordered)]))).astype(np.int64)


@dataclass(frozen=True)
class DistributionStats:
    """One statistic of one run's split, at every analysed epoch.

    Attributes:
        statistic: ``"max_logit"`` or ``"gap"``.
        split: the store split (``"train"``, ``"test"``, ...).
        epochs: ``(E,)`` int64 epochs, ascending.
        n: ``(E,)`` int64 samples per epoch.
        mean, sd, skew: ``(E,)`` float64, logit units (skew is unitless).
        quantile_levels: ``(Q,)`` levels; ``quantiles``: ``(E, Q)`` logit units.
        edges: ``(B+1,)`` shared bin edges, logit units.
        counts: ``(E, B)`` int64 histogram counts (values beyond the edges in the end bins).
    """

    statistic: str
    split: str
    epochs: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    skew: np.ndarray
    quantile_levels: np.ndarray
    quantiles: np.ndarray
    edges: np.ndarray
    counts: np.ndarray

    def index(self, epoch: int | None = None) -> int:
        """Row of ``epoch`` (``None``: the last analysed epoch)."""
        if epoch is None:
            return len(self.epochs) - 1
        hits = np.flatnonzero(self.epochs == epoch)
        if hits.size == 0:
            raise KeyError(f"epoch {epoch} not analysed: epochs {self.epochs.tolist()}")
        return int(hits[0])

    @property
    def density(self) -> np.ndarray:
        """``(E, B)`` histogram normalized to unit area (per logit unit)."""
        widths = np.diff(self.edges)
        return self.counts / (self.n[:, None] * widths[None, :])

    def summary(self, epoch: int | None = None) -> dict[str, float | int | dict[str, float]]:
        """JSON-ready mean, sd, skew and quantiles at ``epoch`` (``None``: last)."""
        i = self.index(epoch)
        return {
            "epoch": int(self.epochs[i]),
            "n": int(self.n[i]),
            "mean": float(self.mean[i]),
            "sd": float(self.sd[i]),
            "skew": float(self.skew[i]),
            "quantiles": {f"{q:g}": float(v) for q, v in zip(self.quantile_levels, self.quantiles[i], strict=True)},
        }


@dataclass(frozen=True)
class Histogram:
    """Several runs' histograms of one statistic on shared edges (figures 2A, B.5).

    Attributes:
        edges: ``(B+1,)`` bin edges, logit units.
        density: ``(R, B)`` one row per run, unit area.
        epochs: ``(R,)`` the epoch each row was taken at.
    """

    edges: np.ndarray
    density: np.ndarray
    epochs: np.ndarray


def stack_histograms(stats: Sequence[DistributionStats], epoch: int | None = None) -> Histogram:
    """Each run's histogram at ``epoch`` (``None``: each run's last analysed epoch)."""
    if not stats:
        raise ValueError("no runs to stack: expected at least one DistributionStats")
    edges = stats[0].edges
    for s in stats[1:]:
        if not np.array_equal(s.edges, edges):
            raise ValueError("histograms on different bin edges: compute them with shared edges")
    rows = [s.index(epoch) for s in stats]
    return Histogram(
        edges=edges,
        density=np.stack([s.density[i] for s, i in zip(stats, rows, strict=True)]),
        epochs=np.array([s.epochs[i] for s, i in zip(stats, rows, strict=True)], np.int64),
    )


def _epochs(store: LogitStore, split: str, epochs: Sequence[int] | None) -> list[int]:
    stored = store.epochs(split)
    if epochs is None:
        return stored
    missing = sorted(set(epochs) - set(stored))
    if missing:
        raise KeyError(f"epochs {missing} not stored for split {split!r}: stored {stored}")
    return sorted(epochs)


TOP2_CACHE_BYTES = 768 * 2**20
"""Default budget of a `Top2Cache`: the benchmark's 6 runs x 200 epochs x 60,000 images of
float32 logits need 576 MB (8 bytes per image and epoch, whatever the number of classes)."""


class Top2Cache:
    """Each epoch's per-image top-2 logits, kept from the range pass (`value_range`) for the
    statistics pass (`logit_statistics`), so that while ``max_bytes`` lasts every epoch file is
    read and reduced once; epochs beyond the budget are read again. The statistics pass takes each
    entry out as it uses it, so the memory is returned as the second pass proceeds.

    Entries are carved out of 64 MiB slabs (numpy asks the kernel for huge pages for them), which
    spares the page faults of hundreds of small fresh arrays; a slab is freed with its last entry.
    """

    SLAB_BYTES = 64 * 2**20

    def __init__(self, max_bytes: int = TOP2_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._slab = np.empty(0, np.uint8)
        self._used = 0

    @staticmethod
    def key(store: LogitStore, split: str, epoch: int) -> tuple[str, str, int]:
        return (str(store.root), split, int(epoch))

    def reserve(self, n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
        """Two uninitialised ``(n,)`` arrays of ``dtype`` for an entry, or ``None`` when the budget
        is spent; they count against the budget from now on (pass them to `put`)."""
        itemsize = np.dtype(dtype).itemsize
        size = -(-n * itemsize // 64) * 64  # each array starts 64-byte aligned
        if self.nbytes + 2 * size > self.max_bytes:
            return None
        if self._used + 2 * size > len(self._slab):
            self._slab = np.empty(max(self.SLAB_BYTES, 2 * size), np.uint8)
            self._used = 0
        arrays = []
        for _ in range(2):
            arrays.append(self._slab[self._used : self._used + n * itemsize].view(dtype))
            self._used += size
        self.nbytes += 2 * size
        return arrays[0], arrays[1]

    def put(self, key: tuple[str, str, int], first: np.ndarray, second: np.ndarray) -> None:
        """Keep an entry made in arrays from `reserve`."""
        self._items[key] = (first, second)

    def pop(self, key: tuple[str, str, int]) -> tuple[np.ndarray, np.ndarray] | None:
        item = self._items.pop(key, None)
        if item is not None:
            self.nbytes -= 2 * (-(-item[0].nbytes // 64) * 64)
        return item

    def __len__(self) -> int:
        return len(self._items)


def _iter_top2(
    store: LogitStore,
    split: str,
    epochs: Sequence[int] | None,
    chunk_rows: int,
    cache: Top2Cache | None = None,
    fill: bool = False,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(epoch, first, second)`` (see `_top2_raw`) per epoch of ``split``; ``fill``: keep
    them in ``cache`` while it has room; otherwise take them out of ``cache`` where it has them."""
    chosen = _epochs(store, split, epochs)
    desc = f"{store.root.parent.name}/{split}"
    for epoch in tqdm(chosen, desc=desc, disable=None, leave=False):
        key = Top2Cache.key(store, split, epoch)
        hit = cache.pop(key) if cache is not None and not fill else None
        if hit is None:
            try:
                logits = store.get(split, epoch)
                keep = cache is not None and fill and logits.ndim == 2
                out = cache.reserve(len(logits), logits.dtype) if keep else None
                hit = _top2_raw(logits, chunk_rows, out)
            except ValueError as err:
                raise ValueError(f"{desc} epoch {epoch}: {err}") from None
            if out is not None:
                cache.put(key, *hit)
        yield epoch, *hit


def iter_epoch_values(
    store: LogitStore,
    split: str,
    epochs: Sequence[int] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(epoch, top2(logits))`` per epoch of ``split``, one epoch in memory at a time."""
    for epoch, first, second in _iter_top2(store, split, epochs, chunk_rows):
        yield epoch, {"max_logit": first.astype(np.float64), "gap": np.subtract(first, second, dtype=np.float64)}


def value_range(
    sources: Iterable[tuple[LogitStore, str]],
    epochs: Sequence[int] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    *,
    cache: Top2Cache | None = None,
) -> dict[str, tuple[float, float]]:
    """Smallest and largest value of each statistic over every (store, split) and epoch.

    Args:
        cache: filled with each epoch's top-2 logits while it has room, for `logit_statistics`
            to use instead of reading the epoch again.

    Returns:
        ``{statistic: (low, high)}`` in logit units.
    """
    lo = dict.fromkeys(STATISTICS, np.inf)
    hi = dict.fromkeys(STATISTICS, -np.inf)
    for store, split in sources:
        for _, first, second in _iter_top2(store, split, epochs, chunk_rows, cache, fill=True):
            # float64 of the max logits is monotone and exact: take the extremes before converting.
            gap = np.subtract(first, second, dtype=np.float64)
            for name, low, high in (("max_logit", first.min(), first.max()), ("gap", gap.min(), gap.max())):
                lo[name] = min(lo[name], float(low))
                hi[name] = max(hi[name], float(high))
    if not np.isfinite(lo["gap"]):
        raise ValueError("no stored epochs in any source: nothing to take a range of")
    return {name: (lo[name], hi[name]) for name in STATISTICS}


def shared_edges(ranges: Mapping[str, tuple[float, float]], n_bins: int = 50) -> dict[str, np.ndarray]:
    """``n_bins`` equal bins over each statistic's range; gaps always start at 0."""
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins}: expected at least one bin")
    out = {}
    for name, (low, high) in ranges.items():
        if name == "gap":
            low = 0.0
        if high <= low:
            high = low + 1.0
        out[name] = np.linspace(low, high, n_bins + 1)
    return out


def logit_statistics(
    store: LogitStore,
    split: str,
    edges: Mapping[str, np.ndarray] | None = None,
    *,
    epochs: Sequence[int] | None = None,
    n_bins: int = 50,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
    chunk_rows: int = CHUNK_ROWS,
    cache: Top2Cache | None = None,
) -> dict[str, DistributionStats]:
    """Max-logit and gap distributions of ``split`` at every stored epoch, streamed.

    Args:
        store: the run's logits.
        split: which split.
        edges: ``{statistic: (B+1,) edges}`` shared with other runs; ``None`` takes one extra
            pass over this store to span its own range with ``n_bins`` bins.
        epochs: epochs to analyse (``None``: all stored).
        n_bins: bins when ``edges`` is ``None``.
        quantile_levels: quantile levels in [0, 1].
        chunk_rows: rows read at a time.
        cache: top-2 logits kept by the `value_range` pass that made ``edges``; epochs found there
            are taken out of it instead of being read again.

    Returns:
        ``{"max_logit": DistributionStats, "gap": DistributionStats}``.
    """
    if edges is None:
        cache = Top2Cache() if cache is None else cache
        edges = shared_edges(value_range([(store, split)], epochs, chunk_rows, cache=cache), n_bins)
    missing = [s for s in STATISTICS if s not in edges]
    if missing:
        raise KeyError(f"no bin edges for {missing}: expected edges for {list(STATISTICS)}")
    rows: dict[str, list[dict]] = {s: [] for s in STATISTICS}
    counts: dict[str, list[np.ndarray]] = {s: [] for s in STATISTICS}
    seen: list[int] = []
    sizes: list[int] = []
    bins = {name: np.asarray(edges[name], np.float64) for name in STATISTICS}
    for epoch, first, second in _iter_top2(store, split, epochs, chunk_rows, cache):
        seen.append(epoch)
        sizes.append(len(first))
        # The values and sorted values `describe` and `histogram` would see: float64 max logits
        # (sorted before the exact, monotone conversion: a cheaper sort) and float64 gaps.
        gap = np.subtract(first, second, dtype=np.float64)
        values = {
            "max_logit": (first.astype(np.float64), np.sort(first).astype(np.float64, copy=False)),
            "gap": (gap, np.sort(gap)),
        }
        for name in STATISTICS:
            # One sort per statistic gives the quantiles and the histogram.
            v, ordered = values[name]
            rows[name].append(_describe_sorted(v, ordered, quantile_levels))
            counts[name].append(sorted_histogram(ordered, bins[name]))
    if not seen:
        raise KeyError(f"split {split!r} of {store} has no stored epochs")
    out = {}
    for name in STATISTICS:
        out[name] = DistributionStats(
            statistic=name,
            split=split,
            epochs=np.array(seen, np.int64),
            n=np.array(sizes, np.int64),
            mean=np.array([r["mean"] for r in rows[name]]),
            sd=np.array([r["sd"] for r in rows[name]]),
            skew=np.array([r["skew"] for r in rows[name]]),
            quantile_levels=np.asarray(quantile_levels, np.float64),
            quantiles=np.stack([r["quantiles"] for r in rows[name]]),
            edges=np.asarray(edges[name], np.float64),
            counts=np.stack(counts[name]),
        )
    log.info("logit statistics of %s/%s over %d epochs", store.root.parent.name, split, len(seen))
    return out


@dataclass(frozen=True)
class GapAccuracy:
    """Adversarial accuracy per bin of the clean logit gap, one row per run (figures 2B, B.5b).

    Attributes:
        edges: ``(B+1,)`` gap bin edges, logit units (the last bin also holds larger gaps).
        accuracy: ``(R, B)`` fraction of robust images per bin; NaN for an empty bin.
        counts: ``(R, B)`` int64 images per bin.
    """

    edges: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    @property
    def mean(self) -> np.ndarray:
        """``(B,)`` mean over runs of the bins that are non-empty (NaN where all are empty)."""
        return _nan_stat(np.nanmean, self.accuracy)

    @property
    def sd(self) -> np.ndarray:
        """``(B,)`` sample standard deviation (ddof=1) over runs, ignoring empty bins; NaN where
        fewer than two runs have images in a bin."""
        return mean_sd_axis(self.accuracy)[1]

    def trend(self, min_count: int = 10) -> float:
        """Spearman correlation between bin center and mean accuracy over bins with enough images.

        Only bins where every run has at least ``min_count`` images count; NaN when fewer than
        three bins qualify or the accuracy is constant.
        """
        keep = (self.counts >= min_count).all(axis=0)
        if keep.sum() < 3:
            return float("nan")
        acc = self.mean[keep]
        if np.ptp(acc) == 0:
            return float("nan")
        return float(spearmanr(self.centers[keep], acc).statistic)


def _nan_stat(fn: Callable[..., np.ndarray], a: np.ndarray) -> np.ndarray:
    out = np.full(a.shape[1], np.nan)
    ok = ~np.isnan(a).all(axis=0)
    out[ok] = fn(a[:, ok], axis=0)
    return out


def gap_edges(gaps: Iterable[np.ndarray], n_bins: int = 10, upper_quantile: float = 0.99) -> np.ndarray:
    """``n_bins`` equal bins from 0 to the ``upper_quantile`` of the pooled gaps ``(N_r,)``."""
    pooled = np.concatenate([np.asarray(g, np.float64).ravel() for g in gaps])
    if pooled.size == 0:
        raise ValueError("no gaps to bin: expected at least one value")
    high = float(np.quantile(pooled, upper_quantile))
    return np.linspace(0.0, high if high > 0 else 1.0, n_bins + 1)


def adversarial_accuracy_by_gap(records: Sequence[Mapping[str, np.ndarray]], edges: np.ndarray) -> GapAccuracy:
    """Fraction of robust images per bin of the clean logit gap, for each run's records.

    Args:
        records: per-sample robustness records, each with ``clean_logits`` ``(N, C)`` and
            ``robust`` ``(N,)`` bool (see `logitscope.attacks.protocol`).
        edges: ``(B+1,)`` gap bin edges, logit units; gaps above the last edge go to the last bin.

    Returns:
        `GapAccuracy` with one row per record.
    """
    if not records:
        raise ValueError("no records: expected at least one run's robustness records")
    edges = np.asarray(edges, np.float64)
    n_bins = len(edges) - 1
    acc = np.full((len(records), n_bins), np.nan)
    cnt = np.zeros((len(records), n_bins), np.int64)
    for r, rec in enumerate(records):
        gap = top2(np.asarray(rec["clean_logits"]))["gap"]
        robust = np.asarray(rec["robust"], bool)
        if robust.shape != gap.shape:
            raise ValueError(f"robust flags {robust.shape} do not match {gap.shape[0]} clean logits")
        b = bin_index(gap, edges)
        cnt[r] = np.bincount(b, minlength=n_bins)
        hit = np.bincount(b, weights=robust, minlength=n_bins)
        ok = cnt[r] > 0
        acc[r, ok] = hit[ok] / cnt[r, ok]
    return GapAccuracy(edges=edges, accuracy=acc, counts=cnt)
