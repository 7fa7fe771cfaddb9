"""Wall time of `logitscope reproduce` on the digits preset end to end (goal: at most 10 minutes
on 2 CPU cores, fresh), a rerun with everything cached (goal: at most 10 seconds), where the
time goes, and batched against one-at-a-time student training, side by side in one run.

    python benchmarks/reproduce_digits.py [--quick] [--out DIR] [--batch-epochs N]
                                          [--st-epoch-s S --at-epoch-s S]

Prints, from the output folder's stage markers and run metrics:

- the per-stage breakdown by kind (stage-seconds: the sum of the stages' own times, measured
  in the workers), and within training and distillation stages: training steps, logit
  snapshots, the PGD monitor, and the rest (teacher targets, checkpoints, setup); within
  evaluations: the paper protocol (APGD-CE + APGD-DLR) and the section-3 cross-checks;
- the critical path's share: wall time against stage-seconds / workers;
- batched (`logitscope.distill.batched`) against one-at-a-time training of the students of
  seed 0 (the preset's variants from the chosen teacher, ``--batch-epochs`` epochs each),
  timed back to back in this process with one torch thread per core used.

``--quick`` runs the preset at toy size (1 seed, 3 epochs). The CIFAR projection uses the
seconds per ST and AT epoch you measured (e.g. with benchmarks/gpu_epoch.py on your GPU). The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

QUICK = [
    "seeds=[0]",
    "distill.seeds=[0]",
    "distill.sweep_seeds=[0]",
    "train.epochs=3",
    "teacher.epochs=[1,3]",
    "distill.epochs=2",
    "distill.ks=[1]",
    "evaluate.n=100",
    "manifolds.p=12",
    "manifolds.m=6",
]


def reproduce(out: Path, overrides: list[str]) -> float:
    cmd = [sys.executable, "-m", "logitscope", "reproduce", "--out", str(out)]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def breakdown(out: Path, overrides: list[str]) -> dict[str, float]:
    """Stage-seconds by kind, and the training stages' seconds split by what they did (the
    stages of the preset's plan only: an output folder may hold markers of earlier settings)."""
    from logitscope.plan.graph import build_plan, resolve_preset

    plan = build_plan(resolve_preset("digits", overrides, None), out)
    by: dict[str, float] = defaultdict(float)
    for name in plan.stages:
        marker = plan.marker(name)
        if not plan.is_done(name):
            continue
        done = json.loads(marker.read_text())
        kind, secs = done["kind"], float(done.get("seconds", 0.0))
        if kind == "evaluate":
            kind = "evaluate: cross-checks" if name.startswith("crosscheck-") else "evaluate: paper protocol"
        if kind in ("train", "distill") and not name.startswith("distill-batch-"):
            run_id = (done.get("result") or {}).get("run_id")
            metrics = out / "runs" / str(run_id) / "metrics.csv"
            if run_id and metrics.is_file():
                rows = list(csv.DictReader(metrics.open()))
                parts = {
                    "steps": sum(float(r.get("train_seconds") or 0) for r in rows),
                    "snapshots": sum(float(r.get("snapshot_seconds") or 0) for r in rows),
                    "PGD monitor": sum(float(r.get("pgd_seconds") or 0) for r in rows),
                }
                for part, v in parts.items():
                    by[f"{kind}: {part}"] += v
                by[f"{kind}: targets, checkpoints, setup"] += max(0.0, secs - sum(parts.values()))
                continue
        by[kind] += secs
    return dict(sorted(by.items(), key=lambda kv: -kv[1]))


def batched_speedup(out: Path, overrides: list[str], epochs: int) -> dict[str, float]:
    """Seed 0's students (from the chosen teacher) for ``epochs`` epochs, batched and one at a
    time, back to back, in fresh run folders."""
    import torch

    from logitscope import train
    from logitscope.distill.batched import train_batched
    from logitscope.plan.graph import build_plan, resolve_preset

    torch.set_num_threads(1)
    logging.getLogger("logitscope").setLevel(logging.ERROR)  # 3-epoch students warn that they barely learn
    plan = build_plan(resolve_preset("digits", overrides, None), out)
    cfgs = [
        s.params["config"]
        for n, s in plan.stages.items()
        if n.startswith("distill-") and n.endswith("-s0") and "sweep" not in n and "config" in s.params
    ]
    from logitscope.config import RunConfig

    runs = out / "runs"
    base = [RunConfig.from_dict(c).with_overrides({"epochs": epochs, "optim.milestones": []}) for c in cfgs]
    scratch = Path(tempfile.mkdtemp())
    for cfg in base:  # the students name their teachers by run id: siblings in the same folder
        for ref in (cfg.distill.teacher, cfg.distill.hybrid_order):
            if ref and not (scratch / ref).exists():
                (scratch / ref).symlink_to((runs / ref).resolve())
    times = {}
    for label in ("one at a time", "batched", "one at a time again"):
        cfgs_l = [c.with_overrides({"name": f"{c.name}-{label.replace(' ', '-')}"}) for c in base]
        t0 = time.perf_counter()
        if label == "batched":
            train_batched(cfgs_l, out=scratch)
        else:
            for c in cfgs_l:
                train(c, out=scratch, progress=False)
        times[label] = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    alone = min(times["one at a time"], times["one at a time again"])
    return {
        "students": len(base),
        "epochs": epochs,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "one_at_a_time_s": round(alone, 2),
        "batched_s": round(times["batched"], 2),
        "speedup": round(alone / times["batched"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", help="output folder (default: a temporary one)")
    ap.add_argument("--batch-epochs", type=int, default=3, help="epochs of the batched-vs-alone comparison")
    ap.add_argument("--st-epoch-s", type=float, default=None, help="measured seconds per CIFAR ST epoch")
    ap.add_argument("--at-epoch-s", type=float, default=None, help="measured seconds per CIFAR AT epoch")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "out"
    overrides = QUICK if args.quick else []
    first = reproduce(out, overrides)
    cached = reproduce(out, overrides)
    parts = breakdown(out, overrides)
    total = sum(parts.values())
    print(f"reproduce digits{' (quick)' if args.quick else ''}: {first:.0f} s fresh, {cached:.1f} s cached rerun")
    print(f"stage-seconds {total:.0f} (the stages' own times, summed over workers):")
    for k, v in parts.items():
        print(f"  {k:44s} {v:8.1f} s  {100 * v / total:5.1f}%")
    speed = batched_speedup(out, overrides, args.batch_epochs)
    print(
        f"batched training, {speed['students']} students x {speed['epochs']} epochs on {speed['device']}: "
        f"one at a time {speed['one_at_a_time_s']} s, batched {speed['batched_s']} s: {speed['speedup']}x"
    )
    result = {
        "first_run_s": round(first, 1),
        "cached_rerun_s": round(cached, 2),
        "goals": {"first_at_most_600s": first <= 600, "cached_at_most_10s": cached <= 10},
        "stage_seconds": {k: round(v, 1) for k, v in parts.items()},
        "batched": speed,
        "report": str(out / "report" / "index.html"),
        "quick": args.quick,
    }
    if args.st_epoch_s and args.at_epoch_s:
        for preset in ("cifar10-paper", "cifar100-paper"):
            hours = projected_hours(preset, args.st_epoch_s, args.at_epoch_s)
            result[f"{preset}_projected_gpu_hours"] = round(hours, 1)
    if not args.out:
        shutil.rmtree(out.parent, ignore_errors=True)
    print(json.dumps(result))


def projected_hours(preset: str, st_epoch_s: float, at_epoch_s: float) -> float:
    """GPU-hours of ``preset``'s training from measured epoch times (a student epoch as an ST one)."""
    from logitscope.plan.graph import build_plan, resolve_preset

    p = resolve_preset(preset, [], None)
    plan = build_plan(p, Path(tempfile.mkdtemp()), None, assume_teacher=p["teacher"]["epochs"][0])
    from logitscope.config import RunConfig

    runs = {}  # by run id: a student of the sweep and of the variants (normal) is one run
    for s in plan.stages.values():
        if "config" in s.params:
            cfg = RunConfig.from_dict(s.params["config"])
            runs[cfg.run_id] = cfg.epochs * (at_epoch_s if cfg.objective == "pgd-at" else st_epoch_s)
    return sum(runs.values()) / 3600


if __name__ == "__main__":
    main()
