import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import skew as scipy_skew

from logitscope.analysis.logit_stats import (
    adversarial_accuracy_by_gap,
    bin_index,
    describe,
    gap_edges,
    logit_statistics,
    shared_edges,
    stack_histograms,
    top2,
    value_range,
)
from logitscope.store.logits import LogitStore, write_labels, write_logits

# Worked by hand: rows' max 4, 2, 5; second largest 3, 2, 2; gaps 1, 0, 3.
L = np.array([[4, 1, 3, 0], [2, 2, 0, 1], [0, 5, 1, 2]], np.float32)


def test_top2_by_hand():
    v = top2(L)
    np.testing.assert_array_equal(v["max_logit"], [4, 2, 5])
    np.testing.assert_array_equal(v["gap"], [1, 0, 3])


def test_describe_by_hand():
    # gaps 1, 0, 3: mean 4/3, m2 = 14/9, m3 = 20/27, skew = m3 / m2^1.5 = 10 / (7 sqrt 14).
    d = describe(top2(L)["gap"], quantile_levels=(0.0, 0.5, 1.0))
    assert d["mean"] == pytest.approx(4 / 3)
    assert d["sd"] == pytest.approx(math.sqrt(14) / 3)
    assert d["skew"] == pytest.approx(10 / (7 * math.sqrt(14)))
    np.testing.assert_allclose(d["quantiles"], [0, 1, 3])
    # max logits 4, 2, 5: the mirror image, skew -10 / (7 sqrt 14).
    assert describe(top2(L)["max_logit"])["skew"] == pytest.approx(-10 / (7 * math.sqrt(14)))


def test_describe_constant_sample_has_zero_skew():
    d = describe(np.full(5, 2.0))
    assert (d["mean"], d["sd"], d["skew"]) == (2.0, 0.0, 0.0)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(3, 40), elements=st.floats(-1e3, 1e3)))
def test_describe_matches_scipy(x):
    d = describe(x)
    assert d["mean"] == pytest.approx(np.mean(x), abs=1e-9)
    assert d["sd"] == pytest.approx(np.std(x), abs=1e-9)
    if np.std(x) > 1e-6 * max(1.0, np.abs(x).max()):
        assert d["skew"] == pytest.approx(scipy_skew(x), rel=1e-6, abs=1e-6)


def test_top2_rejects_bad_input():
    with pytest.raises(ValueError, match="C >= 2"):
        top2(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        top2(np.array([[0.0, np.nan]]))


def test_bin_index_puts_outliers_in_end_bins():
    edges = np.array([0.0, 1.0, 2.0])
    np.testing.assert_array_equal(bin_index([-5, 0, 0.99, 1, 2, 7], edges), [0, 0, 0, 1, 1, 1])


def _store(tmp_path, n=257, c=5, epochs=(0, 3, 7)):
    rng = np.random.default_rng(0)
    write_labels(tmp_path, "train", rng.integers(0, c, n))
    full = {}
    for e in epochs:
        full[e] = (rng.standard_normal((n, c)) * (1 + e)).astype(np.float32)
        write_logits(tmp_path, "train", e, full[e])
    return LogitStore(tmp_path), full


def test_streamed_statistics_equal_in_memory(tmp_path):
    store, full = _store(tmp_path)
    levels = (0.1, 0.5, 0.9)
    stats = logit_statistics(store, "train", n_bins=7, quantile_levels=levels, chunk_rows=50)
    for name in ("max_logit", "gap"):
        s = stats[name]
        np.testing.assert_array_equal(s.epochs, [0, 3, 7])
        values = [top2(full[e], chunk_rows=10**6)[name] for e in (0, 3, 7)]
        lo = min(v.min() for v in values)
        hi = max(v.max() for v in values)
        expected_edges = np.linspace(0.0 if name == "gap" else lo, hi, 8)
        np.testing.assert_allclose(s.edges, expected_edges)
        for row, v in enumerate(values):
            ref = describe(v, levels)
            assert s.mean[row] == pytest.approx(ref["mean"])
            assert s.sd[row] == pytest.approx(ref["sd"])
            assert s.skew[row] == pytest.approx(ref["skew"])
            np.testing.assert_allclose(s.quantiles[row], ref["quantiles"])
            np.testing.assert_array_equal(s.counts[row], np.histogram(v, expected_edges)[0])
            assert s.density[row] @ np.diff(s.edges) == pytest.approx(1.0)
        assert s.summary(3)["mean"] == pytest.approx(s.mean[1])


def test_shared_edges_across_stores_and_stacking(tmp_path):
    a, _ = _store(tmp_path / "a")
    b, full_b = _store(tmp_path / "b", epochs=(0, 3))
    edges = shared_edges(value_range([(a, "train"), (b, "train")]), n_bins=10)
    sa = logit_statistics(a, "train", edges)
    sb = logit_statistics(b, "train", edges)
    h = stack_histograms([sa["gap"], sb["gap"]], epoch=3)
    assert h.density.shape == (2, 10)
    np.testing.assert_array_equal(h.epochs, [3, 3])
    last = stack_histograms([sa["gap"], sb["gap"]])
    np.testing.assert_array_equal(last.epochs, [7, 3])
    with pytest.raises(KeyError, match="epoch 7"):
        stack_histograms([sb["gap"]], epoch=7)
    own = logit_statistics(b, "train")
    with pytest.raises(ValueError, match="edges"):
        stack_histograms([sa["gap"], own["gap"]])


def test_logit_statistics_unknown_epoch(tmp_path):
    store, _ = _store(tmp_path)
    with pytest.raises(KeyError, match=r"\[5\]"):
        logit_statistics(store, "train", epochs=[0, 5])


def test_adversarial_accuracy_by_gap_by_hand():
    # Clean gaps 0.5, 1.5, 1.6, 3.0 on edges [0, 1, 2]: the last goes to the last bin.
    clean = np.array([[0.5, 0], [1.5, 0], [0, 1.6], [3, 0]], np.float32)
    rec = {"clean_logits": clean, "robust": np.array([False, True, False, True])}
    other = {"clean_logits": clean[:1], "robust": np.array([True])}
    acc = adversarial_accuracy_by_gap([rec, other], np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(acc.counts, [[1, 3], [1, 0]])
    np.testing.assert_allclose(acc.accuracy, [[0, 2 / 3], [1, np.nan]])
    np.testing.assert_allclose(acc.mean, [0.5, 2 / 3])
    # sample sd over the two runs: |0 - 1| / sqrt(2) in bin 0; one run only in bin 1: undefined
    np.testing.assert_allclose(acc.sd, [1 / np.sqrt(2), np.nan])
    np.testing.assert_allclose(acc.centers, [0.5, 1.5])


def test_gap_accuracy_trend_sign():
    rng = np.random.default_rng(1)
    gaps = rng.uniform(0, 5, 4000)
    clean = np.stack([gaps, np.zeros_like(gaps)], axis=1)
    robust = rng.random(4000) < gaps / 5
    edges = gap_edges([gaps], n_bins=8)
    assert edges[0] == 0 and edges[-1] == pytest.approx(np.quantile(gaps, 0.99))
    up = adversarial_accuracy_by_gap([{"clean_logits": clean, "robust": robust}], edges)
    down = adversarial_accuracy_by_gap([{"clean_logits": clean, "robust": ~robust}], edges)
    assert up.trend() > 0.9
    assert down.trend() < -0.9
    few = adversarial_accuracy_by_gap([{"clean_logits": clean[:5], "robust": robust[:5]}], edges)
    assert math.isnan(few.trend())


# The fast paths against independent brute-force oracles (numpy sorts, np.quantile, explicit
# comparisons), bit for bit: the streamed statistics read each epoch once, partition nothing.


def _oracle_top2(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and second largest of each row, by a full sort of the row."""
    s = np.sort(z, axis=1)
    return s[:, -1], s[:, -2]


def _tied_logits(rng, n, c, dtype):
    """Logits with many exact ties (small integer grid), a tie at the top in many rows."""
    return (rng.integers(-3, 4, (n, c)) * 0.5).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("c", [2, 3, 10, 37])
def test_top2_equals_row_sort(dtype, c, monkeypatch):
    import logitscope.analysis.logit_stats as ls

    monkeypatch.setattr(ls, "_TOP2_BLOCK", 64)  # several transposed blocks per chunk
    rng = np.random.default_rng(c)
    for z in (_tied_logits(rng, 1000, c, dtype), (rng.standard_normal((1000, c)) * 4).astype(dtype)):
        top, second = _oracle_top2(z)
        for chunk_rows in (1, 7, 100, 10**6):
            v = top2(z, chunk_rows=chunk_rows)
            assert v["max_logit"].dtype == v["gap"].dtype == np.float64
            np.testing.assert_array_equal(v["max_logit"], top.astype(np.float64))
            np.testing.assert_array_equal(v["gap"], top.astype(np.float64) - second.astype(np.float64))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_top2_finds_any_non_finite_value(bad):
    # -inf is never among a row's two largest values, so the check cannot rely on them.
    z = np.ones((30, 6), np.float32)
    z[17, 3] = bad
    with pytest.raises(ValueError, match=r"non-finite logits in rows 10\.\.19"):
        top2(z, chunk_rows=10)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e6, 1e6) | st.sampled_from([0.0, 1.0, -2.5])),
    st.lists(st.floats(0, 1) | st.sampled_from([0.0, 0.5, 1.0]), min_size=1, max_size=9),
)
def test_sorted_quantiles_equal_np_quantile_bit_for_bit(x, levels):
    from logitscope.analysis.logit_stats import sorted_quantiles

    got = sorted_quantiles(np.sort(x), levels)
    want = np.quantile(x, np.asarray(levels, np.float64))
    assert got.tobytes() == want.tobytes()


def test_sorted_quantiles_rejects_levels_outside_unit_interval():
    from logitscope.analysis.logit_stats import sorted_quantiles

    with pytest.raises(ValueError, match="levels"):
        sorted_quantiles(np.arange(3.0), [0.5, 1.5])


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 80), elements=st.floats(-10, 10) | st.sampled_from([-1.0, 0.0, 2.0, 3.0])),
    st.integers(1, 12),
)
def test_sorted_histogram_equals_comparisons(x, n_bins):
    from logitscope.analysis.logit_stats import histogram, sorted_histogram

    edges = np.linspace(-1.0, 3.0, n_bins + 1)  # values on, between and beyond the edges
    # Oracle: a value's bin is the number of inner edges at or below it (outliers in end bins).
    bins = (x[:, None] >= edges[None, 1:-1]).sum(axis=1)
    want = np.bincount(bins, minlength=n_bins)
    np.testing.assert_array_equal(sorted_histogram(np.sort(x), edges), want)
    np.testing.assert_array_equal(histogram(x, edges), want)


def _oracle_statistics(logits: dict[int, np.ndarray], levels, edges):
    """Per epoch and statistic: mean, population sd, m3/m2^1.5, np.quantile, comparison counts."""
    out = {}
    for e, z in logits.items():
        top, second = _oracle_top2(z)
        values = {"max_logit": top.astype(np.float64), "gap": top.astype(np.float64) - second}
        for name, v in values.items():
            mean = v.mean()
            d = v - mean
            m2, m3 = np.mean(d * d), np.mean(d * d * d)
            bins = (v[:, None] >= edges[name][None, 1:-1]).sum(axis=1)
            out[e, name] = {
                "mean": mean,
                "sd": np.sqrt(m2),
                "skew": m3 / m2**1.5 if m2 > 0 else 0.0,
                "quantiles": np.quantile(v, levels),
                "counts": np.bincount(bins, minlength=len(edges[name]) - 1),
            }
    return out


@pytest.mark.parametrize("budget", [None, 0, 3000])
def test_streamed_statistics_equal_brute_force(tmp_path, budget, monkeypatch):
    """Range pass and statistics pass, with the top-2 cache full, off, or partly filled, against
    the oracle on every epoch: equal bit for bit, and the cache is empty afterwards."""
    import logitscope.analysis.logit_stats as ls
    from logitscope.analysis.logit_stats import Top2Cache

    monkeypatch.setattr(ls, "_TOP2_BLOCK", 100)
    rng = np.random.default_rng(3)
    logits = {}
    for e in (0, 2, 5, 9):
        z = rng.standard_normal((301, 7)).astype(np.float32) * (1 + e)
        z[::3] = _tied_logits(rng, len(z[::3]), 7, np.float32)
        logits[e] = z
        write_logits(tmp_path, "train", e, z)
    write_labels(tmp_path, "train", rng.integers(0, 7, 301))
    store = LogitStore(tmp_path)
    levels = (0.0, 0.01, 0.25, 0.5, 0.9, 1.0)
    cache = Top2Cache() if budget is None else Top2Cache(budget)
    edges = shared_edges(value_range([(store, "train")], cache=cache), n_bins=9)
    cached = len(cache)
    assert cached == {None: 4, 0: 0, 3000: 1}[budget]
    stats = logit_statistics(store, "train", edges, quantile_levels=levels, chunk_rows=64, cache=cache)
    assert len(cache) == 0 and cache.nbytes == 0
    tops = {e: _oracle_top2(z) for e, z in logits.items()}
    low = min(float(t.min()) for t, _ in tops.values())
    high = max(float(z.max()) for z in logits.values())
    gap_high = max(float((t.astype(np.float64) - s).max()) for t, s in tops.values())
    np.testing.assert_array_equal(edges["max_logit"], np.linspace(low, high, 10))
    np.testing.assert_array_equal(edges["gap"], np.linspace(0.0, gap_high, 10))
    oracle = _oracle_statistics(logits, np.asarray(levels), edges)
    for name in ("max_logit", "gap"):
        s = stats[name]
        for row, e in enumerate(logits):
            ref = oracle[e, name]
            assert (s.mean[row], s.sd[row], s.skew[row]) == (ref["mean"], ref["sd"], ref["skew"])
            assert s.quantiles[row].tobytes() == ref["quantiles"].tobytes()
            np.testing.assert_array_equal(s.counts[row], ref["counts"])
    # The same numbers without a cache, and with logit_statistics spanning its own range.
    plain = logit_statistics(store, "train", edges, quantile_levels=levels)
    own = logit_statistics(store, "train", n_bins=9, quantile_levels=levels)
    for name in ("max_logit", "gap"):
        for other in (plain, own):
            for field in ("mean", "sd", "skew", "quantiles", "counts", "edges"):
                np.testing.assert_array_equal(getattr(other[name], field), getattr(stats[name], field))


def test_a_float16_store_gives_the_statistics_of_its_rounded_logits(tmp_path):
    """store.logits_dtype float16: every statistic is that of the float32 store holding the
    same logits rounded to float16, epoch for epoch (the stored epochs need not be contiguous)."""
    rng = np.random.default_rng(3)
    for folder in ("half", "rounded"):
        write_labels(tmp_path / folder, "test", np.arange(300) % 10)
    for e in (2, 5, 6):
        x = (rng.standard_normal((300, 10)) * (1 + e)).astype(np.float32)
        write_logits(tmp_path / "half", "test", e, x, dtype="float16")
        write_logits(tmp_path / "rounded", "test", e, x.astype(np.float16).astype(np.float32))
    half = logit_statistics(LogitStore(tmp_path / "half"), "test", n_bins=9)
    rounded = logit_statistics(LogitStore(tmp_path / "rounded"), "test", n_bins=9)
    for name in ("max_logit", "gap"):
        a, b = half[name], rounded[name]
        np.testing.assert_array_equal(a.epochs, [2, 5, 6])
        for field in ("edges", "mean", "sd", "skew", "quantiles", "counts"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{name}.{field}")
