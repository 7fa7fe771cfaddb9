"""Wall time of `logitscope reproduce` on the digits preset end to end (goal: under 10 minutes
on 2 CPU cores), and of a rerun with everything cached (goal: under 10 seconds); for the CIFAR
presets, projected GPU-hours from measured epoch rates.

    python benchmarks/reproduce_digits.py [--quick] [--out DIR] [--st-epoch-s S --at-epoch-s S]

``--quick`` runs the preset at toy size (1 seed, 3 epochs). The CIFAR projection uses the
seconds per ST and AT epoch you measured (e.g. with benchmarks/gpu_epoch.py on your GPU); a
student epoch is counted as an ST epoch plus its share of the teacher-target pass. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICK = [
    "seeds=[0]",
    "distill.seeds=[0]",
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


def stage_counts(preset: str) -> dict[str, int]:
    from logitscope.plan.graph import build_plan, resolve_preset

    p = resolve_preset(preset, [], None)
    plan = build_plan(p, Path(tempfile.mkdtemp()), None)
    n_students = 1 + 2 * len(p["distill"]["ks"]) + 2
    return {
        "st": len(p["seeds"]),
        "at": len(p["seeds"]),
        "students": n_students * len(p["distill"]["seeds"])
        + 2 * len(p["teacher"]["epochs"]) * len(p["distill"]["sweep_seeds"]),
        "epochs": p["train"]["epochs"],
        "student_epochs": p["distill"]["epochs"],
        "stages_before_choice": len(plan.stages),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", help="output folder (default: a temporary one)")
    ap.add_argument("--st-epoch-s", type=float, default=None, help="measured seconds per CIFAR ST epoch")
    ap.add_argument("--at-epoch-s", type=float, default=None, help="measured seconds per CIFAR AT epoch")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "out"
    overrides = QUICK if args.quick else []
    first = reproduce(out, overrides)
    cached = reproduce(out, overrides)
    result = {
        "first_run_s": round(first, 1),
        "cached_rerun_s": round(cached, 2),
        "goals": {"first_under_600s": first < 600, "cached_under_10s": cached < 10},
        "report": str(out / "report" / "index.html"),
        "quick": args.quick,
    }
    if args.st_epoch_s and args.at_epoch_s:
        for preset in ("cifar10-paper", "cifar100-paper"):
            c = stage_counts(preset)
            secs = (
                c["st"] * c["epochs"] * args.st_epoch_s
                + c["at"] * c["epochs"] * args.at_epoch_s
                + c["students"] * c["student_epochs"] * args.st_epoch_s
            )
            result[f"{preset}_projected_gpu_hours"] = round(secs / 3600, 1)
    if not args.out:
        shutil.rmtree(out.parent, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
