"""mftma's interface: inputs it accepts, one-line errors for bad ones, options and result."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from logitscope.manifolds import MFTMAResult, manifold_geometry, mftma
from logitscope.manifolds.mftma import _t_vectors


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The suite shares few cores with PyTorch's threads; BLAS threads would only contend."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def manifolds(P: int = 8, N: int = 30, M: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((P, N, 1)) + 0.4 * rng.standard_normal((P, N, M))


@pytest.mark.parametrize(
    "X,kwargs,match",
    [
        (manifolds(P=2), {}, r"at least 3 manifolds .* got P=2"),
        (manifolds(N=5, M=5), {}, r"M=5 points in N=5 dimensions; expected M < N"),
        (manifolds(N=5, M=7), {}, r"M=7 points in N=5"),
        (np.zeros((4, 6)), {}, r"\(P, N, M\) array .* shape \(4, 6\)"),
        ([np.zeros((6, 2)), np.zeros((7, 2))], {}, r"manifold 1 has N=7 features but manifold 0 has N=6"),
        (manifolds(), {"kappa": -0.1}, r"kappa=-0.1; expected a finite margin >= 0"),
        (manifolds(), {"n_t": 0}, r"n_t=0; expected at least 1"),
        (manifolds(), {"K": 7}, r"K=7; expected 0 <= K <= 6"),
        (manifolds(), {"dimension": "paper"}, r"dimension='paper'.*expected 'reference' or 'appendix'"),
        (manifolds(), {"t_vecs": np.zeros((8, 5, 10))}, r"t_vecs must hold one \(M_i \+ 1, n_t\) array"),
    ],
)
def test_bad_input_raises_one_line_value_error(X, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        mftma(X, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_activations_are_rejected(bad):
    X = manifolds()
    X[3, 4, 2] = bad
    with pytest.raises(ValueError, match=r"manifold 3 has 1 non-finite activations \(NaN or inf\)"):
        mftma(X)


def test_center_at_the_mean_center_is_rejected():
    X = manifolds(P=4)
    centers = X.mean(axis=2)
    X[3] += (centers[:3].mean(axis=0) - centers[3])[:, None]  # center 3 = mean of all centers
    with pytest.raises(ValueError, match=r"manifold 3 has its center at the mean of all centers"):
        mftma(X)


def test_result_fields_and_averages():
    res = mftma(manifolds(), kappa=0.1, n_t=100, seed=1)
    assert isinstance(res, MFTMAResult)
    assert res.capacities.shape == res.radii.shape == res.dimensions.shape == (8,)
    assert res.capacity == pytest.approx(1 / np.mean(1 / res.capacities))
    assert res.radius == pytest.approx(res.radii.mean())
    assert res.dimension == pytest.approx(res.dimensions.mean())
    assert res.kappa == 0.1 and res.n_t == 100
    assert set(res.timings) == {"removal", "geometry", "total"}
    assert len(res.res_coeff_per_K) >= res.K >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.capacity = 0.0


def test_sequence_input_and_t_vector_injection_match_the_array_path():
    X = manifolds()
    a = mftma(X, seed=2)
    b = mftma(list(X), seed=2, t_vecs=_t_vectors([5] * 8, 200, 2))
    c = mftma(X, seed=2, t_vecs=np.random.default_rng(2).standard_normal((8, 6, 200)))
    for other in (b, c):
        np.testing.assert_array_equal(a.capacities, other.capacities)
        np.testing.assert_array_equal(a.dimensions, other.dimensions)


def test_ragged_manifolds_and_float32():
    rng = np.random.default_rng(5)
    ragged = [rng.standard_normal((30, 1)) + 0.4 * rng.standard_normal((30, m)) for m in (3, 5, 4, 5, 6, 3, 7)]
    res = mftma(ragged, n_t=50)
    assert res.capacities.shape == (7,) and np.all(np.isfinite(res.capacities))
    X = manifolds()
    r64, r32 = mftma(X), mftma(X.astype(np.float32))
    np.testing.assert_allclose(r32.capacities, r64.capacities, rtol=1e-3)


def test_no_removal():
    res = mftma(manifolds(), K=0)
    assert res.K == 0 and res.res_coeff_per_K.size == 0


def test_appendix_formulas():
    """Appendix A.4.2: D = <(t.s_hat)^2>, R = sqrt(<|s|^2>); for two points at +-R (a 1-D ball)
    every anchor's manifold part has norm R or 0, so R_appendix <= R."""
    rng = np.random.default_rng(6)
    R = 0.8
    sD1 = np.array([[R, -R], [0.0, 0.0], [1.0, 1.0]])
    T = rng.standard_normal((3, 4000))
    ref = manifold_geometry(sD1, T)
    app = manifold_geometry(sD1, T, dimension="appendix", radius="appendix")
    assert app.capacity[0] == ref.capacity[0]
    assert 0 < app.radius[0] <= R + 1e-12
    s_part = np.abs(T[0])  # t.s_hat = |t_1| whenever the anchor is not the center
    assert 0 < app.dimension[0] <= np.mean(s_part**2) + 1e-12
    assert app.dimension[0] != ref.dimension[0]
