"""Time and memory of every logit analysis at the paper's scale (200 epochs x 50,000 samples).

Builds synthetic ST and AT run stores in a temporary folder (one ``(N, C)`` float32 file per
epoch and split, written with `write_logits`), then times `analyze` (and the report's drawing
of its figures) over them: the distribution statistics stream over every epoch, the
image-level analyses use the last epoch.
Goal: 15 s or less and under 2 GB peak resident memory on 2 CPU cores (the 2.9 GB of logits stream
from the page cache in well under a second per pass; 62.6 s before the analyses read each epoch
once and replaced partitions by one sort). ``analyze_cpu_s`` is the process CPU time of the
analysis, the figure to compare on a machine shared with other jobs.

    .venv/bin/python benchmarks/analysis_scale.py            # 3 ST + 3 AT, 200 x 50,000 x 10
    .venv/bin/python benchmarks/analysis_scale.py --quick    # 1 + 1 runs, 40 x 5,000 x 10

The last line of output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from logitscope.analysis.analyze import analyze, read_analysis
from logitscope.fileio.atomic import atomic_save_npz
from logitscope.report.figures import draw_logit_figures
from logitscope.store.logits import write_labels, write_logits


def make_dataset(n: int, n_classes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Labels and per-image latents shared by every model: ``u`` is what ST finds hard, ``v``
    what AT finds hard (correlated 0.5), ``feat`` a class-structured logit direction."""
    labels = rng.integers(0, n_classes, n)
    z = rng.standard_normal((2, n))
    u = 1 / (1 + np.exp(-z[0]))
    v = 1 / (1 + np.exp(-(0.5 * z[0] + np.sqrt(0.75) * z[1])))
    centers = rng.standard_normal((n_classes, n_classes))
    feat = centers[labels] + 0.7 * rng.standard_normal((n, n_classes))
    return {"labels": labels, "u": u, "v": v, "feat": feat.astype(np.float32)}


def model_logits(
    ds: dict[str, np.ndarray], group: str, own: np.ndarray, epoch: int, rng: np.random.Generator
) -> np.ndarray:
    """``(N, C)`` float32 logits of a synthetic ST or AT model at ``epoch``: ST margins grow fast
    and symmetric, AT margins slowly and with a long positive tail."""
    n, c = ds["feat"].shape
    t = 1 - np.exp(-(epoch + 1) / 30)
    if group == "ST":
        margin = t * 12 * (0.6 + 0.4 * (1 - ds["u"]))
        scale = 1.0
    else:
        margin = t * 8 * (1 - ds["v"]) ** 2
        scale = 0.4
    z = scale * ds["feat"] + 0.5 * own + 0.3 * rng.standard_normal((n, c), np.float32)
    z[np.arange(n), ds["labels"]] += margin
    return z.astype(np.float32)


def robustness_records(logits: np.ndarray, labels: np.ndarray, group: str, rng: np.random.Generator):
    """Per-sample records in the protocol format; AT images with larger gaps survive more often."""
    part = np.sort(logits, axis=1)
    gap = part[:, -1] - part[:, -2]
    correct = logits.argmax(axis=1) == labels
    p = 1 / (1 + np.exp(-2 * (gap - 2))) if group == "AT" else np.full(len(gap), 0.002)
    robust = correct & (rng.random(len(gap)) < p)
    adv = logits.copy()
    broken = correct & ~robust
    adv[np.flatnonzero(broken), labels[broken]] -= gap[broken] + 1.0
    broken_by = np.where(~correct, -1, np.where(robust, 0, 1)).astype(np.int8)
    return {
        "label": labels.astype(np.int64),
        "clean_logits": logits,
        "adv_logits": adv,
        "robust": robust,
        "broken_by": broken_by,
        "linf": np.where(broken, 8 / 255, 0).astype(np.float32),
        "eps": np.array(8 / 255, np.float32),
        "seed": np.array(0),
    }


def build(root: Path, seeds: int, epochs: int, n_train: int, n_test: int, n_classes: int) -> tuple[list, list]:
    """Write ``seeds`` ST and AT runs with ``epochs`` epochs of train and test logits each."""
    rng = np.random.default_rng(0)
    data = {
        "train": make_dataset(n_train, n_classes, rng),
        "test": make_dataset(n_test, n_classes, rng),
    }
    runs: dict[str, list[Path]] = {"ST": [], "AT": []}
    for group in ("ST", "AT"):
        for s in range(seeds):
            run = root / f"{group.lower()}-seed{s}"
            r = np.random.default_rng(1000 * (group == "AT") + s)
            for split, ds in data.items():
                write_labels(run, split, ds["labels"])
                own = r.standard_normal(ds["feat"].shape, np.float32)
                for e in range(epochs):
                    z = model_logits(ds, group, own, e, r)
                    write_logits(run, split, e, z)
            atomic_save_npz(
                run / "eval" / f"paper-epoch_{epochs - 1:03d}.npz",
                **robustness_records(z, data["test"]["labels"], group, r),
            )
            runs[group].append(run)
    return runs["ST"], runs["AT"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small store, under a minute")
    ap.add_argument("--seeds", type=int, default=None, help="runs per group (default 3; quick 1)")
    args = ap.parse_args()
    seeds = args.seeds or (1 if args.quick else 3)
    epochs, n_train, n_test, n_classes = (40, 5000, 1000, 10) if args.quick else (200, 50000, 10000, 10)
    with tempfile.TemporaryDirectory(prefix="analysis_scale_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        st, at = build(root, seeds, epochs, n_train, n_test, n_classes)
        build_s = time.perf_counter() - t0
        rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rng = np.random.default_rng(1)
        images = rng.integers(0, 256, (n_test, 3, 8, 8), dtype=np.uint8)
        t0, c0 = time.perf_counter(), time.process_time()
        res = analyze(st, at, None, root / "analysis")
        drawn, _ = draw_logit_figures(*read_analysis(root / "analysis"), root / "report", images)
        analyze_s = time.perf_counter() - t0
        analyze_cpu_s = time.process_time() - c0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        store_gb = sum(f.stat().st_size for f in root.rglob("*.npy")) / 1e9
        print(
            f"built {2 * seeds} runs ({store_gb:.2f} GB of logits) in {build_s:.1f} s",
            file=sys.stderr,
        )
        # The verdicts live in logitscope.report.claims now; show the per-run numbers they test.
        for key in ("max_logit_mean", "max_logit_skew", "gap_mean", "rank_disagreement"):
            print(f"  {key}: {res['claim_inputs'][key]}", file=sys.stderr)
        headline = {
            "runs": 2 * seeds,
            "epochs": epochs,
            "n_train": n_train,
            "n_test": n_test,
            "n_classes": n_classes,
            "store_gb": round(store_gb, 3),
            "build_s": round(build_s, 1),
            "analyze_s": round(analyze_s, 1),
            "analyze_cpu_s": round(analyze_cpu_s, 1),
            "peak_rss_mb": round(rss, 0),
            "peak_rss_mb_after_build": round(rss_build, 0),
            "figures": len(drawn),
            "rank_disagreement_at_st": round(res["rank_disagreement"]["groups"]["AT-ST"]["mean"], 4),
            "goal_met": bool(analyze_s <= 15 and rss < 2048),
        }
        print(json.dumps(headline))


if __name__ == "__main__":
    main()
