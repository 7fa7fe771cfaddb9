"""CIFAR-10 and CIFAR-100 from the official python-version tarballs.

Safety: the tarball's md5 is checked against the published value before anything is
unpickled (for an extracted folder, each batch file's md5), and the batches are read with a
restricted unpickler that admits only the types those files contain (numpy arrays and plain
containers). A pickle that names any other callable is refused.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logitscope.data.base import Dataset, holdout_per_class

log = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class CifarSpec:
    name: str
    url: str
    tarball: str
    tarball_md5: str
    folder: str
    train_files: tuple[tuple[str, str], ...]
    test_files: tuple[tuple[str, str], ...]
    meta_file: tuple[str, str]
    label_key: bytes
    names_key: bytes
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_per_class: int


CIFAR10 = CifarSpec(
    name="cifar10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    tarball="cifar-10-python.tar.gz",
    tarball_md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train_files=(
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ),
    test_files=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
    meta_file=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
    label_key=b"labels",
    names_key=b"label_names",
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    val_per_class=500,  # appendix A.2: 500 random training images per class held out
)

CIFAR100 = CifarSpec(
    name="cifar100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    tarball="cifar-100-python.tar.gz",
    tarball_md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python",
    train_files=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
    test_files=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    meta_file=("meta", "7973b15100ade9c7d40fb424638fde48"),
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    mean=CIFAR100_MEAN,
    std=CIFAR100_STD,
    val_per_class=0,  # appendix A.2: CIFAR-100 trains on the full training set
)

SPECS = {s.name: s for s in (CIFAR10, CIFAR100)}

# The only globals a CIFAR batch pickle references (numpy array reconstruction).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only numpy array reconstruction and builtin containers."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: a CIFAR batch holds only numpy arrays and builtins"
        )


def restricted_loads(data: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def md5_of(path_or_bytes: str | os.PathLike | bytes) -> str:
    h = hashlib.md5()
    if isinstance(path_or_bytes, bytes):
        h.update(path_or_bytes)
        return h.hexdigest()
    with open(path_or_bytes, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_md5(what: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ValueError(f"md5 mismatch for {what}: got {actual}, expected the published {expected}")


def _read_members(spec: CifarSpec, data_dir: Path, md5_overrides: dict[str, str] | None) -> dict[str, bytes]:
    """Return the raw bytes of every batch file, md5-checked before any unpickling."""
    md5s = dict(md5_overrides or {})
    names = [n for n, _ in spec.train_files + spec.test_files] + [spec.meta_file[0]]
    expected = {n: m for n, m in spec.train_files + spec.test_files + (spec.meta_file,)}
    expected.update({k: v for k, v in md5s.items() if k in expected})
    tar_path = data_dir / spec.tarball
    if data_dir.is_file() and data_dir.name.endswith((".tar.gz", ".tgz")):
        tar_path = data_dir
    if tar_path.is_file():
        _check_md5(str(tar_path), md5_of(tar_path), md5s.get(spec.tarball, spec.tarball_md5))
        out: dict[str, bytes] = {}
        with tarfile.open(tar_path, "r:gz") as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if member.isfile() and base in expected and os.path.dirname(member.name).endswith(spec.folder):
                    fh = tar.extractfile(member)
                    assert fh is not None
                    out[base] = fh.read()
        missing = [n for n in names if n not in out]
        if missing:
            raise ValueError(f"{tar_path} lacks {missing}: not an official {spec.name} python tarball")
        return out
    folder = data_dir / spec.folder if (data_dir / spec.folder).is_dir() else data_dir
    if not all((folder / n).is_file() for n in names):
        raise FileNotFoundError(
            f"no {spec.tarball} or {spec.folder}/ in {data_dir}: expected the official python-version "
            f"tarball or its extracted folder (or pass --download when online)"
        )
    out = {}
    for n in names:
        raw = (folder / n).read_bytes()
        _check_md5(str(folder / n), md5_of(raw), expected[n])
        out[n] = raw
    return out


def download(spec: CifarSpec, data_dir: Path) -> Path:
    """Fetch the official tarball into ``data_dir`` (atomic; md5-checked)."""
    import urllib.request

    from logitscope.fileio.atomic import atomic_write_bytes

    target = data_dir / spec.tarball
    if target.is_file() and md5_of(target) == spec.tarball_md5:
        return target
    log.info("downloading %s to %s", spec.url, target)
    with urllib.request.urlopen(spec.url, timeout=60) as resp:  # noqa: S310 - fixed https URL
        raw = resp.read()
    _check_md5(spec.url, md5_of(raw), spec.tarball_md5)
    return atomic_write_bytes(target, raw)


def load_cifar(
    name: str,
    data_dir: str | os.PathLike | None,
    val_per_class: int | None = None,
    split_seed: int = 0,
    download_if_missing: bool = False,
    md5_overrides: dict[str, str] | None = None,
) -> Dataset:
    """Load CIFAR-10 or CIFAR-100 as a :class:`Dataset`.

    Args:
        name: "cifar10" or "cifar100".
        data_dir: folder holding the tarball or the extracted folder (or the tarball itself).
        val_per_class: validation images held out per class (default 500 for CIFAR-10,
            0 for CIFAR-100, as in appendix A.2).
        split_seed: seeds the validation hold-out.
        download_if_missing: fetch the tarball when online (never used in tests).
        md5_overrides: expected md5 per file name, replacing the published ones (for tests
            that build small fake archives).
    """
    spec = SPECS[name]
    if data_dir is None:
        raise FileNotFoundError(f"{name} needs --data-dir: a folder with {spec.tarball} or {spec.folder}/")
    root = Path(data_dir)
    if not root.exists():
        if not download_if_missing:
            raise FileNotFoundError(f"data folder {root} does not exist: expected a folder with {spec.tarball}")
        root.mkdir(parents=True)
    if download_if_missing and not (root / spec.tarball).is_file() and not (root / spec.folder).is_dir():
        download(spec, root)
    raw = _read_members(spec, root, md5_overrides)

    def batch(files: tuple[tuple[str, str], ...]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for fname, _ in files:
            d = restricted_loads(raw[fname])
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[spec.label_key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    x_train, y_train = batch(spec.train_files)
    x_test, y_test = batch(spec.test_files)
    meta = restricted_loads(raw[spec.meta_file[0]])
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec.names_key])
    per_class = spec.val_per_class if val_per_class is None else val_per_class
    x_train, y_train, x_val, y_val = holdout_per_class(x_train, y_train, per_class, split_seed)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        class_names=class_names,
        mean=spec.mean,
        std=spec.std,
    )
