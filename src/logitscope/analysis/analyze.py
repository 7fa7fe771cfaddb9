"""The analyze stage: every logit analysis of sections 4.1 and 4.3 (and appendix B) over ST
and AT runs, in one call.

`analyze` reads the run stores (logits every epoch, per-sample robustness records when
present), computes each analysis of `logit_stats`, `ranks` and `neighbors`, and writes the
numbers as ``analysis.json`` plus CSV tables (with the paper's statement beside each measured
number) and each figure's inputs as ``results.npz``. It draws nothing: the report does
(`logitscope.report.figures.draw_logit_figures`, from `read_analysis`).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from logitscope.analysis.logit_stats import (
    STATISTICS,
    DistributionStats,
    GapAccuracy,
    Histogram,
    Top2Cache,
    adversarial_accuracy_by_gap,
    gap_edges,
    logit_statistics,
    shared_edges,
    stack_histograms,
    top2,
    value_range,
)
from logitscope.analysis.neighbors import (
    ConfidenceQuadrants,
    Neighbors,
    confidence_quadrants,
    logit_neighbors,
    nearest_neighbors,
    pick_seeds,
)
from logitscope.analysis.ranks import (
    AverageOverlap,
    ErrorClassRank,
    RankDisagreement,
    RankScatter,
    confidence,
    error_class_rank,
    pairwise_average_overlap,
    pairwise_rank_disagreement,
    rank_scatter,
)
from logitscope.fileio.atomic import atomic_write_json, atomic_write_text
from logitscope.fileio.errors import load_npz, read_json
from logitscope.stats import mean_sd, mean_sd_axis
from logitscope.store.evaluations import find_record
from logitscope.store.logits import LogitStore
from logitscope.store.outputs import ANALYSIS_JSON
from logitscope.store.results import read_results, write_results

log = logging.getLogger(__name__)

RECORD_KEYS = ("label", "clean_logits", "adv_logits", "robust")
RECORD_PROTOCOL = "paper"

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


SUMMARY_FILE = ANALYSIS_JSON
RESULTS_FILE = "results.npz"
RESULT_TYPES = {
    cls.__name__: cls
    for cls in (
        DistributionStats,
        Histogram,
        GapAccuracy,
        RankScatter,
        RankDisagreement,
        ErrorClassRank,
        AverageOverlap,
        ConfidenceQuadrants,
        Neighbors,
    )
}


def read_analysis(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """What `analyze` stored in ``folder``: the numbers (``analysis.json``) and the figures'
    inputs (``results.npz``: the analyses' dataclasses, see `analyze`)."""
    folder = Path(folder)
    return read_json(folder / SUMMARY_FILE, expect=dict), read_results(folder / RESULTS_FILE, RESULT_TYPES)


class _Runs:
    """The runs of one analysis: paths, ST/AT groups, unique names, stores, the split's labels."""

    def __init__(self, st_runs: Sequence[str | os.PathLike], at_runs: Sequence[str | os.PathLike], split: str | None):
        if not st_runs or not at_runs:
            raise ValueError(f"{len(st_runs)} ST and {len(at_runs)} AT runs: expected at least one each")
        self.paths = [Path(r) for r in (*st_runs, *at_runs)]
        self.groups = ["ST"] * len(st_runs) + ["AT"] * len(at_runs)
        self.names = _unique_names(self.paths)
        self.stores = [LogitStore(p) for p in self.paths]
        self.split = _eval_split(self.stores, split)
        self.labels = self.stores[0].labels(self.split)
        self.first = {"ST": 0, "AT": len(st_runs)}
        for name, st in zip(self.names[1:], self.stores[1:], strict=True):
            if not np.array_equal(st.labels(self.split), self.labels):
                raise ValueError(
                    f"run {name} has other {self.split} labels than {self.names[0]}: "
                    "expected the same images in the same order"
                )

    def of(self, group: str) -> list[int]:
        return [i for i, g in enumerate(self.groups) if g == group]


def _load_records(
    runs: _Runs, epoch: int | None, records: Mapping[str | os.PathLike, Mapping[str, np.ndarray]] | None
) -> tuple[dict[int, dict[str, np.ndarray]], dict[str, str | None]]:
    """Per-sample robustness records, from the caller or from each run's eval folder."""
    recs: dict[int, dict[str, np.ndarray]] = {}
    where: dict[str, str | None] = {}
    for i, p in enumerate(runs.paths):
        keys = (p, str(p), runs.names[i]) if records is not None else ()
        given = next((records[k] for k in keys if k in records), None)
        if given is not None:
            recs[i] = check_records(given, runs.names[i])
            where[runs.names[i]] = "given"
        elif (f := find_record(p, epoch, RECORD_PROTOCOL)) is not None:
            recs[i] = check_records(load_npz(f), str(f))
            where[runs.names[i]] = str(f)
        else:
            where[runs.names[i]] = None
    return recs, where


def _distributions(
    runs: _Runs, epoch: int | None, n_bins: int, out: Path, result: dict[str, Any], figs: dict[str, Any]
) -> dict[int, dict[str, dict[str, DistributionStats]]]:
    """Figures 1, B.1 and 2A: distributions over epochs, one range pass then one statistics pass."""
    splits = {
        i: list(dict.fromkeys(s for s in ("train", runs.split) if s in st.splits)) for i, st in enumerate(runs.stores)
    }
    # The cache carries each epoch's top-2 logits from the range pass to the statistics pass (within
    # its memory budget), so each epoch file is read and reduced once.
    cache = Top2Cache()
    edges = shared_edges(value_range([(runs.stores[i], s) for i in splits for s in splits[i]], cache=cache), n_bins)
    dist = {i: {s: logit_statistics(runs.stores[i], s, edges, cache=cache) for s in splits[i]} for i in splits}
    names, groups = runs.names, runs.groups
    result["distributions"] = {
        names[i]: {s: {k: d.summary(epoch) for k, d in by.items()} for s, by in dist[i].items()} for i in dist
    }
    result["distribution_groups"] = {
        s: {
            stat: {g: _group_moments([dist[i][s][stat] for i in runs.of(g)], epoch) for g in ("ST", "AT")}
            for stat in STATISTICS
        }
        for s in splits[runs.first["ST"]]
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
        + [f"q{q:g}" for q in dist[0][runs.split]["gap"].quantile_levels],
        [
            [names[i], groups[i], s, k, e, d.n[r], d.mean[r], d.sd[r], d.skew[r], *d.quantiles[r]]
            for i in dist
            for s, by in dist[i].items()
            for k, d in by.items()
            for r, e in enumerate(d.epochs)
        ],
    )
    st, at = dist[runs.first["ST"]], dist[runs.first["AT"]]
    evo = "train" if "train" in st and "train" in at else runs.split
    figs["max_logit_evolution"] = {"ST": st[evo]["max_logit"], "AT": at[evo]["max_logit"]}
    panels = [(f"A) ST {evo}", st[evo]["gap"]), (f"B) AT {evo}", at[evo]["gap"])]
    if evo != runs.split:
        panels.append((f"C) AT {runs.split}", at[runs.split]["gap"]))
    figs["gap_evolution"] = panels
    figs["gap_histograms"] = {
        g: stack_histograms([dist[i][runs.split]["gap"] for i in runs.of(g)], epoch) for g in ("ST", "AT")
    }
    return dist


def _rank_analyses(
    runs: _Runs,
    logits: list[np.ndarray],
    confidence_kind: str,
    scatter_class: int | None,
    seed: int,
    out: Path,
    result: dict[str, Any],
    figs: dict[str, Any],
) -> tuple[Any, Any, int, list[np.ndarray]]:
    """Figures 3A, 3B and 3D: rank disagreement and its scatter, average overlap."""
    names, groups, labels = runs.names, runs.groups, runs.labels
    ranks = pairwise_rank_disagreement(logits, labels, names, groups, confidence_kind)
    rank_summary = ranks.summary()
    if scatter_class is None:
        at_st = np.array(rank_summary["AT-ST"]["per_class_mean"])
        scatter_class = int(ranks.classes[np.argmin(np.abs(at_st - at_st.mean()))])
    conf = [confidence(z, labels, confidence_kind) for z in logits]
    first_st, first_at = runs.first["ST"], runs.first["AT"]
    scatter = rank_scatter(conf[first_at], conf[first_st], labels, scatter_class, (names[first_at], names[first_st]))
    figs["rank_scatter"], figs["rank_disagreement"] = scatter, ranks
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
    figs["average_overlap"] = overlap
    result["average_overlap"] = {"k": overlap.k, "groups": overlap.summary()}
    _write_csv(
        out / "average_overlap.csv",
        ["run_a", "run_b", "pair_group", "k", "ao", "ao_same_class_baseline"],
        [
            [names[i], names[j], g, k, overlap.solid[p, k - 1], overlap.baseline[p, k - 1]]
            for p, ((i, j), g) in enumerate(zip(overlap.pairs, overlap.pair_groups, strict=True))
            for k in overlap.k
        ],
    )
    return ranks, overlap, scatter_class, conf


def _error_ranks(
    runs: _Runs,
    logits: list[np.ndarray],
    recs: dict[int, dict[str, np.ndarray]],
    out: Path,
    result: dict[str, Any],
    figs: dict[str, Any],
) -> dict[str, list[Any]]:
    """Figure 3C: the rank of the predicted class in the true class's mean logits."""
    errors = {f"{g} natural": [error_class_rank(logits[i], runs.labels) for i in runs.of(g)] for g in ("ST", "AT")}
    for g in ("ST", "AT"):
        rs = [recs[i] for i in recs if runs.groups[i] == g]
        if rs:
            errors[f"{g} adversarial"] = [
                error_class_rank(r["clean_logits"], r["label"], r["adv_logits"].argmax(axis=1)) for r in rs
            ]
        else:
            result["skipped"][f"error_class_rank {g} adversarial"] = f"no robustness records for any {g} run"
    figs["error_class_rank"] = errors
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
            for k in range(result["n_classes"] - 1)
        ],
    )
    return errors


def _accuracy_by_gap(
    runs: _Runs, recs: dict[int, dict[str, np.ndarray]], gap_bins: int, out: Path, result: dict[str, Any], figs: dict
) -> None:
    """Figure 2B: adversarial accuracy by clean logit gap (needs the AT runs' records)."""
    at_recs = [recs[i] for i in recs if runs.groups[i] == "AT"]
    st_recs = [recs[i] for i in recs if runs.groups[i] == "ST"]
    if not at_recs:
        result["skipped"]["fig2b_adv_acc_by_gap"] = "no robustness records for any AT run (eval/paper-epoch_XXX.npz)"
        return
    bins = gap_edges([top2(r["clean_logits"])["gap"] for r in at_recs], gap_bins)
    accs = {"AT": adversarial_accuracy_by_gap(at_recs, bins)}
    if st_recs:
        accs["ST"] = adversarial_accuracy_by_gap(st_recs, bins)
    figs["adv_acc_by_gap"] = accs
    result["adv_acc_by_gap"] = {
        "edges": bins,
        # a.sd: sd over runs, computed by logit_stats.GapAccuracy
        **{g: {"mean": a.mean, "sd": a.sd, "counts": a.counts, "trend_spearman": a.trend()} for g, a in accs.items()},
    }
    _write_csv(
        out / "adv_acc_by_gap.csv",
        ["group", "bin_low", "bin_high", "mean_accuracy", "sd_accuracy", "images_per_run"],
        [
            [g, bins[b], bins[b + 1], a.mean[b], a.sd[b], " ".join(map(str, a.counts[:, b]))]
            for g, a in accs.items()
            for b in range(len(bins) - 1)
        ],
    )


def _neighbor_analyses(
    runs: _Runs,
    logits: list[np.ndarray],
    conf: list[np.ndarray],
    scatter_class: int,
    n_seeds: int,
    seed: int,
    result: dict[str, Any],
    figs: dict[str, Any],
) -> None:
    """Figures B.2 and B.3: images by AT and ST confidence; nearest images by logit cosine."""
    first_st, first_at, labels = runs.first["ST"], runs.first["AT"], runs.labels
    figs["confidence_quadrants"] = quads = confidence_quadrants(conf[first_at], conf[first_st], labels, scatter_class)
    figs["neighbors"] = neigh = logit_neighbors(
        {"ST": logits[first_st], "AT": logits[first_at]}, pick_seeds(labels, n_seeds, seed)
    )
    result["confidence_quadrants"] = {"class": scatter_class, "index": quads.index}
    result["neighbors"] = {
        "seeds": neigh.seeds,
        "index": neigh.index,
        "same_class_fraction": neigh.same_class_fraction(labels),
    }


def analyze(
    st_runs: Sequence[str | os.PathLike],
    at_runs: Sequence[str | os.PathLike],
    epoch: int | None,
    out_dir: str | os.PathLike,
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
    """Run every logit analysis on ST and AT runs and store the numbers and the figures' inputs.

    Args:
        st_runs, at_runs: run folders (each with ``logits/``); one per seed, at least one each.
        epoch: epoch of the image-level comparisons (gaps, ranks, overlap, neighbors) and of the
            records (``eval/paper-epoch_XXX.npz``); ``None``: each run's last stored epoch and
            latest records. The evolution figures always use every stored epoch.
        out_dir: where ``analysis.json``, the CSV tables and ``results.npz`` go.
        records: run folder (path or str) or run name -> per-sample robustness records,
            overriding the files; runs without either skip what needs them (figure 2B,
            adversarial error ranks).
        split: evaluation split (``None``: test, else val, else train).
        confidence_kind: ``"true"`` or ``"max"`` softmax confidence for the rank analyses.
        scatter_class: class of figures 3A and B.2 (``None``: the class whose AT-ST
            disagreement is closest to the mean over classes).
        class_names: names of the classes, for the figures' labels.
        dataset: dataset name for titles (e.g. ``"CIFAR-100"`` for figures B.4 to B.6).
        n_bins: bins of the distribution histograms; ``gap_bins``: bins of figure 2B.
        n_seeds: seed images of figure B.3; ``seed``: seeds the random choices.

    Returns:
        The JSON-ready dict written to ``out_dir/analysis.json``: per-analysis numbers,
        ``claim_inputs`` (the per-run and per-pair numbers the claims registry,
        `logitscope.report.claims`, tests) and ``skipped`` (name -> reason). Each figure's
        inputs (the analyses' dataclasses) go to ``results.npz`` (`read_analysis`), from
        which `logitscope.report.figures.draw_logit_figures` draws.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = _Runs(st_runs, at_runs, split)
    result: dict[str, Any] = {
        "runs": {g: [runs.names[i] for i in runs.of(g)] for g in ("ST", "AT")},
        "paths": dict(zip(runs.names, [str(p) for p in runs.paths], strict=True)),
        "epoch": epoch,
        "split": runs.split,
        "dataset": dataset,
        "paper": PAPER,
        "skipped": {},
    }
    recs, result["records"] = _load_records(runs, epoch, records)
    figs: dict[str, Any] = {}
    dist = _distributions(runs, epoch, n_bins, out, result, figs)
    logits = [np.asarray(st.get(runs.split, epoch), np.float32) for st in runs.stores]
    result["n_classes"], result["n_images"] = logits[0].shape[1], len(runs.labels)
    ranks, overlap, scatter_class, conf = _rank_analyses(
        runs, logits, confidence_kind, scatter_class, seed, out, result, figs
    )
    errors = _error_ranks(runs, logits, recs, out, result, figs)
    _accuracy_by_gap(runs, recs, gap_bins, out, result, figs)
    _neighbor_analyses(runs, logits, conf, scatter_class, n_seeds, seed, result, figs)
    labels = runs.labels
    result["claim_inputs"] = _claim_inputs(result, dist, runs.groups, runs.split, epoch, ranks, overlap, errors)
    result["claim_inputs"]["neighbors_same_class"] = {
        g: [neighbor_same_class(logits[i], labels, seed=seed) for i in runs.of(g)] for g in ("ST", "AT")
    }
    for reason in result["skipped"].items():
        log.info("skipped %s: %s", *reason)
    names = list(class_names) if class_names is not None else None
    figs["meta"] = {"labels": labels, "class_names": names, "dataset": dataset, "scatter_class": scatter_class}
    write_results(out / RESULTS_FILE, figs)
    clean = _clean(result)
    atomic_write_json(out / SUMMARY_FILE, clean)
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
