"""The engine end to end: ST and AT runs, every epoch's logits, resume after a kill."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from logitscope import LogitStore, load_model, train
from logitscope.config import ConfigError
from logitscope.data import get_dataset
from logitscope.store import checkpoints
from logitscope.store.runs import RunExistsError


@pytest.mark.parametrize("method", ["st", "at"])
def test_two_epoch_run_end_to_end(tmp_path, tiny_config, method):
    cfg = tiny_config(method)
    run = train(cfg, out=tmp_path, progress=False)
    assert run.complete and run.last_epoch == 2
    store = LogitStore(run.dir)
    assert store.splits == ["train", "test"] and store.epochs("train") == [1, 2]
    data = get_dataset("digits")
    assert store.get("train").shape == (1400, 10) and store.get("test", 1).dtype == np.float32
    assert np.array_equal(store.labels("test"), data.y_test.numpy())
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss", "train_acc", "test_acc", "pgd_acc", "train_seconds", "images_per_s"):
        assert key in rows[-1]
    # the stored logits are the model's logits on the unaugmented data, in dataset order
    model = load_model(run.dir)
    assert not model.training
    with torch.no_grad():
        direct = model(data.x_test.float() / 255).numpy()
    np.testing.assert_allclose(store.get("test"), direct, rtol=1e-5, atol=1e-5)
    assert rows[-1]["test_acc"] == pytest.approx(float((direct.argmax(1) == data.y_test.numpy()).mean()))
    meta = json.loads((run.dir / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["env"]["torch"]
    again = train(cfg, out=tmp_path)  # a complete run is returned untouched
    assert again.dir == run.dir


def test_resume_after_kill_mid_epoch_is_bitwise_equal(tmp_path, tiny_config):
    cfg = tiny_config("at", epochs=3, checkpoint_epochs=[1])
    ref = train(cfg, out=tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        from logitscope.training.engine import train as engine_train

        engine_train(cfg, out=tmp_path / "b", progress=False, stop_after_batches=22 + 5)  # 22 batches/epoch
    partial = type(ref)(tmp_path / "b" / cfg.run_id)
    assert partial.last_epoch == 1 and not partial.complete
    with pytest.raises(RunExistsError, match="stopped at epoch 1/3: pass --resume"):
        train(cfg, out=tmp_path / "b")
    resumed = train(cfg, out=tmp_path / "b", resume=True, progress=False)
    assert resumed.complete
    for split in ("train", "test"):
        for e in (1, 2, 3):
            assert np.array_equal(ref.logits.get(split, e), resumed.logits.get(split, e)), (split, e)
    for e in ref.checkpoint_epochs():
        a = checkpoints.load(checkpoints.checkpoint_path(ref.dir, e))["model"]
        b = checkpoints.load(checkpoints.checkpoint_path(resumed.dir, e))["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), e
    assert [r["loss"] for r in ref.metrics()] == [r["loss"] for r in resumed.metrics()]


def test_existing_folder_with_other_config_refused(tmp_path, tiny_config):
    cfg = tiny_config("st", epochs=1)
    run = train(cfg, out=tmp_path, progress=False)
    before = (run.dir / "config.yaml").read_text()
    other = tiny_config("st", epochs=1, **{"optim.lr": 0.01})
    # same folder name forced by copying the config under the other run's id
    (tmp_path / other.run_id).mkdir()
    (tmp_path / other.run_id / "config.yaml").write_text(before)
    with pytest.raises(RunExistsError, match=r"exists with a different config \(optim.lr"):
        train(other, out=tmp_path)
    assert (tmp_path / other.run_id / "config.yaml").read_text() == before


def test_checkpoint_of_other_architecture_or_classes_refused(tmp_path, tiny_config):
    run = train(tiny_config("st", epochs=1), out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="has n_classes=10: expected n_classes=100"):
        load_model(run.dir, expect={"n_classes": 100})
    with pytest.raises(ValueError, match="has name='small-cnn': expected name='resnet18'"):
        load_model(run.dir, expect={"name": "resnet18"})
    with pytest.raises(FileNotFoundError, match="no checkpoint for epoch 7"):
        load_model(run.dir, epoch=7)


def test_checkpoints_are_plain_data(tmp_path, tiny_config):
    run = train(tiny_config("st", epochs=1), out=tmp_path, progress=False)
    payload = torch.load(checkpoints.last_path(run.dir), weights_only=True)
    assert set(payload) >= {"model", "optimizer", "epoch", "model_spec"}


def test_bad_config_values():
    from logitscope.config import run_preset

    with pytest.raises(ConfigError, match=r"attack.eps=1.5: expected a value in \[0, 1\]"):
        run_preset("digits", **{"attack.eps": 1.5})
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        run_preset("digits", **{"optim.lrr": 1})
    with pytest.raises(ConfigError, match="epochs='x': expected an integer"):
        run_preset("digits", epochs="x")


def test_diverging_run_stops_at_once_and_keeps_its_last_good_epoch(tmp_path, tiny_config):
    from logitscope.training.engine import TrainingDiverged

    # epoch 1 at the recipe's lr; from epoch 2 the lr is multiplied by 1e9: the loss explodes
    cfg = tiny_config("st", epochs=3, checkpoint_epochs=[1], **{"optim.milestones": (1,), "optim.gamma": 1e9})
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, out=tmp_path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"run {cfg.run_id} diverged at epoch 2: ")
    assert " at batch " in msg or "non-finite logits" in msg
    run_dir = tmp_path / cfg.run_id
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["reason"] == msg and meta["last_epoch"] == 1
    # nothing of the diverged epoch was written: epoch 1's checkpoint, logits and trainer state stay
    assert LogitStore(run_dir).epochs("train") == [1]
    assert checkpoints.stored_epochs(run_dir) == [1]
    last = checkpoints.load(checkpoints.last_path(run_dir))
    assert last["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in last["model"].values())
    assert np.isfinite(LogitStore(run_dir).get("train", 1)).all()


def test_gradient_clipping_is_applied_and_a_limit_never_reached_changes_nothing(tmp_path, tiny_config):
    runs = {
        clip: train(tiny_config("st", epochs=1, **{"optim.grad_clip": clip}), out=tmp_path / str(clip), progress=False)
        for clip in (None, 1e9, 1e-8)
    }
    plain, loose, tight = (runs[c].logits.get("test", 1) for c in (None, 1e9, 1e-8))
    assert np.array_equal(plain, loose)  # a norm under the limit is multiplied by exactly 1
    assert not np.allclose(plain, tight)  # 1e-8: updates of 1e-8 in norm, the model barely moves
    assert runs[1e-8].config.optim.grad_clip == 1e-8  # recorded in config.yaml


def test_logits_every_and_float16_store_the_epochs_asked_for_at_half_the_bytes(tmp_path, tiny_config):
    full = train(tiny_config("st", epochs=5, checkpoint_epochs=(3,)), out=tmp_path)
    cfg = tiny_config(
        "st", epochs=5, checkpoint_epochs=(3,), **{"store.logits_every": 2, "store.logits_dtype": "float16"}
    )
    lean = train(cfg, out=tmp_path)
    assert lean.dir != full.dir  # another storage is another run folder; the default's id is unchanged
    store, ref = LogitStore(lean.dir), LogitStore(full.dir)
    # every 2nd epoch, the kept checkpoint's (3) and the last (5)
    assert store.epochs("test") == [2, 3, 4, 5] and ref.epochs("test") == [1, 2, 3, 4, 5]
    raw = np.load(lean.dir / "logits" / "test" / "epoch_005.npy", mmap_mode="r")
    assert raw.dtype == np.float16
    got = store.get("test", 5)
    assert got.dtype == np.float32
    # the same training (same seeds, same process): the float32 logits rounded to float16
    assert np.array_equal(got, ref.get("test", 5).astype(np.float16).astype(np.float32))
    rows, ref_rows = lean.metrics(), full.metrics()
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    # accuracies come from the snapshot: taken on the stored epochs and on the collapse check's
    # (2); epoch 1 skips it (nan), the others equal the full store's
    assert math.isnan(float(rows[0]["test_acc"])) and math.isnan(float(rows[0]["train_acc"]))
    assert [r["test_acc"] for r in rows[1:]] == [r["test_acc"] for r in ref_rows[1:]]


def test_pgd_monitor_every_nth_epoch_and_the_last(tmp_path, tiny_config):
    every = train(tiny_config("st", epochs=5, **{"monitor.pgd_every": 2}), out=tmp_path)
    full = train(tiny_config("st", epochs=5), out=tmp_path)
    assert every.dir != full.dir  # monitor settings are part of a run's identity; the default's id is unchanged
    got = [float(r["pgd_acc"]) for r in every.metrics()]
    ref = [float(r["pgd_acc"]) for r in full.metrics()]
    measured = [i for i, v in enumerate(got, 1) if not math.isnan(v)]
    assert measured == [2, 4, 5]  # every 2nd epoch and the last
    assert [got[i - 1] for i in measured] == [ref[i - 1] for i in measured]  # the same measurement
    assert all(not math.isnan(v) for v in ref)


def test_store_options_are_checked():
    from logitscope.config import run_preset

    with pytest.raises(ConfigError, match="store.logits_dtype='float64': expected float32 or float16"):
        run_preset("digits", **{"store.logits_dtype": "float64"})
    with pytest.raises(ConfigError, match="store.logits_every=0: expected a positive number of epochs"):
        run_preset("digits", **{"store.logits_every": 0})
    with pytest.raises(ConfigError, match="monitor.pgd_every=0: expected a positive number of epochs"):
        run_preset("digits", **{"monitor.pgd_every": 0})
