"""Bring your own model: a classifier trained elsewhere becomes a run folder every stage reads.

``import_model(model, dataset, name)`` (Python) and ``logitscope import NAME --model FILE``
(a TorchScript file) or ``--factory module:function --weights FILE`` write::

    <out>/<name>-<hash>/
      config.yaml       method: imported, the dataset, the source (kind, factory, sha256, layers)
      meta.json         status complete, imported: where it came from
      model/            model.ts (TorchScript) or weights.safetensors (factory)
      logits/<split>/   labels.npy, epoch_001.npy: every split's logits at one "epoch"
      metrics.csv       one row: accuracy per split, PGD accuracy on the monitor subset

Then ``evaluate``, ``analyze`` (through ``compare``), ``manifolds`` and the claims work on it
as on a trained run. The input contract: float images in [0, 1], ``(N, C, H, W)`` of the
dataset's shape, normalization inside the model (as RobustBench models do); the output:
``(N, classes)`` logits. Both are checked on real images before anything is written.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from logitscope.config import (
    DATASET_RUN_PRESET,
    RUN_PRESETS,
    ConfigError,
    DataConfig,
    RunConfig,
    SourceConfig,
    apply_overrides,
    to_plain,
)
from logitscope.data import DATASETS, Dataset, load_data
from logitscope.fileio.atomic import atomic_write_bytes, atomic_write_text
from logitscope.models.imported import (
    ImportedModel,
    check_model_output,
    default_layers,
    from_factory,
    load_torchscript,
    load_weights,
    runs_as_sequence,
)
from logitscope.store.logits import write_labels, write_logits
from logitscope.store.models import file_sha256, imported_model_path
from logitscope.store.runs import IMPORT_EPOCH, Run

log = logging.getLogger(__name__)

PROBE_IMAGES = 8  # test images the input/output contract is checked on


def _data_config(dataset: str | DataConfig, data_dir: str | os.PathLike | None) -> DataConfig:
    if isinstance(dataset, DataConfig):
        return dataset
    if dataset not in DATASETS:
        raise ConfigError(f"dataset={dataset!r}: expected one of {', '.join(DATASETS)}")
    preset = RUN_PRESETS.get(DATASET_RUN_PRESET.get(dataset, ""), {}).get("data", {})
    folder = str(Path(data_dir).resolve()) if data_dir is not None else None  # the same data wherever run from
    d = {**preset, "name": dataset, "data_dir": folder}
    return apply_overrides(DataConfig(), d)


def _run_config(name: str, data: DataConfig, source: SourceConfig, eps: float | None) -> RunConfig:
    """The imported run's config: the dataset's preset attack (its eps: what `evaluate` uses by
    default) and monitor, one "epoch", the source."""
    preset = RUN_PRESETS.get(DATASET_RUN_PRESET.get(data.name, ""), RUN_PRESETS["digits"])
    attack = {k: v for k, v in preset.get("attack", {}).items() if k != "warmup_epochs"}  # training's, not a model's
    attack.update({"eps": eps} if eps is not None else {})
    return RunConfig.from_dict(
        {
            "name": name,
            "method": "imported",
            "epochs": IMPORT_EPOCH,
            "model": {"name": "imported"},
            "data": to_plain(data),
            "attack": attack,
            "monitor": preset.get("monitor", {}),
            "source": to_plain(source),
        }
    )


def _check_name(name: str) -> str:
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ConfigError(f"name={name!r}: expected a folder-safe run name (no slashes), e.g. my-robust-wrn")
    return name


def _probe(module: nn.Module, data: Dataset, what: str) -> torch.Tensor:
    """Check the contract on the first test images; the probe batch, for later checks."""
    x = data.x_test[:PROBE_IMAGES].float().div(255)
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:  # noqa: BLE001 - the user's model: say what it was given
        raise ValueError(
            f"{what} fails on {data.name} images of shape {tuple(x.shape)} in [0, 1] "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}): expected a classifier "
            "of these images, normalization inside"
        ) from None
    check_model_output(out, len(x), data.n_classes, what)
    return x


def _taps(module: nn.Module, kind: str, layers: Sequence[str] | None, x: torch.Tensor, what: str) -> tuple[str, ...]:
    """The layer taps: the named ones (checked to exist and to run) or the default."""
    sequential = kind == "torchscript"
    if sequential and not runs_as_sequence(module, x):
        if layers:
            raise ValueError(
                f"{what}: a TorchScript model's layer taps are its top-level children, and only when its forward "
                "is exactly their sequence; this one's is not (TorchScript has no forward hooks): import it with "
                "--factory and --weights to tap named layers, or without --layers (every stage but the manifold "
                "analysis of inner layers works)"
            )
        log.warning("%s: TorchScript forward is not its children's sequence: only the logits are tapped", what)
        return ()
    if layers or sequential:  # named (each must run), or a sequence's children (which all do)
        wrapped = ImportedModel(module, tuple(layers or default_layers(module)), sequential=sequential)
        with torch.no_grad():  # unknown, never called, not a tensor: a one-line ValueError
            wrapped.forward_intermediates(x)
        return wrapped.taps
    usable, skipped = [], []
    for name in default_layers(module):  # the default: the children that run and output a tensor
        try:
            with torch.no_grad():
                ImportedModel(module, (name,)).forward_intermediates(x)
            usable.append(name)
        except ValueError as exc:
            skipped.append(f"{name} ({exc})")
    if skipped:
        log.warning("%s: not tapped by default: %s", what, "; ".join(skipped))
    return tuple(n for n in usable if n != "logits")


def _write_run(
    module: nn.Module,
    cfg: RunConfig,
    data: Dataset,
    stored: Path,
    out: str | os.PathLike,
    provenance: dict[str, Any],
    device: str,
    batch_size: int,
) -> Run:
    """The run folder of an imported model whose file is ``stored`` (a temp file, moved in)."""
    from logitscope.models.predict import predict_logits
    from logitscope.runtime import resolve_device
    from logitscope.training.monitor import monitor_subset, pgd_accuracy

    path = Path(out) / cfg.run_id
    if (path / "config.yaml").is_file():
        existing = Run(path)
        if existing.complete:  # the same run id: the same weights, code, dataset and settings
            log.info("%s is already imported (same model and settings); nothing to do", path.name)
            return existing
        atomic_write_text(path / "config.yaml", cfg.to_yaml())  # an interrupted import: done again
    run = Run.create(out, cfg)
    target = imported_model_path(run.dir, cfg.source.kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stored, target)
    dev = resolve_device(device)
    wrapped = ImportedModel(module, cfg.source.layers, sequential=cfg.source.kind == "torchscript").to(dev).eval()
    row: dict[str, Any] = {"epoch": IMPORT_EPOCH}
    t0 = time.perf_counter()
    for split in data.splits():
        x, y = data.split(split)
        write_labels(run.dir, split, y.numpy())
        logits = predict_logits(wrapped, x, batch_size, dev)
        write_logits(run.dir, split, IMPORT_EPOCH, logits)
        row[f"{split}_acc"] = float((logits.argmax(1) == y.numpy()).mean())
    row["snapshot_seconds"] = round(time.perf_counter() - t0, 4)
    idx = monitor_subset(len(data.y_test), cfg.monitor.pgd_n)
    row["pgd_acc"] = pgd_accuracy(wrapped, data.x_test[idx], data.y_test[idx], cfg, dev)
    run.write_metrics([row])
    run.update_meta(status="complete", imported=provenance, last_epoch=IMPORT_EPOCH, finished=time.time())
    log.info(
        "imported %s: test accuracy %.4f, PGD (monitor, eps %.4g) %.4f",
        run.dir.name,
        row.get("test_acc", float("nan")),
        cfg.attack.eps,
        row["pgd_acc"],
    )
    return run


def fingerprint(module: nn.Module) -> str:
    """sha256 of the model's parameters and buffers (names, shapes, dtypes, values) and, for a
    TorchScript module, its code: what makes two imports the same model."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    if isinstance(module, torch.jit.ScriptModule):
        h.update(_script_code(module).encode())
    return h.hexdigest()


def _script_code(module: torch.jit.ScriptModule) -> str:
    """The TorchScript code of ``module`` and its submodules, with the per-process name mangling
    (``___torch_mangle_N``) removed."""
    parts = []
    for name, sub in [("", module), *module.named_modules()]:
        try:
            parts.append(f"{name}:{sub.code}")
        except (AttributeError, RuntimeError):
            continue
    return re.sub(r"___torch_mangle_\d+\.", "", "\n".join(parts))


def _staging(out: str | os.PathLike, suffix: str) -> Path:
    Path(out).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".import-", suffix=suffix, dir=out)
    os.close(fd)
    return Path(tmp)


def _same_logits(a: nn.Module, b: nn.Module, x: torch.Tensor, message: str) -> None:
    """Refuse (``message``) unless ``a`` and ``b`` give the same logits on ``x``: up to float
    rounding, relative to the logits' scale."""
    with torch.no_grad():
        ya, yb = a(x), b(x)
    scale = max(1.0, float(yb.abs().max()))
    if not torch.allclose(ya, yb, rtol=1e-4, atol=1e-5 * scale):
        raise ValueError(message)


def _dataset(dataset: str | DataConfig, data_dir: str | os.PathLike | None) -> tuple[DataConfig, Dataset]:
    cfg = _data_config(dataset, data_dir)
    return cfg, load_data(cfg)


def _finish_import(
    module: nn.Module,
    kind: str,
    save: Any,
    source: dict[str, Any],
    layers: Sequence[str] | None,
    x: torch.Tensor,
    what: str,
    name: str,
    data: tuple[DataConfig, Dataset],
    out: str | os.PathLike,
    provenance: dict[str, Any],
    eps: float | None,
    device: str,
    batch_size: int,
) -> Run:
    """The run of a checked ``module``: its taps, its file (``save(path)`` writes it to a temp
    file under ``out``, removed whatever happens unless moved into the run), its config."""
    taps = _taps(module, kind, layers, x, what)
    staged = _staging(out, ".model")
    try:
        save(staged)
        src = SourceConfig(
            kind=kind, sha256=file_sha256(staged), fingerprint=fingerprint(module), layers=taps, **source
        )
        cfg = _run_config(name, data[0], src, eps)
        return _write_run(module, cfg, data[1], staged, out, provenance, device, batch_size)
    finally:
        staged.unlink(missing_ok=True)


def _save_torchscript(module: torch.jit.ScriptModule) -> Any:
    def save(path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, str(path))

    return save


def import_model(
    model: nn.Module,
    dataset: str | DataConfig,
    name: str,
    layers: Sequence[str] | None = None,
    *,
    factory: str | None = None,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs",
    eps: float | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> Run:
    """Import a classifier trained elsewhere as a run folder under ``out``.

    Args:
        model: takes float images in [0, 1] of the dataset's shape, returns ``(N, classes)``
            logits (normalization inside). A TorchScript module is stored as is; any other
            ``nn.Module`` is stored as its weights plus ``factory`` when given (then any named
            submodule can be tapped), else as TorchScript (``torch.jit.script``, or a trace).
        dataset: a dataset name (``digits``, ``cifar10``, ``cifar100``, ``idx``, ``npz``; with
            ``data_dir``) or a `DataConfig`.
        name: the run's readable name (the folder is ``<name>-<hash>``).
        layers: submodules tapped by the manifold analysis (``named_modules`` names); default:
            the top-level children that run and return a tensor. The logits are always the last tap.
        factory: ``module:function`` (imported from the working folder, which is recorded) or
            ``file.py:function`` that builds ``model``'s architecture with no arguments.
        eps: the run's attack radius (default: the dataset's preset, e.g. 8/255 for CIFAR).

    Returns:
        The complete `Run`; importing the same model again returns it untouched.
    """
    _check_name(name)
    data = _dataset(dataset, data_dir)
    what = f"model {name}"
    module = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its device and mode
    if factory is None and not isinstance(module, torch.jit.ScriptModule):
        x = _probe(module, data[1], what)
        module = _to_torchscript(module, x, what)
    kind = "torchscript" if isinstance(module, torch.jit.ScriptModule) else "factory"
    x = _probe(module, data[1], what)
    source: dict[str, Any] = {}
    if kind == "factory":
        assert factory is not None
        source = {"factory": _absolute_factory(factory), "root": os.getcwd()}
        rebuilt = from_factory(source["factory"], module.state_dict(), f"of model {name}").eval()
        differs = f"factory {factory!r} with {name}'s weights computes other logits: expected its model"
        _same_logits(rebuilt, module, x, differs)
        save: Any = lambda path: _save_safetensors(module.state_dict(), path)  # noqa: E731
    else:
        save = _save_torchscript(module)
    provenance = {"from": "python", "class": type(model).__qualname__, "kind": kind, "factory": source.get("factory")}
    return _finish_import(
        module, kind, save, source, layers, x, what, name, data, out, provenance, eps, device, batch_size
    )


def import_file(
    name: str,
    *,
    dataset: str | DataConfig,
    model_file: str | os.PathLike | None = None,
    factory: str | None = None,
    weights: str | os.PathLike | None = None,
    layers: Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs",
    eps: float | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> Run:
    """``logitscope import``: a TorchScript ``model_file``, or ``factory`` plus ``weights``
    (a state_dict: ``.safetensors``, or ``.pt`` read with ``weights_only=True``)."""
    _check_name(name)
    if (model_file is None) == (factory is None):
        raise ConfigError("give either --model FILE (TorchScript) or --factory module:function with --weights FILE")
    if factory is not None and weights is None:
        raise ConfigError(f"--factory {factory}: expected --weights FILE (its state_dict, .safetensors or .pt)")
    data = _dataset(dataset, data_dir)
    source: dict[str, Any] = {}
    if model_file is not None:
        kind, given = "torchscript", Path(model_file)
        module: nn.Module = load_torchscript(given)
        what = f"TorchScript model {given}"
        save: Any = lambda path: shutil.copyfile(given, path)  # noqa: E731
    else:
        assert factory is not None and weights is not None
        kind, given = "factory", Path(weights)
        source = {"factory": _absolute_factory(factory), "root": os.getcwd()}
        module = from_factory(source["factory"], load_weights(given), str(given))
        what = f"factory {factory}"
        save = lambda path: _save_safetensors(module.state_dict(), path)  # noqa: E731
    x = _probe(module, data[1], what)
    source["file"] = str(given.resolve())
    provenance = {
        "from": str(given.resolve()),
        "kind": kind,
        "factory": source.get("factory"),
        "sha256_of_given": file_sha256(given),
    }
    return _finish_import(
        module, kind, save, source, layers, x, what, name, data, out, provenance, eps, device, batch_size
    )


def _absolute_factory(factory: str) -> str:
    """A ``file.py:function`` factory with the file made absolute (later stages run elsewhere)."""
    module, _, func = factory.rpartition(":")
    return f"{Path(module).resolve()}:{func}" if module.endswith(".py") else factory


def _to_torchscript(module: nn.Module, x: torch.Tensor, what: str) -> torch.jit.ScriptModule:
    """``torch.jit.script``, else a trace on ``x`` checked to reproduce the model on other images."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.script(module)
        except Exception as exc:  # noqa: BLE001 - not scriptable: trace it (checked below)
            log.info("%s is not scriptable (%s): tracing it instead", what, type(exc).__name__)
        try:
            traced = torch.jit.trace(module, x, check_trace=False)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(
                f"{what} can be neither scripted nor traced ({type(exc).__name__}): pass factory='module:function'"
            ) from None
    message = f"{what}: its trace computes other logits on other images: pass factory='module:function'"
    _same_logits(traced, module, torch.rand_like(x), message)
    return traced


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors))


__all__ = ["import_file", "import_model"]
