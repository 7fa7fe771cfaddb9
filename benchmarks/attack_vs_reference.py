"""Our robustness protocol against the authors' AutoAttack, side by side in one process.

On the same model and the same images: `logitscope.attacks.protocol` (APGD-CE then APGD-DLR,
per-image seeds, early exit) and ``pyautoattack`` (``version="custom"``, attacks
``["apgd-ce", "apgd-dlr"]``, 1 restart, 100 iterations, same eps and seed). Reported: clean
accuracy, accuracy after each attack, per-image agreement of the robust verdict, wall time
and gradient evaluations. Models: an ST and a PGD-AT small CNN on digits (eps 0.2), on CPU;
and, when a GPU is present, ResNet-18 on CIFAR-shaped images.

Goals: robust accuracy within 0.5 points of the reference (lower allowed: a stronger attack);
at least 10x faster on the ST model and 1.5x on the AT model.

    .venv/bin/python benchmarks/attack_vs_reference.py                 # trains ST + AT (30 epochs)
    .venv/bin/python benchmarks/attack_vs_reference.py --st RUN --at RUN
    .venv/bin/python benchmarks/attack_vs_reference.py --quick         # 4 epochs, 200 images

Needs ``pyautoattack==0.2.0`` (``pip install 'logitscope[autoattack]'``). The last line of output
is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch import nn

import logitscope
from logitscope.attacks.protocol import evaluate_model
from logitscope.config import ProtocolConfig, RunConfig


class _AccuracyLog(logging.Handler):
    """Collects pyautoattack's "robust accuracy after APGD-CE: 43.00%" lines."""

    PATTERN = re.compile(r"robust accuracy after ([A-Z-]+): ([0-9.]+)%")

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.after: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            self.after[match.group(1).lower()] = float(match.group(2)) / 100


def reference(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int, device, seed: int
) -> dict:
    """pyautoattack, APGD-CE then APGD-DLR; robust flags, accuracies, wall and CPU time."""
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, attacks=["apgd-ce", "apgd-dlr"], version="custom", eps=eps, seed=seed, device=device)
    aa.apgd.n_restarts = 1  # "custom" keeps the constructor's 5; the standard version uses 1
    log = _AccuracyLog()
    aa.logger.addHandler(log)
    aa.logger.setLevel(logging.DEBUG)
    aa.logger.propagate = False
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    sync(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    aa.logger.removeHandler(log)
    robust = (y_adv == y).cpu().numpy()
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    n_cc = int(round(clean * len(y)))
    n_ce = int(round(log.after.get("apgd-ce", float("nan")) * len(y)))
    return {
        "robust": robust,
        "clean": clean,
        "after_ce": log.after.get("apgd-ce"),
        "after_dlr": float(robust.mean()),
        "seconds": seconds,
        "cpu": cpu,
        # One start and n_iter steps per image and attack.
        "grad_evals": (n_cc + n_ce) * 101,
    }


def ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int, device, seed: int) -> dict:
    cfg = ProtocolConfig(eps=eps, n_iter=100, n_restarts=1, batch_size=batch_size, seed=seed)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate_model(model, x, y, cfg, progress=False)
    sync(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = res.accuracy_after
    return {
        "robust": res.robust,
        "clean": res.clean_accuracy,
        "after_ce": after["apgd-ce"],
        "after_dlr": after["apgd-dlr"],
        "seconds": seconds,
        "cpu": cpu,
        "grad_evals": int(res.n_grad.sum()),
    }


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, args, device) -> dict:
    """Both protocols once per seed (alternating, same seed); accuracies averaged over seeds,
    wall time the fastest run of each, CPU time summed."""
    ref, own = [], []
    for seed in range(args.seeds):
        ref.append(reference(model, x, y, eps, args.batch_size, device, seed))
        own.append(ours(model, x, y, eps, args.batch_size, device, seed))

    def mean(runs: list[dict], key: str) -> float:
        return round(float(np.mean([r[key] for r in runs])), 4)

    row: dict[str, Any] = {"model": name, "n": len(y), "eps": eps, "seeds": args.seeds}
    for key in ("clean", "after_ce", "after_dlr"):
        row[key] = [mean(own, key), mean(ref, key)]
    # Per-seed paired gaps: with a few hundred images one image is 0.25 points, so the
    # standard error says how much of the gap is the random starts.
    gaps = 100 * np.array([o["after_dlr"] - r["after_dlr"] for o, r in zip(own, ref, strict=True)])
    row["robust_gap_points"] = round(float(gaps.mean()), 2)
    row["robust_gap_se_points"] = round(float(gaps.std(ddof=1) / np.sqrt(len(gaps))), 2) if len(gaps) > 1 else None
    pairs = list(zip([o["robust"] for o in own], [r["robust"] for r in ref], strict=True))
    row["agreement"] = round(float(np.mean([np.mean(o == r) for o, r in pairs])), 4)
    row["only_ours_robust"] = int(sum(np.sum(o & ~r) for o, r in pairs))
    row["only_ref_robust"] = int(sum(np.sum(~o & r) for o, r in pairs))
    row["seconds"] = [round(min(r["seconds"] for r in runs), 3) for runs in (own, ref)]
    row["cpu_seconds"] = [round(sum(r["cpu"] for r in runs), 2) for runs in (own, ref)]
    row["grad_evals"] = [int(np.mean([r["grad_evals"] for r in runs])) for runs in (own, ref)]
    row["speedup"] = round(row["seconds"][1] / row["seconds"][0], 2)
    row["speedup_cpu"] = round(row["cpu_seconds"][1] / row["cpu_seconds"][0], 2)
    print(
        f"{name:>12}  clean {row['clean'][0]:.4f}/{row['clean'][1]:.4f}  "
        f"after CE {row['after_ce'][0]:.4f}/{row['after_ce'][1]:.4f}  "
        f"after DLR {row['after_dlr'][0]:.4f}/{row['after_dlr'][1]:.4f}  "
        f"gap {row['robust_gap_points']} (se {row['robust_gap_se_points']}) points  agree {row['agreement']:.4f}  "
        f"wall {row['seconds'][0]:.2f}s/{row['seconds'][1]:.2f}s ({row['speedup']}x)  "
        f"cpu {row['cpu_seconds'][0]:.1f}s/{row['cpu_seconds'][1]:.1f}s ({row['speedup_cpu']}x)  "
        f"grad evals {row['grad_evals'][0]}/{row['grad_evals'][1]}   (ours/reference)",
        file=sys.stderr,
    )
    return row


def digits_models(args) -> tuple[nn.Module, nn.Module]:
    """The ST and AT runs given, or trained now into ``args.out`` (a temporary folder)."""
    runs = {}
    for method, given in (("st", args.st), ("at", args.at)):
        if given is None:
            cfg = RunConfig(method=method, epochs=args.epochs, seed=0)
            t0 = time.perf_counter()
            given = logitscope.train(cfg, out=args.out, progress=False).dir
            print(f"trained {method.upper()} in {time.perf_counter() - t0:.0f} s: {given}", file=sys.stderr)
        runs[method] = logitscope.load_model(given)
    return runs["st"], runs["at"]


def resnet_on_gpu(args) -> dict | None:
    """Untrained ResNet-18 on random CIFAR-shaped images labeled by itself (every image
    clean-correct, none robust: the ST regime at CIFAR scale)."""
    if not torch.cuda.is_available():
        return None
    from logitscope.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).cuda().eval()
    n = 500 if args.quick else 2000
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        y = torch.cat([model(b).argmax(1) for b in x.split(500)])
    return compare("resnet18-gpu", model, x, y, 8 / 255, args, "cuda")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--st", help="ST run folder (default: train one)")
    p.add_argument("--at", help="PGD-AT run folder (default: train one)")
    p.add_argument("--eps", type=float, default=0.2)
    p.add_argument("--n", type=int, default=None, help="test images (default: all)")
    p.add_argument("--epochs", type=int, default=30, help="epochs when training the runs")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seeds", type=int, default=1, help="runs per protocol, seeds 0.. (accuracies averaged)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=None, help="where trained runs go (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="4 epochs, 200 images: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.n = 4, args.n or 200
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        args.out = args.out or tmp
        st, at = digits_models(args)
        x, y = logitscope.load_dataset("digits", "test")
        x = x.float() / 255
        if args.n:
            x, y = x[: args.n], y[: args.n]
        rows = [compare(name, m, x, y, args.eps, args, "cpu") for name, m in (("ST", st), ("AT", at))]
        gpu = resnet_on_gpu(args)
        if gpu is not None:
            rows.append(gpu)
    st_row, at_row = rows[0], rows[1]
    headline: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "rows": rows,
        "st_speedup": st_row["speedup"],
        "at_speedup": at_row["speedup"],
        "st_speedup_cpu": st_row["speedup_cpu"],
        "at_speedup_cpu": at_row["speedup_cpu"],
        "max_robust_gap_points": max(r["robust_gap_points"] for r in rows),
        "goal_accuracy_met": all(r["robust_gap_points"] <= 0.5 for r in rows),
        "goal_speed_met": bool(st_row["speedup"] >= 10 and at_row["speedup"] >= 1.5),
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
