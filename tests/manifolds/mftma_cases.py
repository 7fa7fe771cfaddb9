"""Shared inputs of the MFTMA solver tests."""

from __future__ import annotations

import numpy as np

from logitscope.manifolds import remove_center_correlation


def coords(P: int, N: int, M: int, radius: float, seed: int) -> np.ndarray:
    """(P, M+1, M) coordinates of random Gaussian point clouds around random centers."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P + 1, N, 1)) + radius * rng.standard_normal((P + 1, N, M))
    return np.stack(remove_center_correlation(X, K=0).coords)[:P]
