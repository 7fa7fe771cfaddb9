import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_softmax as scipy_log_softmax

from logitscope.analysis.ranks import (
    average_overlap,
    class_mean_logits,
    confidence,
    descending_positions,
    error_class_rank,
    log_softmax,
    pair_group,
    pairwise_average_overlap,
    pairwise_rank_disagreement,
    rank_disagreement,
    rank_scatter,
    same_class_partner,
    within_class_ranks,
)

L = np.array([[4, 1, 3, 0], [2, 2, 0, 1], [0, 5, 1, 2]], np.float32)


def brute_average_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """AO@k straight from the definition with Python sets, one image at a time."""
    out = []
    for x, y in zip(a, b, strict=True):
        ox = sorted(range(len(x)), key=lambda j: (-x[j], j))
        oy = sorted(range(len(y)), key=lambda j: (-y[j], j))
        o = [len(set(ox[:i]) & set(oy[:i])) / i for i in range(1, len(x) + 1)]
        out.append([sum(o[:k]) / k for k in range(1, len(x) + 1)])
    return np.array(out)


def test_average_overlap_by_hand():
    # Row 0 orders classes 0,2,1,3; row 2 orders 1,3,2,0: top-i overlaps 0, 0, 2, 4.
    ao = average_overlap(L[[0]], L[[2]])
    np.testing.assert_allclose(ao[0], [0, 0, 2 / 9, 5 / 12])
    # Row 1 ties classes 0 and 1 (class order 0,1,3,2): overlaps with row 0 are 1, 1, 2, 4.
    ao = average_overlap(L[[0]], L[[1]])
    np.testing.assert_allclose(ao[0], [1, 3 / 4, 13 / 18, 19 / 24])
    np.testing.assert_allclose(average_overlap(L[[0]], L[[1]], k_max=2)[0], [1, 3 / 4])


def test_descending_positions_by_hand():
    np.testing.assert_array_equal(descending_positions(L), [[0, 2, 1, 3], [0, 1, 3, 2], [3, 0, 2, 1]])


logit_arrays = st.integers(1, 6).flatmap(
    lambda n: st.integers(2, 7).flatmap(
        lambda c: st.tuples(
            arrays(np.float64, (n, c), elements=st.integers(-20, 20).map(float)),
            arrays(np.float64, (n, c), elements=st.integers(-20, 20).map(float)),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(logit_arrays)
def test_average_overlap_properties(pair):
    a, b = pair
    ao = average_overlap(a, b)
    assert ((ao >= 0) & (ao <= 1 + 1e-12)).all()
    np.testing.assert_allclose(ao, brute_average_overlap(a, b))
    np.testing.assert_allclose(ao, average_overlap(b, a))
    np.testing.assert_allclose(average_overlap(a, a), 1.0)
    for f in (lambda x: 3 * x + 7, lambda x: np.exp(x / 4), lambda x: x**3 + x):
        np.testing.assert_allclose(average_overlap(f(a), f(b)), ao)


def test_average_overlap_bad_input():
    with pytest.raises(ValueError, match="equal shapes"):
        average_overlap(L, L[:, :3])
    with pytest.raises(ValueError, match="k_max=5"):
        average_overlap(L, L, k_max=5)


def test_within_class_ranks_and_disagreement_by_hand():
    labels = np.array([0, 0, 0, 1, 1])
    a = np.array([0.2, 0.9, 0.5, 1.0, 2.0])
    b = np.array([0.8, 0.1, 0.5, 1.0, 2.0])
    np.testing.assert_array_equal(within_class_ranks(a, labels), [3, 1, 2, 2, 1])
    np.testing.assert_array_equal(within_class_ranks(b, labels), [1, 3, 2, 2, 1])
    # Class 0: rank differences 2, 2, 0 against half the largest rank 1.5 -> 2 of 3 far.
    classes, frac = rank_disagreement(a, b, labels)
    np.testing.assert_array_equal(classes, [0, 1])
    np.testing.assert_allclose(frac, [2 / 3, 0])
    sc = rank_scatter(a, b, labels, 0, ("x", "y"))
    np.testing.assert_array_equal(sc.index, [0, 1, 2])
    np.testing.assert_array_equal(sc.far, [True, True, False])
    with pytest.raises(ValueError, match="class 7"):
        rank_scatter(a, b, labels, 7)


def test_ties_share_average_rank():
    np.testing.assert_array_equal(within_class_ranks(np.array([1.0, 1.0, 0.0]), np.zeros(3)), [1.5, 1.5, 3])


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(2, 6)), elements=st.floats(-30, 30)))
def test_log_softmax_matches_scipy(z):
    np.testing.assert_allclose(log_softmax(z), scipy_log_softmax(z, axis=1), atol=1e-12)


def test_confidence_log_probabilities():
    z = np.array([[100.0, 0.0], [200.0, 0.0], [0.0, 1.0]], np.float32)
    y = np.array([0, 0, 0])
    # float32 softmax of the first two rows is exactly 1; the log keeps them apart.
    c = confidence(z, y)
    assert c[1] > c[0] > c[2]
    np.testing.assert_allclose(c[2], -np.log1p(np.e))
    np.testing.assert_allclose(confidence(z, y, "max")[2], -np.log1p(np.exp(-1)))
    with pytest.raises(ValueError, match="'top'"):
        confidence(z, y, "top")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confidence(z, np.array([0, 2, 0]))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 30), st.just(4)), elements=st.floats(-10, 10)),
    st.integers(0, 2**31),
)
def test_rank_disagreement_with_itself_is_zero(z, seed):
    labels = np.random.default_rng(seed).integers(0, 4, len(z))
    c = confidence(z, labels)
    assert (rank_disagreement(c, c, labels)[1] == 0).all()
    res = pairwise_rank_disagreement([z, z.copy()], labels, ["a", "b"], ["AT", "AT"])
    assert (res.fraction == 0).all()


def test_pairwise_rank_disagreement_groups():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    base = rng.standard_normal((60, 3))
    models = [base + 0.01 * rng.standard_normal((60, 3)) for _ in range(2)]
    models += [rng.standard_normal((60, 3)) for _ in range(2)]
    res = pairwise_rank_disagreement(models, labels, ["a0", "a1", "s0", "s1"], ["AT", "AT", "ST", "ST"])
    assert res.fraction.shape == (4, 4, 3)
    np.testing.assert_array_equal(res.fraction, res.fraction.transpose(1, 0, 2))
    assert res.pairs() == {
        "AT-AT": [(0, 1)],
        "AT-ST": [(0, 2), (0, 3), (1, 2), (1, 3)],
        "ST-ST": [(2, 3)],
    }
    s = res.summary()
    assert s["AT-ST"]["n_pairs"] == 4
    assert s["AT-AT"]["mean"] < s["AT-ST"]["mean"]
    at_st = np.stack([res.fraction[i, j] for i, j in res.pairs()["AT-ST"]])
    assert s["AT-ST"]["mean"] == pytest.approx(at_st.mean())
    # sd over model pairs: sample sd (ddof=1); undefined (NaN) for the one AT-AT pair.
    np.testing.assert_allclose(s["AT-ST"]["per_class_sd"], at_st.std(axis=0, ddof=1))
    assert s["AT-ST"]["sd"] == pytest.approx(at_st.mean(axis=1).std(ddof=1))
    assert s["AT-AT"]["n_pairs"] == 1 and np.isnan(s["AT-AT"]["sd"])
    assert np.isnan(s["AT-AT"]["per_class_sd"]).all()
    assert s["AT-AT"]["mean"] == pytest.approx(res.fraction[0, 1].mean())
    assert pair_group("ST", "AT") == pair_group("AT", "ST") == "AT-ST"


def test_error_class_rank_by_hand():
    labels = np.array([0, 1, 1])
    # Correct: row 0 (class 0) and row 2 (class 1). Row 1 (class 1) predicts 0, the first of its
    # tied maxima. Class 1's mean [0, 5, 1, 2] ranks 3, 2, 0 after itself: class 0 is k = 3.
    mu = class_mean_logits(L, labels)
    np.testing.assert_array_equal(mu[:2], L[[0, 2]])
    assert np.isnan(mu[2:]).all()
    r = error_class_rank(L, labels)
    np.testing.assert_array_equal(r.counts, [0, 0, 1])
    assert (r.n_errors, r.n_skipped) == (1, 0)
    np.testing.assert_allclose(r.fraction, [0, 0, 1])
    # Predictions 2 (for class 0: mean [4,1,3,0] ranks 2 first) and 3 (for class 1: 3 first).
    adv = error_class_rank(L, labels, predicted=np.array([2, 3, 1]))
    np.testing.assert_array_equal(adv.counts, [2, 0, 0])
    # Labels 0, 1, 2: classes 1 and 2 have no correct image, so their errors are skipped.
    skipped = error_class_rank(L, np.array([0, 1, 2]))
    assert (skipped.n_errors, skipped.n_skipped) == (0, 2)
    np.testing.assert_array_equal(skipped.fraction, [0, 0, 0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=40), st.integers(0, 2**31))
def test_same_class_partner_pairs_within_class(labels, seed):
    labels = np.array(labels)
    p = same_class_partner(labels, np.random.default_rng(seed))
    np.testing.assert_array_equal(labels[p], labels)
    np.testing.assert_array_equal(np.sort(p), np.arange(len(labels)))
    sizes = np.bincount(labels)[labels]
    assert (p[sizes > 1] != np.arange(len(labels))[sizes > 1]).all()


def test_pairwise_average_overlap():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    z = [rng.standard_normal((100, 4)) for _ in range(3)]
    res = pairwise_average_overlap(z, labels, ["s", "a0", "a1"], ["ST", "AT", "AT"], seed=3)
    np.testing.assert_array_equal(res.pairs, list(itertools.combinations(range(3), 2)))
    assert res.pair_groups == ["AT-ST", "AT-ST", "AT-AT"]
    np.testing.assert_allclose(res.solid[0], average_overlap(z[0], z[1]).mean(axis=0))
    # The baseline pairs image n of model i with a same-class image of model j, so a model
    # whose logits depend only on the class scores 1 against itself.
    per_class = np.eye(4)[labels] + 0.1 * np.arange(4)
    same = pairwise_average_overlap([per_class, per_class], labels, ["a", "b"], ["AT", "AT"])
    np.testing.assert_allclose(same.baseline, 1.0)
    s = res.summary()
    assert s["AT-ST"]["n_pairs"] == 2
    np.testing.assert_allclose(s["AT-AT"]["mean"], res.solid[2])
    # sd over the two AT-ST pairs, ddof=1: |a - b| / sqrt(2); NaN for the single AT-AT pair.
    np.testing.assert_allclose(s["AT-ST"]["sd"], np.abs(res.solid[0] - res.solid[1]) / np.sqrt(2))
    np.testing.assert_allclose(s["AT-ST"]["baseline_sd"], np.abs(res.baseline[0] - res.baseline[1]) / np.sqrt(2))
    assert np.isnan(s["AT-AT"]["sd"]).all() and np.isnan(s["AT-AT"]["baseline_sd"]).all()
    with pytest.raises(ValueError, match="at least two"):
        pairwise_average_overlap(z[:1], labels, ["a"], ["AT"])
