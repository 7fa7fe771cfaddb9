"""Synthetic CIFAR-10 and CIFAR-100 tarballs in the official python format, for tests.

The layout is the official one, file for file: ``cifar-10-batches-py/`` with ``data_batch_1``
to ``data_batch_5``, ``test_batch`` and ``batches.meta``; ``cifar-100-python/`` with ``train``,
``test`` and ``meta``. Each is a pickle of a dict with bytes keys (the official files are
Python 2 ``cPickle`` output, whose ``str`` objects load as bytes): ``data`` a uint8 (N, 3072)
array of row-major 3x32x32 images, ``labels`` (CIFAR-10) or ``fine_labels`` and
``coarse_labels`` (CIFAR-100) lists of ints, ``filenames`` and ``batch_label``; the meta files
hold the class names.

The images are learnable, not noise: every class has a smooth colour template (a random 4x4x3
field upsampled to 32x32), and each image is its class's template shifted by up to 3 pixels,
scaled in brightness and overlaid with pixel noise. A model learns the classes in a few epochs,
so every stage of a plan sees real predictions; nothing here resembles CIFAR's statistics.

Pickle protocol 4, not the official files' 2: from Python 3, protocol 2 writes bytes as calls to
``_codecs.encode``, a global the real files never name and the restricted unpickler refuses;
protocol 4 writes the same objects with native bytes opcodes.

The tarballs' md5s are not the published ones, so the loader refuses them (as it should). Tests
accept them only through the ``accept_synthetic_cifar`` fixture (tests/conftest.py), which
registers their md5 for the test's duration; no user flag bypasses the check.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from logitscope.data.cifar import CIFAR10, CIFAR100, CifarSpec

PROTOCOL = 4


def class_templates(n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(n_classes, 3, 32, 32) float templates in [0.15, 0.85]: 4x4 colour fields, upsampled."""
    coarse = rng.uniform(0.15, 0.85, (n_classes, 3, 4, 4))
    return np.kron(coarse, np.ones((1, 1, 8, 8)))


def images_of(labels: np.ndarray, templates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 3072) images of ``labels``: shifted, brightness-scaled, noisy templates."""
    out = np.empty((len(labels), 3, 32, 32), dtype=np.float64)
    for i, c in enumerate(labels):
        dy, dx = rng.integers(-3, 4, 2)
        img = np.roll(templates[c], (int(dy), int(dx)), axis=(1, 2))
        out[i] = img * rng.uniform(0.8, 1.2) + rng.normal(0, 0.08, img.shape)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def balanced_labels(n_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(n_classes), per_class))


def _batch(spec: CifarSpec, name: str, labels: np.ndarray, templates: np.ndarray, rng: np.random.Generator) -> bytes:
    d: dict[bytes, object] = {
        b"batch_label": f"synthetic {name}".encode(),
        spec.label_key: labels.tolist(),
        b"data": images_of(labels, templates, rng),
        b"filenames": [f"synthetic_{i}.png".encode() for i in range(len(labels))],
    }
    if spec is CIFAR100:
        d[b"coarse_labels"] = (labels // 5).tolist()  # 20 superclasses of 5 classes, as the real file
    return pickle.dumps(d, protocol=PROTOCOL)


def _meta(spec: CifarSpec, n_classes: int, per_batch: int) -> bytes:
    names = [f"class{i:02d}".encode() for i in range(n_classes)]
    if spec is CIFAR100:
        coarse = [f"super{i:02d}".encode() for i in range(n_classes // 5)]
        return pickle.dumps({b"fine_label_names": names, b"coarse_label_names": coarse}, protocol=PROTOCOL)
    return pickle.dumps({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, protocol=PROTOCOL)


def write_synthetic_cifar(
    folder: str | Path, name: str, train_per_class: int, test_per_class: int, seed: int = 0
) -> Path:
    """Write ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz`` into ``folder`` (made if
    missing) with ``train_per_class`` training and ``test_per_class`` test images per class.
    The bytes depend only on the arguments (fixed gzip and tar timestamps). Returns the path."""
    spec = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    n_classes = 10 if spec is CIFAR10 else 100
    rng = np.random.default_rng(seed)
    templates = class_templates(n_classes, rng)
    train = balanced_labels(n_classes, train_per_class, rng)
    test = balanced_labels(n_classes, test_per_class, rng)
    parts = np.array_split(train, len(spec.train_files))
    files = {f: _batch(spec, f, part, templates, rng) for (f, _), part in zip(spec.train_files, parts, strict=True)}
    files[spec.test_files[0][0]] = _batch(spec, spec.test_files[0][0], test, templates, rng)
    files[spec.meta_file[0]] = _meta(spec, n_classes, len(parts[0]))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for fname, raw in files.items():
            info = tarfile.TarInfo(f"{spec.folder}/{fname}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    path = Path(folder) / spec.tarball
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def md5(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()
