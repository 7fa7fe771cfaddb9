"""Model registry. Every model takes float images in [0, 1] and normalizes inside."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from logitscope.models.base import Normalize, TappedModel
from logitscope.models.resnet import preact_resnet18, resnet18
from logitscope.models.small import mnist_cnn, small_cnn

MODELS: dict[str, Callable[..., TappedModel]] = {
    "resnet18": resnet18,
    "preact-resnet18": preact_resnet18,
    "small-cnn": small_cnn,
    "mnist-cnn": mnist_cnn,  # 28x28 (MNIST-format IDX) images
}


def build_model(
    name: str,
    n_classes: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: int | None = None,
) -> TappedModel:
    """Instantiate a registered model (``MODELS``) for a dataset's shape and statistics;
    ``width`` (ResNets only; None: the model's own) scales every stage's channels."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries: expected {in_channels} (one per channel)")
    extra = {} if width is None else {"width": width}
    return MODELS[name](n_classes=n_classes, in_channels=in_channels, mean=mean, std=std, **extra)


def count_parameters(model: TappedModel) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "Normalize", "TappedModel", "build_model", "count_parameters"]
