"""The one mean ± sd over seeds: sample sd (ddof=1), NaN/None ignored, sd undefined for one value."""

import math
import statistics
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logitscope.stats import mean_sd, mean_sd_axis

NAN = float("nan")


def _same(got, want):
    return all((math.isnan(g) and math.isnan(w)) or g == pytest.approx(w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([1, 2, 3], (2.0, 1.0)),  # deviations -1, 0, 1: sqrt(2 / 2)
        ([1, NAN, 3], (2.0, math.sqrt(2))),  # NaN left out: sqrt((1 + 1) / 1)
        ([1, None, 3], (2.0, math.sqrt(2))),
        ([0.5, 0.7], (0.6, 0.2 / math.sqrt(2))),
        ([2, 4, 4, 4, 5, 5, 7, 9], (5.0, math.sqrt(32 / 7))),  # population sd would be 2
        ([4.0], (4.0, NAN)),  # one seed: sd undefined, not 0
        ([4.0, NAN, None], (4.0, NAN)),
        ([], (NAN, NAN)),
        ([NAN, None], (NAN, NAN)),
        (np.array([1.0, 2.0, 3.0]), (2.0, 1.0)),
    ],
)
def test_mean_sd_by_hand(values, want):
    got = mean_sd(values)
    assert all(type(x) is float for x in got)
    assert _same(got, want), (got, want)


def test_mean_sd_accepts_a_generator_and_numpy_scalars():
    assert mean_sd(np.float32(x) for x in (1, 2, 3)) == (2.0, 1.0)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(finite, st.none(), st.just(NAN)), max_size=30))
def test_mean_sd_matches_statistics(values):
    kept = [x for x in values if x is not None and not math.isnan(x)]
    m, s = mean_sd(values)
    if not kept:
        assert math.isnan(m) and math.isnan(s)
        return
    assert m == pytest.approx(statistics.fmean(kept), rel=1e-9, abs=1e-6)
    if len(kept) == 1:
        assert math.isnan(s)
    else:
        assert s == pytest.approx(statistics.stdev(kept), rel=1e-6, abs=1e-6)


def test_mean_sd_axis_by_hand():
    a = np.array([[1.0, 0.5, 2.0, NAN], [2.0, 0.7, NAN, NAN], [3.0, NAN, NAN, NAN]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" or ddof warnings
        mean, sd = mean_sd_axis(a)
    np.testing.assert_allclose(mean, [2.0, 0.6, 2.0, NAN])
    np.testing.assert_allclose(sd, [1.0, 0.2 / math.sqrt(2), NAN, NAN])
    mean1, sd1 = mean_sd_axis(a, axis=1)
    np.testing.assert_allclose(mean1, [3.5 / 3, 1.35, 3.0])
    # row 1: |2.0 - 0.7| / sqrt(2); row 2: one value, no sd
    np.testing.assert_allclose(sd1, [statistics.stdev([1.0, 0.5, 2.0]), 1.3 / math.sqrt(2), NAN])


def test_mean_sd_axis_one_row_has_no_sd():
    mean, sd = mean_sd_axis(np.array([[0.25, 0.75]]))
    np.testing.assert_array_equal(mean, [0.25, 0.75])
    assert np.isnan(sd).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=8))
def test_mean_sd_axis_agrees_with_mean_sd_per_column(rows):
    a = np.array(rows)
    mean, sd = mean_sd_axis(a)
    for j in range(a.shape[1]):
        assert _same((mean[j], sd[j]), mean_sd(a[:, j]))


def test_report_formatting_shows_one_seed_as_n1_never_nan():
    from logitscope.report.build import pct

    assert pct([0.7, 0.72, 0.74]) == "72.0% ± 2.0%"  # sd = 0.02 with ddof=1 (0.016 with ddof=0)
    assert pct([0.74]) == "74.0% (n=1)"
    assert pct([]) == pct([NAN]) == "—"
