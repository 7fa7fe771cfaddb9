"""Every dataset format, built as small synthetic files in the real formats."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from idx_digits import idx_bytes
from logitscope.data import get_dataset, load_dataset
from logitscope.data.augment import Augment
from logitscope.data.cifar import (
    CIFAR10,
    CIFAR100,
    RestrictedUnpickler,
    load_cifar,
    restricted_loads,
)
from logitscope.data.idx import read_idx
from synthetic_cifar import write_synthetic_cifar


def test_digits_split_is_fixed_stratified_uint8():
    d = get_dataset("digits")
    assert d.x_train.shape == (1400, 1, 8, 8) and d.x_test.shape == (397, 1, 8, 8)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert int(d.x_train.max()) == 255 and int(d.x_train.min()) == 0  # 16 -> 255
    # stratified: every class's share of the test set matches its share overall within one image
    counts = np.bincount(d.y_test.numpy(), minlength=10)
    total = np.bincount(np.concatenate([d.y_train.numpy(), d.y_test.numpy()]), minlength=10)
    assert np.all(np.abs(counts - total * 397 / 1797) <= 1)
    again = get_dataset("digits")
    assert torch.equal(again.x_test, d.x_test)
    assert d.class_names == tuple(str(i) for i in range(10))
    x, y = load_dataset("digits", "test")
    assert torch.equal(x, d.x_test) and torch.equal(y, d.y_test)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist2'.*digits.*cifar10"):
        get_dataset("mnist2")


def _make_tarball(tmp_path: Path, spec) -> Path:
    if spec is CIFAR10:  # 20 training images per class over the five batch files, 4 test images per class
        return write_synthetic_cifar(tmp_path, "cifar10", train_per_class=20, test_per_class=4)
    return write_synthetic_cifar(tmp_path, "cifar100", train_per_class=1, test_per_class=1)


def test_cifar_tarball_loads_after_md5_check(tmp_path):
    tar = _make_tarball(tmp_path, CIFAR10)
    md5 = hashlib.md5(tar.read_bytes()).hexdigest()
    d = load_cifar("cifar10", tmp_path, val_per_class=1, md5_overrides={CIFAR10.tarball: md5})
    assert d.x_test.shape == (40, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert len(d.y_train) + len(d.y_val) == 200
    assert len(d.y_val) == len(np.unique(np.concatenate([d.y_train.numpy(), d.y_val.numpy()])))  # one per class present
    assert d.class_names[3] == "class03"
    assert d.mean == CIFAR10.mean  # the published statistics, not the fake data's


def test_cifar100_full_training_set_no_validation(tmp_path):
    tar = _make_tarball(tmp_path, CIFAR100)
    md5 = hashlib.md5(tar.read_bytes()).hexdigest()
    d = load_cifar("cifar100", tmp_path, md5_overrides={CIFAR100.tarball: md5})
    assert len(d.y_train) == 100 and len(d.y_val) == 0 and d.n_classes == 100


def test_cifar_md5_mismatch_refused_before_unpickling(tmp_path, monkeypatch):
    _make_tarball(tmp_path, CIFAR10)
    called = []
    monkeypatch.setattr("logitscope.data.cifar.restricted_loads", lambda b: called.append(1))
    with pytest.raises(ValueError, match="md5 mismatch.*expected the published c58f30108f718f92721af3b95e74349a"):
        load_cifar("cifar10", tmp_path)
    assert not called


def test_cifar_extracted_folder_checks_each_file(tmp_path):
    tar = _make_tarball(tmp_path, CIFAR10)
    with tarfile.open(tar) as t:
        t.extractall(tmp_path / "x", filter="data")
    with pytest.raises(ValueError, match="md5 mismatch.*data_batch_1"):
        load_cifar("cifar10", tmp_path / "x")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code():
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle (posix|os|nt).system"):
        restricted_loads(pickle.dumps(_Evil(), protocol=2))
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(restricted_loads(pickle.dumps({b"data": arr}, protocol=4))[b"data"], arr)
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)


def test_cifar_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_dataset("cifar10", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no cifar-10-python.tar.gz"):
        get_dataset("cifar10", tmp_path)


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(1)
    xs = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 30), ("t10k", 12))}
    ys = {s: rng.integers(0, 10, len(x)) for s, x in xs.items()}
    suffix = ".gz" if gz else ""
    for s in xs:
        _write_idx(tmp_path / f"{s}-images-idx3-ubyte{suffix}", xs[s], gz)
        _write_idx(tmp_path / f"{s}-labels-idx1-ubyte{suffix}", ys[s], gz)
    d = get_dataset("idx", tmp_path)
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_test.shape == (12, 1, 28, 28)
    assert np.array_equal(d.x_train[:, 0].numpy(), xs["train"]) and np.array_equal(d.y_test.numpy(), ys["t10k"])
    assert read_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}").shape == (12,)


def test_idx_bad_magic(tmp_path):
    (tmp_path / "f").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "f")


@pytest.mark.parametrize("layout", ["nhwc_uint8", "nchw_uint8", "nhwc_float"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20, 3, 6, 6), dtype=np.uint8)
    stored = {"nhwc_uint8": x.transpose(0, 2, 3, 1), "nchw_uint8": x, "nhwc_float": x.transpose(0, 2, 3, 1) / 255.0}[
        layout
    ]
    y = rng.integers(0, 4, 20)
    np.savez(tmp_path / "data.npz", x_train=stored, y_train=y, x_test=stored[:5], y_test=y[:5])
    d = get_dataset("npz", tmp_path)
    assert torch.equal(d.x_train, torch.from_numpy(x)) and d.n_classes == 4


def test_npz_float_outside_unit_range(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x_train=np.full((2, 4, 4, 1), 3.0),
        y_train=[0, 1],
        x_test=np.zeros((1, 4, 4, 1)),
        y_test=[0],
    )
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        get_dataset("npz", tmp_path / "d.npz")


def test_augment_crop_is_a_shifted_window_and_flip_mirrors():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).reshape(2, 1, 5, 5)
    g = torch.Generator().manual_seed(3)
    out = Augment(pad=2)(x, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):  # each output is some 5x5 window of the zero-padded image
        windows = [padded[b, :, i : i + 5, j : j + 5] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    flipped = Augment(flip=True)(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    is_flip = [torch.equal(f, x[i % 2].flip(2)) for i, f in enumerate(flipped)]
    is_same = [torch.equal(f, x[i % 2]) for i, f in enumerate(flipped)]
    assert all(a or b for a, b in zip(is_flip, is_same, strict=True)) and 10 < sum(is_flip) < 90
    assert Augment()(x) is x


def test_first_per_class_keeps_each_class_first_images_in_order():
    d = get_dataset("digits", val_per_class=3)
    cut = d.first_per_class(5, 2)
    y = d.y_train.numpy()
    expected = [i for i in range(len(y)) if (y[: i + 1] == y[i]).sum() <= 5]  # brute force
    assert torch.equal(cut.x_train, d.x_train[expected]) and torch.equal(cut.y_train, d.y_train[expected])
    assert np.bincount(cut.y_test.numpy()).tolist() == [2] * 10
    assert torch.equal(cut.x_val, d.x_val) and cut.mean == d.mean  # validation and statistics untouched
    assert d.first_per_class(None, None).x_train.shape == d.x_train.shape


def test_synthetic_cifar_is_refused_without_the_test_fixture(synthetic_cifar_dir):
    with pytest.raises(ValueError, match="md5 mismatch.*expected the published c58f30108f718f92721af3b95e74349a"):
        get_dataset("cifar10", synthetic_cifar_dir)


def test_load_data_cuts_the_synthetic_tarballs_per_class(accept_synthetic_cifar):
    from logitscope.config import DataConfig
    from logitscope.data import load_data

    d = load_data(DataConfig("cifar100", str(accept_synthetic_cifar), train_per_class=3, test_per_class=2))
    assert d.n_classes == 100 and len(d.y_val) == 0
    assert np.bincount(d.y_train.numpy()).tolist() == [3] * 100 and len(d.y_test) == 200
    ten = load_data(DataConfig("cifar10", str(accept_synthetic_cifar), val_per_class=2))
    assert (len(ten.y_train), len(ten.y_val), len(ten.y_test)) == (280, 20, 100)
