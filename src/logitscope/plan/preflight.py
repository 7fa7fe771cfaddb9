"""The store a reproduce plan will write, projected before any work, against the free disk.

Every training and distillation run keeps the float32 logits of every image of every split
(train, validation, test) at every epoch, its labels, the checkpoints it keeps (the epochs of
``checkpoint_epochs`` and ``checkpoint_every`` and the last; each the model's state_dict) and
``last.pt`` (the state_dict and SGD's momentum buffers, one tensor per parameter). For
cifar10-paper that is 200 x 60,000 x 10 x 4 B = 480 MB of logits per run (4.8 GB for
CIFAR-100) and 0.54 GB of checkpoints (10 kept, every 20th epoch, of 44.7 MB, and
last.pt). The students of a plan appear only once the teacher is chosen; the projection
counts them by planning the graph as if the last teacher epoch were chosen (the sizes do
not depend on which epoch it is).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from logitscope.config import DataConfig, RunConfig
from logitscope.plan.cost import (
    BALL_STEPS,
    FORWARD,
    DataShape,
    KindCost,
    PaperRates,
    build_for,
    cifar_shape,
    describe_costs,
    eval_passes,
    measure_rate,
    mftma_seconds,
    model_macs,
    paper_rates,
    run_passes,
)

if TYPE_CHECKING:
    from logitscope.plan.dag import Plan

FLOAT = 4  # bytes of a float32 weight
LABEL = 8  # bytes of an int64 label


@dataclass(frozen=True)
class StoreProjection:
    runs: int
    logits_bytes: int
    checkpoint_bytes: int
    existing_bytes: int  # already under out/runs (finished or partial runs)
    float16_logits_bytes: int = 0  # the logits with store.logits_dtype float16 in every run
    every5_logits_bytes: int = 0  # ... with store.logits_every 5
    lean_checkpoint_bytes: int = 0  # the checkpoints with the students keeping only their last

    @property
    def total_bytes(self) -> int:
        return self.logits_bytes + self.checkpoint_bytes

    @property
    def needed_bytes(self) -> int:
        return max(0, self.total_bytes - self.existing_bytes)

    def describe(self) -> str:
        return (
            f"store: about {gb(self.total_bytes)} for {self.runs} runs (logits of every image at every epoch "
            f"{gb(self.logits_bytes)}, checkpoints {gb(self.checkpoint_bytes)}); {gb(self.existing_bytes)} already "
            f"written, {gb(self.needed_bytes)} to write"
        )

    def advice(self) -> str:
        """What a user can do about a large store (empty when it is under 1 GB)."""
        lines = []
        if self.logits_bytes >= 10**9:
            lines.append(
                f"  to shrink the logits (train.set and distill.set): store.logits_dtype: float16 stores them in "
                f"{gb(self.float16_logits_bytes)} (rounded to 11 significant bits; read back as float32), "
                f"store.logits_every: 5 in {gb(self.every5_logits_bytes)} (every 5th epoch, and always the "
                "checkpoint epochs and the last, which the teachers, students and analyses are taken at; the "
                "curves over epochs use the stored epochs)"
            )
        if self.checkpoint_bytes >= 10**9 and self.lean_checkpoint_bytes < self.checkpoint_bytes:
            lines.append(
                f"  to shrink the checkpoints: distill.set: {{checkpoint_every: 0}} keeps only each student's last "
                f"(the one its evaluations and the manifolds read): {gb(self.lean_checkpoint_bytes)}"
            )
        return "\n".join(lines)


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def run_store_bytes(cfg: RunConfig, n_images: int, n_classes: int, numel: int, n_params: int) -> tuple[int, int]:
    """(logits and labels, checkpoints) bytes of one run of ``n_images`` images over all splits."""
    from logitscope.training.schedules import should_checkpoint, stores_logits

    stored = sum(stores_logits(cfg, e) for e in range(1, cfg.epochs + 1))
    width = np.dtype(cfg.store.logits_dtype).itemsize
    logits = stored * n_images * n_classes * width + n_images * LABEL
    kept = sum(should_checkpoint(cfg, e) for e in range(1, cfg.epochs + 1))
    return logits, (kept + 1) * numel * FLOAT + n_params * FLOAT  # + last.pt: weights and momentum


def run_configs(plan: Plan) -> dict[str, RunConfig]:
    """The run config of every training and distillation stage of ``plan`` (a batch stage's
    runs are each their own stage's as well)."""
    return {n: RunConfig.from_dict(s.params["config"]) for n, s in plan.stages.items() if "config" in s.params}


def project_store(preset: dict[str, Any], out: Path, data_dir: str | None, data: Any) -> StoreProjection:
    """The projection of the whole plan of ``preset`` (students included) on ``data`` (a
    :class:`~logitscope.data.Dataset` or a :class:`~logitscope.plan.cost.DataShape`)."""
    from logitscope.plan.graph import build_plan

    plan = build_plan(preset, out, data_dir, assume_teacher=preset["teacher"]["epochs"][-1])
    return store_of(plan, data if isinstance(data, DataShape) else DataShape.of(data), out)


def store_of(plan: Plan, shape: DataShape, out: Path) -> StoreProjection:
    sizes: dict[str, tuple[int, int]] = {}
    totals = np.zeros(6, dtype=np.int64)  # logits, checkpoints, runs, float16 logits, every-5 logits, lean ckpts
    for cfg in run_configs(plan).values():
        key = f"{cfg.model.name}:{cfg.model.width}"
        if key not in sizes:
            sizes[key] = _sizes(cfg.model.name, shape.n_classes, shape.image_shape[0], cfg.model.width)
        numel, n_params = sizes[key]
        logits, ckpt = run_store_bytes(cfg, shape.n_images, shape.n_classes, numel, n_params)
        half = replace(cfg, store=replace(cfg.store, logits_dtype="float16"))
        every5 = replace(cfg, store=replace(cfg.store, logits_every=5))
        lean = replace(cfg, checkpoint_every=0, checkpoint_epochs=()) if cfg.objective == "distill" else cfg
        totals += [
            logits,
            ckpt,
            1,
            run_store_bytes(half, shape.n_images, shape.n_classes, numel, n_params)[0],
            run_store_bytes(every5, shape.n_images, shape.n_classes, numel, n_params)[0],
            run_store_bytes(lean, shape.n_images, shape.n_classes, numel, n_params)[1],
        ]
    logits, ckpt, runs, half, every5, lean_ckpt = (int(v) for v in totals)
    return StoreProjection(runs, logits, ckpt, _du(out / "runs"), half, every5, lean_ckpt)


def _sizes(model: str, n_classes: int, channels: int, width: int | None) -> tuple[int, int]:
    from logitscope.models import build_model

    m = build_model(model, n_classes, channels, [0.0] * channels, [1.0] * channels, width)
    return sum(t.numel() for t in m.state_dict().values()), sum(p.numel() for p in m.parameters())


def _du(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def free_bytes(out: Path) -> int:
    """Free bytes on the file system that holds (or will hold) ``out``."""
    probe = Path(out).resolve()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_disk(projection: StoreProjection, out: Path) -> None:
    """Refuse, in one line, a plan whose store does not fit in the free disk under ``out``."""
    free = free_bytes(out)
    if projection.needed_bytes > free:
        raise ValueError(
            f"--out {out}: the plan writes about {gb(projection.needed_bytes)} more ({projection.runs} runs' logits "
            f"and checkpoints) and {gb(free)} is free there: expected room for it; choose another --out, free space, "
            "or shrink the store (store.logits_dtype: float16 or store.logits_every: N in train.set and distill.set, "
            "fewer epochs or seeds, checkpoint_every: 0)"
        )


def data_line(cfg: DataConfig, shape: DataShape, problem: str | None = None) -> str:
    """Where the plan's data comes from and that it was checked (or why it cannot be read)."""
    sizes = (
        f"{shape.n_train:,} training, {shape.n_val:,} validation, {shape.n_test:,} test images, "
        f"{shape.n_classes} classes, {'x'.join(map(str, shape.image_shape))}"
    )
    if problem is not None:
        return f"data: {cfg.name} NOT READY: {problem}; the projection below uses its published sizes: {sizes}"
    if cfg.name in ("cifar10", "cifar100"):
        from logitscope.data.cifar import SPECS

        spec = SPECS[cfg.name]
        root = Path(cfg.data_dir or ".")
        source = root if root.is_file() else root / spec.tarball
        how = f"md5 {spec.tarball_md5} as published" if source.is_file() else "each batch file's published md5"
        where = source if source.is_file() else root / spec.folder
        return f"data: {cfg.name} from {where}: {how}, checked; {sizes}"
    where = {"digits": "scikit-learn's embedded digits"}.get(cfg.name, f"{cfg.name} files in {cfg.data_dir}")
    return f"data: {where}: {sizes}"


def device_line(cfg: RunConfig) -> str:
    """The device the stages will run on and the precision switches of its runs."""
    import torch

    from logitscope.runtime import resolve_device

    device = resolve_device(cfg.device)
    what = str(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        what += f" ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    elif cfg.device == "auto":
        what += " (no CUDA device on this machine)"
    perf = cfg.perf
    switches = [
        "bf16 autocast" if perf.precision == "bf16" else "fp32",
        *(["channels_last"] if perf.channels_last else []),
        *(["torch.compile (each run compiles first: minutes on a CPU)"] if perf.compile else []),
    ]
    return f"device: {what}; runs in {', '.join(switches)}"


@dataclass(frozen=True)
class ManifoldMemory:
    """Peak memory of the manifold stage, per model (models run one after another), in bytes.

    ``projections``: the seeded float64 Gaussian projection of every layer wider than
    ``max_features`` (N x max_features each, all held while the points stream through);
    ``batch``: one batch of 512 points' float32 taps at every layer, and one layer's float64 copy;
    ``activations``: every layer's (P, min(N, max_features), M) float64 result, twice (the
    batches and their concatenation); ``attack``: PGD on the P exemplars (every tap kept for the
    backward pass, about three times); ``mftma``: about four copies of the widest layer's result.
    """

    layers: int
    p: int
    m: int
    max_features: int
    projections: int
    batch: int
    activations: int
    attack: int
    mftma: int

    @property
    def total(self) -> int:
        return self.projections + self.batch + self.activations + self.attack + self.mftma

    def describe(self) -> str:
        parts = {
            "random projections (float64)": self.projections,
            "layer activations": self.activations,
            "a batch's taps": self.batch,
            "PGD on the exemplars": self.attack,
            "MFTMA": self.mftma,
        }
        detail = ", ".join(f"{k} {gb(v)}" for k, v in parts.items())
        advice = (
            "; a smaller manifolds.max_features shrinks the projections and everything after them"
            if self.projections > self.total / 2
            else ""
        )
        return (
            f"manifolds: peak memory about {gb(self.total)} per model ({self.layers} layers, P={self.p}, M={self.m}, "
            f"max_features={self.max_features}: {detail}){advice}"
        )


def manifold_memory(cfg: RunConfig, shape: DataShape, p: int, m: int, max_features: int) -> ManifoldMemory:
    """:class:`ManifoldMemory` of ``cfg``'s model on ``shape``, from its layer taps' sizes."""
    import torch

    model = build_for(cfg, shape).eval()
    with torch.no_grad():
        taps = model.forward_intermediates(torch.zeros(1, *shape.image_shape))
    dims = [int(np.prod(shape.image_shape))] + [int(t[0].numel()) for t in taps.values()]
    kept = [min(d, max_features) for d in dims]
    batch = min(512, p * m)
    f64 = 8
    return ManifoldMemory(
        layers=len(dims),
        p=p,
        m=m,
        max_features=max_features,
        projections=sum(d * max_features * f64 for d in dims if d > max_features),
        batch=batch * sum(dims) * FLOAT + batch * max(dims) * f64,
        activations=2 * p * m * sum(kept) * f64,
        attack=3 * p * sum(dims) * FLOAT,
        mftma=4 * p * m * max(kept) * f64,
    )


def cost_of(plan: Plan, shape: DataShape, rate: float, paper: PaperRates) -> list[KindCost]:
    """Image passes and hours per stage kind of ``plan`` (plan.cost's module docstring)."""
    configs = run_configs(plan)
    macs: dict[str, int] = {}

    def macs_of(cfg: RunConfig) -> int:
        key = f"{cfg.model.name}:{cfg.model.width}"
        if key not in macs:
            macs[key] = model_macs(build_for(cfg, shape), shape.image_shape)
        return macs[key]

    at = next(c for c in configs.values() if c.objective == "pgd-at")
    rows: dict[str, list[float]] = {}  # kind -> [stages, passes, paper hours, local hours, cpu hours]
    for name, stage in plan.stages.items():
        cpu = 0.0
        if name in configs:
            cfg = configs[name]
            kind, passes, paper_kind = stage.kind, run_passes(cfg, shape), cfg.objective
        elif stage.kind == "evaluate":
            cfg, kind, paper_kind = at, "evaluate", "pgd-at"
            passes = eval_passes(stage.params, shape.n_test, shape.n_val)
        elif stage.kind == "manifolds":
            cfg, kind, paper_kind = at, "manifolds", "pgd-at"
            n_models, p, m = len(stage.params["models"]), stage.params["p"], stage.params["m"]
            passes = n_models * p * m * (BALL_STEPS + 2 * FORWARD)
            mem = manifold_memory(at, shape, p, m, stage.params["max_features"])
            n_feat = min(stage.params["max_features"], int(np.prod(shape.image_shape)))
            cpu = n_models * mem.layers * mftma_seconds(p, m, n_feat, stage.params["n_t"]) / 3600
        else:
            continue
        row = rows.setdefault(kind, [0, 0.0, 0.0, 0.0, 0.0])
        row[0] += 1
        row[1] += passes
        row[2] += paper.hours(paper_kind, passes, macs_of(cfg))
        row[3] += passes / rate / 3600
        row[4] += cpu
    return [KindCost(k, int(r[0]), r[1], r[2], r[3], r[4]) for k, r in rows.items()]


@dataclass(frozen=True)
class Preflight:
    """What ``reproduce`` checks and projects before any work, as ``--dry-run`` prints it."""

    lines: tuple[str, ...]
    store: StoreProjection
    problem: str | None  # why the data cannot be read (a dry run only: reproduce refuses)

    def describe(self) -> str:
        return "\n".join(self.lines)


def run_preflight(
    preset: dict[str, Any],
    out: Path,
    data_dir: str | None,
    data: Any | None,
    problem: str | None = None,
    measure: bool = True,
) -> Preflight:
    """The preflight of ``preset``'s plan on ``data`` (None with ``problem``: the published
    sizes of CIFAR stand in). ``measure``: time this machine's rate (a few training steps)."""
    from logitscope.plan.graph import build_plan
    from logitscope.runtime import resolve_device

    plan = build_plan(preset, out, data_dir, assume_teacher=preset["teacher"]["epochs"][-1])
    configs = run_configs(plan)
    at = next(c for c in configs.values() if c.objective == "pgd-at")
    if data is not None:
        shape = DataShape.of(data)
    elif at.data.name in ("cifar10", "cifar100"):
        d = at.data
        shape = cifar_shape(d.name, d.val_per_class, d.train_per_class, d.test_per_class)
    else:
        raise ValueError(problem or f"data {at.data.name}: expected it loaded")
    store = store_of(plan, shape, out)
    free = free_bytes(out)
    lines = [
        data_line(at.data, shape, problem),
        device_line(at),
        f"{store.describe()}; {gb(free)} free under {out}" + (": NOT ENOUGH" if store.needed_bytes > free else ""),
    ]
    if store.advice():
        lines.append(store.advice())
    mf = next((s.params for s in plan.stages.values() if s.kind == "manifolds"), None)
    if mf is not None:
        lines.append(manifold_memory(at, shape, mf["p"], mf["m"], mf["max_features"]).describe())
    device = resolve_device(at.device)
    rate, batch = measure_rate(at, shape, device) if measure else (float("nan"), at.optim.batch_size)
    lines.append(describe_costs(cost_of(plan, shape, rate, paper_rates()), rate, batch, device))
    return Preflight(tuple(lines), store, problem)


__all__ = [
    "ManifoldMemory",
    "Preflight",
    "StoreProjection",
    "check_disk",
    "cost_of",
    "data_line",
    "device_line",
    "free_bytes",
    "manifold_memory",
    "project_store",
    "run_preflight",
    "run_store_bytes",
    "store_of",
]
