"""The paper's claims, each declared once, tested with an interval.

A claim (`ClaimSpec`) is the paper's sentence (quoted), the paper's number and where it is,
an *effect* (one number: a difference, a ratio, a slope) computed by a pure function of the
stored results (`Evidence`), and a `Predicate` of that effect faithful to the sentence: "lower"
is ``effect < 0``, "keeps 99%" is ``ratio >= 0.99``, "about 11.8%" is a band around 11.8%.

The verdict comes from the effect's 95% interval, never from its point value alone:

- ``holds``: the whole interval is on the claim's side of the threshold (inside the band);
- ``does not hold``: the whole interval is on the other side (outside the band);
- ``inconclusive``: the interval straddles the threshold, i.e. the measured effect is within
  the uncertainty across seeds and test images; or no interval can be formed (one run);
- ``not measured``: what the effect needs was not run (e.g. no fix-7 student in the preset);
- ``failed``: the stage that measures it raised (the report names it).

Intervals (`METHOD`): a percentile bootstrap, `logitscope.stats.bootstrap_means`. Effects
on robustness records resample the test images (the same images for every model: they are
paired) and, within each group, the seeds; effects on per-run analysis numbers resample
the runs (or model pairs); manifold effects resample the exemplar images (the same
exemplars in every layer and model). Deterministic: fixed draws (numpy's PCG64 stream: the same
on every machine with the same numpy version).

Appendix C's statements are computations, not measurements: their verdicts are the theory
section's own (confirmed -> holds, not confirmed -> does not hold, partly -> inconclusive,
with "partly" said).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from logitscope.report.model import VERDICTS, Claim
from logitscope.stats import BOOTSTRAP_DRAWS, BOOTSTRAP_LEVEL, bootstrap_means, percentile_interval

METHOD = (
    f"{BOOTSTRAP_LEVEL:.0%} percentile bootstrap interval ({BOOTSTRAP_DRAWS} draws, fixed seed): test images "
    "resampled (paired: the same images for every model) and seeds resampled within each group; per-run "
    "analysis numbers: runs or model pairs resampled; manifolds: exemplar images resampled. 'To decide' "
    "(inconclusive claims): the seeds per group that would likely decide it, projected from this run's spreads "
    "(the interval narrows as 1/sqrt(seeds) but for the spread of the test images' own effect, measured by "
    "resampling the images with the seeds held, all together and one at a time)"
)


class Missing(Exception):
    """What an effect needs is absent; the message says what (the claim is "not measured")."""


# -- the evidence: stored results, as arrays -------------------------------------------------


@dataclass(frozen=True)
class Records:
    """Per-image robustness records of a group of runs (one row per seed) on the same images.

    Attributes:
        clean: ``(S, N)`` 1.0 where the clean prediction is right.
        adv: ``(S, N)`` 1.0 where the image survives the attack (the protocol's ``robust``).
        gap: ``(S, N)`` clean logit gap (max minus second largest).
        runs: the run ids, one per row; ``epoch``: the epoch they were evaluated at.
    """

    clean: np.ndarray
    adv: np.ndarray
    gap: np.ndarray
    runs: tuple[str, ...]
    epoch: int | None = None
    labels: np.ndarray | None = None

    @property
    def shape(self) -> str:
        s, n = self.clean.shape
        return f"{s} seed{'s' if s != 1 else ''} x {n} images"

    @classmethod
    def from_arrays(
        cls, records: Sequence[Mapping[str, np.ndarray]], runs: Sequence[str], epoch: int | None = None
    ) -> Records:
        """From protocol records (``label``, ``clean_logits``, ``robust``): every run on the same
        images (the same labels in the same order), else a one-line ValueError."""
        if not records:
            raise ValueError("no records: expected at least one run's")
        labels = np.asarray(records[0]["label"])
        for run, r in zip(runs, records, strict=True):
            if not np.array_equal(np.asarray(r["label"]), labels):
                raise ValueError(f"records of {run} hold other images than {runs[0]}: expected the same test images")
        clean, adv, gap = [], [], []
        for r in records:
            z = np.asarray(r["clean_logits"], np.float64)
            top = np.sort(z, axis=1)
            clean.append((z.argmax(axis=1) == labels).astype(np.float64))
            adv.append(np.asarray(r["robust"], np.float64))
            gap.append(top[:, -1] - top[:, -2])
        return cls(np.stack(clean), np.stack(adv), np.stack(gap), tuple(runs), epoch, labels)


@dataclass
class Evidence:
    """Everything the claims read, loaded from the stores (`logitscope.report.build`).

    Attributes:
        records: group -> `Records`: "ST" (last epoch), "AT teacher" (the teacher epoch),
            "AT analysed" (the analysis epoch), one per student tag ("normal", "fix3-permute",
            ...), and "sweep-<loss>-e<teacher epoch>" for figure A.6/A.7's students.
        analysis: ``analysis/analysis.json``'s ``claim_inputs`` (per-run numbers).
        manifolds: ``manifolds/manifolds.json``'s ``models``.
        theory: ``theory/theory.json``.
        teacher: ``plan/teacher.json`` (the epoch, the rule, the split that chose).
        n_classes: classes of the dataset.
        teacher_error: the AT teacher's training error that correct-fix-1 fixed, per student.
    """

    records: dict[str, Records] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    manifolds: dict[str, Any] = field(default_factory=dict)
    theory: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    n_classes: int | None = None
    teacher_error: list[float] = field(default_factory=list)

    def group(self, name: str, why: str = "") -> Records:
        if name not in self.records:
            raise Missing(f"no {name} records" + (f" ({why})" if why else ""))
        return self.records[name]


# -- effects and their intervals -------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """An effect: its point value, interval and the numbers behind it, in words.

    ``images``: the lower and upper half-widths of the part of the interval that more seeds
    would not narrow, the spread of the test images' own effect (`image_part`); ``seeds``:
    the fewest seeds of its groups. Both feed `Predicate.to_decide`; NaN / 0 where the effect
    has no seed level.
    """

    value: float
    low: float
    high: float
    text: str
    basis: str = ""
    images: tuple[float, float] = (math.nan, math.nan)
    seeds: int = 0

    def shown(self, fmt: Callable[[float], str]) -> str:
        interval = "no interval" if math.isnan(self.low) else f"[{fmt(self.low)}, {fmt(self.high)}]"
        return f"{self.text}; effect {fmt(self.value)} {interval}" + (f" ({self.basis})" if self.basis else "")


Columns = dict[str, dict[str, np.ndarray]]


def estimate(
    samples: Columns,
    effect: Callable[[dict[str, dict[str, Any]]], Any],
    text: str,
    basis: str,
    over_runs: bool = True,
) -> Estimate:
    """``effect`` of the group means (``means[group][column]``), at the data and over bootstrap
    draws (`logitscope.stats.bootstrap_means`). A group of a single run (seed) gives no
    interval: its spread over seeds is unknown (``over_runs=False``: the rows are single
    models by design, e.g. the manifold analysis, and the columns are what is resampled). An
    effect undefined in any draw (a vanishing denominator) gives no interval either."""
    point = {g: {c: float(np.mean(a)) for c, a in cols.items()} for g, cols in samples.items()}
    value = float(effect(point))
    shapes = [a.shape for cols in samples.values() for a in cols.values()]
    if over_runs and any(s[0] == 1 for s in shapes):
        # a group of one run (seed): its spread over seeds is unknown, and resampling its test
        # images alone would claim a certainty the seeds may not give
        return Estimate(value, math.nan, math.nan, text, basis + "; a group of one seed: no interval")
    draws = bootstrap_means(samples)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.asarray(effect(draws), np.float64)
    if np.isnan(d).any():  # e.g. a ratio whose denominator vanished: such draws are never dropped
        return Estimate(value, math.nan, math.nan, text, basis + f"; undefined in {np.isnan(d).mean():.0%} of draws")
    low, high = percentile_interval(d)
    if not over_runs:
        return Estimate(value, low, high, text, basis)
    return Estimate(value, low, high, text, basis, image_part(samples, effect), min(s[0] for s in shapes))


def _half_widths(
    samples: Columns, effect: Callable[[dict[str, dict[str, Any]]], Any], resample_seeds: bool
) -> tuple[float, float]:
    """Lower and upper half-widths of ``effect``'s bootstrap interval about its point value."""
    point = {g: {c: float(np.mean(a)) for c, a in cols.items()} for g, cols in samples.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(effect(point))
        d = np.asarray(effect(bootstrap_means(samples, resample_seeds=resample_seeds)), np.float64)
    low, high = percentile_interval(d) if not np.isnan(d).any() else (math.nan, math.nan)
    return value - low, high - value


def image_part(samples: Columns, effect: Callable[[dict[str, dict[str, Any]]], Any]) -> tuple[float, float]:
    """The half-widths (lower, upper) of the interval's part that more seeds would not narrow.

    With seeds held and images resampled, the spread has two parts: the images' own effect
    (``main``, fixed by the test set) and how an image's outcome varies from seed to seed
    (``inter``, which averages out over seeds): squared half-widths ``w_all = main + inter / S``
    over all S seeds, ``w_one = main + inter`` for one seed at a time (averaged over the
    seeds). Hence ``main = w_all - (w_one - w_all) / (S - 1)``, clipped to ``[0, w_all]``.
    NaN where the effect is undefined in a draw (e.g. a seed with no robustness to keep)."""
    s = min(a.shape[0] for cols in samples.values() for a in cols.values())
    held = _half_widths(samples, effect, resample_seeds=False)
    one = [
        _half_widths({g: {c: a[[i]] for c, a in cols.items()} for g, cols in samples.items()}, effect, True)
        for i in range(s)
    ]
    out = []
    for side, w_all in enumerate(held):
        w_one = float(np.mean([w[side] ** 2 for w in one]))
        main = min(max(w_all**2 - (w_one - w_all**2) / (s - 1), 0.0), w_all**2) if s > 1 else w_all**2
        out.append(math.sqrt(main) if math.isfinite(main) else math.nan)
    return out[0], out[1]


def per_run(values: Mapping[str, Sequence[float]]) -> Columns:
    """Per-run (or per-pair) numbers as bootstrap columns: ``{group: {"v": (S, 1)}}``."""
    out = {}
    for g, v in values.items():
        a = np.asarray([x for x in v if x is not None and np.isfinite(x)], np.float64)
        if a.size == 0:
            raise Missing(f"no {g} values")
        out[g] = {"v": a[:, None]}
    return out


def ratio(a: Any, b: Any) -> Any:
    """a / b, NaN where b is 0 (no robustness to keep a fraction of)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


# -- tests of an effect ----------------------------------------------------------------------


@dataclass(frozen=True)
class Predicate:
    """``above`` / ``below`` a threshold, or ``within`` a band ``(low, high)``."""

    kind: str
    bounds: tuple[float, float]

    @classmethod
    def above(cls, t: float) -> Predicate:
        return cls("above", (t, t))

    @classmethod
    def below(cls, t: float) -> Predicate:
        return cls("below", (t, t))

    @classmethod
    def within(cls, low: float, high: float) -> Predicate:
        return cls("within", (low, high))

    def verdict(self, e: Estimate) -> str:
        lo, hi = e.low, e.high
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return "inconclusive"
        a, b = self.bounds
        if self.kind == "above":
            return "holds" if lo > a else ("does not hold" if hi < a else "inconclusive")
        if self.kind == "below":
            return "holds" if hi < a else ("does not hold" if lo > a else "inconclusive")
        if a <= lo and hi <= b:
            return "holds"
        return "does not hold" if (hi < a or lo > b) else "inconclusive"

    def to_decide(self, e: Estimate) -> str:
        """For an inconclusive verdict, the seeds per group that would likely decide it: the
        interval's squared half-width beyond its images' part (``e.images``) narrows as
        1/seeds, until the side of the interval facing the threshold clears it. A projection
        from this run's spreads (a few seeds estimate them roughly), not a promise; "" when
        decided or without a seed level."""
        if self.verdict(e) != "inconclusive" or e.seeds < 2 or not all(map(math.isfinite, (e.low, e.high, *e.images))):
            return ""
        v, (a, b) = e.value, self.bounds
        lower, upper = (v - e.low, e.images[0]), (e.high - v, e.images[1])  # (half-width, its images' part)
        if self.kind == "within" and a < v < b:
            sides = [(v - a, *lower), (b - v, *upper)]
        elif v > (b if self.kind == "within" else a):
            sides = [(v - (b if self.kind == "within" else a), *lower)]
        elif v < a:
            sides = [(a - v, *upper)]
        else:
            return "none: the effect sits on the threshold"
        need = e.seeds + 1
        for gap, w, w0 in sides:
            if w0 >= gap:
                return "more test images: the images' own spread spans the threshold"
            need = max(need, math.ceil(e.seeds * max(w * w - w0 * w0, 0.0) / (gap * gap - w0 * w0)))
        return f"about {need} seeds per group (now {e.seeds})"

    def describe(self, fmt: Callable[[float], str]) -> str:
        a, b = self.bounds
        if self.kind == "within":
            return f"holds if the whole interval is within [{fmt(a)}, {fmt(b)}], does not hold if it is outside"
        side, other = ("above", "below") if self.kind == "above" else ("below", "above")
        return f"holds if the whole interval is {side} {fmt(a)}, does not hold if it is {other}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _num(x: float) -> str:
    return f"{x:.3g}"


# -- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of the paper. ``effect`` maps the evidence to an `Estimate` (or raises
    `Missing`); ``needs``: plan stage-name prefixes (or ``fnmatch`` patterns, with
    ``{loss}`` the distillation loss) whose failure leaves it "failed"."""

    id: str
    section: str
    sentence: str
    paper: str
    where: str
    measures: str
    test: Predicate
    effect: Callable[[Evidence], Estimate]
    needs: tuple[str, ...]
    fmt: Callable[[float], str] = _pct

    def check(self, ev: Evidence, failed: str | None = None) -> Claim:
        """This claim's verdict on ``ev``; ``failed``: the failed stage (and its error) that
        measures it, if any."""
        how = f"{self.measures}; {self.test.describe(self.fmt)}"
        if failed:
            return Claim(self.id, self.sentence, f"failed: {failed}", "failed", how, self.paper, self.where)
        try:
            e = self.effect(ev)
        except Missing as m:
            return Claim(self.id, self.sentence, f"not measured: {m}", "not measured", how, self.paper, self.where)
        verdict, to_decide = self.test.verdict(e), self.test.to_decide(e)
        return Claim(self.id, self.sentence, e.shown(self.fmt), verdict, how, self.paper, self.where, to_decide)


def _acc_groups(ev: Evidence, names: Mapping[str, str], column: str) -> Columns:
    """The groups' ``column`` arrays, checked to hold the same images (else `Missing`: e.g. a
    record left by an evaluation with other settings)."""
    groups = {alias: ev.group(name) for alias, name in names.items()}
    first = next(iter(groups.values()))
    for alias, r in groups.items():
        same = r.clean.shape[1] == first.clean.shape[1] and (
            r.labels is None or first.labels is None or np.array_equal(r.labels, first.labels)
        )
        if not same:
            raise Missing(f"{names[alias]} was evaluated on other images than {next(iter(names.values()))}")
    return {alias: {"v": getattr(r, column)} for alias, r in groups.items()}


def _acc_effect(
    names: Mapping[str, str], column: str, effect: Callable[[dict[str, Any]], Any], label: str
) -> Callable[[Evidence], Estimate]:
    """An effect of mean accuracies (``column`` "clean" or "adv") of the named groups."""

    def run(ev: Evidence) -> Estimate:
        samples = _acc_groups(ev, names, column)
        means = {a: float(np.mean(c["v"])) for a, c in samples.items()}
        text = ", ".join(f"{a} {_pct(m)}" for a, m in means.items())
        basis = "; ".join(f"{a}: {ev.group(n).shape}" for a, n in names.items())
        return estimate(samples, lambda m: effect({a: m[a]["v"] for a in m}), f"{label}: {text}", basis)

    return run


def _diff(a: str, b: str) -> Callable[[dict[str, Any]], Any]:
    return lambda m: np.asarray(m[a]) - np.asarray(m[b])


PAIR_KEYS = ("rank_disagreement", "average_overlap", "overlap_baseline")
PAIRS_NOTE = "pairs resampled as if independent (they share runs: the interval may be too narrow)"


def _analysis_effect(key: str, a: str, b: str, label: str) -> Callable[[Evidence], Estimate]:
    """``mean(a) - mean(b)`` of a per-run (or per-pair) analysis number, runs resampled."""

    def run(ev: Evidence) -> Estimate:
        if key not in ev.analysis:
            raise Missing(f"no {key} in the analysis (analyze did not run, or ran with an older version)")
        values = ev.analysis[key]
        if a not in values or b not in values or not values[a] or not values[b]:
            raise Missing(f"{key} needs {a} and {b} values (e.g. two AT runs for AT-AT)")
        samples = per_run({a: values[a], b: values[b]})
        text = f"{label}: " + ", ".join(f"{g} {_num(float(np.mean(samples[g]['v'])))}" for g in (a, b))
        n = {g: samples[g]["v"].shape[0] for g in (a, b)}
        basis = f"{_where(ev)}; " + ", ".join(f"{g}: {n[g]} values" for g in (a, b))
        if key in PAIR_KEYS:
            basis += f"; {PAIRS_NOTE}"
        return estimate(samples, lambda m: np.asarray(m[a]["v"]) - np.asarray(m[b]["v"]), text, basis)

    return run


def _where(ev: Evidence) -> str:
    e = ev.analysis.get("epoch")
    return f"{ev.analysis.get('split', '?')} split, " + (f"epoch {e}" if e is not None else "last epoch")


def _level_effect(key: str, group: str, label: str) -> Callable[[Evidence], Estimate]:
    """The mean of one group's per-pair numbers (a level, e.g. 11.8%), pairs resampled."""

    def run(ev: Evidence) -> Estimate:
        values = ev.analysis.get(key, {}).get(group)
        if not values:
            raise Missing(f"no {group} pairs (needs runs of both kinds; AT-AT needs two AT runs)")
        samples = per_run({group: values})
        return estimate(
            samples,
            lambda m: m[group]["v"],
            f"{label}: {_pct(float(np.mean(values)))}",
            f"{_where(ev)}; {len(values)} model pairs; {PAIRS_NOTE}",
        )

    return run


def _gap_predicts(ev: Evidence) -> Estimate:
    """AT adversarial accuracy on images with a clean gap above each run's median, minus below."""
    r = ev.group("AT analysed", "the AT runs' robustness records at the analysis epoch")
    high = (r.gap > np.median(r.gap, axis=1, keepdims=True)).astype(np.float64)
    low = 1.0 - high
    samples = {"AT": {"rh": r.adv * high, "h": high, "rl": r.adv * low, "l": low}}

    def effect(m: dict[str, Any]) -> Any:
        a = m["AT"]
        return ratio(a["rh"], a["h"]) - ratio(a["rl"], a["l"])

    pt = {c: float(np.mean(v)) for c, v in samples["AT"].items()}
    text = f"AT adversarial accuracy, gap above median {_pct(pt['rh'] / pt['h'])}, below {_pct(pt['rl'] / pt['l'])}"
    return estimate(samples, effect, text, f"AT records at epoch {r.epoch}: {r.shape}")


def _error_lift(ev: Evidence) -> Estimate:
    """Errors on the true class's top-ranked other class, as a multiple of chance (1/(C-1)):
    the smaller of ST's and AT's (both networks' averages must predict their errors)."""
    tops = ev.analysis.get("error_top1")
    c = ev.analysis.get("n_classes")
    if not tops or not c:
        raise Missing("no error-class ranks in the analysis")
    groups = {g: tops.get(f"{g} natural") for g in ("ST", "AT")}
    if not all(groups.values()):
        raise Missing("no wrong predictions to rank for ST or AT")
    chance = 1.0 / (c - 1)
    samples = per_run(groups)
    text = "errors at rank 1: " + ", ".join(f"{g} {_pct(float(np.mean(v)))}" for g, v in groups.items())
    return estimate(
        samples,
        lambda m: np.minimum(np.asarray(m["ST"]["v"]), np.asarray(m["AT"]["v"])) / chance,
        f"{text} (chance {_pct(chance)})",
        f"{_where(ev)}; effect = min(ST, AT) / chance",
    )


def _error_st_vs_at(ev: Evidence) -> Estimate:
    tops = ev.analysis.get("error_top1") or {}
    groups = {g: tops.get(f"{g} natural") for g in ("ST", "AT")}
    if not all(groups.values()):
        raise Missing("no wrong predictions to rank for ST or AT")
    samples = per_run(groups)
    text = "errors at rank 1: " + ", ".join(f"{g} {_pct(float(np.mean(v)))}" for g, v in groups.items())
    return estimate(samples, lambda m: np.asarray(m["ST"]["v"]) - np.asarray(m["AT"]["v"]), text, _where(ev))


def _fix_ks(ev: Evidence, kmax: int | None = None) -> list[int]:
    c = ev.n_classes or 0
    ks = sorted(int(t[3:].split("-")[0]) for t in ev.records if t.startswith("fix") and t.endswith("-permute"))
    return [k for k in ks if k < c - 1 and (kmax is None or k <= kmax)]  # fix-(C-1) permutes nothing


def _k_slope(ev: Evidence) -> Estimate:
    """Least-squares slope of fix-k (permute) student adversarial accuracy over k, per unit k."""
    ks = _fix_ks(ev)
    if len(ks) < 2:
        raise Missing("fewer than two fix-k (permute) students with k < classes - 1")
    names = {f"k{k}": f"fix{k}-permute" for k in ks}
    samples = _acc_groups(ev, names, "adv")
    x = np.asarray(ks, np.float64)
    x = (x - x.mean()) / np.sum((x - x.mean()) ** 2)

    def effect(m: dict[str, Any]) -> Any:
        return sum(w * np.asarray(m[f"k{k}"]["v"]) for w, k in zip(x, ks, strict=True))

    text = "fix-k adversarial: " + ", ".join(f"k={k} {_pct(float(np.mean(samples[f'k{k}']['v'])))}" for k in ks)
    return estimate(samples, effect, text, f"{ev.group(names[f'k{ks[0]}']).shape} per k; effect: slope per unit k")


def _fix7_kept(ev: Evidence) -> Estimate:
    if "fix7-permute" not in ev.records or (ev.n_classes or 0) <= 8:
        raise Missing("no fix-7 (permute) student, or fix-7 keeps every logit that matters for these classes")
    return _kept_of("fix7-permute", "normal")(ev)


def _kept_of(tag: str, ref: str = "fix1-permute") -> Callable[[Evidence], Estimate]:
    """The share of the ``ref`` student's adversarial accuracy that the ``tag`` student keeps."""
    label = {t: {"fix1-permute": "fix-1 permute", "fix7-permute": "fix-7"}.get(t, t) for t in (tag, ref)}
    name = label[ref]

    def run(ev: Evidence) -> Estimate:
        samples = _acc_groups(ev, {tag: tag, ref: ref}, "adv")
        pt = {g: float(np.mean(c["v"])) for g, c in samples.items()}
        if pt[ref] == 0:
            raise Missing(f"the {name} student has no robustness to lose")
        text = f"adversarial: {label[tag]} {_pct(pt[tag])}, {name} {_pct(pt[ref])}"
        if tag == "correct-fix1" and ev.teacher_error:
            text += f"; teacher training error corrected {_pct(float(np.mean(ev.teacher_error)))} (paper 19.6%)"
        return estimate(
            samples,
            lambda m: ratio(m[tag]["v"], m[ref]["v"]),
            text,
            f"{ev.group(tag).shape}; effect: {label[tag]} / {name}",
        )

    return run


def _late_teacher(ev: Evidence) -> Estimate:
    """Student adversarial accuracy (test) from the chosen teacher epoch minus from the last."""
    chosen = ev.teacher.get("epoch")
    if chosen is None:
        raise Missing("no teacher epoch chosen")
    loss = ev.teacher.get("loss", "l1")
    epochs = sorted(int(g.rsplit("-e", 1)[1]) for g in ev.records if g.startswith(f"sweep-{loss}-e"))
    if len(epochs) < 2 or chosen not in epochs:
        raise Missing(f"figure A.6's sweep lacks the chosen epoch {chosen} or a later one")
    last = epochs[-1]
    ref, why = chosen, ("chosen on the {split} split" if ev.teacher.get("split") else "fixed by the preset")
    if chosen == last:  # the rule found the last teacher best: compare the best earlier one (on val)
        val = {
            int(i["teacher_epoch"]): i["val_robust_acc"]
            for i in ev.teacher.get("sweep", {}).values()
            if "val_robust_acc" in i and int(i["teacher_epoch"]) < last
        }
        if not val:
            raise Missing(
                f"the teacher epoch {chosen} is the last sweep epoch and no earlier one has validation numbers"
            )
        ref = max(val, key=lambda e: (val[e], -e))
        why = "the best earlier epoch on the validation split; the rule chose the last"
    names = {"chosen": f"sweep-{loss}-e{ref}", "last": f"sweep-{loss}-e{last}"}
    samples = _acc_groups(ev, names, "adv")
    pt = {g: float(np.mean(c["v"])) for g, c in samples.items()}
    split = ev.teacher.get("split", "test")  # teacher.json of earlier versions: chosen on test
    return estimate(
        samples,
        lambda m: np.asarray(m["chosen"]["v"]) - np.asarray(m["last"]["v"]),
        f"student adversarial (test): teacher epoch {ref} ({why.format(split=split)}) {_pct(pt['chosen'])}, "
        f"epoch {last} {_pct(pt['last'])}",
        ev.group(names["chosen"]).shape,
    )


def _l1_vs_kl(ev: Evidence) -> Estimate:
    l1 = [g for g in ev.records if g.startswith("sweep-l1-e")]
    epochs = sorted(int(g.rsplit("-e", 1)[1]) for g in l1 if g.replace("-l1-", "-kl-") in ev.records)
    if not epochs:
        raise Missing("no teacher epoch with both an L1 and a KL student")
    names = {f"{loss}{e}": f"sweep-{loss}-e{e}" for e in epochs for loss in ("l1", "kl")}
    samples = _acc_groups(ev, names, "adv")

    def effect(m: dict[str, Any]) -> Any:
        return sum(np.asarray(m[f"l1{e}"]["v"]) - np.asarray(m[f"kl{e}"]["v"]) for e in epochs) / len(epochs)

    pt = {g: float(np.mean(c["v"])) for g, c in samples.items()}
    text = "student adversarial L1 / KL by teacher epoch: " + ", ".join(
        f"e{e} {_pct(pt[f'l1{e}'])} / {_pct(pt[f'kl{e}'])}" for e in epochs
    )
    return estimate(samples, effect, text, f"{ev.group(names[f'l1{epochs[0]}']).shape} per student; mean over epochs")


# -- manifolds: exemplars resampled ----------------------------------------------------------


def _layers(ev: Evidence, label: str) -> dict[str, dict[str, Any]]:
    """The model's layers from input to logits (``layer_order``; manifolds.json's keys are sorted)."""
    if label not in ev.manifolds:
        raise Missing(f"no manifold analysis of the {label}")
    model = ev.manifolds[label]
    if "layer_order" not in model:
        raise Missing("manifolds.json predates its layer order: rerun the manifolds stage")
    return {n: model["layers"][n] for n in model["layer_order"]}


def _per_manifold(layer: dict[str, Any], key: str) -> np.ndarray:
    if not layer.get("defined", True):
        raise Missing(layer.get("undefined", "MFTMA undefined"))
    if "per_manifold" not in layer:
        raise Missing("manifolds.json predates per-exemplar values: rerun the manifolds stage")
    return np.asarray(layer["per_manifold"][key], np.float64)[None, :]


def _capacity(inverse_mean: Any) -> Any:
    return 1.0 / np.asarray(inverse_mean)


def _radius_early(ev: Evidence) -> Estimate:
    """Radius growth from the input to the first hidden layer (where MFTMA is defined in
    both), ST minus AT teacher."""
    st, at = _layers(ev, "ST teacher"), _layers(ev, "AT teacher")
    order = [n for n in st if n in at]
    if len(order) < 2:
        raise Missing("fewer than two layers in common")
    first = next((n for n in order[1:] if st[n].get("defined", True) and at[n].get("defined", True)), None)
    if first is None:
        raise Missing("MFTMA undefined at every hidden layer")
    left = [f"{n} ({st[n].get('undefined') or at[n].get('undefined')})" for n in order[1 : order.index(first)]]
    samples = {
        g: {"in": _per_manifold(layers[order[0]], "radius"), "h": _per_manifold(layers[first], "radius")}
        for g, layers in (("ST", st), ("AT", at))
    }

    def effect(m: dict[str, Any]) -> Any:
        return (np.asarray(m["ST"]["h"]) - m["ST"]["in"]) - (np.asarray(m["AT"]["h"]) - m["AT"]["in"])

    pt = {g: (float(samples[g]["in"].mean()), float(samples[g]["h"].mean())) for g in samples}
    text = f"radius {order[0]} -> {first}: " + ", ".join(f"{g} {a:.3f} -> {b:.3f}" for g, (a, b) in pt.items())
    basis = f"{samples['ST']['h'].shape[1]} exemplars of one model each" + (
        f"; left out, undefined: {', '.join(left)}" if left else ""
    )
    return estimate(samples, effect, text, basis, over_runs=False)


def _capacity_towards_st(label: str) -> Callable[[Evidence], Estimate]:
    """Where the student's capacity sits between the ST (0) and AT (1) teachers', summed over
    the hidden layers defined in all three (a ratio of sums: a layer where the teachers are
    alike does not blow it up): below 0.5 it is nearer the ST teacher's. Undefined (no
    interval) where the AT teacher's capacity is not above the ST teacher's."""

    def run(ev: Evidence) -> Estimate:
        models = {"s": _layers(ev, label), "st": _layers(ev, "ST teacher"), "at": _layers(ev, "AT teacher")}
        names = [n for n in list(models["s"])[1:] if all(n in v and v[n].get("defined", True) for v in models.values())]
        if not names:
            raise Missing("no hidden layer where MFTMA is defined in the student and both teachers")
        samples = {
            f"{g}{i}": {"inv": 1.0 / _per_manifold(models[g][n], "capacity")}
            for g in models
            for i, n in enumerate(names)
        }

        def effect(m: dict[str, Any]) -> Any:
            c = {g: [_capacity(m[f"{g}{i}"]["inv"]) for i in range(len(names))] for g in models}
            return ratio(
                sum(a - b for a, b in zip(c["s"], c["st"], strict=True)),
                sum(a - b for a, b in zip(c["at"], c["st"], strict=True)),
            )

        caps = {g: [float(_capacity(samples[f"{g}{i}"]["inv"].mean())) for i in range(len(names))] for g in models}
        text = "capacity by layer (" + ", ".join(names) + f"): {label} " + " ".join(f"{c:.3f}" for c in caps["s"])
        text += "; ST " + " ".join(f"{c:.3f}" for c in caps["st"]) + "; AT " + " ".join(f"{c:.3f}" for c in caps["at"])
        n = samples[f"s{0}"]["inv"].shape[1]
        basis = f"{n} exemplars of one model each; effect: sum over layers of (student - ST) / sum of (AT - ST)"
        return estimate(samples, effect, text, basis, over_runs=False)

    return run


# -- appendix C: deterministic ---------------------------------------------------------------

THEORY_VERDICTS = {"confirmed": "holds", "not confirmed": "does not hold", "partly": "inconclusive"}


def theory_claims(theory: Mapping[str, Any]) -> list[Claim]:
    """Appendix C's statements with the theory section's own verdicts (computations, no
    interval): confirmed -> holds, not confirmed -> does not hold, partly -> inconclusive."""
    out = []
    for s in theory.get("statements", []):
        verdict = THEORY_VERDICTS[s["verdict"]]
        sid = f"theory-{s.get('id') or len(out) + 1}"
        how = "computed (no interval); the theory section rates it " + s["verdict"]
        paper = "3.5" if s.get("id") == "beta-3.5" else "appendix C"
        out.append(Claim(sid, s["statement"], s["evidence"], verdict, how, paper, "appendix C"))
    return out


# -- the claims -------------------------------------------------------------------------------

_ANALYSIS = ("analyze",)
_TABLE1 = ("train-st", "train-at", "eval-train-")


def _students(*tags: str) -> tuple[str, ...]:
    """The stage-name prefixes of the students ``tags`` (training and evaluation), and the teacher choice."""
    return (*(f"{p}distill-{t}" for t in tags for p in ("", "eval-")), "choose-teacher")


_SWEEP = ("distill-sweep", "eval-distill-sweep")
# the teacher rule's loss only (figure A.6); "{loss}" is filled in from the evidence
_RULE_SWEEP = ("distill-sweep-e*-{loss}-s*", "eval-distill-sweep-e*-{loss}-s*", "eval-val-distill-sweep-e*-{loss}-s*")
_MANIFOLDS = ("manifolds",)

REGISTRY: tuple[ClaimSpec, ...] = (
    # Section 4.1 and table 1.
    ClaimSpec(
        "table1-robust",
        "logits",
        "Table 1: the AT ResNet-18 (epoch 40) keeps 41.5% adversarial accuracy, the standard one 0.00%.",
        "41.5% vs 0.00%",
        "table 1",
        "adversarial accuracy, AT at the teacher epoch minus ST at the last epoch (test split)",
        Predicate.above(0.0),
        _acc_effect({"AT": "AT teacher", "ST": "ST"}, "adv", _diff("AT", "ST"), "adversarial"),
        _TABLE1,
    ),
    ClaimSpec(
        "table1-natural-cost",
        "logits",
        "Table 1: the AT ResNet-18 (epoch 40) has lower natural accuracy than the standard one (74.0% vs 94.5%).",
        "74.0% vs 94.5%",
        "table 1",
        "natural accuracy, AT at the teacher epoch minus ST (test split)",
        Predicate.below(0.0),
        _acc_effect({"AT": "AT teacher", "ST": "ST"}, "clean", _diff("AT", "ST"), "natural"),
        _TABLE1,
    ),
    ClaimSpec(
        "max-logit-mean",
        "logits",
        "“The maximum logit values from robust networks are drawn from a distribution with a low mean [...] "
        "whereas those from standard networks are drawn from a more symmetric distribution with a much larger "
        "mean.”",
        "AT mean below ST",
        "section 4.1, figure 1",
        "mean max logit, AT minus ST (analysed split and epoch)",
        Predicate.below(0.0),
        _analysis_effect("max_logit_mean", "AT", "ST", "mean max logit"),
        _ANALYSIS,
        _num,
    ),
    ClaimSpec(
        "max-logit-skew",
        "logits",
        "“The maximum logit values from robust networks are drawn from a distribution with [...] positive skew, "
        "whereas those from standard networks are drawn from a more symmetric distribution.”",
        "AT skew above ST",
        "section 4.1, figure 1",
        "skewness of the max logits, AT minus ST",
        Predicate.above(0.0),
        _analysis_effect("max_logit_skew", "AT", "ST", "max-logit skew"),
        _ANALYSIS,
        _num,
    ),
    ClaimSpec(
        "gap-smaller",
        "logits",
        "“The logit gap (the difference between the maximum logit value and second largest value) is smaller "
        "in robust networks.”",
        "AT gaps smaller, peak at zero",
        "section 4.1, figure 2A",
        "mean logit gap, AT minus ST",
        Predicate.below(0.0),
        _analysis_effect("gap_mean", "AT", "ST", "mean logit gap"),
        _ANALYSIS,
        _num,
    ),
    ClaimSpec(
        "gap-predicts-robustness",
        "logits",
        "“In contrast to ST models, AT model's large logit gaps are a strong indicator of adversarial accuracy.”",
        "rises with the gap",
        "figure 2B",
        "AT adversarial accuracy on images whose clean gap is above the run's median, minus below it",
        Predicate.above(0.0),
        _gap_predicts,
        (*_ANALYSIS, *_TABLE1),
    ),
    ClaimSpec(
        "rank-disagreement",
        "ranks",
        "“AT networks rank images very similarly to each other but very differently than ST networks.”",
        "AT-ST 11.8%, AT-AT 1.1%",
        "figure 3B",
        "share of images ranked more than half the range apart (class average), AT-ST pairs minus AT-AT pairs",
        Predicate.above(0.0),
        _analysis_effect("rank_disagreement", "AT-ST", "AT-AT", "rank disagreement"),
        _ANALYSIS,
    ),
    ClaimSpec(
        "rank-disagreement-at-st",
        "ranks",
        "“An average of 11.8% of examples across all classes were ranked very differently between AT and ST networks.”",
        "11.8%",
        "section 4.1, figure 3B",
        "AT-ST rank disagreement (independent rankings would give 25%); the level within half of the paper's "
        "either way",
        Predicate.within(0.059, 0.177),
        _level_effect("rank_disagreement", "AT-ST", "AT-ST disagreement"),
        _ANALYSIS,
    ),
    ClaimSpec(
        "rank-disagreement-at-at",
        "ranks",
        "“AT networks were very consistent amongst themselves, however, differing greatly on only about 1.1% of "
        "images.”",
        "1.1%",
        "section 4.1, figure 3B",
        "AT-AT rank disagreement; at most twice the paper's level",
        Predicate.within(0.0, 0.022),
        _level_effect("rank_disagreement", "AT-AT", "AT-AT disagreement"),
        _ANALYSIS,
    ),
    ClaimSpec(
        "error-class-predicts",
        "ranks",
        "“For both ST and AT networks, the average logit vector strongly predicts which classes the network will "
        "predict when it is incorrect.”",
        "most errors on top-ranked classes",
        "figure 3C",
        "share of wrong (natural) predictions on the true class's top-ranked other class, as a multiple of "
        "chance 1/(C-1), the smaller of ST and AT; 'strongly': at least twice chance",
        Predicate.above(2.0),
        _error_lift,
        _ANALYSIS,
        lambda x: f"{x:.2f}x",
    ),
    ClaimSpec(
        "error-class-st-vs-at",
        "ranks",
        "“ST networks often predict their second most probable class whereas AT slightly favor a broader set of "
        "classes.”",
        "ST above AT at rank 1",
        "figure 3C",
        "share of wrong (natural) predictions at rank 1, ST minus AT",
        Predicate.above(0.0),
        _error_st_vs_at,
        _ANALYSIS,
    ),
    ClaimSpec(
        "overlap-at-at",
        "ranks",
        "“Different seeds of AT networks have significantly more overlap than AT and ST networks.”",
        "AT-AT above AT-ST",
        "figure 3D (solid)",
        "average overlap AO@k averaged over k, AT-AT pairs minus AT-ST pairs",
        Predicate.above(0.0),
        _analysis_effect("average_overlap", "AT-AT", "AT-ST", "mean AO@k"),
        _ANALYSIS,
        _num,
    ),
    ClaimSpec(
        "overlap-same-class",
        "ranks",
        "“We permuted the examples from each class and computed the AO@k again and found that AT networks showed "
        "less consistency than ST networks.”",
        "AT-AT below ST-ST",
        "figure 3D (dashed)",
        "same-class baseline AO@k averaged over k, AT-AT pairs minus ST-ST pairs",
        Predicate.below(0.0),
        _analysis_effect("overlap_baseline", "AT-AT", "ST-ST", "baseline AO@k"),
        _ANALYSIS,
        _num,
    ),
    ClaimSpec(
        "neighbors-class",
        "ranks",
        "“Images nearby in the ST network's output space are diverse in appearance and primarily of the same "
        "class as the seed image.” (AT neighbours share colour and shape.)",
        "ST above AT",
        "section 4.3, figure B.3",
        "share of the 5 logit-cosine nearest images in the query's class (up to 500 queries per run), AT minus ST",
        Predicate.below(0.0),
        _analysis_effect("neighbors_same_class", "AT", "ST", "same-class neighbours"),
        _ANALYSIS,
    ),
    # Section 4.2 and appendix A.3.
    ClaimSpec(
        "distill-transfers",
        "distillation",
        "“Robustness can be taught to a student network by training the student to match an AT teacher's "
        "outputs alone.”",
        "normal 30.4% vs ST 0.00%",
        "section 4.2, tables 1-2",
        "adversarial accuracy, normally distilled student minus ST",
        Predicate.above(0.0),
        _acc_effect({"normal": "normal", "ST": "ST"}, "adv", _diff("normal", "ST"), "adversarial"),
        (*_students("normal-s"), *_TABLE1),
    ),
    ClaimSpec(
        "fix1-drop",
        "distillation",
        "“Keeping only the top 1 class [...] adversarial accuracy on the test dataset fell dramatically.”",
        "13.3% vs normal 30.4% (44% kept)",
        "table 2, figure 4B",
        "fix-1 (permute) student's adversarial accuracy as a share of the normal student's; 'fell dramatically': "
        "it keeps less than half (the paper's keeps 44%)",
        Predicate.below(0.5),
        _kept_of("fix1-permute", "normal"),
        _students("fix1-permute-s", "normal-s"),
    ),
    ClaimSpec(
        "fix1-above-st",
        "distillation",
        "“[Fix-1 accuracy] is far higher than a standard trained network, where we routinely measure 0 robust images.”",
        "13.3% vs 0.00%",
        "section 4.2",
        "adversarial accuracy, fix-1 (permute) student minus ST",
        Predicate.above(0.0),
        _acc_effect({"fix1": "fix1-permute", "ST": "ST"}, "adv", _diff("fix1", "ST"), "adversarial"),
        (*_students("fix1-permute-s"), *_TABLE1),
    ),
    ClaimSpec(
        "distill-k-rising",
        "distillation",
        "“As we reduced the number of modified components of the teacher's logits, the students' adversarial "
        "accuracy increased.”",
        "rises up to k = 7",
        "figure 4B",
        "least-squares slope of fix-k (permute) adversarial accuracy over k (k < classes - 1), per unit k",
        Predicate.above(0.0),
        _k_slope,
        _students("fix*-permute-s*"),
    ),
    ClaimSpec(
        "distill-k7",
        "distillation",
        "“The top-7 values are required to be within 99% [of the full robustness].”",
        "99% (top-3: almost 80%)",
        "figure 4B",
        "fix-7 (permute) student's adversarial accuracy as a share of the normal student's",
        Predicate.above(0.99),
        _fix7_kept,
        _students("fix7-permute-s", "normal-s"),
    ),
    ClaimSpec(
        "correct-fix1-natural",
        "distillation",
        "“This correct-fix-1 experiment resulted in a student network with much higher natural accuracy.”",
        "92.1% vs fix-1 77.6%",
        "table 2",
        "natural accuracy, correct-fix-1 student minus fix-1 (permute) student",
        Predicate.above(0.0),
        _acc_effect({"cf1": "correct-fix1", "fix1": "fix1-permute"}, "clean", _diff("cf1", "fix1"), "natural"),
        _students("correct-fix1-s", "fix1-permute-s"),
    ),
    ClaimSpec(
        "correct-fix1-adversarial",
        "distillation",
        "“[...] but 0% adversarial accuracy. Thus, it seems the retained adversarial accuracy provided by the max "
        "logit value from the teacher is primarily due to the information it contains about class relationships "
        "when it incorrectly predicts a training example.”",
        "0.1% of fix-1's 13.3%",
        "table 2",
        "correct-fix-1 student's adversarial accuracy as a share of the fix-1 (permute) student's; 'primarily': "
        "it keeps less than half",
        Predicate.below(0.5),
        _kept_of("correct-fix1"),
        _students("correct-fix1-s", "fix1-permute-s"),
    ),
    ClaimSpec(
        "hybrid",
        "distillation",
        "“Hybrid models combining the AT and ST teachers produce students with remarkably little robustness.”",
        "0.00% (fix-1: 13.3%)",
        "table 2",
        "hybrid student's adversarial accuracy as a share of the fix-1 (permute) student's (which sees only the "
        "teacher's top value); 'remarkably little': less than half",
        Predicate.below(0.5),
        _kept_of("hybrid"),
        _students("hybrid-s", "fix1-permute-s"),
    ),
    ClaimSpec(
        "late-teacher",
        "distillation",
        "“Though teachers trained for longer retained high robustness, they could not distill it to their students.”",
        "≈40% (epoch 20) to 0% (epoch 200)",
        "section 4.2, figure A.6",
        "student adversarial accuracy (test), chosen teacher epoch (or, when the rule chose the last, the best "
        "earlier one on validation data) minus the last sweep epoch",
        Predicate.above(0.0),
        _late_teacher,
        (*_RULE_SWEEP, "choose-teacher"),
    ),
    ClaimSpec(
        "l1-vs-kl",
        "distillation",
        "“Distilling the teacher's logits using the L1 loss consistently transfers more robustness than "
        "distilling the teacher's softmax output using the KL divergence loss.”",
        "L1 above KL (25 points at epoch 100)",
        "appendix A.3, figure A.7",
        "student adversarial accuracy, L1 minus KL, averaged over teacher epochs",
        Predicate.above(0.0),
        _l1_vs_kl,
        _SWEEP,
    ),
    # Figure 5.
    ClaimSpec(
        "manifold-radius-early",
        "manifolds",
        "“The radius of the manifold for images perturbed within an L-inf ball [...] increases quickly in early "
        "layers of networks that are not adversarially robust.”",
        "ST radius rises early",
        "figure 5B",
        "radius growth from the input to the first hidden layer, ST teacher minus AT teacher",
        Predicate.above(0.0),
        _radius_early,
        _MANIFOLDS,
        _num,
    ),
    *(
        ClaimSpec(
            f"manifold-capacity-{tag}",
            "manifolds",
            f"“Student networks trained on the {words} logits exhibited significantly decreased capacity for "
            "adversarially perturbed images, nearing that of the non-robust standard trained teacher network.”",
            "near the ST teacher",
            "figure 5A",
            "student capacity between the ST (0) and AT (1) teachers', over the hidden layers; nearer ST: below 0.5",
            Predicate.below(0.5),
            _capacity_towards_st(label),
            _MANIFOLDS,
            _num,
        )
        for tag, words, label in (
            ("correct-fix1", "corrected-fix-1 [...]", "correct-fix-1 student"),
            ("hybrid", "[...] hybrid", "hybrid student"),
        )
    ),
)

_ids = [c.id for c in REGISTRY]
assert len(set(_ids)) == len(_ids), "claim ids must be unique"


def check_claims(
    ev: Evidence, failed: Callable[[Sequence[str]], str | None] = lambda needs: None
) -> dict[str, list[Claim]]:
    """Every claim of the registry on ``ev``, by report section, plus appendix C's statements
    ("theory"). ``failed(needs)``: the failed stage (with its error) among ``needs``, if any."""
    out: dict[str, list[Claim]] = {}
    loss = ev.teacher.get("loss", "l1")
    for spec in REGISTRY:
        needs = tuple(n.replace("{loss}", loss) for n in spec.needs)
        out.setdefault(spec.section, []).append(spec.check(ev, failed(needs)))
    theory_failed = failed(("theory",))
    if theory_failed:
        out["theory"] = [Claim("theory", "The analytical model of appendix C", f"failed: {theory_failed}", "failed")]
    else:
        out["theory"] = theory_claims(ev.theory)
    return out


def verdict_counts(claims: Iterable[Claim]) -> dict[str, int]:
    """Number of claims per verdict, every verdict present (in the order of ``VERDICTS``)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for claim in claims:
        counts[claim.verdict] += 1
    return counts
