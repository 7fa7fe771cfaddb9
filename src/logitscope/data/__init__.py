"""Datasets as uint8 image tensors, int64 labels and class names."""

from __future__ import annotations

import os

import torch

from logitscope.config import DATASETS, DataConfig
from logitscope.data.augment import Augment
from logitscope.data.base import SPLITS, Dataset


def get_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_per_class: int | None = None,
    split_seed: int = 0,
    download: bool = False,
) -> Dataset:
    """Load a dataset by name: one of ``DATASETS``."""
    if name == "digits":
        from logitscope.data.digits import load_digits_dataset

        return load_digits_dataset(split_seed=split_seed, val_per_class=val_per_class or 0)
    if name in ("cifar10", "cifar100"):
        from logitscope.data.cifar import load_cifar

        return load_cifar(name, data_dir, val_per_class, split_seed, download_if_missing=download)
    if name == "idx":
        from logitscope.data.idx import load_idx

        return load_idx(data_dir, val_per_class or 0, split_seed)
    if name == "npz":
        from logitscope.data.npz import load_npz_dataset

        return load_npz_dataset(data_dir, val_per_class or 0, split_seed)
    raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")


def load_data(cfg: DataConfig) -> Dataset:
    """The dataset a run's ``data`` section describes: loaded, validation held out, and cut to
    ``train_per_class`` / ``test_per_class`` images per class where those are set."""
    data = get_dataset(cfg.name, cfg.data_dir, cfg.val_per_class, cfg.split_seed, cfg.download)
    if cfg.train_per_class is None and cfg.test_per_class is None:
        return data
    return data.first_per_class(cfg.train_per_class, cfg.test_per_class)


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x uint8 (N,C,H,W), y int64 (N,))`` of one split of a dataset, default settings."""
    return get_dataset(name, data_dir).split(split)


__all__ = ["DATASETS", "SPLITS", "Augment", "Dataset", "get_dataset", "load_data", "load_dataset"]
