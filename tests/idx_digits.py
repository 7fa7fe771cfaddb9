"""An MNIST-like IDX folder built from scikit-learn's digits, for tests of the mnist recipes.

The 1,797 8x8 digits (values 0..16) are scaled to 0..255, upsampled bilinearly to 20x20,
centred in a 28x28 field with a 4-pixel zero border (MNIST's layout: each digit in a 20x20
box in the middle of the image) and given MNIST's contrast, then split, stratified and
seeded, into 1,400 training and 397 test images, written as the four standard MNIST files
(IDX: magic 0x00000803 for uint8 images of dims (N, 28, 28), 0x00000801 for uint8 labels
of dims (N,), big-endian sizes).

The contrast: upsampled, the digits are grey blobs (36% of pixels lit, 2.7% above 0.9)
where MNIST's strokes are near-binary. The map ``clip((x - 0.40) / 0.35, 0, 1)`` on [0, 1]
pixels gives them MNIST's published pixel mean and std (0.1307, 0.3081; here 0.131 and
0.309) and with them about its share of lit pixels (18.5%, MNIST about 19%). It matters to
L-inf attacks: eps 0.3 moves a grey pixel across a stroke's threshold, a saturated one not.

Real digit shapes at MNIST's size, in seconds and without a download; not MNIST (1,400
training images instead of 60,000, blurrier strokes): tests check that a recipe learns,
never how well it does on MNIST.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

N_TEST = 397
SIZE, BOX = 28, 20
LEVEL, WIDTH = 0.40, 0.35  # the contrast map clip((x - LEVEL) / WIDTH, 0, 1) on [0, 1] pixels
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """``arr`` (uint8) as an IDX file: 0x00 0x00, type 0x08 (unsigned byte), ndim, sizes, data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def digits_28x28() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 28, 28) images in MNIST's layout, and their labels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images * (255.0 / 16.0)).float()[:, None]  # (N, 1, 8, 8), 0..255
    box = F.interpolate(x, size=(BOX, BOX), mode="bilinear", align_corners=False)
    pad = (SIZE - BOX) // 2
    full = F.pad(box, (pad, pad, pad, pad))
    full = ((full - LEVEL * 255.0) / WIDTH).clamp(0, 255)  # MNIST's contrast (see the module docstring)
    images = full[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return images, bunch.target.astype(np.uint8)


def write_idx_digits(folder: str | Path, seed: int = 0, gz: bool = False) -> Path:
    """Write the four MNIST-format files of the digits (train 1,400, test 397) into ``folder``."""
    from sklearn.model_selection import train_test_split

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = digits_28x28()
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=N_TEST, stratify=y, random_state=seed)
    parts = {"train": np.sort(idx_train), "test": np.sort(idx_test)}
    for (part, kind), stem in FILES.items():
        arr = x[parts[part]] if kind == "images" else y[parts[part]]
        data = idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / stem).write_bytes(data)
    return folder
