"""Target transforms: hand-computed cases, hypothesis properties, permutation uniformity."""

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import chisquare

from logitscope.distill.transforms import (
    VALID_NAMES,
    TransformSpec,
    apply_transform,
    apply_transforms,
    format_transforms,
    parse_transform,
    parse_transforms,
)


@st.composite
def teacher_batch(draw, min_classes=2, max_classes=12):
    """(targets, labels, k): distinct float32 values per array, so ranks are unambiguous."""
    c = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(1, 16))
    values = st.floats(-40, 40, width=32, allow_nan=False, allow_infinity=False)
    targets = draw(arrays(np.float32, (n, c), elements=values, unique=True))
    labels = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    k = draw(st.integers(1, c))
    return targets, labels, k


def top_k_classes(t, k):
    return np.sort(np.argsort(-t, axis=1)[:, :k], axis=1)


# ---- hand-computed cases ------------------------------------------------------------------


def test_fix_2_average_by_hand():
    t = np.array([[1.0, 5.0, 2.0, 4.0, -3.0]], dtype=np.float32)
    out, rep = apply_transform(parse_transform("fix-2-average"), t, np.array([1]))
    # top-2 are classes 1 (5.0) and 3 (4.0); the rest (1, 2, -3) average to 0.
    np.testing.assert_array_equal(out, [[0.0, 5.0, 0.0, 4.0, 0.0]])
    assert rep["rows_changed"] == 1 and rep["k"] == 2 and rep["fill"] == "average"
    assert rep["argmax_changed"] == 0.0 and rep["accuracy_after"] == 1.0
    assert rep["mean_abs_change"] == pytest.approx((1 + 2 + 3) / 5)


def test_correct_fix_1_average_by_hand():
    t = np.array([[1.0, 5.0, 2.0, 4.0], [6.0, 0.0, 1.0, 2.0]], dtype=np.float32)
    labels = np.array([3, 0])  # row 0 wrong (top 1, label 3); row 1 right
    out, rep = apply_transform("correct-fix-1-average", t, labels)
    # row 0: swap -> [1, 4, 2, 5]; keep class 3; the rest (1, 4, 2) -> 7/3
    np.testing.assert_allclose(out[0], [7 / 3, 7 / 3, 7 / 3, 5.0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [6.0, 1.0, 1.0, 1.0])
    assert rep["corrected"] == 1 and rep["teacher_error_rate"] == 0.5
    assert rep["accuracy_before"] == 0.5 and rep["accuracy_after"] == 1.0
    assert rep["argmax_changed"] == 0.5


def test_correct_alone_swaps_only():
    t = np.array([[1.0, 5.0, 2.0, 4.0]], dtype=np.float32)
    out, rep = apply_transform("correct", t, np.array([2]))
    np.testing.assert_array_equal(out, [[1.0, 2.0, 5.0, 4.0]])
    assert rep["corrected"] == 1


def test_hybrid_by_hand():
    at = np.array([[3.0, 1.0, 2.0, 0.5]], dtype=np.float32)
    st_ = np.array([[0.0, 9.0, -1.0, 4.0]], dtype=np.float32)  # ST ranks: 1, 3, 0, 2
    out, rep = apply_transform("hybrid", at, np.array([0]), order_targets=st_)
    np.testing.assert_array_equal(out, [[1.0, 3.0, 0.5, 2.0]])
    assert rep["top1_agreement"] == 0.0 and rep["accuracy_before"] == 1.0
    assert rep["accuracy_after"] == 0.0


def test_fix_k_equal_to_classes_and_none_are_identity():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(5, 4)).astype(np.float32)
    y = rng.integers(0, 4, 5)
    for spec in ("fix-4-permute", "fix-4-average", "fix-3-permute", "none"):
        out, rep = apply_transform(spec, t, y, seed=3)
        np.testing.assert_array_equal(out, t)
        assert rep["rows_changed"] == 0
        assert out is not t


def test_reports_are_json_ready():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(20, 10)).astype(np.float32)
    y = rng.integers(0, 10, 20)
    s = rng.normal(size=(20, 10)).astype(np.float32)
    for name in VALID_NAMES:
        kw = {"k": 3} if "fix-k" in name else {}
        _, rep = apply_transform(parse_transform(name, **kw), t, y, order_targets=s)
        assert json.loads(json.dumps(rep)) == rep
        assert rep["transform"] == parse_transform(name, **kw).label


def test_teacher_error_rate_matches_argmax_errors():
    rng = np.random.default_rng(2)
    t = rng.normal(size=(1000, 10)).astype(np.float32)
    y = rng.integers(0, 10, 1000)
    _, rep = apply_transform("correct-fix-1", t, y)
    assert rep["teacher_error_rate"] == pytest.approx(np.mean(t.argmax(1) != y))
    assert rep["teacher_error_rate"] == pytest.approx(0.9, abs=0.03)


# ---- properties ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(teacher_batch(), st.sampled_from(["permute", "average"]), st.integers(0, 2**32 - 1))
def test_fix_k_keeps_top_k_values_and_classes(batch, fill, seed):
    t, y, k = batch
    out, _ = apply_transform(TransformSpec("fix-k", k=k, fill=fill), t, y, seed)
    top = top_k_classes(t, k)
    np.testing.assert_array_equal(top_k_classes(out, k), top)
    np.testing.assert_array_equal(np.take_along_axis(out, top, 1), np.take_along_axis(t, top, 1))


@settings(max_examples=60, deadline=None)
@given(teacher_batch(), st.integers(0, 2**32 - 1))
def test_permute_preserves_each_rows_multiset(batch, seed):
    t, y, k = batch
    out, _ = apply_transform(TransformSpec("fix-k", k=k), t, y, seed)
    np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(t, axis=1))


@settings(max_examples=60, deadline=None)
@given(teacher_batch())
def test_average_preserves_each_rows_sum_and_flattens_the_rest(batch):
    t, y, k = batch
    out, _ = apply_transform(TransformSpec("fix-k", k=k, fill="average"), t, y)
    scale = np.abs(t).sum(axis=1) + 1
    np.testing.assert_array_less(np.abs(out.sum(1, dtype=np.float64) - t.sum(1)), 1e-6 * scale)
    rest = np.take_along_axis(out, np.argsort(-t, axis=1)[:, k:], 1)
    if rest.shape[1]:
        np.testing.assert_array_equal(rest, np.broadcast_to(rest[:, :1], rest.shape))


@settings(max_examples=60, deadline=None)
@given(teacher_batch(), st.sampled_from(["correct-fix-1", "correct-fix-1-average"]))
def test_correct_fix_1_argmax_is_always_the_label(batch, name):
    t, y, _ = batch
    out, rep = apply_transform(name, t, y, seed=7)
    np.testing.assert_array_equal(out.argmax(1), y)
    # the label's class carries the teacher's top value
    np.testing.assert_array_equal(out[np.arange(len(y)), y], t.max(1))
    assert rep["corrected"] == int(np.sum(t.argmax(1) != y))
    assert rep["accuracy_after"] == 1.0


@settings(max_examples=60, deadline=None)
@given(teacher_batch(min_classes=2), st.data())
def test_hybrid_has_at_values_in_st_order(batch, data):
    at, y, _ = batch
    st_ = data.draw(
        arrays(np.float32, at.shape, elements=st.floats(-40, 40, width=32), unique=True)
    )
    out, _ = apply_transform("hybrid", at, y, order_targets=st_)
    np.testing.assert_array_equal(np.sort(out, 1), np.sort(at, 1))
    np.testing.assert_array_equal(np.argsort(-out, 1), np.argsort(-st_, 1))


@settings(max_examples=40, deadline=None)
@given(teacher_batch(min_classes=3), st.integers(0, 2**31), st.integers(1, 2**31))
def test_same_seed_same_targets_different_seed_different(batch, seed, delta):
    t, y, _ = batch
    t = np.tile(t, (40, 1))  # 40+ rows: identical draws for two seeds have chance <= 2**-40
    y = np.tile(y, 40)
    k = t.shape[1] - 2  # N - k = 2 values to permute
    spec = TransformSpec("fix-k", k=k)
    a, _ = apply_transform(spec, t, y, seed)
    b, _ = apply_transform(spec, t, y, seed)
    c, _ = apply_transform(spec, t, y, seed + delta)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_transforms_do_not_modify_their_inputs():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(30, 6)).astype(np.float32)
    s = rng.normal(size=(30, 6)).astype(np.float32)
    y = rng.integers(0, 6, 30)
    t0, s0, y0 = t.copy(), s.copy(), y.copy()
    for name in VALID_NAMES:
        kw = {"k": 2} if "fix-k" in name else {}
        apply_transform(parse_transform(name, **kw), t, y, order_targets=s)
    for a, b in ((t, t0), (s, s0), (y, y0)):
        np.testing.assert_array_equal(a, b)


# ---- uniformity ---------------------------------------------------------------------------


def _perm_index(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index (0..5) of each row's arrangement of the 3 permuted ``values``."""
    perms = {p: i for i, p in enumerate(itertools.permutations(values.tolist()))}
    return np.array([perms[tuple(r.tolist())] for r in rows])


def test_permutation_is_uniform_across_rows():
    t = np.tile(np.array([[10.0, 1.0, 2.0, 3.0]], dtype=np.float32), (6000, 1))
    out, _ = apply_transform("fix-1-permute", t, np.zeros(6000, dtype=np.int64), seed=11)
    counts = np.bincount(_perm_index(out[:, 1:], np.array([1.0, 2.0, 3.0])), minlength=6)
    assert chisquare(counts).pvalue > 1e-3, counts


def test_permutation_is_uniform_across_seeds():
    t = np.array([[1.0, 2.0, 10.0, 3.0]], dtype=np.float32)
    y = np.array([2])
    rows = np.concatenate([apply_transform("fix-1-permute", t, y, seed=s)[0] for s in range(1200)])
    np.testing.assert_array_equal(rows[:, 2], 10.0)
    counts = np.bincount(_perm_index(rows[:, [0, 1, 3]], np.array([1.0, 2.0, 3.0])), minlength=6)
    assert chisquare(counts).pvalue > 1e-3, counts
    assert counts.min() > 0


# ---- composition and parsing ---------------------------------------------------------------


def test_composition_of_correct_and_fix_1_equals_correct_fix_1_for_average():
    rng = np.random.default_rng(4)
    t = rng.normal(size=(50, 10)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    composed, reports = apply_transforms(parse_transforms("correct+fix-1-average"), t, y)
    direct, _ = apply_transform("correct-fix-1-average", t, y)
    np.testing.assert_array_equal(composed, direct)
    assert [r["transform"] for r in reports] == ["correct", "fix-1-average"]


def test_composition_applies_steps_in_order():
    t = np.array([[1.0, 5.0, 2.0, 4.0]], dtype=np.float32)
    y = np.array([2])
    out, _ = apply_transforms(["fix-2-average", "correct"], t, y)
    # fix-2-average -> [1.5, 5, 1.5, 4]; correct swaps class 1 and class 2
    np.testing.assert_array_equal(out, [[1.5, 1.5, 5.0, 4.0]])


def test_parse_round_trips():
    assert parse_transform("fix-k-permute", k=3) == parse_transform("fix-3-permute")
    assert parse_transform("fix-k-average", k=3) == TransformSpec("fix-k", 3, "average")
    assert parse_transform("correct-fix-1-average") == TransformSpec("correct-fix-1", 1, "average")
    for name in VALID_NAMES:
        kw = {"k": 5} if "fix-k" in name else {}
        spec = parse_transform(name, **kw)
        assert parse_transform(spec.label) == spec
        assert TransformSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    specs = parse_transforms("correct + fix-3-average")
    assert parse_transforms(format_transforms(specs)) == specs


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: parse_transform("fix-k-shuffle", k=1), "expected one of none, fix-k-permute"),
        (lambda: parse_transform("fix-k-permute"), "needs k"),
        (lambda: parse_transform("fix-3-permute", k=2), "names k=3"),
        (lambda: parse_transform("hybrid", k=2), "takes no k"),
        (lambda: TransformSpec("fix-k", k=0), "k=0"),
        (lambda: TransformSpec("fix-k", k=2, fill="median"), "fill='median'"),
        (lambda: TransformSpec("correct-fix-1", k=2), "fixes k=1"),
        (lambda: TransformSpec.from_dict({"name": "none", "size": 2}), "unknown transform spec"),
        (lambda: parse_transforms(" + "), "empty transform list"),
    ],
)
def test_bad_specs_raise_one_line(call, match):
    with pytest.raises((ValueError, KeyError), match=match) as err:
        call()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spec": "fix-11-permute"}, r"k=11: expected 1\.\.10"),
        ({"spec": "hybrid"}, "needs order_targets"),
        ({"spec": "hybrid", "order_targets": np.zeros((4, 9))}, "expected \\(4, 10\\)"),
        ({"spec": "hybrid", "order_targets": np.full((4, 10), np.inf)}, "order_targets contain"),
        ({"spec": "none", "labels": np.zeros(3, dtype=int)}, "expected \\(4,\\)"),
        ({"spec": "none", "labels": np.full(4, 10)}, "expected \\[0, 9\\]"),
        ({"spec": "none", "labels": np.zeros(4)}, "expected integers"),
        ({"spec": "none", "targets": np.zeros((4,))}, "expected \\(N, C\\)"),
        ({"spec": "none", "targets": np.full((4, 10), np.nan)}, "NaN"),
    ],
)
def test_bad_inputs_raise_one_line(kwargs, match):
    args = {"targets": np.zeros((4, 10), np.float32), "labels": np.zeros(4, dtype=int), **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        apply_transform(**args)
    assert "\n" not in str(err.value)


def test_vectorised_on_a_cifar100_sized_array_is_fast():
    import time

    rng = np.random.default_rng(5)
    t = rng.normal(size=(50_000, 100)).astype(np.float32)
    y = rng.integers(0, 100, 50_000)
    start = time.perf_counter()
    out, rep = apply_transform("fix-7-permute", t, y, seed=0)
    assert time.perf_counter() - start < 10.0
    assert rep["rows_changed"] == 50_000 and out.dtype == np.float32
