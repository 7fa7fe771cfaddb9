"""Layer activations of points in the L-inf balls around exemplar images.

For P exemplar test images (balanced over classes, seeded), M points in each eps-ball:
adversarial perturbations (PGD from different random starts, and PGD targeted towards
different wrong classes, see :func:`point_target`) or uniform random points. Every named
layer's activations come back as ``(P, N, M)`` arrays, randomly projected (seeded Gaussian)
to at most ``max_features``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from logitscope.attacks.pgd import pgd
from logitscope.config import check_eps
from logitscope.models import TappedModel

log = logging.getLogger(__name__)
POINT_KINDS = ("adversarial", "uniform")


def choose_exemplars(labels: np.ndarray, p: int, seed: int = 0) -> np.ndarray:
    """Indices of ``p`` images, as balanced over classes as ``p`` allows (seeded), sorted."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if p < 1 or p > len(labels):
        raise ValueError(f"p={p}: expected between 1 and {len(labels)} exemplar images")
    rng = np.random.default_rng(seed)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)).tolist() for c in classes}
    chosen: list[int] = []
    while len(chosen) < p:
        for c in rng.permutation(classes):
            if pools[c] and len(chosen) < p:
                chosen.append(pools[c].pop())
    return np.sort(np.asarray(chosen))


def point_target(j: int, y: torch.Tensor | int, n_classes: int) -> torch.Tensor | int | None:
    """Target class of adversarial ball point ``j`` for images of label ``y``.

    Even-numbered points are untargeted PGD (None). The odd-numbered ones, the k-th targeted
    point being ``j = 2k + 1``, are PGD towards ``(y + 1 + k % (C - 1)) % C``: they cycle
    over the C - 1 wrong classes ``y+1, ..., y+C-1`` (mod C) and never target ``y`` itself,
    which would pull the point towards its label instead of attacking it.

    Args:
        j: point index in the ball, >= 0.
        y: label(s) in [0, C), an int or a (P,) tensor.
        n_classes: C >= 2.

    Returns:
        None for an untargeted point, else the target class(es), of the type of ``y``.
    """
    if n_classes < 2 or j < 0:
        raise ValueError(f"j={j}, n_classes={n_classes}: expected j >= 0 and at least 2 classes")
    if j % 2 == 0:
        return None
    return (y + 1 + (j // 2) % (n_classes - 1)) % n_classes


def ball_points(
    model: TappedModel,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    m: int,
    n_classes: int,
    kind: str = "adversarial",
    steps: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """``(P, M, C, H, W)`` points in the eps-balls around ``x`` ((P, C, H, W) in [0, 1]).

    ``adversarial``: even-numbered points are untargeted PGD from different random starts,
    odd-numbered ones PGD towards the wrong classes ``y+1, y+2, ..., y+C-1`` in turn (mod
    C; :func:`point_target`), never towards ``y``.
    ``uniform``: uniform random points of the ball (clipped to the box).
    """
    check_eps(eps)
    if kind not in POINT_KINDS:
        raise ValueError(f"point kind {kind!r}: expected one of {', '.join(POINT_KINDS)}")
    if n_classes < 2 or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < n_classes):
        lo, hi = (int(y.min()), int(y.max())) if len(y) else (0, 0)
        raise ValueError(f"labels in [{lo}, {hi}] for n_classes={n_classes}: expected labels in [0, C), C >= 2")
    g = torch.Generator(x.device).manual_seed(seed)
    model.eval()
    out = []
    for j in range(m):
        if kind == "uniform":
            noise = torch.rand(x.shape, generator=g, device=x.device) * 2 - 1
            out.append((x + eps * noise).clamp(0, 1))
        elif (target := point_target(j, y, n_classes)) is None:
            out.append(pgd(model, x, y, eps, 2.5 * eps / steps, steps, True, g))
        else:

            def toward(logits: torch.Tensor, _: torch.Tensor, t: torch.Tensor = target) -> torch.Tensor:
                return -F.cross_entropy(logits, t, reduction="sum")

            out.append(pgd(model, x, y, eps, 2.5 * eps / steps, steps, True, g, loss_fn=toward))
    return torch.stack(out, dim=1)


@torch.no_grad()
def layer_activations(
    model: TappedModel,
    points: torch.Tensor,
    layers: Sequence[str] | None = None,
    max_features: int = 5000,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, np.ndarray]:
    """Activations of ``points`` ((P, M, C, H, W)) at each named layer as ``(P, N, M)`` float64,
    with a seeded Gaussian projection to ``max_features`` where a layer is wider."""
    p, m = points.shape[:2]
    flat = points.reshape(p * m, *points.shape[2:])
    names = list(layers) if layers is not None else ["input", *model.layer_names]
    unknown = [n for n in names if n != "input" and n not in model.layer_names]
    if unknown:
        raise KeyError(f"unknown layer {unknown[0]!r}: this model has input, {', '.join(model.layer_names)}")
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    projections: dict[str, torch.Tensor] = {}
    model.eval()
    for i in range(0, len(flat), batch_size):
        xb = flat[i : i + batch_size]
        taps = model.forward_intermediates(xb, [n for n in names if n != "input"])
        taps = {"input": xb, **taps}
        for n in names:
            a = taps[n].flatten(1).double()
            if a.shape[1] > max_features:
                if n not in projections:
                    gen = torch.Generator().manual_seed(seed + sum(map(ord, n)))
                    proj = torch.randn(a.shape[1], max_features, generator=gen, dtype=torch.float64) / max_features**0.5
                    projections[n] = proj.to(a.device)
                a = a @ projections[n]
            chunks[n].append(a.cpu())
    out = {}
    for n in names:
        a = torch.cat(chunks[n]).numpy().reshape(p, m, -1)
        if not np.isfinite(a).all():
            raise ValueError(f"layer {n} has non-finite activations: expected finite values")
        out[n] = np.ascontiguousarray(a.transpose(0, 2, 1))  # (P, N, M)
    return out
