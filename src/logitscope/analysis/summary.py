"""Every logit analysis of sections 4.1 and 4.3 (and appendix B) over ST and AT runs, in one call.

`analyze_runs` reads the run stores (logits every epoch, per-sample robustness records when
present), computes each analysis of `logit_stats`, `ranks` and `neighbors`, draws each paper
figure into ``out_dir`` and writes the numbers as ``analysis.json`` plus CSV tables, with the
paper's statement beside each measured number.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from logitscope.analysis.logit_stats import (
    STATISTICS,
    DistributionStats,
    Top2Cache,
    adversarial_accuracy_by_gap,
    gap_edges,
    logit_statistics,
    shared_edges,
    stack_histograms,
    top2,
    value_range,
)
from logitscope.analysis.neighbors import confidence_quadrants, logit_neighbors, nearest_neighbors, pick_seeds
from logitscope.analysis.ranks import (
    confidence,
    error_class_rank,
    pairwise_average_overlap,
    pairwise_rank_disagreement,
    rank_scatter,
)
from logitscope.fileio.atomic import atomic_write_json, atomic_write_text, load_npz
from logitscope.report import figures
from logitscope.stats import mean_sd, mean_sd_axis
from logitscope.store.logits import LogitStore

log = logging.getLogger(__name__)

RECORD_KEYS = ("label", "clean_logits", "adv_logits", "robust")
RECORD_PROTOCOL = "paper"
_RECORD_RE = re.compile(rf"^{RECORD_PROTOCOL}-epoch_(\d+)\.npz$")

# What the paper states for CIFAR-10 (section 4.1, figure 3); fractions, not percent.
PAPER = {
    "rank_disagreement": {"AT-ST": 0.118, "AT-AT": 0.011},
    "max_logit": "AT: lower mean and more positive skew than ST",
    "gap": "AT gaps smaller than ST, peak at zero, few above 5",
    "adv_acc_by_gap": "AT adversarial accuracy rises with the clean logit gap; ST near zero",
    "average_overlap": "AT-AT overlap above AT-ST; AT same-class baseline below ST's (CIFAR-10)",
    "error_class_rank": "errors fall on classes ranked high in the true class's mean logits",
    "neighbors": "ST neighbors mostly share the seed's class; AT neighbors share colour and shape",
}


def find_records(run: str | os.PathLike, epoch: int | None = None) -> Path | None:
    """The run's ``eval/paper-epoch_XXX.npz`` at ``epoch`` (``None``: the latest), if any."""
    folder = Path(run) / "eval"
    if not folder.is_dir():
        return None
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := _RECORD_RE.match(p.name))}
    if not found:
        return None
    if epoch is None:
        return found[max(found)]
    return found.get(epoch)


def check_records(rec: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Validate per-sample robustness records (keys `RECORD_KEYS`, matching lengths)."""
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        raise KeyError(f"records of {where} lack {missing}: expected keys {list(RECORD_KEYS)}")
    out = {k: np.asarray(rec[k]) for k in RECORD_KEYS}
    n = len(out["label"])
    shapes = {k: v.shape for k, v in out.items()}
    if any(v.shape[0] != n for v in out.values()) or out["clean_logits"].shape != out["adv_logits"].shape:
        raise ValueError(f"records of {where} have shapes {shapes}: expected N={n} rows each")
    return out


def _eval_split(stores: Sequence[LogitStore], split: str | None) -> str:
    common = [s for s in stores[0].splits if all(s in st.splits for st in stores)]
    if split is not None:
        if split not in common:
            raise KeyError(f"split {split!r} not in every run: common splits {common}")
        return split
    for s in ("test", "val", "train"):
        if s in common:
            return s
    if not common:
        raise KeyError("the runs share no split: expected each run to store the same split")
    return common[-1]


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _clean(obj: Any) -> Any:
    """JSON-ready copy: arrays to lists, numpy scalars to Python, NaN and inf to None."""
    kind = type(obj)
    if kind is float or kind is np.float64:  # the common leaves first: same result, fewer checks
        value = float(obj)
        return value if math.isfinite(value) else None
    if kind is int or kind is str:
        return obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_clean(list(r)) for r in rows])
    return atomic_write_text(path, buf.getvalue())


def _mean_sd(values: Sequence[float]) -> dict[str, float | int]:
    """Mean ± sample sd over runs (`logitscope.stats.mean_sd`; sd NaN, written as null, for one run)."""
    mean, sd = mean_sd(values)
    return {"mean": mean, "sd": sd, "n": sum(1 for v in values if v is not None and not math.isnan(v))}


def _group_moments(stats: Sequence[DistributionStats], epoch: int | None) -> dict[str, dict[str, float | int]]:
    """Mean and sd over runs of each run's mean, sd and skew at ``epoch``."""
    rows = [d.index(epoch) for d in stats]
    return {m: _mean_sd([getattr(d, m)[r] for d, r in zip(stats, rows, strict=True)]) for m in ("mean", "sd", "skew")}


def analyze_runs(
    st_runs: Sequence[str | os.PathLike],
    at_runs: Sequence[str | os.PathLike],
    epoch: int | None,
    out_dir: str | os.PathLike,
    images: np.ndarray | None = None,
    records: Mapping[str | os.PathLike, Mapping[str, np.ndarray]] | None = None,
    *,
    split: str | None = None,
    confidence_kind: str = "true",
    scatter_class: int | None = None,
    class_names: Sequence[str] | None = None,
    dataset: str = "",
    n_bins: int = 50,
    gap_bins: int = 10,
    n_seeds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Run every logit analysis on ST and AT runs, draw every figure, write the numbers.

    Args:
        st_runs, at_runs: run folders (each with ``logits/``); one per seed, at least one each.
        epoch: epoch of the image-level comparisons (gaps, ranks, overlap, neighbors) and of the
            records (``eval/paper-epoch_XXX.npz``); ``None``: each run's last stored epoch and
            latest records. The evolution figures always use every stored epoch.
        out_dir: where the PNGs, ``analysis.json`` and the CSV tables go.
        images: ``(N, C, H, W)`` uint8 images of the evaluation split, for figures B.2 and B.3
            (skipped when ``None``).
        records: run folder (path or str) or run name -> per-sample robustness records,
            overriding the files; runs without either skip what needs them (figure 2B,
            adversarial error ranks).
        split: evaluation split (``None``: test, else val, else train).
        confidence_kind: ``"true"`` or ``"max"`` softmax confidence for the rank analyses.
        scatter_class: class of figures 3A and B.2 (``None``: the class whose AT-ST
            disagreement is closest to the mean over classes).
        class_names: names of the classes, for labels.
        dataset: dataset name for titles (e.g. ``"CIFAR-100"`` for figures B.4 to B.6).
        n_bins: bins of the distribution histograms; ``gap_bins``: bins of figure 2B.
        n_seeds: seed images of figure B.3; ``seed``: seeds the random choices.

    Returns:
        The JSON-ready dict written to ``out_dir/analysis.json``: per-analysis numbers,
        ``claim_inputs`` (the per-run and per-pair numbers the claims registry,
        `logitscope.report.claims`, tests), ``figures`` (name -> PNG path) and
        ``skipped`` (name -> reason).
    """
    if not st_runs or not at_runs:
        raise ValueError(f"{len(st_runs)} ST and {len(at_runs)} AT runs: expected at least one each")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(r) for r in (*st_runs, *at_runs)]
    groups = ["ST"] * len(st_runs) + ["AT"] * len(at_runs)
    names = _unique_names(paths)
    stores = [LogitStore(p) for p in paths]
    eval_split = _eval_split(stores, split)
    labels = stores[0].labels(eval_split)
    for name, st in zip(names[1:], stores[1:], strict=True):
        if not np.array_equal(st.labels(eval_split), labels):
            raise ValueError(
                f"run {name} has other {eval_split} labels than {names[0]}: expected the same images in the same order"
            )
    if images is not None and images.shape[0] != len(labels):
        raise ValueError(f"{images.shape[0]} images: expected {len(labels)}, the {eval_split} split")
    result: dict[str, Any] = {
        "runs": {"ST": names[: len(st_runs)], "AT": names[len(st_runs) :]},
        "paths": dict(zip(names, [str(p) for p in paths], strict=True)),
        "epoch": epoch,
        "split": eval_split,
        "dataset": dataset,
        "paper": PAPER,
        "figures": {},
        "skipped": {},
    }
    # Records: per-sample robustness, from the caller or from each run's eval folder.
    recs: dict[int, dict[str, np.ndarray]] = {}
    result["records"] = {}
    for i, p in enumerate(paths):
        keys = (p, str(p), names[i]) if records is not None else ()
        given = next((records[k] for k in keys if k in records), None)
        if given is not None:
            recs[i] = check_records(given, names[i])
            result["records"][names[i]] = "given"
        elif (f := find_records(p, epoch)) is not None:
            recs[i] = check_records(load_npz(f), str(f))
            result["records"][names[i]] = str(f)
        else:
            result["records"][names[i]] = None
    at_recs = [recs[i] for i in recs if groups[i] == "AT"]
    st_recs = [recs[i] for i in recs if groups[i] == "ST"]

    figs: dict[str, str] = result["figures"]
    skipped: dict[str, str] = result["skipped"]
    first_st, first_at = 0, len(st_runs)
    label = ", ".join(x for x in (dataset, eval_split) if x)

    # Distributions over epochs (figures 1, B.1, 2A), one range pass then one statistics pass.
    splits = {i: [s for s in ("train", eval_split) if s in stores[i].splits] for i in range(len(paths))}
    splits = {i: list(dict.fromkeys(s)) for i, s in splits.items()}
    # The cache carries each epoch's top-2 logits from the range pass to the statistics pass (within
    # its memory budget), so each epoch file is read and reduced once.
    top2_cache = Top2Cache()
    edges = shared_edges(value_range([(stores[i], s) for i in splits for s in splits[i]], cache=top2_cache), n_bins)
    dist: dict[int, dict[str, dict[str, DistributionStats]]] = {
        i: {s: logit_statistics(stores[i], s, edges, cache=top2_cache) for s in splits[i]} for i in splits
    }
    result["distributions"] = {
        names[i]: {s: {k: d.summary(epoch) for k, d in by.items()} for s, by in dist[i].items()} for i in dist
    }
    result["distribution_groups"] = {
        s: {
            stat: {g: _group_moments([dist[i][s][stat] for i in dist if groups[i] == g], epoch) for g in ("ST", "AT")}
            for stat in STATISTICS
        }
        for s in splits[first_st]
        if all(s in dist[i] for i in dist)
    }
    # d.sd here (and in distributions.csv) is the spread of one run's logit statistic over its
    # images, a property of that distribution, not an sd over seeds: population sd, left as is.
    result["evolution"] = {
        names[i]: {
            s: {k: {"epochs": d.epochs, "mean": d.mean, "sd": d.sd, "skew": d.skew} for k, d in by.items()}
            for s, by in dist[i].items()
        }
        for i in dist
    }
    _write_csv(
        out / "distributions.csv",
        ["run", "group", "split", "statistic", "epoch", "n", "mean", "sd", "skew"]
        + [f"q{q:g}" for q in dist[0][eval_split]["gap"].quantile_levels],
        [
            [names[i], groups[i], s, k, e, d.n[r], d.mean[r], d.sd[r], d.skew[r], *d.quantiles[r]]
            for i in dist
            for s, by in dist[i].items()
            for k, d in by.items()
            for r, e in enumerate(d.epochs)
        ],
    )
    evo_split = "train" if "train" in dist[first_st] and "train" in dist[first_at] else eval_split
    figs["fig1_max_logit_evolution"] = str(
        figures.fig1_max_logit_evolution(
            dist[first_st][evo_split]["max_logit"],
            dist[first_at][evo_split]["max_logit"],
            out / "fig1_max_logit_evolution.png",
            dataset,
        )
    )
    panels = [
        (f"A) ST {evo_split}", dist[first_st][evo_split]["gap"]),
        (f"B) AT {evo_split}", dist[first_at][evo_split]["gap"]),
    ]
    if evo_split != eval_split:
        panels.append((f"C) AT {eval_split}", dist[first_at][eval_split]["gap"]))
    figs["figb1_gap_evolution"] = str(figures.figb1_gap_evolution(panels, out / "figb1_gap_evolution.png"))
    figs["fig2a_gap_histograms"] = str(
        figures.fig2a_gap_histograms(
            stack_histograms([dist[i][eval_split]["gap"] for i in dist if groups[i] == "ST"], epoch),
            stack_histograms([dist[i][eval_split]["gap"] for i in dist if groups[i] == "AT"], epoch),
            out / "fig2a_gap_histograms.png",
            label,
        )
    )

    # Image-level comparisons at the chosen epoch.
    logits = [np.asarray(st.get(eval_split, epoch), np.float32) for st in stores]
    n_classes = logits[0].shape[1]
    result["n_classes"], result["n_images"] = n_classes, len(labels)

    ranks = pairwise_rank_disagreement(logits, labels, names, groups, confidence_kind)
    rank_summary = ranks.summary()
    if scatter_class is None:
        at_st = np.array(rank_summary["AT-ST"]["per_class_mean"])
        scatter_class = int(ranks.classes[np.argmin(np.abs(at_st - at_st.mean()))])
    conf = [confidence(z, labels, confidence_kind) for z in logits]
    scatter = rank_scatter(conf[first_at], conf[first_st], labels, scatter_class, (names[first_at], names[first_st]))
    cname = class_names[scatter_class] if class_names is not None else None
    figs["fig3a_rank_scatter"] = str(figures.fig3a_rank_scatter(scatter, out / "fig3a_rank_scatter.png", cname))
    figs["fig3b_rank_disagreement"] = str(
        figures.fig3b_rank_disagreement(ranks, out / "fig3b_rank_disagreement.png", class_names)
    )
    result["rank_disagreement"] = {
        "kind": confidence_kind,
        "classes": ranks.classes,
        "groups": rank_summary,
        "paper": PAPER["rank_disagreement"],
        "scatter_class": scatter_class,
        "scatter_far_fraction": float(scatter.far.mean()),
    }
    _write_csv(
        out / "rank_disagreement.csv",
        ["run_a", "run_b", "pair_group", "class", "fraction"],
        [
            [names[i], names[j], g, c, ranks.fraction[i, j, ci]]
            for g, pairs in ranks.pairs().items()
            for i, j in pairs
            for ci, c in enumerate(ranks.classes)
        ],
    )

    overlap = pairwise_average_overlap(logits, labels, names, groups, seed=seed)
    result["average_overlap"] = {"k": overlap.k, "groups": overlap.summary()}
    figs["fig3d_average_overlap"] = str(
        figures.fig3d_average_overlap(overlap, out / "fig3d_average_overlap.png", label)
    )
    _write_csv(
        out / "average_overlap.csv",
        ["run_a", "run_b", "pair_group", "k", "ao", "ao_same_class_baseline"],
        [
            [names[i], names[j], g, k, overlap.solid[p, k - 1], overlap.baseline[p, k - 1]]
            for p, ((i, j), g) in enumerate(zip(overlap.pairs, overlap.pair_groups, strict=True))
            for k in overlap.k
        ],
    )

    errors = {
        f"{g} natural": [error_class_rank(logits[i], labels) for i in range(len(paths)) if groups[i] == g]
        for g in ("ST", "AT")
    }
    for g, rs in (("ST", st_recs), ("AT", at_recs)):
        if rs:
            errors[f"{g} adversarial"] = [
                error_class_rank(r["clean_logits"], r["label"], r["adv_logits"].argmax(axis=1)) for r in rs
            ]
        else:
            skipped[f"error_class_rank {g} adversarial"] = f"no robustness records for any {g} run"
    figs["fig3c_error_class_rank"] = str(figures.fig3c_error_class_rank(errors, out / "fig3c_error_class_rank.png"))
    result["error_class_rank"] = {}
    for name, rs in errors.items():
        mean, sd = mean_sd_axis(np.stack([r.fraction for r in rs]))  # over runs; sd NaN for one run
        result["error_class_rank"][name] = {
            "mean": mean,
            "sd": sd,
            "n_errors": [r.n_errors for r in rs],
            "n_skipped": [r.n_skipped for r in rs],
        }
    _write_csv(
        out / "error_class_rank.csv",
        ["errors", "k", "mean_fraction", "sd_fraction"],
        [
            [name, k + 1, v["mean"][k], v["sd"][k]]
            for name, v in result["error_class_rank"].items()
            for k in range(n_classes - 1)
        ],
    )

    if at_recs:
        bins = gap_edges([top2(r["clean_logits"])["gap"] for r in at_recs], gap_bins)
        at_acc = adversarial_accuracy_by_gap(at_recs, bins)
        st_acc = adversarial_accuracy_by_gap(st_recs, bins) if st_recs else None
        figs["fig2b_adv_acc_by_gap"] = str(
            figures.fig2b_adv_acc_by_gap(at_acc, out / "fig2b_adv_acc_by_gap.png", st_acc)
        )
        result["adv_acc_by_gap"] = {
            "edges": bins,
            **{
                # a.sd: sd over runs, computed by logit_stats.GapAccuracy
                g: {"mean": a.mean, "sd": a.sd, "counts": a.counts, "trend_spearman": a.trend()}
                for g, a in (("AT", at_acc), ("ST", st_acc))
                if a is not None
            },
        }
        _write_csv(
            out / "adv_acc_by_gap.csv",
            ["group", "bin_low", "bin_high", "mean_accuracy", "sd_accuracy", "images_per_run"],
            [
                [g, bins[b], bins[b + 1], a.mean[b], a.sd[b], " ".join(map(str, a.counts[:, b]))]
                for g, a in (("AT", at_acc), ("ST", st_acc))
                if a is not None
                for b in range(len(bins) - 1)
            ],
        )
    else:
        skipped["fig2b_adv_acc_by_gap"] = "no robustness records for any AT run (eval/paper-epoch_XXX.npz)"

    if images is None:
        skipped["figb2_confidence_quadrants"] = skipped["figb3_neighbors"] = "no images given"
    else:
        quads = confidence_quadrants(conf[first_at], conf[first_st], labels, scatter_class)
        figs["figb2_confidence_quadrants"] = str(
            figures.figb2_confidence_quadrants(images, quads, out / "figb2_confidence_quadrants.png", cname)
        )
        neigh = logit_neighbors({"ST": logits[first_st], "AT": logits[first_at]}, pick_seeds(labels, n_seeds, seed))
        figs["figb3_neighbors"] = str(
            figures.figb3_neighbors(images, neigh, out / "figb3_neighbors.png", labels, class_names)
        )
        result["confidence_quadrants"] = {"class": scatter_class, "index": quads.index}
        result["neighbors"] = {
            "seeds": neigh.seeds,
            "index": neigh.index,
            "same_class_fraction": neigh.same_class_fraction(labels),
        }

    result["claim_inputs"] = _claim_inputs(result, dist, groups, names, eval_split, epoch, ranks, overlap, errors)
    result["claim_inputs"]["neighbors_same_class"] = {
        g: [neighbor_same_class(logits[i], labels, seed=seed) for i in range(len(paths)) if groups[i] == g]
        for g in ("ST", "AT")
    }
    for reason in skipped.items():
        log.info("skipped %s: %s", *reason)
    clean = _clean(result)
    atomic_write_json(out / "analysis.json", clean)
    return clean


NEIGHBOR_QUERIES = 500
"""Query images per run of the neighbour-class statistic (all images when fewer)."""


def neighbor_same_class(logits: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0) -> float:
    """Share of the ``k`` logit-cosine nearest images that have the query's class, over up to
    `NEIGHBOR_QUERIES` seeded query images (section 4.3: ST neighbours mostly share the class)."""
    labels = np.asarray(labels)
    n = len(labels)
    queries = np.random.default_rng(seed).permutation(n)[: min(NEIGHBOR_QUERIES, n)]
    found = [nearest_neighbors(logits, queries[i : i + 100], k)[0] for i in range(0, len(queries), 100)]
    index = np.concatenate(found)
    return float((labels[index] == labels[queries][:, None]).mean())


def _claim_inputs(
    r: dict[str, Any],
    dist: dict[int, dict[str, dict[str, DistributionStats]]],
    groups: list[str],
    names: list[str],
    split: str,
    epoch: int | None,
    ranks: Any,
    overlap: Any,
    errors: dict[str, list[Any]],
) -> dict[str, Any]:
    """One number per run (or per model pair) for each statistic a claim of sections 4.1 and
    4.3 tests: what `logitscope.report.claims` resamples over seeds for its intervals."""

    def per_run(stat: str, moment: str) -> dict[str, list[float]]:
        values = {i: dist[i][split][stat] for i in dist}
        return {
            g: [float(getattr(d, moment)[d.index(epoch)]) for i, d in values.items() if groups[i] == g]
            for g in ("ST", "AT")
        }

    rank_pairs = {g: [float(ranks.fraction[i, j].mean()) for i, j in pairs] for g, pairs in ranks.pairs().items()}
    pair_groups = np.array(overlap.pair_groups)
    ao = {g: overlap.solid[pair_groups == g].mean(axis=1).tolist() for g in sorted(set(overlap.pair_groups))}
    base = {g: overlap.baseline[pair_groups == g].mean(axis=1).tolist() for g in sorted(set(overlap.pair_groups))}
    return {
        "split": split,
        "epoch": epoch,
        "n_classes": r["n_classes"],
        "n_images": r["n_images"],
        "runs": r["runs"],
        "max_logit_mean": per_run("max_logit", "mean"),
        "max_logit_skew": per_run("max_logit", "skew"),
        "gap_mean": per_run("gap", "mean"),
        "rank_disagreement": rank_pairs,
        "average_overlap": ao,
        "overlap_baseline": base,
        "error_top1": {name: [float(e.fraction[0]) for e in rs if e.n_errors > 0] for name, rs in errors.items()},
    }
