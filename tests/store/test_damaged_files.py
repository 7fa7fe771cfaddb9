"""Damaged or hostile files in a run folder give one line naming the file, never a traceback.

Each kind of file logitscope reads back is tried truncated and hostile. A hostile file is a
pickle whose ``__reduce__`` would leave a marker file if anything unpickled it unsafely: the
marker must not appear. Caches (distillation targets, evaluation records) are recomputed.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from logitscope.fileio.atomic import atomic_save_npz, atomic_write_json
from logitscope.fileio.errors import DamagedFileError, load_npy, load_npz, read_json
from logitscope.store import checkpoints
from logitscope.store.logits import LogitStore, write_labels, write_logits
from logitscope.store.runs import Run


def _leave_marker(path: str) -> str:
    """What the hostile pickles call when unpickled unsafely: proof that code ran."""
    Path(path).write_text("code from a file ran")
    return path


class Hostile:
    """Unpickles into a call of ``_leave_marker`` (as a real attack would call os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (_leave_marker, (self.marker,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER-code-ran"


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def assert_one_line(exc: pytest.ExceptionInfo[DamagedFileError], path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "\x1b" not in msg, msg
    assert msg.startswith(f"{path}: "), msg
    assert "; " in msg and len(msg) < 500, msg  # what is wrong; what to do
    assert exc.value.path == path
    return msg


def test_the_hostile_payload_really_runs_code_when_unpickled(marker):
    """Control: the payload used below does run when unpickled, so its absence means something."""
    pickle.loads(pickle.dumps(Hostile(marker)))
    assert marker.is_file()


# -- checkpoints ------------------------------------------------------------------------------


def _checkpoint(path: Path) -> Path:
    spec = {"name": "small-cnn", "n_classes": 3, "in_channels": 1, "mean": [0.5], "std": [0.5]}
    return checkpoints.save(path, {"model": {"w": torch.zeros(40, 40)}, "model_spec": spec, "epoch": 10})


@pytest.mark.parametrize("keep", [0.5, 0.02, 0.0])
def test_truncated_checkpoint(tmp_path, keep):
    path = truncate(_checkpoint(checkpoints.checkpoint_path(tmp_path, 10)), keep)
    with pytest.raises(DamagedFileError) as exc:
        checkpoints.load(path)
    msg = assert_one_line(exc, path)
    assert "not a loadable checkpoint (truncated or corrupt" in msg and "rerun the stage" in msg


def test_scrambled_checkpoint(tmp_path):
    path = _checkpoint(checkpoints.checkpoint_path(tmp_path, 10))
    data = bytearray(path.read_bytes())
    data[60:400] = bytes(b ^ 0xFF for b in data[60:400])
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError) as exc:
        checkpoints.load(path)
    assert "not a loadable checkpoint" in assert_one_line(exc, path)


@pytest.mark.parametrize("how", ["torch.save", "pickle-protocol-2", "pickle-protocol-4"])
def test_hostile_checkpoint_is_refused_before_anything_runs(tmp_path, marker, how):
    path = checkpoints.checkpoint_path(tmp_path, 10)
    path.parent.mkdir(parents=True)
    payload = {"model": {}, "model_spec": {}, "x": Hostile(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))
    with pytest.raises(DamagedFileError) as exc:
        checkpoints.load(path)
    msg = assert_one_line(exc, path)
    assert not marker.exists()
    if how != "pickle-protocol-4":  # protocol 4 is refused by opcode, before its globals are read
        assert "refused: it would unpickle objects other than plain data" in msg and "_leave_marker" in msg
        assert "weights_only=True" in msg and "nothing in it was run" in msg


def test_checkpoint_of_plain_data_that_is_not_a_dict(tmp_path):
    path = tmp_path / "checkpoints" / "epoch_001.pt"
    checkpoints.save(path, [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(DamagedFileError, match="not a logitscope checkpoint .holds list"):
        checkpoints.load(path)


def test_damaged_last_checkpoint_says_how_to_resume(tmp_path):
    path = truncate(_checkpoint(checkpoints.last_path(tmp_path)))
    with pytest.raises(DamagedFileError, match="--resume"):
        checkpoints.load(path)


def test_missing_checkpoint_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoints.load(tmp_path / "nope.pt")


# -- logits -----------------------------------------------------------------------------------


@pytest.fixture
def logits_run(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_labels(tmp_path, "train", rng.integers(0, 3, 50))
    write_logits(tmp_path, "train", 1, rng.standard_normal((50, 3)))
    return tmp_path


@pytest.mark.parametrize("keep", [0.9, 0.3, 0.0])
def test_truncated_logits(logits_run, keep):
    store = LogitStore(logits_run)
    path = truncate(logits_run / "logits" / "train" / "epoch_001.npy", keep)
    with pytest.raises(DamagedFileError) as exc:
        store.get("train", 1)  # memory-mapped
    msg = assert_one_line(exc, path)
    assert "not a readable array file (truncated or corrupt" in msg and "train it again" in msg
    labels = truncate(logits_run / "logits" / "train" / "labels.npy", keep)
    with pytest.raises(DamagedFileError) as exc:
        store.labels("train")
    assert_one_line(exc, labels)


@pytest.mark.parametrize("kind", ["raw pickle", "object array"])
def test_hostile_logits(logits_run, marker, kind):
    path = logits_run / "logits" / "train" / "epoch_001.npy"
    if kind == "raw pickle":
        path.write_bytes(pickle.dumps(Hostile(marker)))
    else:
        np.save(path, np.array([Hostile(marker)], dtype=object), allow_pickle=True)
    store = LogitStore(logits_run)
    for read in (lambda: store.get("train", 1), lambda: load_npy(path)):
        with pytest.raises(DamagedFileError) as exc:
            read()
        assert "refused: it would unpickle objects other than plain arrays" in assert_one_line(exc, path)
    assert not marker.exists()


def test_npy_that_is_an_npz(tmp_path):
    np.savez(tmp_path / "a.npz", a=np.zeros(3))
    (tmp_path / "a.npz").rename(tmp_path / "a.npy")
    with pytest.raises(DamagedFileError, match="not a .npy array"):
        load_npy(tmp_path / "a.npy")


# -- evaluation records -------------------------------------------------------------------------


def test_truncated_eval_record(tmp_path):
    path = atomic_save_npz(tmp_path / "eval" / "paper-epoch_010.npz", robust=np.ones(100, bool), linf=np.zeros(100))
    truncate(path)
    with pytest.raises(DamagedFileError) as exc:
        load_npz(path)
    assert "truncated or corrupt" in assert_one_line(exc, path)
    from logitscope.attacks.protocol import ProtocolResult

    with pytest.raises(DamagedFileError):
        ProtocolResult.load(path)


def test_hostile_eval_record(tmp_path, marker):
    path = tmp_path / "eval" / "paper-epoch_010.npz"
    path.parent.mkdir()
    np.savez(path, robust=np.ones(3, bool), config=np.array([Hostile(marker)], dtype=object))
    with pytest.raises(DamagedFileError) as exc:
        load_npz(path)
    msg = assert_one_line(exc, path)
    assert "refused" in msg and "allow_pickle=False" in msg and not marker.exists()


def test_npz_that_is_an_npy(tmp_path):
    np.save(tmp_path / "r.npy", np.zeros(3))
    (tmp_path / "r.npy").rename(tmp_path / "r.npz")
    with pytest.raises(DamagedFileError, match="not an .npz archive"):
        load_npz(tmp_path / "r.npz")


# -- JSON: meta.json, summaries, plan markers ----------------------------------------------------


def _run_folder(tmp_path: Path, tiny_config) -> Run:
    return Run.create(tmp_path / "runs", tiny_config("st", epochs=1))


def test_truncated_meta_json(tmp_path, tiny_config):
    run = _run_folder(tmp_path, tiny_config)
    path = truncate(run.dir / "meta.json")
    with pytest.raises(DamagedFileError) as exc:
        _ = run.status
    msg = assert_one_line(exc, path)
    assert "not valid JSON, truncated or corrupt (line" in msg and "--resume" in msg


@pytest.mark.parametrize("content", ["pickle", "deep", "list"])
def test_hostile_meta_json(tmp_path, tiny_config, marker, content):
    run = _run_folder(tmp_path, tiny_config)
    path = run.dir / "meta.json"
    data = {
        "pickle": pickle.dumps(Hostile(marker)),
        "deep": b"[" * 200_000 + b"]" * 200_000,  # a nesting bomb
        "list": b'["status", "complete"]',
    }[content]
    path.write_bytes(data)
    with pytest.raises(DamagedFileError) as exc:
        _ = run.meta
    msg = assert_one_line(exc, path)
    assert {"pickle": "not", "deep": "nested too deeply", "list": "expected a JSON object"}[content] in msg
    assert not marker.exists()


def test_read_json(tmp_path):
    """The reader the plan's done-markers use: damage is a DamagedFileError, absence is not."""
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")
    atomic_write_json(tmp_path / "m.json", {"key": "abc", "result": {"epoch": 3}})
    assert read_json(tmp_path / "m.json", expect=dict)["result"] == {"epoch": 3}
    (tmp_path / "e.json").write_text("")
    with pytest.raises(DamagedFileError, match=r"e.json: not valid JSON, truncated or corrupt \(empty\)"):
        read_json(tmp_path / "e.json")
    (tmp_path / "b.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(DamagedFileError, match="not UTF-8 text"):
        read_json(tmp_path / "b.json", remedy="redo that stage")


def test_damaged_config_yaml(tmp_path, tiny_config, marker):
    run = _run_folder(tmp_path, tiny_config)
    path = run.dir / "config.yaml"
    path.write_text(path.read_text() + "\nmodel: {name: [small-cnn\n")  # cut inside a flow sequence
    with pytest.raises(DamagedFileError) as exc:
        Run(run.dir)
    assert "not valid YAML at line" in assert_one_line(exc, path)
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(DamagedFileError) as exc:
        Run(run.dir)
    msg = assert_one_line(exc, path)
    assert "refused: tag:yaml.org,2002:python/object/apply:os.system at line 1" in msg and not marker.exists()


def test_truncated_metrics_csv(tmp_path, tiny_config):
    run = _run_folder(tmp_path, tiny_config)
    run.write_metrics([{"epoch": e, "train_loss": 0.5, "test_acc": 0.9, "pgd_acc": 0.1} for e in (1, 2)])
    assert [r["epoch"] for r in run.metrics()] == [1, 2]
    path = run.dir / "metrics.csv"
    path.write_text(path.read_text().rstrip("\n").rsplit(",", 2)[0] + "\n")
    with pytest.raises(DamagedFileError) as exc:
        run.metrics()
    assert "line 3 lacks the header's 4 fields" in assert_one_line(exc, path)


# -- presets ------------------------------------------------------------------------------------


def _preset_file(tmp_path: Path) -> Path:
    from importlib import resources

    text = (resources.files("logitscope.plan") / "presets" / "digits.yaml").read_text()
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_truncated_preset(tmp_path):
    from logitscope.plan.preset import load_preset

    path = _preset_file(tmp_path)
    lines = path.read_text().splitlines()
    cut = next(i for i, ln in enumerate(lines) if "[" in ln)
    path.write_text("\n".join(lines[:cut] + [lines[cut][: lines[cut].index("[") + 2]]) + "\n")
    with pytest.raises(DamagedFileError) as exc:
        load_preset(str(path))
    msg = assert_one_line(exc, path)
    assert "not valid YAML at line" in msg and "fix it" in msg


def test_hostile_preset(tmp_path, marker):
    from logitscope.plan.preset import load_preset

    path = _preset_file(tmp_path)
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n" + path.read_text())
    with pytest.raises(DamagedFileError) as exc:
        load_preset(str(path))
    msg = assert_one_line(exc, path)
    assert "refused" in msg and "python/object/apply:os.system" in msg and not marker.exists()


def test_hostile_override_value_is_one_line():
    from logitscope.config import ConfigError
    from logitscope.plan.preset import apply_preset_overrides, load_preset

    with pytest.raises(ConfigError, match="seeds=.*not a plain YAML value"):
        apply_preset_overrides(load_preset("digits"), ["seeds=!!python/object/apply:os.system ['true']"])


# -- caches that are recomputed: distillation targets, evaluation summaries ----------------------


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    """A teacher run with an (untrained) epoch-1 checkpoint: real enough to load and run."""
    from logitscope.config import run_preset
    from logitscope.data import load_data
    from logitscope.models import build_model
    from logitscope.training.engine import model_spec

    cfg = run_preset("digits", method="st", epochs=1, **{"monitor.pgd_n": 0})
    run = Run.create(tmp_path_factory.mktemp("runs"), cfg)
    data = load_data(cfg.data)
    spec = model_spec(cfg, data)
    torch.manual_seed(0)
    model = build_model(spec["name"], spec["n_classes"], spec["in_channels"], spec["mean"], spec["std"])
    checkpoints.save(checkpoints.checkpoint_path(run.dir, 1), {"model": model.state_dict(), "model_spec": spec})
    return run, data


def _damage(path: Path, how: str, marker: Path) -> None:
    if how == "truncated":
        truncate(path)
    else:
        path.write_bytes(pickle.dumps(Hostile(marker)))


@pytest.mark.parametrize("how", ["truncated", "hostile"])
def test_damaged_targets_are_recomputed(fabricated, tmp_path, marker, caplog, how, monkeypatch):
    from logitscope.distill import distillation

    teacher, data = fabricated
    cfg = distillation.distill_config(teacher.config, teacher=str(teacher.dir), teacher_epoch=1)
    student = Run.create(tmp_path / "students", cfg)
    first = distillation.prepare_targets(cfg, student, data)
    calls = []
    real = distillation.teacher_targets
    monkeypatch.setattr(distillation, "teacher_targets", lambda *a, **k: calls.append(1) or real(*a, **k))

    stored = student.dir / "targets" / "targets.npy"
    _damage(stored, how, marker)
    with caplog.at_level(logging.WARNING, logger="logitscope.distill.distillation"):
        again = distillation.prepare_targets(cfg, student, data)
    np.testing.assert_array_equal(again, first)
    assert calls == [] and f"recomputing {stored}" in caplog.text  # from the teacher's cache
    np.testing.assert_array_equal(load_npy(stored), first)  # and written back whole

    cache = next((teacher.dir / "distill_targets").glob("epoch_001-*.npy"))
    _damage(cache, how, marker)
    _damage(stored, how, marker)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="logitscope.distill.distillation"):
        np.testing.assert_array_equal(distillation.prepare_targets(cfg, student, data), first)
    assert calls == [1] and f"recomputing {cache}" in caplog.text
    np.testing.assert_array_equal(load_npy(cache), first)

    truncate(student.dir / "targets" / "provenance.json")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="logitscope.distill.distillation"):
        np.testing.assert_array_equal(distillation.prepare_targets(cfg, student, data), first)
    assert "provenance.json: not valid JSON" in caplog.text
    assert read_json(student.dir / "targets" / "provenance.json")["epoch"] == 1
    assert not marker.exists()


def test_damaged_eval_record_is_evaluated_again(fabricated, caplog, marker):
    from logitscope.evaluation import evaluate
    from logitscope.store.evaluations import record_path

    teacher, _ = fabricated
    kw = dict(epoch=1, n=8, n_iter=2, batch_size=8, device="cpu")
    first = evaluate(teacher, **kw)
    assert evaluate(teacher, **kw) == first  # trusted while intact
    record = record_path(teacher.dir, "paper", 1)
    for damage in (lambda: truncate(record), lambda: truncate(record.with_suffix(".json"))):
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="logitscope.evaluation"):
            again = evaluate(teacher, **kw)
        assert "evaluating again" in caplog.text
        assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}
        load_npz(record)  # rewritten whole
    state = record.parent / f".{record.stem}.state.npz"
    state.write_bytes(pickle.dumps(Hostile(marker)))
    record.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="logitscope.evaluation"):
        evaluate(teacher, **kw)
    assert "starting the evaluation afresh" in caplog.text and not state.exists() and not marker.exists()


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "hostile"])
def test_cli_prints_one_line_for_a_damaged_checkpoint(fabricated, tmp_path, capsys, marker, how):
    import shutil

    from logitscope.cli import main

    teacher, _ = fabricated
    run_dir = tmp_path / teacher.dir.name
    shutil.copytree(teacher.dir, run_dir)
    path = checkpoints.checkpoint_path(run_dir, 1)
    if how == "truncated":
        truncate(path)
    else:
        torch.save({"model": Hostile(marker)}, path)
    capsys.readouterr()
    rc = main(["evaluate", str(run_dir), "--n", "4", "--n-iter", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"logitscope: error: {path}: ")
    assert ("refused" if how == "hostile" else "truncated or corrupt") in err
    assert not marker.exists()


def test_cli_prints_one_line_for_a_broken_preset(tmp_path, capsys):
    from logitscope.cli import main

    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nseeds: [0, 1\n")
    capsys.readouterr()
    rc = main(["reproduce", "--preset", str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"logitscope: error: {path}: not valid YAML at line 3"), err


def test_messages_are_json_safe_one_liners(tmp_path):
    """Markers and logs may embed the message: it stays one short line."""
    exc = DamagedFileError(tmp_path / "x", "a\nb\x1b[1mc", "do\tthis")
    assert str(exc) == f"{tmp_path / 'x'}: a bc; do this"
    assert json.loads(json.dumps(str(exc))) == str(exc)
