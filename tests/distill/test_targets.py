"""Teacher targets averaged over K augmented passes, and their provenance record."""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from logitscope.data.augment import Augment
from logitscope.distill.targets import TargetProvenance, teacher_targets
from logitscope.distill.transforms import TransformSpec, apply_transform


def images(n=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g)


def linear_teacher(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 5))


def bn_teacher(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(64, 5),
    )


class RecordingAugment(Augment):
    """An Augment that keeps every batch it returns (a spy for the brute-force reference)."""

    def __init__(self, pad, flip):
        super().__init__(pad=pad, flip=flip)
        object.__setattr__(self, "seen", [])

    def __call__(self, x, generator=None):
        out = super().__call__(x, generator)
        self.seen.append(out.clone())
        return out


def test_k1_identity_eval_equals_plain_logits():
    model, x = linear_teacher(), images()
    got = teacher_targets(model, x, K=1, augment=Augment(), batch_size=8)
    with torch.no_grad():
        want = model(x.float() / 255).numpy()
    assert got.dtype == np.float32 and got.shape == (37, 5)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_identity_augment_eval_is_independent_of_k_and_batch_size():
    model, x = bn_teacher(), images()
    a = teacher_targets(model, x, K=1, augment=Augment(), batch_size=37)
    b = teacher_targets(model, x, K=3, augment=Augment(), batch_size=5)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_k_passes_are_the_mean_of_a_brute_force_loop():
    model, x = linear_teacher(), images()
    aug = RecordingAugment(pad=1, flip=True)
    got = teacher_targets(model, x, K=4, augment=aug, batch_size=10, seed=3)
    assert len(aug.seen) == 4 * 4  # 4 passes of ceil(37 / 10) = 4 batches, in dataset order
    want = np.zeros((37, 5))
    with torch.no_grad():
        for p in range(4):
            xs = torch.cat(aug.seen[4 * p : 4 * p + 4])
            want += model(xs.float() / 255).double().numpy()
    np.testing.assert_allclose(got, want / 4, rtol=1e-5, atol=1e-6)
    # the augmentation did something: the passes differ from the clean logits
    with torch.no_grad():
        clean = model(x.float() / 255).numpy()
    assert np.abs(got - clean).max() > 1e-3


def test_seed_repeats_and_changes_augmentation():
    model, x = linear_teacher(), images()
    aug = Augment(pad=1, flip=True)
    a = teacher_targets(model, x, K=2, augment=aug, seed=5)
    b = teacher_targets(model, x, K=2, augment=aug, seed=5)
    c = teacher_targets(model, x, K=2, augment=aug, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def _state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
    )


@pytest.mark.parametrize("train_mode", [True, False])
def test_batch_mode_leaves_the_teacher_unchanged(train_mode):
    model, x = bn_teacher(), images()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.train(train_mode)
    params0, flags0 = _state(model)
    teacher_targets(model, x, K=3, augment=Augment(pad=1), batch_size=8, bn_mode="batch")
    params1, flags1 = _state(model)
    assert flags0 == flags1
    assert params0.keys() == params1.keys()
    for k in params0:
        torch.testing.assert_close(params1[k], params0[k], rtol=0, atol=0)


def test_batch_mode_uses_batch_statistics_and_no_dropout():
    model, x = bn_teacher(), images()
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
    got = teacher_targets(model, x, K=2, augment=Augment(), batch_size=37, bn_mode="batch")
    ref = copy.deepcopy(model).eval()
    ref[1].train()  # BatchNorm on the whole (single) batch, dropout off
    with torch.no_grad():
        want = ref(x.float() / 255).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    eval_mode = teacher_targets(model, x, K=1, augment=Augment(), batch_size=37)
    assert np.abs(got - eval_mode).max() > 0.1


def test_batch_mode_visits_batches_in_a_random_order():
    model, x = bn_teacher(), images(40)
    one = teacher_targets(model, x, K=1, augment=Augment(), batch_size=10, bn_mode="batch", seed=0)
    two = teacher_targets(model, x, K=1, augment=Augment(), batch_size=10, bn_mode="batch", seed=1)
    assert not np.allclose(one, two)  # batch composition changed with the seed
    ref = copy.deepcopy(model).eval()
    ref[1].train()
    with torch.no_grad():
        in_order = torch.cat([ref(x[i : i + 10].float() / 255) for i in range(0, 40, 10)])
    assert not np.allclose(one, in_order.numpy())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": images().float()}, "expected \\(N, C, H, W\\) uint8"),
        ({"K": 0}, "K=0"),
        ({"bn_mode": "train"}, "bn_mode='train'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"x": images(1), "bn_mode": "batch"}, "needs at least 2"),
        ({"device": "meta"}, "move the teacher first"),
    ],
)
def test_bad_inputs_raise_one_line(kwargs, match):
    args = {"model": linear_teacher(), "x": images(), "K": 1, "augment": Augment(), **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        teacher_targets(**args)
    assert "\n" not in str(err.value)


def test_provenance_round_trips_through_json():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(10, 4)).astype(np.float32)
    y = rng.integers(0, 4, 10)
    spec = TransformSpec("fix-k", k=2, fill="average")
    _, report = apply_transform(spec, t, y)
    prov = TargetProvenance(
        teacher_run="runs/at-digits-1a2b",
        epoch=40,
        K=8,
        augment="crop(pad=4)+hflip",
        bn_mode="eval",
        seed=1,
        transforms=[spec],
        reports=[report],
    )
    back = TargetProvenance.from_dict(json.loads(json.dumps(prov.to_dict())))
    assert back == prov
    assert back.transforms == (spec,)
    with pytest.raises(KeyError, match="missing \\['epoch'\\]"):
        TargetProvenance.from_dict({k: v for k, v in prov.to_dict().items() if k != "epoch"})
    with pytest.raises(ValueError, match="bn_mode='train'"):
        TargetProvenance("r", 40, 1, "none", "train")
