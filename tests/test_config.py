"""Config round trips, fractions, overrides, run ids."""

from __future__ import annotations

import pytest

from logitscope.config import ConfigError, RunConfig, parse_float, run_preset


def test_fractions_parse():
    assert parse_float("8/255") == pytest.approx(8 / 255)
    assert parse_float("1e-3") == 1e-3
    with pytest.raises(ConfigError, match="'8/0' is not a number"):
        parse_float("8/0")


def test_yaml_round_trip_and_overrides():
    cfg = run_preset("cifar10-paper").with_overrides(
        ["attack.eps=8/255", "checkpoint_epochs=[40, 100]", "data.augment_flip=false"]
    )
    assert cfg.attack.eps == pytest.approx(8 / 255) and cfg.checkpoint_epochs == (40, 100) and not cfg.data.augment_flip
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg
    assert cfg.optim.milestones == (100, 150) and cfg.optim.weight_decay == 2e-4 and cfg.optim.batch_size == 128


def test_run_id_depends_on_config_not_device():
    a = run_preset("digits")
    assert a.run_id == run_preset("digits", device="cpu").run_id
    assert a.run_id != run_preset("digits", **{"optim.lr": 0.1}).run_id
    assert a.run_id.startswith("digits-small-cnn-st-s0-")


@pytest.mark.parametrize(
    "item,msg",
    [
        ("nope=1", "unknown key 'nope'"),
        ("optim.lr=abc", "optim.lr='abc': expected a number"),
        ("data.augment_flip=maybe", "expected true or false"),
        ("method=fly", "method='fly': expected one of"),
        ("lr", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides(item, msg):
    with pytest.raises(ConfigError, match=msg):
        run_preset("digits").with_overrides([item])


def test_fields_added_later_leave_existing_run_ids_unchanged():
    """Run folders written before `source` and `attack.warmup_epochs` existed keep their names
    (the ids below were written by the version before them), so `reproduce` resumes them."""
    assert run_preset("digits").run_id == "digits-small-cnn-st-s0-89a4aae5"
    assert run_preset("cifar10-paper", method="at").run_id == "cifar10-resnet18-at-s0-91f3d555"
    assert run_preset("digits", **{"attack.warmup_epochs": 2}).run_id != run_preset("digits").run_id


def test_imported_configs_are_validated():
    base = {"method": "imported", "model": {"name": "imported"}, "source": {"kind": "torchscript"}}
    assert RunConfig.from_dict(base).objective == "imported"
    with pytest.raises(ConfigError, match="model.name='imported': expected imported exactly when method is imported"):
        RunConfig.from_dict({"model": {"name": "imported"}})
    with pytest.raises(ConfigError, match="source.kind='': expected torchscript or factory"):
        RunConfig.from_dict({**base, "source": {}})
    with pytest.raises(ConfigError, match="source.factory=None: expected module:function"):
        RunConfig.from_dict({**base, "source": {"kind": "factory"}})
    a = RunConfig.from_dict({**base, "source": {"kind": "torchscript", "sha256": "a", "fingerprint": "f"}})
    b = RunConfig.from_dict({**base, "source": {"kind": "torchscript", "sha256": "b", "fingerprint": "f"}})
    assert a.run_id == b.run_id  # the file's bytes are integrity, the fingerprint is identity
