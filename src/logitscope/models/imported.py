"""Models trained elsewhere, behind the interface of logitscope's own (`TappedModel`).

An imported model takes float images in [0, 1] (normalization inside the model, as
RobustBench models do) and returns ``(N, C)`` logits. Its layer taps (the manifold analysis)
are named submodules, read with forward hooks; a TorchScript module has no hooks, so its taps
are its top-level children, and only when its forward is exactly their sequence (checked on
real images when it is imported). Two sources:

- a TorchScript file (``torch.jit.save``), stored as is in the run;
- a factory (``module:function`` or ``path/to/file.py:function``, called with no arguments)
  and its weights (a state_dict in ``.safetensors``, or ``.pt`` read with
  ``weights_only=True``: nothing in it is unpickled beyond tensors).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

LOGITS = "logits"
"""The tap name of the model's output (the last layer of every model)."""


class ImportedModel(nn.Module):
    """``module`` with ``layer_names`` and ``forward_intermediates`` (`TappedModel`'s API).

    Args:
        module: the classifier (an ``nn.Module`` or a TorchScript module).
        layers: names of its submodules to tap, in order (``named_modules`` names).
        sequential: the taps are top-level children run in sequence (TorchScript: no hooks).
    """

    def __init__(self, module: nn.Module, layers: Sequence[str] = (), sequential: bool = False) -> None:
        super().__init__()
        self.module = module
        self.taps = tuple(n for n in layers if n != LOGITS)
        self.sequential = sequential
        known = self.submodules()
        unknown = [n for n in self.taps if n not in known]
        if unknown:
            raise ValueError(f"layer {unknown[0]!r} is not a module of the model: expected one of {sorted(known)}")

    def submodules(self) -> dict[str, nn.Module]:
        if self.sequential:
            return dict(self.module.named_children())
        return {n: m for n, m in self.module.named_modules() if n}

    @property
    def layer_names(self) -> list[str]:
        return [*self.taps, LOGITS]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def forward_intermediates(
        self, x: torch.Tensor, layers: Sequence[str] | None = None
    ) -> OrderedDict[str, torch.Tensor]:
        """Outputs of the tapped layers (all, or those in ``layers``) and the logits, in order."""
        wanted = list(self.layer_names if layers is None else layers)
        unknown = [n for n in wanted if n not in self.layer_names]
        if unknown:
            raise KeyError(f"unknown layer {unknown[0]!r}: this model has {self.layer_names}")
        found: dict[str, torch.Tensor] = {}
        if self.sequential and any(n != LOGITS for n in wanted):
            h = x
            for name, child in self.module.named_children():
                h = child(h)
                found[name] = h
            found[LOGITS] = h
        else:
            mods = self.submodules()
            handles = [mods[n].register_forward_hook(_keep(found, n)) for n in wanted if n != LOGITS]
            try:
                found[LOGITS] = self.module(x)
            finally:
                for h in handles:
                    h.remove()
        missing = [n for n in wanted if n not in found]
        if missing:
            raise ValueError(f"layer {missing[0]!r} did not run in the model's forward: expected a layer it calls")
        return OrderedDict((n, found[n]) for n in self.layer_names if n in wanted)


def _keep(found: dict[str, torch.Tensor], name: str) -> Any:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"layer {name!r} outputs {type(output).__name__}: expected a tensor to tap")
        found[name] = output

    return hook


# -- sources ------------------------------------------------------------------------------------


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """A TorchScript module from ``path`` (on the CPU); a one-line ValueError for any other file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}: expected a TorchScript file (torch.jit.save)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
            return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        text = str(exc).strip()
        why = text.splitlines()[0].split(". ")[0][:160] if text else type(exc).__name__
        raise ValueError(
            f"{path} is not a TorchScript file ({why}): save one with torch.jit.save(torch.jit.script(model), "
            "...) or torch.jit.trace, or import with --factory and --weights"
        ) from None


def build_factory(spec: str, root: str | os.PathLike | None = None) -> nn.Module:
    """Call the factory ``module:function`` (or ``file.py:function``) with no arguments; a
    module is imported from ``root`` (default: the working folder) or the installed packages."""
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name.isidentifier():
        raise ValueError(f"factory {spec!r}: expected module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise FileNotFoundError(f"factory {spec!r}: no file {file}")
            mspec = importlib.util.spec_from_file_location(f"logitscope_factory_{file.stem}", file)
            module = importlib.util.module_from_spec(mspec)  # type: ignore[arg-type]
            mspec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            folder = str(Path(root or os.getcwd()).resolve())
            if folder not in sys.path:  # the user's own module, beside where they imported the model
                sys.path.insert(0, folder)
            module = importlib.import_module(module_name)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: ImportError, SyntaxError or whatever it raises
        raise ValueError(f"factory {spec!r}: cannot import {module_name} ({_first_line(exc)})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"factory {spec!r}: {module_name} has no function {func_name!r}")
    try:
        model = func()
    except Exception as exc:  # noqa: BLE001
        raise ValueError(
            f"factory {spec!r} fails when called with no arguments ({_first_line(exc)}): expected a function "
            "that builds the model, e.g. def build(): return MyNet(num_classes=10)"
        ) from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"factory {spec!r} returned {type(model).__name__}: expected a torch.nn.Module")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def from_factory(
    spec: str, state: dict[str, torch.Tensor], where: str, root: str | os.PathLike | None = None
) -> nn.Module:
    """The factory's model with ``state`` loaded (`build_factory`, then `fit_weights`)."""
    return fit_weights(build_factory(spec, root), state, where)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a ``.pt`` file (``weights_only=True``); a
    checkpoint that wraps it (``{"state_dict": ...}`` or ``{"model": ...}``) and DataParallel's
    ``module.`` prefixes are unwrapped."""
    from logitscope.fileio import torchfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}: expected a state_dict (.safetensors or .pt)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    else:
        state = torchfile.load_plain(path, remedy="export the model's state_dict again (torch.save or safetensors)")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad or not state:
        what = f"entry {bad[0]!r} is not a tensor" if bad else "it is empty"
        raise ValueError(f"{path} is not a state_dict ({what}): expected parameter names mapped to tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """``model`` with ``state`` loaded strictly; weights of another architecture or class count
    are a one-line ValueError naming the first mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"weights {where} do not fit the model: {k} has shape {tuple(state[k].shape)}, the model's is "
            f"{tuple(own[k].shape)} (another architecture or class count?)"
        )
    if missing or extra:
        parts = [f"{len(missing)} missing (e.g. {missing[0]!r})" if missing else "", ""]
        parts[1] = f"{len(extra)} unexpected (e.g. {extra[0]!r})" if extra else ""
        raise ValueError(f"weights {where} do not fit the model: " + ", ".join(p for p in parts if p) + " keys")
    model.load_state_dict(state)
    return model


def default_layers(module: nn.Module) -> list[str]:
    """The manifold taps when none are named: the model's top-level children, in order (its
    blocks, for the usual ``stem, block1, ..., head`` layout)."""
    return [name for name, _ in module.named_children()]


def runs_as_sequence(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module(x)`` is exactly its top-level children applied in order (then they are
    valid taps of a TorchScript module, which has no hooks)."""
    children = list(module.named_children())
    if not children:
        return False
    with torch.no_grad():
        try:
            h = x
            for _, child in children:
                h = child(h)
        except Exception:  # noqa: BLE001 - any failure means: not a sequence
            return False
        out = module(x)
    return isinstance(h, torch.Tensor) and h.shape == out.shape and torch.equal(h, out)


def check_model_output(out: Any, n: int, n_classes: int, what: str) -> None:
    """Refuse a model whose output on ``n`` images is not ``(n, n_classes)`` float logits."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{what} returns {type(out).__name__}: expected (N, {n_classes}) logits as one tensor")
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] != n_classes:
        raise ValueError(
            f"{what} returns shape {tuple(out.shape)} on {n} images: expected ({n}, {n_classes}) logits "
            f"({n_classes} classes in the dataset)"
        )
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise ValueError(f"{what} returns non-finite or non-float outputs: expected finite float logits")
