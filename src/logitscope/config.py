"""Frozen dataclasses for every setting of a run, YAML in and out, validation, overrides.

A :class:`RunConfig` is everything needed to rerun a training run; its hash (without the
device) names the run folder. Overrides use dotted paths (``optim.lr=0.1``,
``attack.eps=8/255``); values are parsed to the field's type, and fractions like ``8/255``
are accepted wherever a float is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from fractions import Fraction
from typing import Any

import yaml

METHODS = {
    "st": "standard",
    "standard": "standard",
    "at": "pgd-at",
    "pgd-at": "pgd-at",
    "distill": "distill",
    "imported": "imported",  # a model trained elsewhere (`logitscope import`): no training
}
BN_MODES = ("train", "eval")


class ConfigError(ValueError):
    """A bad setting: the message names the key, the value and what was expected."""


def parse_float(text: str | float | int) -> float:
    """Parse ``0.03``, ``8/255`` or ``1e-3`` to a float."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    try:
        return float(Fraction(s)) if "/" in s else float(s)
    except (ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"{text!r} is not a number (expected e.g. 0.03 or 8/255)") from exc


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits | cifar10 | cifar100 | idx | npz
    data_dir: str | None = None  # folder (or file) holding the dataset; digits needs none
    val_per_class: int | None = None  # held-out validation images per class (None: dataset default)
    split_seed: int = 0  # seeds the train/test (digits) and validation hold-outs
    augment_pad: int = 0  # random crop with this zero padding, in pixels (CIFAR: 4)
    augment_flip: bool = False  # random horizontal flip (CIFAR: yes; digits: never)
    download: bool = False  # fetch CIFAR when online (never in tests)
    # Keep only the first n images of each class (in the file's order) of the training split
    # (after the validation hold-out) and of the test split: None keeps all. The CPU smoke
    # presets run the CIFAR graph on a few images per class of whatever tarball they read.
    train_per_class: int | None = None
    test_per_class: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str = "small-cnn"  # resnet18 | preact-resnet18 | small-cnn | mnist-cnn | imported
    # ResNets' first-stage channel count (stages width x 1, 2, 4, 8); None: the model's own (64,
    # the paper's). Smaller keeps every layer, stride and tap (the CPU smoke presets: 8).
    width: int | None = None


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    batch_size: int = 64
    milestones: tuple[int, ...] = ()  # epochs after which the lr is multiplied by gamma
    gamma: float = 0.1
    grad_clip: float | None = None  # clip the global gradient norm to this after backward (None: off)


@dataclass(frozen=True)
class AttackConfig:
    """The L-inf PGD used by adversarial training (appendix A.2), in the [0, 1] pixel scale."""

    eps: float = 0.2
    step_size: float = 0.05
    steps: int = 7
    random_start: bool = True
    bn_mode: str = "train"  # BatchNorm during the training attack: train (reference code) | eval
    warmup_epochs: int = 0  # eps (and step size) ramp linearly from eps/warmup_epochs to eps over these epochs


@dataclass(frozen=True)
class MonitorConfig:
    """Per-epoch PGD accuracy on a fixed test subset (a progress signal, not the protocol)."""

    pgd_n: int = 500  # test images (a fixed seeded subset); 0 disables
    pgd_steps: int = 10
    eval_batch_size: int = 1024
    # Measure every n-th epoch (and the last); the others record pgd_acc as nan. On small
    # models the monitor costs more than the training itself: 200 images x 11 passes per
    # epoch against 1,200 training images on digits.
    pgd_every: int = 1


@dataclass(frozen=True)
class DistillConfig:
    teacher: str | None = None  # teacher run folder
    teacher_epoch: int | None = None  # checkpoint epoch of the teacher (None: last)
    transform: str = "none"  # none | fix-k-permute | fix-k-average | correct-fix-1 | correct-fix-1-average | hybrid
    k: int = 1
    loss: str = "l1"  # l1 (A.3) | kl | mse
    temperature: float = 1.0  # for kl
    passes: int = 1  # K augmented passes averaged into each target (A.3)
    bn_mode: str = "eval"  # teacher BatchNorm when computing targets: eval | batch
    hybrid_order: str | None = None  # ST teacher run whose class order hybrid uses
    hybrid_order_epoch: int | None = None
    target_seed: int = 0  # seeds the transform (permutations) and the passes' order


@dataclass(frozen=True)
class PerfConfig:
    """Speed settings (issue: GPU fast path). They change float rounding, never the method."""

    precision: str = "fp32"  # fp32 | bf16: autocast of training forward passes (fp32 master weights)
    channels_last: bool = False  # NHWC memory format for convolutions (fast on tensor cores)
    compile: bool = False  # torch.compile the model; falls back to eager (logged) where unavailable


@dataclass(frozen=True)
class StoreConfig:
    """How a run stores its per-epoch logits (the bulk of a run folder: epochs x images x
    classes numbers; a 200-epoch CIFAR-100 run at float32 is about 4.8 GB)."""

    logits_dtype: str = "float32"  # float32 | float16: half the bytes; logits rounded to 11 significant bits
    logits_every: int = 1  # store every n-th epoch's logits; checkpoint epochs and the last are always stored


LOGITS_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class SourceConfig:
    """Where an imported model (method ``imported``) came from: `logitscope.importing`."""

    kind: str = ""  # "" (trained here) | torchscript | factory
    factory: str | None = None  # module:function building the nn.Module (kind factory)
    file: str | None = None  # the file it was imported from (provenance only, not identity)
    root: str | None = None  # the folder a module:function factory is imported from (not identity)
    sha256: str | None = None  # of the stored model file (<run>/model/), checked at every load (not identity)
    fingerprint: str | None = None  # of the weights and code: the same model imported twice is one run
    layers: tuple[str, ...] = ()  # named modules tapped for the manifold analysis


# Fields added after run folders existed: at their default they are left out of the identity
# hash, so the runs of earlier versions keep their folder names (and resume).
_HASH_NEUTRAL = (
    ("source",),
    ("store",),
    ("attack", "warmup_epochs"),
    ("data", "train_per_class"),
    ("data", "test_per_class"),
    ("model", "width"),
    ("monitor", "pgd_every"),
)


@dataclass(frozen=True)
class RunConfig:
    name: str = ""  # readable part of the run id (default: dataset-model-method-seed)
    method: str = "st"  # st | at | distill
    seed: int = 0
    epochs: int = 30
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    checkpoint_epochs: tuple[int, ...] = ()  # epochs whose checkpoint is kept
    checkpoint_every: int = 0  # also keep every n-th epoch (0: none); the last epoch is always kept
    device: str = "auto"  # auto | cpu | cuda | cuda:N (not part of the run's identity)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def objective(self) -> str:
        return METHODS[self.method]

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        tag = {"standard": "st", "pgd-at": "at", "distill": "distill", "imported": "imported"}[self.objective]
        return f"{self.data.name}-{self.model.name}-{tag}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return from_plain(cls, d, "")

    @classmethod
    def from_yaml(cls, text: str) -> RunConfig:
        return cls.from_dict(yaml.safe_load(text) or {})

    def identity_hash(self) -> str:
        d = self.to_dict()
        d.pop("device", None)
        # not identity: a re-saved TorchScript file differs in bytes, not in model; a moved file
        # or another working folder is the same model
        provenance = ("sha256", "file", "root")
        source = to_plain(SourceConfig())
        for key in provenance:
            d["source"].pop(key, None)
            source.pop(key)
        defaults = {
            "source": source,
            "attack": to_plain(AttackConfig()),
            "data": to_plain(DataConfig()),
            "model": to_plain(ModelConfig()),
            "store": to_plain(StoreConfig()),
            "monitor": to_plain(MonitorConfig()),
        }
        for path in _HASH_NEUTRAL:
            node, ref = d, defaults
            for p in path[:-1]:
                node, ref = node[p], ref[p]
            if node.get(path[-1]) == ref[path[-1]]:
                node.pop(path[-1])
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def run_id(self) -> str:
        return f"{self.display_name}-{self.identity_hash()}"

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> RunConfig:
        return apply_overrides(self, overrides)


DATASETS = ("digits", "cifar10", "cifar100", "idx", "npz")  # the loaders of `logitscope.data`
MODEL_NAMES = ("resnet18", "preact-resnet18", "small-cnn", "mnist-cnn")  # `logitscope.models.MODELS`' keys
WIDTH_MODELS = ("resnet18", "preact-resnet18")  # the models that take model.width


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(cfg: RunConfig) -> None:
    def bad(key: str, value: Any, expected: str) -> None:
        raise ConfigError(f"{key}={value!r}: expected {expected}")

    if cfg.method not in METHODS:
        bad("method", cfg.method, f"one of {', '.join(sorted(set(METHODS)))}")
    if cfg.data.name not in DATASETS:
        bad("data.name", cfg.data.name, f"one of {', '.join(DATASETS)}")
    imported = cfg.objective == "imported"
    if imported != (cfg.model.name == "imported"):
        bad("model.name", cfg.model.name, "imported exactly when method is imported")
    if not imported and cfg.model.name not in MODEL_NAMES:
        bad("model.name", cfg.model.name, f"one of {', '.join(MODEL_NAMES)}")
    if imported and cfg.source.kind not in ("torchscript", "factory"):
        bad("source.kind", cfg.source.kind, "torchscript or factory for an imported model")
    if cfg.source.kind == "factory" and not cfg.source.factory:
        bad("source.factory", cfg.source.factory, "module:function for an imported factory model")
    if cfg.model.width is not None and cfg.model.name not in WIDTH_MODELS:
        bad("model.width", cfg.model.width, f"null for {cfg.model.name} (a width applies to {', '.join(WIDTH_MODELS)})")
    if cfg.model.width is not None and not (_whole(cfg.model.width) and cfg.model.width >= 1):
        bad("model.width", cfg.model.width, "a positive number of channels (the paper's ResNet-18: 64) or null")
    for key in ("train_per_class", "test_per_class"):
        n = getattr(cfg.data, key)
        if n is not None and not (_whole(n) and n >= 1):
            bad(f"data.{key}", n, "a positive number of images per class, or null for all")
    if cfg.store.logits_dtype not in LOGITS_DTYPES:
        bad("store.logits_dtype", cfg.store.logits_dtype, " or ".join(LOGITS_DTYPES))
    if not (_whole(cfg.monitor.pgd_every) and cfg.monitor.pgd_every >= 1):
        bad("monitor.pgd_every", cfg.monitor.pgd_every, "a positive number of epochs (1: every epoch)")
    if not (_whole(cfg.store.logits_every) and cfg.store.logits_every >= 1):
        bad("store.logits_every", cfg.store.logits_every, "a positive number of epochs (1: every epoch)")
    if cfg.attack.warmup_epochs < 0:
        bad("attack.warmup_epochs", cfg.attack.warmup_epochs, "0 (off) or a positive number of epochs")
    if cfg.epochs < 1:
        bad("epochs", cfg.epochs, "at least 1")
    if cfg.optim.batch_size < 1:
        bad("optim.batch_size", cfg.optim.batch_size, "at least 1")
    if cfg.optim.lr <= 0:
        bad("optim.lr", cfg.optim.lr, "a positive learning rate")
    if cfg.optim.grad_clip is not None and not 0 < cfg.optim.grad_clip < math.inf:
        bad("optim.grad_clip", cfg.optim.grad_clip, "null (no clipping) or a positive, finite gradient norm")
    if not 0.0 <= cfg.attack.eps <= 1.0:
        bad("attack.eps", cfg.attack.eps, "a value in [0, 1] (images are scaled to [0, 1])")
    if not 0.0 <= cfg.attack.step_size <= 1.0:
        bad("attack.step_size", cfg.attack.step_size, "a value in [0, 1]")
    if cfg.attack.steps < 0:
        bad("attack.steps", cfg.attack.steps, "a non-negative number of steps")
    if cfg.attack.bn_mode not in BN_MODES:
        bad("attack.bn_mode", cfg.attack.bn_mode, "train or eval")
    if cfg.data.augment_pad < 0:
        bad("data.augment_pad", cfg.data.augment_pad, "a non-negative number of pixels")
    if cfg.checkpoint_every < 0:
        bad("checkpoint_every", cfg.checkpoint_every, "0 (off) or a positive number of epochs")
    for e in cfg.checkpoint_epochs:
        if not 1 <= e <= cfg.epochs:
            bad("checkpoint_epochs", e, f"epochs between 1 and {cfg.epochs}")
    d = cfg.distill
    if cfg.objective == "distill" and not d.teacher:
        bad("distill.teacher", d.teacher, "a teacher run folder for method distill")
    if d.loss not in ("l1", "kl", "mse"):
        bad("distill.loss", d.loss, "l1, kl or mse")
    if d.passes < 1:
        bad("distill.passes", d.passes, "at least 1 augmented pass")
    if d.bn_mode not in ("eval", "batch"):
        bad("distill.bn_mode", d.bn_mode, "eval or batch")
    if cfg.perf.precision not in ("fp32", "bf16"):
        bad("perf.precision", cfg.perf.precision, "fp32 or bf16")
    if d.temperature <= 0:
        bad("distill.temperature", d.temperature, "a positive temperature")


def to_plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [to_plain(v) for v in obj]
    return obj


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # e.g. ``int | str``: the first type the value parses as
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        return _coerce(value, inner[-1], key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return dict(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return tuple(_coerce(v, args[0], key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        try:
            f = parse_float(value)
        except ConfigError as exc:
            raise ConfigError(f"{key}={value!r}: expected an integer") from exc
        if f != int(f):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected a number")
        try:
            return parse_float(value)
        except ConfigError as exc:
            raise ConfigError(f"{key}={value!r}: expected a number (e.g. 0.03 or 8/255)") from exc
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return str(value)
    return value


def from_plain(cls: type, d: dict[str, Any], prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]!r}: expected one of {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in d.items():
        tp = hints[name]
        key = f"{prefix}{name}"
        section = _dataclass_in(tp)
        if section is None:
            kwargs[name] = _coerce(value, tp, key)
        elif value is None and section is not tp:
            kwargs[name] = None  # an optional section left empty (e.g. a preset's crosscheck: null)
        else:
            kwargs[name] = from_plain(section, value or {}, f"{key}.")
    missing = [f.name for f in fields(cls) if f.name not in kwargs and f.default is f.default_factory is MISSING]
    if missing:
        raise ConfigError(f"missing key {prefix}{missing[0]!r}: expected {', '.join(f.name for f in fields(cls))}")
    return cls(**kwargs)


def _dataclass_in(tp: Any) -> type | None:
    """``tp`` if it is a dataclass, the dataclass of ``Section | None``, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
    return found[0] if found else None


def apply_overrides(cfg: Any, overrides: dict[str, Any] | list[str]) -> Any:
    """Return ``cfg`` with dotted-path overrides applied (``["optim.lr=0.1", ...]`` or a dict)."""
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=0.1")
            k, v = item.split("=", 1)
            pairs[k.strip()] = v.strip()  # parsed to the field's type below
        overrides = pairs
    d = to_plain(cfg)
    for key, value in overrides.items():
        node = d
        parts = key.split(".")
        for i, p in enumerate(parts):
            if not isinstance(node, dict) or p not in node:
                where = ".".join(parts[:i]) or "the config"
                options = ", ".join(sorted(node)) if isinstance(node, dict) else "no sub-keys"
                raise ConfigError(f"unknown key {key!r}: {where} has {options}")
            if i == len(parts) - 1:
                node[p] = value
            else:
                node = node[p]
    return from_plain(type(cfg), d, "")


def replace_nested(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that accepts dotted keys (``replace_nested(c, **{"optim.lr": 0.1})``)."""
    flat = {k: v for k, v in changes.items() if "." not in k}
    nested = {k: v for k, v in changes.items() if "." in k}
    out = replace(cfg, **flat) if flat else cfg
    return apply_overrides(out, nested) if nested else out


# Named run configurations: the paper's (appendix A.2) and the digits default.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "epochs": 30,
        "data": {"name": "digits"},
        "model": {"name": "small-cnn"},
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64},
        "attack": {"eps": 0.2, "step_size": 0.05, "steps": 7},
        "monitor": {"pgd_n": 397, "pgd_steps": 20},
    },
    "cifar10-paper": {
        "epochs": 200,
        "data": {"name": "cifar10", "augment_pad": 4, "augment_flip": True},
        "model": {"name": "resnet18"},
        "optim": {
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 2e-4,
            "batch_size": 128,
            "milestones": [100, 150],
            "gamma": 0.1,
        },
        "attack": {"eps": 8 / 255, "step_size": 2 / 255, "steps": 10},
        "monitor": {"pgd_n": 1000, "pgd_steps": 10},
        "checkpoint_every": 20,
        "perf": {"precision": "bf16", "channels_last": True, "compile": True},
    },
}
RUN_PRESETS["cifar100-paper"] = {
    **RUN_PRESETS["cifar10-paper"],
    "data": {"name": "cifar100", "augment_pad": 4, "augment_flip": True},
}
# MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST: data.data_dir, --data-dir), 28x28.
# PGD-AT at MNIST's usual eps 0.3 (Madry et al., 2018) with the paper's schedule shape: the lr
# decays 10x at 50% and 75% of training (appendix A.2: epochs 100 and 150 of 200). Measured on
# the tests' MNIST-like files (tests/idx_digits.py: sklearn's digits at 28x28 with MNIST's
# contrast, 1,400 training images), seed 0, PGD-20 on the 397 test images at the end:
# - attack.warmup_epochs 10 (eps ramps from eps/10 to eps over the first third of training,
#   the usual practice): the model first learns the digits (clean test 94% by epoch 3), then
#   keeps learning as eps grows: 68% PGD-20, 97% clean. At eps 0.3 from the first step a
#   model can sit at chance (loss 2.30, every image one class); training warns then.
# - batch 32: 44 steps per epoch on those 1,400 images; at batch 128 (11 steps per epoch, 20
#   epochs, 5 of warm-up) the same recipe reached 16% PGD-20: too few steps, not a bad eps.
#   On MNIST's 60,000 images an epoch is 1,875 steps, and the recipe only has more room.
# - lr 0.01 with momentum 0.9 (TRADES' MNIST setting; 0.05 made the monitor's PGD accuracy
#   swing 8-65% between epochs), weight decay 5e-4, 10 PGD steps of 0.05 (a path of 0.5 > eps).
# - mnist-cnn: thousands of images/s for standard training on 2 CPU cores (models/small.py);
#   twice its width made no difference here (PGD-20 9% against 8% on grey, uncontrasted digits).
# Cost on 2 CPU cores, MNIST: about 300-800 images/s for PGD-AT, so about an hour for 30 epochs.
RUN_PRESETS["mnist"] = {
    "epochs": 30,
    "data": {"name": "idx"},
    "model": {"name": "mnist-cnn"},
    "optim": {
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 32,
        "milestones": [15, 23],
        "gamma": 0.1,
    },
    "attack": {"eps": 0.3, "step_size": 0.05, "steps": 10, "warmup_epochs": 10},
    "monitor": {"pgd_n": 1000, "pgd_steps": 20},
    "checkpoint_every": 5,
}


# The run preset of each dataset: `train --dataset` without --preset, and an imported model's
# attack (its eps: what `evaluate` uses by default) and monitor settings.
DATASET_RUN_PRESET = {"digits": "digits", "cifar10": "cifar10-paper", "cifar100": "cifar100-paper", "idx": "mnist"}


def run_preset(name: str, /, **overrides: Any) -> RunConfig:
    if name not in RUN_PRESETS:
        raise ConfigError(f"unknown run preset {name!r}: expected one of {', '.join(RUN_PRESETS)}")
    base = RunConfig.from_dict(json.loads(json.dumps(RUN_PRESETS[name])))
    return apply_overrides(base, overrides) if overrides else base


# -- reproduce presets: one frozen dataclass per section ------------------------------------
# A preset file (`logitscope.plan.presets`) is read into a `Preset`, every value checked
# against its field's type (strictly: a preset is YAML, whose values are typed; command-line
# overrides are parsed to a key's type before they get here). Values are kept as written, so
# the plan's stage parameters (and cache keys) are what the file says.


@dataclass(frozen=True)
class TrainSection:
    """ST and AT runs: a run preset (`RUN_PRESETS`) plus any RunConfig field (``set``)."""

    preset: str
    epochs: int
    checkpoint_epochs: tuple[int, ...] = ()
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateSection:
    """The robustness protocol of every model (`ProtocolConfig`'s paper protocol settings)."""

    eps: float
    n_iter: int
    n_restarts: int
    n: int | None
    batch_size: int

    def protocol_settings(self) -> dict[str, Any]:
        """The section as every evaluation stage takes it: its parameters (the stage rebuilds
        the section from them: `logitscope.plan.stages.evaluate_stage`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def protocol_config(self, protocol: str = "paper") -> ProtocolConfig:
        """The protocol's settings of this section (`evaluate` takes ``n`` beside them)."""
        return ProtocolConfig(
            protocol=protocol, eps=self.eps, n_iter=self.n_iter, n_restarts=self.n_restarts, batch_size=self.batch_size
        )


@dataclass(frozen=True)
class TeacherSection:
    """The AT teacher checkpoint: a fixed epoch, or ``rule`` over ``epochs`` (`TEACHER_RULES`;
    ``natural_tolerance`` is the trade-off rule's and only that one's)."""

    epochs: tuple[int, ...]
    fixed_epoch: int | None = None
    rule: str = "robustness"
    natural_tolerance: float | None = None


# The teacher rules (`logitscope.plan.stages.choose_teacher`): "robustness", section 4.2's "the
# teacher checkpoint that produced maximum robustness" (near-ties, within two standard errors,
# to the higher natural accuracy: A.3's trade-off); "trade-off", the highest adversarial
# accuracy among epochs whose natural accuracy is within ``natural_tolerance`` of the best.
TEACHER_RULES: tuple[str, ...] = ("robustness", "trade-off")


@dataclass(frozen=True)
class DistillSection:
    """The students: schedule, seeds, fix-k values, loss, the A.6/A.7 sweep's seeds."""

    epochs: int
    seeds: tuple[int, ...]
    ks: tuple[int, ...]
    loss: str
    temperature: float
    passes: int
    sweep_seeds: tuple[int, ...]
    batched: str = "auto"
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisSection:
    """The epoch of the image-level analyses: an epoch, null (the last) or "teacher"."""

    epoch: int | str | None


@dataclass(frozen=True)
class ManifoldsSection:
    """Figure 5 and A.8: P exemplars, M points per ball, MFTMA and simulated capacity."""

    p: int
    m: int
    eps: float | None
    n_t: int
    max_features: int
    simulate: bool = True
    n_dichotomies: int = 50
    simulate_models: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TheorySection:
    classes: int


@dataclass(frozen=True)
class CrosscheckSection:
    """Section 3's check of the protocol against other attacks, on the first ``n`` test images."""

    models: tuple[str, ...]
    n: int
    protocols: tuple[str, ...]


@dataclass(frozen=True)
class Preset:
    """A reproduce preset (``logitscope reproduce --preset``): the whole paper's plan."""

    name: str
    seeds: tuple[int, ...]
    train: TrainSection
    evaluate: EvaluateSection
    teacher: TeacherSection
    distill: DistillSection
    analysis: AnalysisSection
    manifolds: ManifoldsSection
    theory: TheorySection
    crosscheck: CrosscheckSection | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> Preset:
        """The preset of a plain mapping, every value type-checked (one-line `ConfigError`)."""
        return checked(cls, d, "", where)


def _kind(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind(a) for a in args)
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "null",
        tuple: "a list",
        dict: "a mapping",
    }.get(origin or tp, getattr(tp, "__name__", str(tp)))


def _fits(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def checked(cls: type, d: Any, prefix: str = "", where: str = "") -> Any:
    """``cls`` built from the mapping ``d``, each value of its field's type (strictly: no
    parsing; lists become tuples, numbers stay as written). Nested dataclass fields are built
    the same way; ``where`` names the source in errors."""
    lead = f"preset {where}: " if where else ""
    if not isinstance(d, dict):
        raise ConfigError(f"{lead}{prefix.rstrip('.') or 'preset'}={d!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"{lead}unknown key {prefix}{unknown[0]}: expected one of {', '.join(names)}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in d:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{lead}missing key {key}")
            continue
        value, tp = d[f.name], hints[f.name]
        section = _dataclass_in(tp)
        if section is not None and value is not None:
            kwargs[f.name] = checked(section, value, f"{key}.", where)
        elif _fits(value, tp):
            kwargs[f.name] = (
                tuple(value)
                if typing.get_origin(tp) is tuple
                or (isinstance(value, list) and any(typing.get_origin(a) is tuple for a in typing.get_args(tp)))
                else value
            )
        else:
            raise ConfigError(f"{lead}{key}={value!r}: expected {_kind(tp)}")
    return cls(**kwargs)


# -- the robustness protocol (section 3): its settings, used by every evaluation ------------

PROTOCOLS: tuple[str, ...] = ("paper", "autoattack", "odi")
NORMS: tuple[str, ...] = ("Linf", "L2")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
MEMORY_FORMATS: tuple[str, ...] = ("auto", "channels_last", "contiguous")


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps={eps}: expected a value in [0, 1] (images are scaled to [0, 1])")
    return eps


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of a robustness evaluation.

    Attributes:
        protocol: "paper" (APGD-CE then APGD-DLR), "autoattack" (full standard AutoAttack
            via ``pyautoattack``) or "odi" (ODI-PGD).
        eps: radius of the threat model, in the [0, 1] pixel scale (8/255 for CIFAR).
        norm: "Linf" or "L2" ("odi" is L-inf only).
        n_iter: APGD iterations per run (the reference's ``n_iter``).
        n_restarts: APGD restarts (runs on the images not yet broken).
        batch_size: images per batch; results do not depend on it (but for "autoattack").
        seed: non-negative integer fixing every random start.
        odi_restarts, odi_steps, odi_step_size: ODI restarts, output-diversification steps
            and their size (None: eps), as Tashiro et al. (20, 2, eps).
        odi_pgd_steps, odi_pgd_step_size: PGD steps on the margin loss per restart and their
            size (None: eps / 4), as Tashiro et al. (20, 2/255 at 8/255).
        allow_randomized: evaluate a randomized model (two passes differ) instead of refusing.
        precision: "fp32", or "bf16" (attack passes under autocast; the recorded logits and
            verdicts are recomputed in fp32 at the returned points).
        memory_format: layout of images and conv weights during the evaluation:
            "channels_last", "contiguous", or "auto" (channels-last on CPU, where oneDNN's
            convolutions and pooling run about 20% faster in it, and with bf16 on a GPU, where
            tensor cores want it; contiguous otherwise). Changes only rounding, not the method.
    """

    protocol: str = "paper"
    eps: float = 8 / 255
    norm: str = "Linf"
    n_iter: int = 100
    n_restarts: int = 1
    batch_size: int = 500
    seed: int = 0
    odi_restarts: int = 20
    odi_steps: int = 2
    odi_step_size: float | None = None
    odi_pgd_steps: int = 20
    odi_pgd_step_size: float | None = None
    allow_randomized: bool = False
    precision: str = "fp32"
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        check_eps(self.eps)
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r}: expected one of {', '.join(NORMS)}")
        if self.protocol == "odi" and self.norm != "Linf":
            raise ValueError(f"protocol='odi' with norm={self.norm!r}: ODI-PGD is L-inf only")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format={self.memory_format!r}: expected one of {', '.join(MEMORY_FORMATS)}")
        if self.protocol == "autoattack" and self.precision != "fp32":
            raise ValueError("protocol='autoattack' runs the reference package in fp32 only")
        for name in ("n_iter", "n_restarts", "batch_size", "odi_restarts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected a positive integer")
        for name in ("seed", "odi_steps", "odi_pgd_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a non-negative integer")
        for name in ("odi_step_size", "odi_pgd_step_size"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}={value}: expected a positive step size or None")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProtocolConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise KeyError(f"unknown protocol setting(s) {sorted(unknown)}")
        return cls(**d)

    def result_settings(self) -> dict[str, Any]:
        """The settings that determine the per-sample results (a resumed run must match)."""
        d = self.to_dict()
        del d["allow_randomized"]
        if self.protocol != "autoattack":
            del d["batch_size"]
        return d
