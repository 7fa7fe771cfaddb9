"""Simulated capacity (figure A.8): the separability LPs' solver order, side by side in one run.

`logitscope.manifolds.simulated.linearly_separable` decides each dichotomy with HiGHS's
interior-point method first and its dual simplex only where that leaves the problem undecided
(`LP_METHODS`). The simplex first (the order before) decides the same problems, but on
near-degenerate ReLU features, where most dichotomies are not separable, it stalls into solve
errors for seconds before the fallback decides them. This script runs `simulated_capacity`
with both orders on the same manifolds, one BLAS thread, and checks that every fraction along
the bisection, hence the capacity, is identical.

Cases (the digits preset's sizes: P = 40 manifolds of M = 20 points, 10 dichotomies per n):
- ``relu``: N = 128 ReLU features of noisy points around 40 centres in 64 dimensions (like the
  small CNN's fc1 layer, where fewer than half the dichotomies separate even with all 128
  features);
- ``separable``: the same with a quarter of the noise (the bisection crosses 1/2 below N).

    .venv/bin/python benchmarks/simulated_capacity.py            # both cases, best of 2
    .venv/bin/python benchmarks/simulated_capacity.py --quick    # the relu case, once

Measured on 2 CPU cores, the other idle (2026-12-07): relu 2.7 s (interior point first) against
5.8 s (simplex first), 2.2x; separable 2.9 s against 2.5 s (0.84x: where the simplex decides at
once, the interior point costs a little more); every fraction identical. On the digits preset's
own AT teacher (its fc1 layer: 10 LPs per n up to 128) the change took the layer from 39 s to
8 s, decisions identical.

The last line of output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

from logitscope.manifolds import simulated

P, M, N, D = 40, 20, 128, 64


def manifolds(noise: float, seed: int = 0) -> list[np.ndarray]:
    """P arrays (N, M): ReLU of a random projection of points scattered around P centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((P, D))
    points = centres[:, None, :] + noise * rng.standard_normal((P, M, D))
    w = rng.standard_normal((D, N)) / math.sqrt(D)
    return [np.maximum(points[i] @ w, 0.0).T for i in range(P)]


def timed(x: list[np.ndarray], methods: tuple[str, ...], repeats: int) -> tuple[float, simulated.SimulatedCapacity]:
    saved = simulated.LP_METHODS
    simulated.LP_METHODS = methods
    try:
        best, result = math.inf, None
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = simulated.simulated_capacity(x, n_dichotomies=10, seed=0)
            best = min(best, time.perf_counter() - t0)
        return best, result
    finally:
        simulated.LP_METHODS = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the relu case only, once")
    args = ap.parse_args()
    cases = {"relu": 1.0} if args.quick else {"relu": 1.0, "separable": 0.25}
    repeats = 1 if args.quick else 2
    head: dict[str, object] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for case, noise in cases.items():
            x = manifolds(noise)
            t_new, new = timed(x, simulated.LP_METHODS, repeats)
            t_old, old = timed(x, ("highs", "highs-ipm"), repeats)
            same = np.array_equal(new.n_features, old.n_features) and np.array_equal(new.fraction, old.fraction)
            print(
                f"{case}: interior point first {t_new:.1f} s, simplex first {t_old:.1f} s ({t_old / t_new:.1f}x); "
                f"capacity {new.capacity:.4f} vs {old.capacity:.4f}; every fraction identical: {same}"
            )
            head[case] = {
                "ipm_first_s": round(t_new, 2),
                "simplex_first_s": round(t_old, 2),
                "speedup": round(t_old / t_new, 2),
                "identical": bool(same),
                "capacity": None if math.isnan(new.capacity) else round(new.capacity, 4),
            }
    print(json.dumps(head))


if __name__ == "__main__":
    main()
