"""The run store: atomic writes and LogitStore."""

from __future__ import annotations

import numpy as np
import pytest

from logitscope.fileio.atomic import atomic_save_npz, atomic_write, atomic_write_json, load_npz
from logitscope.store.logits import LogitStore, write_labels, write_logits


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"v": 1})

    def broken(fh):
        fh.write(b"{partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text().strip() == '{\n  "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_npz_round_trip_refuses_pickles(tmp_path):
    atomic_save_npz(tmp_path / "r.npz", a=np.arange(3), b=np.eye(2))
    d = load_npz(tmp_path / "r.npz")
    assert np.array_equal(d["a"], np.arange(3)) and d["b"].shape == (2, 2)
    np.savez(tmp_path / "evil.npz", o=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz(tmp_path / "evil.npz")


def test_logit_store_lists_and_maps(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("test", 5), ("train", 7)):
        write_labels(tmp_path, split, rng.integers(0, 3, n))
        for e in (3, 1, 2):
            write_logits(tmp_path, split, e, rng.standard_normal((n, 3)))
    store = LogitStore(tmp_path)
    assert store.splits == ["train", "test"]  # pipeline order, not alphabetical
    assert store.epochs("train") == [1, 2, 3]
    last = store.get("test")
    assert isinstance(last, np.memmap) and last.shape == (5, 3) and last.dtype == np.float32
    assert np.array_equal(last, store.get("test", 3))
    assert [e for e, _ in store.iter_epochs("train")] == [1, 2, 3]
    with pytest.raises(KeyError, match="unknown split 'val'"):
        store.get("val")
    with pytest.raises(KeyError, match="epoch 9 not stored"):
        store.get("train", 9)
    with pytest.raises(FileNotFoundError, match="no logits folder"):
        LogitStore(tmp_path / "nope")
