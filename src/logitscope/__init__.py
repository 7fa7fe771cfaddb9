"""logitscope: what adversarial training puts into a network's logits.

The small public API::

    import logitscope
    run = logitscope.train(logitscope.RunConfig(method="at", epochs=30))
    store = logitscope.LogitStore(run.dir)
    model = logitscope.load_model(run.dir)            # eval mode, inputs in [0, 1]
    x, y = logitscope.load_dataset("digits", "test")  # uint8 NCHW, int64
"""

from __future__ import annotations

from typing import Any

from logitscope._version import __version__

_LAZY = {
    "RunConfig": ("logitscope.config", "RunConfig"),
    "run_preset": ("logitscope.config", "run_preset"),
    "LogitStore": ("logitscope.store.logits", "LogitStore"),
    "Run": ("logitscope.store.runs", "Run"),
    "load_model": ("logitscope.store.models", "load_model"),
    "load_dataset": ("logitscope.data", "load_dataset"),
    "get_dataset": ("logitscope.data", "get_dataset"),
    "distill": ("logitscope.distill", None),  # the package itself is callable
    "import_model": ("logitscope.importing", "import_model"),
    "compare": ("logitscope.compare", "compare"),
}


def train(config: Any, out: str = "runs", resume: bool = False, progress: bool | None = None) -> Any:
    """Train one run (ST, PGD-AT or distillation) and keep every epoch's logits; returns a Run."""
    from logitscope.distill.distillation import train_run

    return train_run(config, out=out, resume=resume, progress=progress)


def evaluate(run: Any, epoch: int | None = None, **kwargs: Any) -> dict:
    """Robustness protocol on a run's checkpoint; per-sample records land in ``<run>/eval/``."""
    from logitscope.evaluation import evaluate as _evaluate

    return _evaluate(run, epoch, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'logitscope' has no attribute {name!r}")


__all__ = ["__version__", "evaluate", "train", *_LAZY]
