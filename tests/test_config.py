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
