"""The fast-path switches: correct on CPU, and (marked gpu) on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitscope import LogitStore, train
from logitscope.config import PerfConfig
from logitscope.models import build_model
from logitscope.training.perf import CompiledOrEager, autocast, prepare, to_format


def test_channels_last_and_bf16_train_to_similar_accuracy(tmp_path, tiny_config):
    """bf16 rounding is a different float trajectory from the first step on, and how different
    depends on the CPU's bf16 kernels: the margin must hold for any trajectory of this recipe.
    Three epochs of ST on digits, 8 seeds: fp32 0.87-0.96, bf16 + channels-last 0.84-0.95, the
    same seed's two at most 0.053 apart. A broken fast path trains to chance (0.1)."""
    base = train(tiny_config("st", epochs=3), out=tmp_path / "a", progress=False)
    fast = train(tiny_config("st", epochs=3, **{"perf.precision": "bf16", "perf.channels_last": True}),
                 out=tmp_path / "b", progress=False)
    a, b = base.metrics()[-1]["test_acc"], fast.metrics()[-1]["test_acc"]
    assert a > 0.7 and b > 0.7 and abs(a - b) < 0.15
    assert LogitStore(fast.dir).get("test").dtype == np.float32  # snapshots stay fp32


def test_autocast_switch():
    x = torch.randn(4, 4)
    with autocast(PerfConfig(precision="bf16"), torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(PerfConfig(), torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    assert to_format(torch.rand(2, 3, 4, 4), PerfConfig(channels_last=True)).is_contiguous(
        memory_format=torch.channels_last)


def test_compile_falls_back_to_eager_when_compilation_fails(monkeypatch, caplog):
    model = build_model("small-cnn", 10, 1, [0.3], [0.4]).eval()
    wrapped = CompiledOrEager(model)

    def broken(x):
        raise RuntimeError("no compiler here")

    wrapped._compiled = broken
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(wrapped(x), model(x))
    assert wrapped._compiled is None and "running eager" in caplog.text
    assert prepare(model, PerfConfig()) is model


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fast_path_matches_fp32(tmp_path, tiny_config):
    """Five epochs, not three: AT on digits is still climbing at three (CPU, 4 seeds: test
    accuracy 0.73-0.88, so a bf16 trajectory as different as another seed's could miss a 0.1
    margin) and has settled at five (0.95-0.98). A broken fast path stays near chance."""
    cfg = dict(device="cuda", **{"perf.precision": "bf16", "perf.channels_last": True, "perf.compile": True})
    fast = train(tiny_config("at", epochs=5, **cfg), out=tmp_path / "f", progress=False)
    ref = train(tiny_config("at", epochs=5, device="cuda"), out=tmp_path / "r", progress=False)
    a, b = ref.metrics()[-1]["test_acc"], fast.metrics()[-1]["test_acc"]
    assert a > 0.8 and b > 0.8 and abs(a - b) < 0.1
