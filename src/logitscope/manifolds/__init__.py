"""Manifold analysis of adversarial L-inf balls (paper section 4.2, figure 5; appendix A.4).

`mftma` computes the replica mean-field capacity, radius, dimension and center correlation of
P point-cloud manifolds (one per image: its perturbations' activations at a layer);
`simulated_capacity` measures the capacity empirically by random projections and linear
separability of random dichotomies. The steps of `mftma` (`remove_center_correlation`,
`manifold_geometry`, and `anchor_points` via ``from logitscope.manifolds.mftma import ...``) can
be run and checked on their own.
"""

from logitscope.manifolds.mftma import (
    CenterRemoval,
    ManifoldGeometry,
    MFTMAResult,
    center_correlation,
    manifold_geometry,
    mftma,
    remove_center_correlation,
)
from logitscope.manifolds.simulated import SimulatedCapacity, simulated_capacity

__all__ = [
    "CenterRemoval",
    "MFTMAResult",
    "ManifoldGeometry",
    "SimulatedCapacity",
    "center_correlation",
    "manifold_geometry",
    "mftma",
    "remove_center_correlation",
    "simulated_capacity",
]
