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
