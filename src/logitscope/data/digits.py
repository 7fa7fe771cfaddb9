"""scikit-learn's 8x8 handwritten digits: the embedded default dataset.

Real data that installs with a package (1,797 images, 10 classes). A fixed, seeded,
stratified split gives 1,400 training and 397 test images; pixel values 0..16 are rescaled
to uint8 0..255.
"""

from __future__ import annotations

import numpy as np
import torch

from logitscope.data.base import Dataset, holdout_per_class

N_TEST = 397


def load_digits_dataset(split_seed: int = 0, val_per_class: int = 0) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=N_TEST, stratify=y, random_state=split_seed)
    idx_train.sort()
    idx_test.sort()
    xt, yt = torch.from_numpy(x[idx_train]), torch.from_numpy(y[idx_train])
    xt, yt, xv, yv = holdout_per_class(xt, yt, val_per_class, split_seed)
    return Dataset(
        name="digits",
        x_train=xt,
        y_train=yt,
        x_val=xv,
        y_val=yv,
        x_test=torch.from_numpy(x[idx_test]),
        y_test=torch.from_numpy(y[idx_test]),
        class_names=tuple(str(i) for i in range(10)),
    )
