"""MFTMA against the outputs of the public reference implementation (../shared/reference/mftma).

The reference (schung039/neural_manifolds_replicaMFT, run unmodified, cvxopt + pymanopt) was
run on two inputs (case b: P=50, N=512, M=40; case c: P=10, N=100, M=20) at kappa 0 and 0.2;
its intermediates (t-vectors, per-manifold coordinates sD1, removed directions V11) let each
step be checked on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from logitscope.manifolds import center_correlation, manifold_geometry, mftma, remove_center_correlation


def _reference_dir() -> Path:
    shared = os.environ.get("LOGITSCOPE_SHARED")
    return (Path(shared) if shared else Path(__file__).resolve().parents[3] / "shared") / "reference" / "mftma"


REF = _reference_dir()
pytestmark = pytest.mark.skipif(
    not (REF / "inputs.json").exists(),
    reason=f"MFTMA reference outputs not found in {REF} (set LOGITSCOPE_SHARED to the shared folder)",
)
CASES = [("c", "0"), ("c", "0.2"), ("b", "0"), ("b", "0.2")]


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The suite shares few cores with PyTorch's threads; BLAS threads would only contend."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@cache
def load_x(case: str) -> np.ndarray:
    X = np.load(REF / f"{case}.npz")["X"]
    expected = json.loads((REF / "inputs.json").read_text())[case]["sha256_of_X_bytes"]
    assert hashlib.sha256(X.tobytes()).hexdigest() == expected, f"{case}.npz does not match inputs.json"
    return X


@cache
def load_ref(case: str, kappa: str) -> tuple[dict, dict[str, np.ndarray]]:
    tag = f"{case}_k{kappa}_nt200_t0_fa0"
    summary = json.loads((REF / f"{tag}.json").read_text())
    with np.load(REF / f"{tag}_inter.npz") as z:
        inter = {k: z[k] for k in z.files}
    return summary, inter


@pytest.mark.parametrize("case", ["c", "b"])
def test_center_correlation_is_exact(case):
    summary, _ = load_ref(case, "0")
    assert center_correlation(load_x(case)) == pytest.approx(summary["center_corr"], abs=1e-14)


@pytest.mark.parametrize("case,kappa", CASES)
def test_per_manifold_values_from_the_reference_intermediates(case, kappa):
    """Given the reference's sD1 and t-vectors, every manifold's capacity, radius and dimension.

    Capacity agrees to ~1e-11 and radius to ~1e-9. Dimension agrees to ~1e-8 except for one
    manifold of case c at kappa 0 (9e-8): there a Gaussian vector lies 1e-3 outside the
    interior (max projection 1.2e-3), where the reference's interior-point QP (cvxopt, absolute
    tolerance 1e-12, 8 solves reported non-optimal) leaves a ~1e-6 error in that anchor's
    direction; our anchors satisfy the KKT conditions to 1e-15 (test_mftma_solver.py).
    """
    summary, inter = load_ref(case, kappa)
    geo = manifold_geometry(inter["sD1"], inter["t_vecs"], float(kappa))
    np.testing.assert_allclose(geo.capacity, summary["capacity"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(geo.radius, summary["radius"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(geo.dimension, summary["dimension"], rtol=0, atol=2e-7)
    assert np.abs(geo.dimension - summary["dimension"]).mean() < 2e-8


@pytest.mark.parametrize("case", ["c", "b"])
def test_coordinates_from_the_reference_directions(case):
    _, inter = load_ref(case, "0")
    removal = remove_center_correlation(load_x(case), directions=inter["V11"])
    np.testing.assert_allclose(np.stack(removal.coords), inter["sD1"], rtol=0, atol=1e-12)


def _projector(V: np.ndarray) -> np.ndarray:
    return V @ V.T


def test_removal_step_reproduces_the_reference_search():
    """Same random starts, same conjugate gradient: same K, directions and residuals.

    Residuals agree to the optimizer's tolerance (gradient norm 1e-6); at K = 3, where some
    starts crawl for hundreds of iterations, rounding differences steer them slightly apart.
    """
    summary, inter = load_ref("c", "0")
    removal = remove_center_correlation(load_x("c"), seed=0, max_iter=1000)
    assert summary["K"] == removal.K
    np.testing.assert_allclose(removal.res_coeff_per_K, summary["res_coeff_per_K"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(_projector(removal.directions), _projector(inter["V11"]), atol=1e-6)


def test_removal_step_reproduces_the_reference_search_case_b():
    summary, inter = load_ref("b", "0")
    removal = remove_center_correlation(load_x("b"), seed=0, max_iter=1000)
    assert summary["K"] == removal.K
    np.testing.assert_allclose(removal.res_coeff_per_K, summary["res_coeff_per_K"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(_projector(removal.directions), _projector(inter["V11"]), atol=1e-6)


@pytest.mark.parametrize("case,kappa", CASES)
def test_end_to_end(case, kappa):
    """mftma(X, kappa, 200, seed=0) against the reference run with tseed=0 and faseed=0.

    The required agreement is the reference's own seed-to-seed spread of the averages (case b
    capacity sd ~0.013); with the same seeds the removal finds the same K and directions, so
    the numbers agree far more closely.
    """
    summary, _ = load_ref(case, kappa)
    res = mftma(load_x(case), kappa=float(kappa), n_t=200, seed=0)
    assert summary["K"] == res.K
    assert res.center_corr == pytest.approx(summary["center_corr"], abs=1e-14)
    assert abs(res.capacity - summary["capacity_avg_inv"]) < 0.013
    assert res.capacity == pytest.approx(summary["capacity_avg_inv"], rel=1e-6)
    assert res.radius == pytest.approx(summary["radius_mean"], rel=1e-6)
    assert res.dimension == pytest.approx(summary["dimension_mean"], rel=1e-6)
    np.testing.assert_allclose(res.capacities, summary["capacity"], rtol=1e-5)
    np.testing.assert_allclose(res.radii, summary["radius"], rtol=1e-5)
    np.testing.assert_allclose(res.dimensions, summary["dimension"], rtol=1e-5)
    assert res.capacity == pytest.approx(1 / np.mean(1 / res.capacities), rel=1e-12)
    n_levels = len(res.res_coeff_per_K)
    assert n_levels <= len(summary["res_coeff_per_K"])
    # K at and below the chosen one converge well within the default iteration limit
    np.testing.assert_allclose(res.res_coeff_per_K[: res.K], summary["res_coeff_per_K"][: res.K], rtol=0, atol=1e-6)
