"""The dataset record every loader returns: uint8 images, int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 (N, C, H, W) tensors, labels as int64 (N,) tensors.

    ``val`` may be empty (0 images). ``mean``/``std`` are per-channel statistics in the
    [0, 1] scale that models use for their built-in normalization.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        for split in SPLITS:
            x, y = self.split(split)
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise ValueError(
                    f"{self.name} {split} images: expected uint8 (N,C,H,W), got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{self.name} {split} labels: expected int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}"
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.class_names)):
                raise ValueError(f"{self.name} {split} labels outside 0..{len(self.class_names) - 1}")
        if not self.mean:
            x = self.x_train.float() / 255.0
            object.__setattr__(self, "mean", tuple(x.mean(dim=(0, 2, 3)).tolist()))
            object.__setattr__(self, "std", tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()))

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}: expected one of {SPLITS}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def first_per_class(self, train: int | None, test: int | None) -> Dataset:
        """The first ``train`` training and ``test`` test images of each class, in their
        order (None keeps a split whole); validation and the normalization statistics are
        the full dataset's."""

        def cut(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
            if n is None:
                return x, y
            keep = first_n_per_class(y.numpy(), n)
            return x[keep], y[keep]

        x_train, y_train = cut(self.x_train, self.y_train, train)
        x_test, y_test = cut(self.x_test, self.y_test, test)
        return replace(self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    def splits(self) -> list[str]:
        """Non-empty splits in train/val/test order."""
        return [s for s in SPLITS if len(self.split(s)[1])]


def first_n_per_class(y: np.ndarray, n: int) -> torch.Tensor:
    """Indices (ascending) of the first ``n`` entries of every label in ``y``."""
    rank = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        where = np.flatnonzero(y == c)
        rank[where] = np.arange(len(where))
    return torch.from_numpy(np.flatnonzero(rank < n))


def empty_like(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:0].clone(), torch.zeros(0, dtype=torch.int64)


def holdout_per_class(
    x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split off ``per_class`` random images of every class (seeded) as a validation set.

    Returns ``(x_train, y_train, x_val, y_val)``, each part in the original order.
    """
    if per_class <= 0:
        return (x, y, *empty_like(x))
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class:
            raise ValueError(f"class {c} has {len(idx)} images: cannot hold out {per_class} for validation")
        val[rng.choice(idx, per_class, replace=False)] = True
    keep = torch.from_numpy(~val)
    v = torch.from_numpy(val)
    return x[keep], y[keep], x[v], y[v]


def to_uint8_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """Images as uint8 NCHW from uint8 NHWC/NCHW or float in [0, 1] (NHWC or NCHW)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{what}: expected 4-d images (N,H,W,C) or (N,C,H,W), got shape {x.shape}")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or not np.isfinite(x).all()):
            raise ValueError(f"{what}: float images must lie in [0, 1], got [{x.min()}, {x.max()}]")
        return np.ascontiguousarray(np.rint(x * 255).astype(np.uint8))
    raise ValueError(f"{what}: expected uint8 or float images in [0, 1], got dtype {x.dtype}")
