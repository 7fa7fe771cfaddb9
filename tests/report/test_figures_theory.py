"""draw_theory_figures: appendix C's figures drawn from a stored theory folder alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from logitscope.report.figures_theory import draw_theory_figures
from logitscope.theory.model import write_theory

PNG = b"\x89PNG\r\n\x1a\n"
C_FIGURES = ["fig_c1", "fig_c2", "fig_c3"]


def _fake_gap_result(seed: int, slope: float, n: int = 60) -> dict[str, np.ndarray]:
    """The keys, dtypes and shapes of ``fgsm_gap.measure_gap_change``."""
    rng = np.random.default_rng(seed)
    gap = rng.uniform(-2.0, 8.0, size=n)
    change = slope * gap**2 + 0.1 * rng.normal(size=n)
    scalars = {
        "eps": 0.01,
        "fit_slope": slope,
        "fit_intercept": 0.0,
        "fit_r2": 0.9,
        "linear_fit_r2": 0.7,
        "power_exponent": 2.0,
        "linear_response_r2": 0.95,
    }
    return {
        "gap_before": gap,
        "gap_after": gap + change,
        "change": change,
        "change_fixed_pair": change,
        "predicted_linear": change + 0.05 * rng.normal(size=n),
        "predicted_quadratic": slope * gap**2,
        "correct": gap > 0,
        "runner_up": rng.integers(10, size=n).astype(np.int64),
        **{key: np.asarray(val, dtype=np.float64) for key, val in scalars.items()},
    }


@pytest.fixture(scope="module")
def theory_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    gaps = {"ST": _fake_gap_result(0, -0.02), "AT": _fake_gap_result(1, -0.005)}
    write_theory(out, 10, betas=(3.5,), n_starts=2, gap_results=gaps)
    return out


def test_draws_all_four_from_the_stored_files(theory_dir, tmp_path):
    before = sorted(p.name for p in theory_dir.iterdir())
    assert before == ["fgsm_gap.npz", "theory.json"]
    folder = tmp_path / "figures"
    drawn = draw_theory_figures(theory_dir, folder)
    assert sorted(drawn) == sorted([*C_FIGURES, "fig_fgsm_gap"])
    for name, path in drawn.items():
        assert path == folder / f"{name}.png"
        assert path.read_bytes()[:8] == PNG
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.png" for n in drawn)
    assert sorted(p.name for p in theory_dir.iterdir()) == before  # nothing written there


def test_without_gap_data_only_the_c_figures(theory_dir, tmp_path):
    stored = tmp_path / "theory"
    stored.mkdir()
    shutil.copy(theory_dir / "theory.json", stored / "theory.json")
    drawn = draw_theory_figures(stored, stored)
    assert sorted(drawn) == C_FIGURES
    for path in drawn.values():
        assert path.parent == stored and path.read_bytes()[:8] == PNG
    assert not (stored / "fig_fgsm_gap.png").exists()


def test_empty_folder_draws_nothing(tmp_path):
    assert draw_theory_figures(tmp_path, tmp_path / "out") == {}
