"""The bill of a plan before it runs: image passes per stage kind, and hours from measured rates.

Work is counted in *image passes*: one forward and backward pass of one image through the
run's model (a forward pass alone counts :data:`FORWARD` of one). Per stage:

- a training or distillation run: every epoch, each training image once (PGD-AT: once more
  per attack step), the stored logits of every image of every split (forward), and the
  monitor's PGD on its test subset; a student also computes its targets once, ``passes``
  augmented forward passes of the teacher over the training set;
- an evaluation: at most ``2 x n_iter x n_restarts`` passes per image for the paper protocol
  (APGD-CE, then APGD-DLR on the survivors: at most all of them), and the like for the
  cross-checks (AutoAttack's four attacks, ODI-PGD's restarts), so an upper bound;
- the manifold stage: M PGD-10 points in each of P balls per model, then MFTMA and simulated
  capacity on the CPU (projected from the MFTMA benchmark's large case).

Two rates turn passes into hours. The paper's (appendix A.1, table 3: one Titan Xp per run;
CIFAR-10 ResNet-18 for 200 epochs: standard training 1.66 h, adversarial 18 h, distillation
3.83 h), per stage kind, by counting the paper's run of that kind as above; a run of another
model scales by its multiply-accumulates per image against the paper's ResNet-18. And this
machine's: forward and backward passes of the run's model, timed on the run's device at its
precision (eager: a compiled run is faster).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from logitscope.config import RunConfig, run_preset

FORWARD = 1 / 3  # a forward pass costs about a third of a forward and backward pass
PAPER_HOURS = {"standard": 1.66, "pgd-at": 18.0, "distill": 3.83}  # table 3, Titan Xp, CIFAR-10
PAPER_GPU = "Titan Xp"
BALL_STEPS = 10  # PGD steps per manifold point (manifolds.activations.ball_points)
# benchmarks/mftma_speed.py --cases large on the project's 2-core machines: N=5000, P=100, M=50,
# n_t=200 in about 2.8 s; taken as linear in P, M, N and n_t (a rough projection).
MFTMA_REF = {"seconds": 2.8, "p": 100, "m": 50, "n": 5000, "n_t": 200}


@dataclass(frozen=True)
class DataShape:
    """The sizes a projection needs: images per split, classes, image shape."""

    n_train: int
    n_val: int
    n_test: int
    n_classes: int
    image_shape: tuple[int, int, int]

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_val + self.n_test

    @classmethod
    def of(cls, data: Any) -> DataShape:
        """The shape of a loaded :class:`~logitscope.data.Dataset`."""
        shape = tuple(int(v) for v in data.x_train.shape[1:])
        return cls(len(data.y_train), len(data.y_val), len(data.y_test), int(data.n_classes), shape)  # type: ignore[arg-type]


def cifar_shape(
    name: str, val_per_class: int | None = None, train_per_class: int | None = None, test_per_class: int | None = None
) -> DataShape:
    """CIFAR's published sizes after the hold-out and per-class cuts (no tarball needed)."""
    from logitscope.data.cifar import SPECS

    spec = SPECS[name]
    classes = 10 if name == "cifar10" else 100
    val = (spec.val_per_class if val_per_class is None else val_per_class) * classes
    train = 50_000 - val if train_per_class is None else min(train_per_class * classes, 50_000 - val)
    test = 10_000 if test_per_class is None else min(test_per_class * classes, 10_000)
    return DataShape(train, val, test, classes, (3, 32, 32))


def run_passes(cfg: RunConfig, shape: DataShape) -> float:
    """Image passes of one training or distillation run (module docstring): training every
    epoch, the logit snapshot on the epochs that take one, the PGD monitor on its epochs."""
    from logitscope.training.schedules import monitors_pgd, takes_snapshot

    attack = cfg.attack.steps if cfg.objective == "pgd-at" else 0
    epochs = range(1, cfg.epochs + 1)
    monitor = min(cfg.monitor.pgd_n, shape.n_test) * (cfg.monitor.pgd_steps + FORWARD)
    snapshots = sum(takes_snapshot(cfg, e) for e in epochs) * shape.n_images * FORWARD
    monitors = sum(monitors_pgd(cfg, e) for e in epochs) * monitor
    targets = cfg.distill.passes * shape.n_train * FORWARD if cfg.objective == "distill" else 0.0
    return cfg.epochs * shape.n_train * (1 + attack) + snapshots + monitors + targets


def eval_passes(params: dict[str, Any], n_test: int, n_val: int) -> float:
    """At most this many image passes for one evaluation stage (every image survives)."""
    from logitscope.config import ProtocolConfig

    n = n_val if params.get("split") == "val" else n_test
    n = n if params.get("n") is None else min(int(params["n"]), n)
    protocol = params.get("protocol", "paper")
    if protocol == "paper":
        per = 2 * params["n_iter"] * params["n_restarts"]
    elif protocol == "odi":
        d = ProtocolConfig()
        per = d.odi_restarts * (d.odi_steps + d.odi_pgd_steps)
    else:  # standard AutoAttack: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries)
        per = 100 + 9 * 100 + 9 * 100 + 5000 * FORWARD
    return n * (per + FORWARD)


def model_macs(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image's forward pass through the convolutions and linears."""
    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features * (out.numel() // mod.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *image_shape))
    finally:
        for h in handles:
            h.remove()
    return total


def build_for(cfg: RunConfig, shape: DataShape) -> nn.Module:
    """A freshly initialised model of ``cfg``'s architecture for ``shape`` (weights irrelevant)."""
    from logitscope.models import build_model

    c = shape.image_shape[0]
    return build_model(cfg.model.name, shape.n_classes, c, [0.0] * c, [1.0] * c, cfg.model.width)


@dataclass(frozen=True)
class PaperRates:
    """Image passes per second of a Titan Xp, per stage kind, from table 3, in units of the
    paper's ResNet-18 on CIFAR-10."""

    per_kind: dict[str, float]
    macs: int  # of the paper's ResNet-18 on one 32x32 image

    @classmethod
    def from_table3(cls) -> PaperRates:
        shape = cifar_shape("cifar10")
        st = run_preset("cifar10-paper")
        runs = {
            "standard": st,
            "pgd-at": run_preset("cifar10-paper", method="at"),
            "distill": run_preset("cifar10-paper", method="distill", **{"distill.teacher": "at", "distill.passes": 8}),
        }
        rates = {k: run_passes(cfg, shape) / (PAPER_HOURS[k] * 3600) for k, cfg in runs.items()}
        return cls(rates, model_macs(build_for(st, shape), shape.image_shape))

    def hours(self, kind: str, passes: float, macs: int) -> float:
        """Titan Xp hours of ``passes`` of a model of ``macs`` for a stage of ``kind``."""
        return passes * macs / self.macs / self.per_kind[kind] / 3600


@functools.cache
def paper_rates() -> PaperRates:
    """:meth:`PaperRates.from_table3`, computed once per process."""
    return PaperRates.from_table3()


def measure_rate(cfg: RunConfig, shape: DataShape, device: torch.device, seconds: float = 1.0) -> tuple[float, int]:
    """(image passes per second, batch size) of ``cfg``'s model on ``device``: SGD steps of
    forward and backward at the run's batch size (at most 32 on a CPU), precision and memory
    format, eager, after two warm-up steps, for about ``seconds`` (at least two steps)."""
    from logitscope.training.perf import autocast, to_format

    batch = cfg.optim.batch_size if device.type == "cuda" else min(cfg.optim.batch_size, 32)
    key = (
        cfg.model,
        cfg.perf.precision,
        cfg.perf.channels_last,
        shape.image_shape,
        shape.n_classes,
        str(device),
        batch,
    )
    if key in _MEASURED:  # once per process: a plan's runs share their model
        return _MEASURED[key], batch
    model = build_for(cfg, shape).to(device).train()
    if cfg.perf.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x = to_format(torch.rand(batch, *shape.image_shape, generator=gen).to(device), cfg.perf)
    y = torch.randint(0, shape.n_classes, (batch,), generator=gen).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(cfg.perf, device):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    step()
    steps, t0 = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    _MEASURED[key] = steps * batch / max(time.perf_counter() - t0, 1e-9)
    return _MEASURED[key], batch


_MEASURED: dict[tuple[Any, ...], float] = {}


def mftma_seconds(p: int, m: int, n: int, n_t: int) -> float:
    """Rough CPU seconds of one MFTMA call (linear scaling of the benchmark's large case)."""
    r = MFTMA_REF
    return r["seconds"] * (p / r["p"]) * (m / r["m"]) * (n / r["n"]) * (n_t / r["n_t"])


@dataclass(frozen=True)
class KindCost:
    kind: str
    stages: int
    passes: float  # image passes, an upper bound for evaluations
    paper_hours: float  # on a Titan Xp at the paper's rates
    local_hours: float  # on this machine at its measured rate (one stage at a time)
    cpu_hours: float = 0.0  # CPU-side work on top (MFTMA, simulated capacity)


def describe_costs(costs: list[KindCost], rate: float, batch: int, device: torch.device) -> str:
    lines = [
        f"cost: image passes (forward + backward; evaluations at most) per stage kind; hours on a {PAPER_GPU} at "
        f"the paper's rates (appendix A.1, table 3) and on this machine ({device}: {rate:,.0f} images/s measured, "
        f"eager, batch {batch}), one stage at a time:",
        f"  {'kind':10s} {'stages':>6s} {'passes':>10s} {PAPER_GPU + ' h':>11s} {'this machine h':>15s}",
    ]
    for c in costs:
        extra = f" + {c.cpu_hours:.3g} h CPU (MFTMA)" if c.cpu_hours else ""
        lines.append(
            f"  {c.kind:10s} {c.stages:6d} {c.passes:10.3g} {c.paper_hours:11.3g} {c.local_hours:15.3g}{extra}"
        )
    total = sum(c.paper_hours for c in costs), sum(c.local_hours + c.cpu_hours for c in costs)
    lines.append(
        f"  {'total':10s} {sum(c.stages for c in costs):6d} {sum(c.passes for c in costs):10.3g} "
        f"{total[0]:11.3g} {total[1]:15.3g}   (GPU-hours at the paper's rates: {total[0]:,.0f})"
    )
    lines.append("  analyze, theory and report: CPU, minutes (benchmarks/analysis_scale.py: 6 paper-size runs in 10 s)")
    return "\n".join(lines)


__all__ = [
    "DataShape",
    "KindCost",
    "PaperRates",
    "cifar_shape",
    "describe_costs",
    "eval_passes",
    "measure_rate",
    "model_macs",
    "paper_rates",
    "mftma_seconds",
    "run_passes",
]
