import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from logitscope.analysis.neighbors import (
    QUADRANTS,
    confidence_quadrants,
    cosine_similarity,
    logit_neighbors,
    nearest_neighbors,
    pick_seeds,
)


def test_nearest_neighbors_by_hand():
    z = np.array([[1, 0], [0, 1], [1, 1], [2, 0.1], [0, 0]], np.float32)
    # Cosines to row 0: 0, 1/sqrt 2, 2/sqrt(4.01), and 0 for the zero vector.
    sims = cosine_similarity(z, np.array([0]))
    np.testing.assert_allclose(sims[0], [1, 0, 2**-0.5, 2 / np.sqrt(4.01), 0], rtol=1e-6)
    idx, sim = nearest_neighbors(z, np.array([0, 1]), k=2)
    np.testing.assert_array_equal(idx, [[3, 2], [2, 3]])
    np.testing.assert_allclose(sim[0], [2 / np.sqrt(4.01), 2**-0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="k=5"):
        nearest_neighbors(z, np.array([0]), k=5)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(3, 20), st.integers(2, 5)), elements=st.floats(-5, 5)))
def test_neighbors_match_brute_force_and_exclude_seed(z):
    z = z + np.arange(z.shape[1])  # no all-zero rows
    idx, sim = nearest_neighbors(z, np.arange(len(z)), k=2)
    assert (idx != np.arange(len(z))[:, None]).all()
    for s in range(len(z)):
        ref = [z[s] @ z[j] / (np.linalg.norm(z[s]) * np.linalg.norm(z[j])) for j in range(len(z)) if j != s]
        np.testing.assert_allclose(sim[s], sorted(ref, reverse=True)[:2], atol=1e-12)
    assert (np.diff(sim, axis=1) <= 1e-12).all()


def test_pick_seeds_spreads_over_classes():
    labels = np.repeat(np.arange(10), 7)
    seeds = pick_seeds(labels, n=5, seed=1)
    np.testing.assert_array_equal(labels[seeds], [0, 2, 4, 7, 9])
    np.testing.assert_array_equal(pick_seeds(labels, n=5, seed=1), seeds)
    assert len(pick_seeds(labels[:14], n=5)) == 2


def test_logit_neighbors_same_class_fraction():
    labels = np.array([0, 0, 1, 1])
    by_class = np.eye(2)[labels] + 0.01 * np.arange(4)[:, None]
    crossed = np.eye(2)[1 - labels[[0, 2, 1, 3]]]
    nb = logit_neighbors({"ST": by_class, "AT": crossed}, np.array([0, 2]), k=1)
    assert nb.same_class_fraction(labels) == {"ST": 1.0, "AT": 0.0}


def test_confidence_quadrants_by_hand():
    # AT ranks (1 = most confident) 1,2,3,4; ST ranks 4,1,3,2; half the class is 2.
    labels = np.array([5, 5, 5, 5, 0])
    conf_at = np.array([4, 3, 2, 1, 9.0])
    conf_st = np.array([1, 4, 2, 3, 9.0])
    q = confidence_quadrants(conf_at, conf_st, labels, cls=5)
    assert set(q.index) == set(QUADRANTS)
    assert {k: v.tolist() for k, v in q.index.items()} == {
        "at_high_st_high": [1],
        "at_high_st_low": [0],
        "at_low_st_high": [3],
        "at_low_st_low": [2],
    }
    with pytest.raises(ValueError, match="class 3"):
        confidence_quadrants(conf_at, conf_st, labels, cls=3)


def test_confidence_quadrants_order_and_limit():
    rng = np.random.default_rng(0)
    labels = np.zeros(200, int)
    a, s = rng.standard_normal(200), rng.standard_normal(200)
    q = confidence_quadrants(a, s, labels, cls=0, per_quadrant=4)
    ra = (-a).argsort().argsort() + 1
    rs = (-s).argsort().argsort() + 1
    best = q.index["at_high_st_low"]
    assert len(best) == 4
    assert (ra[best] <= 100).all() and (rs[best] > 100).all()
    inside = np.flatnonzero((ra <= 100) & (rs > 100))
    assert (rs - ra)[best[0]] == (rs - ra)[inside].max()


@pytest.mark.parametrize("k", [1, 3, 8])
def test_nearest_neighbors_equal_full_stable_sort_with_ties(k):
    """The partition-based top k against the full stable argsort it replaces: many exact ties
    (repeated and zero logit vectors), so the index order of tied images is tested too."""
    rng = np.random.default_rng(k)
    base = rng.integers(-2, 3, (12, 4)).astype(np.float32)
    z = base[rng.integers(0, len(base), 400)]  # every vector repeated ~33 times
    seeds = np.array([0, 5, 17, 399, 200])
    sims = cosine_similarity(z, seeds)
    sims[np.arange(len(seeds)), seeds] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    idx, sim = nearest_neighbors(z, seeds, k)
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(sim, np.take_along_axis(sims, order, axis=1))


def test_nearest_neighbors_with_nan_similarities_keep_the_stable_sort_order():
    z = np.array([[1, 0], [np.inf, 1], [1, 1], [0, 1]], np.float64)  # row 1: NaN similarities
    with np.errstate(invalid="ignore"):  # inf / inf
        sims = cosine_similarity(z, np.array([0]))
        idx, _ = nearest_neighbors(z, np.array([0]), k=3)
    sims[0, 0] = -np.inf
    np.testing.assert_array_equal(idx, np.argsort(-sims, axis=1, kind="stable")[:, :3])
