"""Importing models trained elsewhere: TorchScript, factory + weights, the Python API, refusals."""

from __future__ import annotations

import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from logitscope.cli import main
from logitscope.data import get_dataset
from logitscope.fileio.errors import DamagedFileError
from logitscope.importing import import_file, import_model
from logitscope.store.models import imported_model_path, load_model
from logitscope.store.runs import Run, list_runs

FACTORY = '''
import torch
from torch import nn


class Net(nn.Module):
    """Not a Sequential: normalization and a flatten inside forward."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(32, n_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.features((x - 0.3) / 0.4), 1))


def build():
    return Net()


def build100():
    return Net(100)


class Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def other():
    return Other()


def not_a_model():
    return 3


def needs_args(n_classes):
    return Net(n_classes)


class BNNet(nn.Module):
    """BatchNorm (a 0-dim num_batches_tracked buffer) and a child the forward never calls."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4 * 64, 10)
        self.aux = nn.Linear(4 * 64, 2)  # an auxiliary head, unused at inference

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def bn():
    return BNNet()
'''


@pytest.fixture
def factory(tmp_path, monkeypatch):
    """A factory module ``impnet`` (importable by name) and its file ``impnet.py``."""
    (tmp_path / "impnet.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("impnet", None)
    import impnet

    torch.manual_seed(0)
    return impnet


def sequential_model() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))


def save_torchscript(model: nn.Module, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))


def digits_test_images() -> tuple[torch.Tensor, np.ndarray]:
    x, y = get_dataset("digits").split("test")
    return x.float().div(255), y.numpy()


def test_torchscript_import_stores_the_models_logits_and_taps_its_children(tmp_path):
    model = sequential_model().eval()
    save_torchscript(model, tmp_path / "m.ts")
    run = import_file("seq", dataset="digits", model_file=tmp_path / "m.ts", out=tmp_path / "runs")
    assert run.complete and run.imported and run.checkpoint_epochs() == [1]
    assert run.config.source.kind == "torchscript" and run.config.source.layers == ("0", "1", "2", "3")
    x, y = digits_test_images()
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run.logits.get("test", 1), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(run.logits.labels("test"), y)
    acc = float((expected.argmax(1) == y).mean())
    assert run.metrics()[0]["test_acc"] == pytest.approx(acc)
    loaded = load_model(run)
    taps = loaded.forward_intermediates(x[:5])
    assert list(taps) == ["0", "1", "2", "3", "logits"]
    with torch.no_grad():
        np.testing.assert_allclose(taps["1"].numpy(), torch.relu(model[0](x[:5])).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(taps["logits"].numpy(), expected[:5], rtol=1e-5, atol=1e-5)


def test_factory_import_taps_named_inner_modules_with_hooks(tmp_path, factory):
    model = factory.build().eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    run = import_file(
        "fac", dataset="digits", factory="impnet:build", weights=tmp_path / "w.pt", layers=["features.0", "head"]
    )
    assert run.config.source.kind == "factory" and run.config.source.layers == ("features.0", "head")
    x, _ = digits_test_images()
    taps = load_model(run).forward_intermediates(x[:6])
    with torch.no_grad():  # the oracle: the layers computed by hand
        conv = model.features[0]((x[:6] - 0.3) / 0.4)
        np.testing.assert_allclose(taps["features.0"].numpy(), conv.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(taps["logits"].numpy(), model(x[:6]).numpy(), rtol=1e-6, atol=1e-6)


def test_factory_from_a_file_with_safetensors_weights(tmp_path, factory):
    from safetensors.torch import save_file

    model = factory.build().eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    run = import_file(
        "fac-file", dataset="digits", factory="impnet.py:build", weights=tmp_path / "w.safetensors", out="runs"
    )
    assert run.config.source.factory == f"{(tmp_path / 'impnet.py').resolve()}:build"
    assert run.config.source.layers == ("features", "head")  # default: the top-level children
    x, _ = digits_test_images()
    with torch.no_grad():
        np.testing.assert_allclose(load_model(run)(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_python_api_scripts_a_module_and_reimporting_is_a_no_op(tmp_path, factory):
    model = factory.build().eval()
    run = import_model(model, "digits", "py", out=tmp_path)
    assert run.config.source.kind == "torchscript"
    assert run.config.source.layers == ()  # its forward is not its children's sequence: logits only
    assert load_model(run).layer_names == ["logits"]
    before = (run.dir / "metrics.csv").stat().st_mtime_ns
    again = import_model(model, "digits", "py", out=tmp_path)
    assert again.dir == run.dir and (run.dir / "metrics.csv").stat().st_mtime_ns == before
    with_factory = import_model(model, "digits", "py-fac", factory="impnet:build", layers=["features"], out=tmp_path)
    assert with_factory.config.source.kind == "factory"
    assert load_model(with_factory).layer_names == ["features", "logits"]
    assert {r.dir.name for r in list_runs(tmp_path)} == {run.dir.name, with_factory.dir.name}


def test_a_changed_model_file_is_refused_at_load(tmp_path):
    save_torchscript(sequential_model(), tmp_path / "m.ts")
    run = import_file("seq", dataset="digits", model_file=tmp_path / "m.ts", out=tmp_path / "runs")
    path = imported_model_path(run.dir, "torchscript")
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DamagedFileError, match="changed since it was imported"):
        load_model(run)


def test_evaluate_reads_an_imported_run(tmp_path):
    from logitscope.evaluation import evaluate

    model = sequential_model().eval()
    save_torchscript(model, tmp_path / "m.ts")
    run = import_file("seq", dataset="digits", model_file=tmp_path / "m.ts", out=tmp_path / "runs")
    summary = evaluate(run.dir, n=30, n_iter=5, device="cpu")
    x, y = digits_test_images()
    with torch.no_grad():
        clean = float((model(x[:30]).argmax(1).numpy() == y[:30]).mean())
    assert summary["epoch"] == 1 and summary["clean_acc"] == pytest.approx(clean)
    assert 0.0 <= summary["robust_acc"] <= summary["clean_acc"]


def _cli_error(capsys, *argv: str) -> str:
    assert main(["import", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_refusals_are_one_line_errors_and_write_nothing(tmp_path, factory, capsys):
    model = factory.build()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    save_torchscript(model, tmp_path / "net.ts")
    out = ["--out", str(tmp_path / "runs")]
    err = _cli_error(capsys, "a", "--model", str(tmp_path / "w.pt"), *out)
    assert "is not a TorchScript file" in err and "w.pt" in err
    err = _cli_error(capsys, "b", "--factory", "impnet:build100", "--weights", str(tmp_path / "w.pt"), *out)
    assert "head.weight has shape (10, 32), the model's is (100, 32)" in err
    err = _cli_error(capsys, "c", "--factory", "impnet:other", "--weights", str(tmp_path / "w.pt"), *out)
    assert "do not fit the model" in err and "missing" in err
    err = _cli_error(
        capsys, "d", "--factory", "impnet:build", "--weights", str(tmp_path / "w.pt"), "--layers", "nope", *out
    )
    assert "layer 'nope' is not a module of the model" in err and "features.0" in err
    err = _cli_error(capsys, "e", "--model", str(tmp_path / "net.ts"), "--layers", "features", *out)
    assert "TorchScript" in err and "--factory" in err
    err = _cli_error(capsys, "f", "--factory", "impnet:not_a_model", "--weights", str(tmp_path / "w.pt"), *out)
    assert "returned int: expected a torch.nn.Module" in err
    err = _cli_error(capsys, "g", "--factory", "impnet", "--weights", str(tmp_path / "w.pt"), *out)
    assert "expected module:function" in err
    assert not (tmp_path / "runs").exists() or list_runs(tmp_path / "runs") == []


class Flat(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10].unsqueeze(-1)  # (N, 10, 1): not logits


class TwoOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return z, z


@pytest.mark.parametrize(
    ("model", "match"),
    [(Flat(), r"returns shape \(8, 10, 1\) on 8 images: expected \(8, 10\) logits"), (TwoOut(), "returns tuple")],
)
def test_outputs_that_are_not_logits_are_refused(tmp_path, model, match):
    with pytest.raises(ValueError, match=match):
        import_model(model, "digits", "bad", out=tmp_path)
    assert not list(tmp_path.glob("*/config.yaml"))  # no run folder was written


def test_runs_lists_imported_runs(tmp_path, capsys):
    save_torchscript(sequential_model(), tmp_path / "m.ts")
    run = import_file("seq", dataset="digits", model_file=tmp_path / "m.ts", out=tmp_path / "runs")
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert run.dir.name in out and "imported" in out
    assert Run(run.dir).summary()["epoch"] == "1/1"


def test_an_imported_model_can_be_a_teacher(tmp_path):
    from logitscope.config import run_preset
    from logitscope.distill.distillation import distill_config, train_student

    model = sequential_model().eval()
    save_torchscript(model, tmp_path / "m.ts")
    teacher = import_file("seq", dataset="digits", model_file=tmp_path / "m.ts", out=tmp_path / "runs")
    base = run_preset("digits", epochs=1, **{"monitor.pgd_n": 0})
    student = train_student(
        distill_config(base, teacher=str(teacher.dir), transform="fix-k-permute", k=1), out=tmp_path
    )
    x, _ = get_dataset("digits").split("train")
    with torch.no_grad():
        top = model(x.float().div(255)).max(dim=1).values.numpy()
    targets = np.load(student.dir / "targets" / "targets.npy")
    np.testing.assert_allclose(targets.max(axis=1), top, rtol=1e-5, atol=1e-5)  # fix-1 keeps the top logit


def test_the_callers_model_keeps_its_mode(tmp_path, factory):
    model = factory.build().train()
    import_model(model, "digits", "mode", factory="impnet:build", out=tmp_path)
    assert model.training


def _trained_bn(factory) -> nn.Module:
    model = factory.bn()
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the initial ones
        model(digits_test_images()[0][:64])
    return model.eval()


def test_batchnorm_models_import_as_torchscript_and_as_factory(tmp_path, factory):
    model = _trained_bn(factory)
    assert model.features[1].num_batches_tracked.dim() == 0
    x, _ = digits_test_images()
    with torch.no_grad():
        expected = model(x).numpy()
    scripted = import_model(model, "digits", "bn-ts", out=tmp_path / "runs")
    fac = import_model(model, "digits", "bn-fac", factory="impnet:bn", out=tmp_path / "runs")
    for run in (scripted, fac):
        np.testing.assert_allclose(run.logits.get("test", 1), expected, rtol=1e-5, atol=1e-5)
    assert import_model(model, "digits", "bn-fac", factory="impnet:bn", out=tmp_path / "runs").dir == fac.dir
    model.features[1].running_mean += 1  # other statistics: another model, another run
    assert import_model(model, "digits", "bn-fac", factory="impnet:bn", out=tmp_path / "runs").dir != fac.dir


def test_default_taps_skip_a_child_the_forward_never_calls(tmp_path, factory):
    model = _trained_bn(factory)
    run = import_model(model, "digits", "aux", factory="impnet:bn", out=tmp_path / "runs")
    assert run.config.source.layers == ("features", "head")
    with pytest.raises(ValueError, match="layer 'aux' did not run in the model's forward"):
        import_model(model, "digits", "aux", ["aux"], factory="impnet:bn", out=tmp_path / "runs")


def test_factories_load_from_any_folder_later(tmp_path, factory, monkeypatch):
    model = factory.build().eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    by_module = import_file("mod", dataset="digits", factory="impnet:build", weights="w.pt", out=tmp_path / "runs")
    by_file = import_model(model, "digits", "file", factory="impnet.py:build", out=tmp_path / "runs")
    assert by_file.config.source.factory == f"{tmp_path / 'impnet.py'}:build"  # made absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (str(tmp_path), "")])
    sys.modules.pop("impnet", None)
    x, _ = digits_test_images()
    with torch.no_grad():
        for run in (by_module, by_file):  # the module from the folder it was imported in
            np.testing.assert_allclose(load_model(run)(x[:4]).numpy(), model(x[:4]).numpy(), rtol=1e-6, atol=1e-6)


def test_the_same_model_from_a_moved_file_is_the_same_run(tmp_path):
    save_torchscript(sequential_model().eval(), tmp_path / "m.ts")
    first = import_file("seq", dataset="digits", model_file=tmp_path / "m.ts", out=tmp_path / "runs")
    (tmp_path / "moved").mkdir()
    (tmp_path / "m.ts").rename(tmp_path / "moved" / "m2.ts")
    again = import_file("seq", dataset="digits", model_file=tmp_path / "moved" / "m2.ts", out=tmp_path / "runs")
    assert again.dir == first.dir and len(list_runs(tmp_path / "runs")) == 1


def test_a_failure_after_staging_leaves_no_temp_file(tmp_path, monkeypatch):
    import logitscope.importing

    def broken(module):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(logitscope.importing, "fingerprint", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        import_model(sequential_model().eval(), "digits", "seq", out=tmp_path / "runs")
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_factory_that_needs_arguments_is_a_one_line_error(tmp_path, factory):
    torch.save(factory.build().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"fails when called with no arguments \(TypeError: .*n_classes") as err:
        import_file("x", dataset="digits", factory="impnet:needs_args", weights=tmp_path / "w.pt", out=tmp_path / "r")
    assert "\n" not in str(err.value) and not (tmp_path / "r").exists()
