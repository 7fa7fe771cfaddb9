"""The claims registry: every claim fed hand-made numbers that must give each of its verdicts,
the bootstrap checked against exact small cases and properties, the tests' edges by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logitscope.report.claims import (
    REGISTRY,
    Estimate,
    Evidence,
    Predicate,
    Records,
    check_claims,
    estimate,
    image_part,
    theory_claims,
)
from logitscope.stats import bootstrap_means, percentile_interval

N = 400  # test images of the hand-made records


def _rows(rate: float, s: int, seed: int) -> np.ndarray:
    """``(s, N)`` 0/1 rows, each with exactly ``round(rate * N)`` ones at its own seeded places."""
    rng = np.random.default_rng(seed)
    k = round(rate * N)
    out = np.zeros((s, N))
    for i in range(s):
        out[i, rng.permutation(N)[:k]] = 1.0
    return out


def _records(clean: float, adv: float, s: int = 3, seed: int = 0) -> Records:
    return Records(_rows(clean, s, seed), _rows(adv, s, seed + 100), np.ones((s, N)), tuple(f"r{i}" for i in range(s)))


def _acc(seed: int = 0, **groups: tuple[float, float] | tuple[float, float, int]) -> Evidence:
    """Evidence with records of the named groups: (clean rate, adversarial rate[, seeds])."""
    recs = {}
    for i, (name, g) in enumerate(groups.items()):
        recs[name.replace("_", "-").replace("AT-teacher", "AT teacher")] = _records(*g, seed=seed + 7 * i)
    return Evidence(records=recs, n_classes=10, teacher={"epoch": 5, "split": "val", "loss": "l1"})


def _analysis(key: str, values: dict[str, list[float]]) -> Evidence:
    return Evidence(analysis={"split": "test", "epoch": None, "n_classes": 10, key: values}, n_classes=10)


def _gap(pattern: str) -> Evidence:
    gap = np.tile(np.arange(N, dtype=float), (3, 1))
    adv = {
        "rising": (gap >= N / 2).astype(float),
        "falling": (gap < N / 2).astype(float),
        "flat": (np.arange(N) % 2 == 0).astype(float)[None].repeat(3, 0),
    }[pattern]
    return Evidence(records={"AT analysed": Records(np.ones((3, N)), adv, gap, ("a", "b", "c"), 30)}, n_classes=10)


def _sweep(chosen: float, last: float, kl: float | None = None, chosen_epoch: int = 10, seeds: int = 3) -> Evidence:
    recs = {"sweep-l1-e10": _records(0.9, chosen, seeds, 1), "sweep-l1-e30": _records(0.9, last, seeds, 2)}
    if kl is not None:
        recs |= {"sweep-kl-e10": _records(0.9, kl, seeds, 3), "sweep-kl-e30": _records(0.9, kl, seeds, 4)}
    sweep = {f"s-e{e}": {"teacher_epoch": e, "val_robust_acc": v} for e, v in ((10, chosen), (30, last))}
    teacher = {"epoch": chosen_epoch, "split": "val", "loss": "l1", "sweep": sweep}
    return Evidence(records=recs, n_classes=10, teacher=teacher)


def _fixk(rates: dict[int, float]) -> Evidence:
    return _acc(**{f"fix{k}_permute": (0.9, r) for k, r in rates.items()})


def _layer(values: np.ndarray, key: str) -> dict:
    return {"defined": True, "per_manifold": {key: values.tolist(), "capacity": values.tolist()}}


def _manifold_models(
    radius_growth: dict[str, float] | None = None, capacity: dict[str, float] | None = None
) -> Evidence:
    """Three layers for the ST and AT teachers and two students; per-exemplar values with a
    seeded spread of 10% around the given level (40 exemplars)."""
    rng = np.random.default_rng(5)
    noise = lambda: 1 + 0.1 * rng.standard_normal(40)  # noqa: E731
    models = {}
    for label in ("ST teacher", "AT teacher", "correct-fix-1 student", "hybrid student"):
        g = (radius_growth or {}).get(label, 0.0)
        c = (capacity or {}).get(label, 0.3)
        layers = {}
        for i, name in enumerate(("input", "conv1", "fc1")):
            vals = {"radius": (1.0 + g * (i > 0)) * noise(), "capacity": c * noise() if i else 0.5 * noise()}
            layers[name] = {"defined": True, "per_manifold": {k: v.tolist() for k, v in vals.items()}}
        layers["logits"] = {"defined": False, "undefined": "undefined: 40 manifolds in 10 dimensions"}
        models[label] = {"layers": dict(sorted(layers.items())), "layer_order": list(layers)}
    return Evidence(manifolds=models, n_classes=10)


def _capacity(student: str, level: float) -> Evidence:
    return _manifold_models(capacity={"ST teacher": 0.2, "AT teacher": 0.6, student: level})


# claim id -> verdict -> evidence that must give it
CASES = {
    "table1-robust": {
        "holds": _acc(ST=(0.98, 0.0), AT_teacher=(0.8, 0.5)),
        "does not hold": _acc(ST=(0.98, 0.5), AT_teacher=(0.8, 0.1)),
        "inconclusive": _acc(ST=(0.98, 0.3), AT_teacher=(0.8, 0.3)),
    },
    "table1-natural-cost": {
        "holds": _acc(ST=(0.98, 0.0), AT_teacher=(0.8, 0.5)),
        "does not hold": _acc(ST=(0.7, 0.0), AT_teacher=(0.9, 0.5)),
        "inconclusive": _acc(ST=(0.9, 0.0), AT_teacher=(0.9, 0.5)),
    },
    "max-logit-mean": {
        "holds": _analysis("max_logit_mean", {"AT": [5.0, 5.2, 4.9], "ST": [20.0, 21.0, 19.5]}),
        "does not hold": _analysis("max_logit_mean", {"AT": [25.0, 25.2, 24.9], "ST": [20.0, 21.0, 19.5]}),
        "inconclusive": _analysis("max_logit_mean", {"AT": [5.0, 25.0, 15.0], "ST": [10.0, 20.0, 14.0]}),
    },
    "max-logit-skew": {
        "holds": _analysis("max_logit_skew", {"AT": [1.0, 1.2, 0.9], "ST": [0.0, 0.1, -0.1]}),
        "does not hold": _analysis("max_logit_skew", {"AT": [-1.0, -1.2, -0.9], "ST": [0.0, 0.1, -0.1]}),
        "inconclusive": _analysis("max_logit_skew", {"AT": [-1.0, 1.0, 0.1], "ST": [0.0, 0.5, -0.5]}),
    },
    "gap-smaller": {
        "holds": _analysis("gap_mean", {"AT": [1.0, 1.2, 0.9], "ST": [10.0, 11.0, 9.0]}),
        "does not hold": _analysis("gap_mean", {"AT": [20.0, 21.2, 20.9], "ST": [10.0, 11.0, 9.0]}),
        "inconclusive": _analysis("gap_mean", {"AT": [5.0, 15.0, 10.0], "ST": [8.0, 12.0, 10.0]}),
    },
    "gap-predicts-robustness": {
        "holds": _gap("rising"),
        "does not hold": _gap("falling"),
        "inconclusive": _gap("flat"),
    },
    "rank-disagreement": {
        "holds": _analysis("rank_disagreement", {"AT-ST": [0.12, 0.11, 0.13, 0.12], "AT-AT": [0.01, 0.012, 0.011]}),
        "does not hold": _analysis("rank_disagreement", {"AT-ST": [0.01, 0.012], "AT-AT": [0.1, 0.11, 0.12]}),
        "inconclusive": _analysis("rank_disagreement", {"AT-ST": [0.05, 0.15, 0.1], "AT-AT": [0.08, 0.12, 0.1]}),
    },
    "rank-disagreement-at-st": {
        "holds": _analysis("rank_disagreement", {"AT-ST": [0.11, 0.12, 0.125]}),
        "does not hold": _analysis("rank_disagreement", {"AT-ST": [0.4, 0.42, 0.45]}),
        "inconclusive": _analysis("rank_disagreement", {"AT-ST": [0.03, 0.2, 0.1]}),
    },
    "rank-disagreement-at-at": {
        "holds": _analysis("rank_disagreement", {"AT-AT": [0.01, 0.012, 0.011]}),
        "does not hold": _analysis("rank_disagreement", {"AT-AT": [0.1, 0.11, 0.12]}),
        "inconclusive": _analysis("rank_disagreement", {"AT-AT": [0.005, 0.04, 0.02]}),
    },
    "error-class-predicts": {  # chance 1/9 = 11.1%; 'strongly': twice chance, 22.2%
        "holds": _analysis("error_top1", {"ST natural": [0.5, 0.55, 0.6], "AT natural": [0.4, 0.45, 0.42]}),
        "does not hold": _analysis("error_top1", {"ST natural": [0.12, 0.13, 0.11], "AT natural": [0.5, 0.4, 0.45]}),
        "inconclusive": _analysis("error_top1", {"ST natural": [0.1, 0.35, 0.22], "AT natural": [0.1, 0.35, 0.22]}),
    },
    "error-class-st-vs-at": {
        "holds": _analysis("error_top1", {"ST natural": [0.5, 0.55, 0.6], "AT natural": [0.3, 0.32, 0.31]}),
        "does not hold": _analysis("error_top1", {"ST natural": [0.2, 0.22, 0.21], "AT natural": [0.5, 0.52, 0.51]}),
        "inconclusive": _analysis("error_top1", {"ST natural": [0.3, 0.5, 0.4], "AT natural": [0.35, 0.45, 0.4]}),
    },
    "overlap-at-at": {
        "holds": _analysis("average_overlap", {"AT-AT": [0.9, 0.91, 0.92], "AT-ST": [0.6, 0.62, 0.61, 0.6]}),
        "does not hold": _analysis("average_overlap", {"AT-AT": [0.5, 0.51, 0.52], "AT-ST": [0.6, 0.62, 0.61]}),
        "inconclusive": _analysis("average_overlap", {"AT-AT": [0.5, 0.7, 0.6], "AT-ST": [0.55, 0.65, 0.6]}),
    },
    "overlap-same-class": {
        "holds": _analysis("overlap_baseline", {"AT-AT": [0.5, 0.51, 0.52], "ST-ST": [0.7, 0.71, 0.72]}),
        "does not hold": _analysis("overlap_baseline", {"AT-AT": [0.8, 0.81, 0.82], "ST-ST": [0.7, 0.71, 0.72]}),
        "inconclusive": _analysis("overlap_baseline", {"AT-AT": [0.6, 0.8, 0.7], "ST-ST": [0.65, 0.75, 0.7]}),
    },
    "neighbors-class": {
        "holds": _analysis("neighbors_same_class", {"AT": [0.5, 0.52, 0.51], "ST": [0.9, 0.92, 0.91]}),
        "does not hold": _analysis("neighbors_same_class", {"AT": [0.95, 0.96, 0.97], "ST": [0.9, 0.92, 0.91]}),
        "inconclusive": _analysis("neighbors_same_class", {"AT": [0.8, 1.0, 0.9], "ST": [0.85, 0.95, 0.9]}),
    },
    "distill-transfers": {
        "holds": _acc(ST=(0.98, 0.0), normal=(0.8, 0.3)),
        "does not hold": _acc(ST=(0.98, 0.3), normal=(0.8, 0.05)),
        "inconclusive": _acc(ST=(0.98, 0.1), normal=(0.8, 0.1)),
    },
    "fix1-drop": {  # fix-1's share of normal's robustness below one half
        "holds": _acc(fix1_permute=(0.8, 0.1), normal=(0.8, 0.3)),
        "does not hold": _acc(fix1_permute=(0.8, 0.27), normal=(0.8, 0.3)),  # a 10% drop is not dramatic
        "inconclusive": _acc(fix1_permute=(0.8, 0.1), normal=(0.8, 0.2), seed=3),
    },
    "fix1-above-st": {
        "holds": _acc(fix1_permute=(0.8, 0.13), ST=(0.98, 0.0)),
        "does not hold": _acc(fix1_permute=(0.8, 0.0), ST=(0.98, 0.1)),
        "inconclusive": _acc(fix1_permute=(0.8, 0.05), ST=(0.98, 0.05)),
    },
    "distill-k-rising": {
        "holds": _fixk({1: 0.1, 3: 0.2, 5: 0.25, 7: 0.3}),
        "does not hold": _fixk({1: 0.3, 3: 0.25, 5: 0.2, 7: 0.1}),
        "inconclusive": _fixk({1: 0.2, 3: 0.2, 5: 0.2, 7: 0.2}),
    },
    "distill-k7": {  # fix-7 keeps at least 99% of normal's robustness
        "holds": _acc(fix7_permute=(0.8, 0.5), normal=(0.8, 0.3)),
        "does not hold": _acc(fix7_permute=(0.8, 0.1), normal=(0.8, 0.3)),
        "inconclusive": _acc(fix7_permute=(0.8, 0.3), normal=(0.8, 0.3)),
    },
    "correct-fix1-natural": {
        "holds": _acc(correct_fix1=(0.92, 0.0), fix1_permute=(0.78, 0.13)),
        "does not hold": _acc(correct_fix1=(0.7, 0.0), fix1_permute=(0.85, 0.13)),
        "inconclusive": _acc(correct_fix1=(0.8, 0.0), fix1_permute=(0.8, 0.13)),
    },
    "correct-fix1-adversarial": {  # keeps less than half of fix-1's robustness
        "holds": _acc(correct_fix1=(0.92, 0.01), fix1_permute=(0.78, 0.13)),
        "does not hold": _acc(correct_fix1=(0.92, 0.2), fix1_permute=(0.78, 0.2)),
        "inconclusive": _acc(correct_fix1=(0.92, 0.1), fix1_permute=(0.78, 0.2)),
    },
    "hybrid": {
        "holds": _acc(hybrid=(0.88, 0.0), fix1_permute=(0.78, 0.13)),
        "does not hold": _acc(hybrid=(0.88, 0.2), fix1_permute=(0.78, 0.2)),
        "inconclusive": _acc(hybrid=(0.88, 0.1), fix1_permute=(0.78, 0.2)),
    },
    "late-teacher": {
        "holds": _sweep(0.4, 0.05),
        "does not hold": _sweep(0.05, 0.4),
        "inconclusive": _sweep(0.2, 0.2),
    },
    "l1-vs-kl": {
        "holds": _sweep(0.4, 0.3, kl=0.1),
        "does not hold": _sweep(0.1, 0.1, kl=0.4),
        "inconclusive": _sweep(0.2, 0.2, kl=0.2),
    },
    "manifold-radius-early": {
        "holds": _manifold_models(radius_growth={"ST teacher": 1.0, "AT teacher": 0.1}),
        "does not hold": _manifold_models(radius_growth={"ST teacher": 0.1, "AT teacher": 1.0}),
        "inconclusive": _manifold_models(radius_growth={"ST teacher": 0.3, "AT teacher": 0.3}),
    },
    "manifold-capacity-correct-fix1": {  # position between ST (0) and AT (1); nearer ST below 0.5
        "holds": _capacity("correct-fix-1 student", 0.22),
        "does not hold": _capacity("correct-fix-1 student", 0.58),
        "inconclusive": _capacity("correct-fix-1 student", 0.4),
    },
    "manifold-capacity-hybrid": {
        "holds": _capacity("hybrid student", 0.22),
        "does not hold": _capacity("hybrid student", 0.58),
        "inconclusive": _capacity("hybrid student", 0.4),
    },
}

SPECS = {s.id: s for s in REGISTRY}


def test_every_claim_has_a_case_for_each_verdict():
    assert set(CASES) == set(SPECS)
    assert all(set(v) == {"holds", "does not hold", "inconclusive"} for v in CASES.values())


@pytest.mark.parametrize(("cid", "verdict"), [(c, v) for c, vs in CASES.items() for v in vs])
def test_claim_verdicts(cid, verdict):
    claim = SPECS[cid].check(CASES[cid][verdict])
    assert claim.verdict == verdict, claim.statistic
    assert claim.paper and claim.where and claim.statement
    if verdict != "inconclusive" or "no interval" not in claim.statistic:
        assert "[" in claim.statistic  # the interval is shown


@pytest.mark.parametrize("cid", sorted(CASES))
def test_claim_not_measured_and_failed(cid):
    claim = SPECS[cid].check(Evidence(n_classes=10))
    assert claim.verdict == "not measured" and claim.statistic.startswith("not measured: ")
    failed = SPECS[cid].check(CASES[cid]["holds"], failed="analyze: ValueError: boom")
    assert (failed.verdict, failed.statistic) == ("failed", "failed: analyze: ValueError: boom")


def test_fix_k_ignores_k_that_permute_nothing():
    """fix-9 of 10 classes has nothing left to permute (its targets are normal ones): not evidence."""
    ev = _fixk({1: 0.1, 9: 0.3})
    assert SPECS["distill-k-rising"].check(ev).verdict == "not measured"
    ev8 = _acc(fix7_permute=(0.8, 0.5), normal=(0.8, 0.3))
    ev8.n_classes = 8
    assert SPECS["distill-k7"].check(ev8).verdict == "not measured"


def test_late_teacher_when_the_rule_picks_the_last_epoch():
    """The rule found the last teacher best (on val): the best earlier one is compared, on test."""
    claim = SPECS["late-teacher"].check(_sweep(0.4, 0.05, chosen_epoch=30))
    assert claim.verdict == "holds" and "teacher epoch 10 (the best earlier epoch" in claim.statistic
    ev = _sweep(0.05, 0.4, chosen_epoch=30)
    assert SPECS["late-teacher"].check(ev).verdict == "does not hold"
    ev.teacher["sweep"] = {}
    assert SPECS["late-teacher"].check(ev).verdict == "not measured"


def test_a_group_of_one_run_gives_no_interval():
    for values in ({"AT": [1.0], "ST": [10.0]}, {"AT": [1.0], "ST": [10.0, 10.5, 9.8]}):
        claim = SPECS["gap-smaller"].check(_analysis("gap_mean", values))
        assert claim.verdict == "inconclusive" and "no interval" in claim.statistic
    # one seed with its test images: the seed spread is unknown, however many images
    claim = SPECS["late-teacher"].check(_sweep(0.4, 0.05, seeds=1))
    assert claim.verdict == "inconclusive" and "a group of one seed: no interval" in claim.statistic


def test_a_ratio_undefined_in_some_draws_gives_no_interval():
    """fix-1 at 1 robust image of 400: some draws lose it; those are never dropped."""
    claim = SPECS["hybrid"].check(_acc(hybrid=(0.88, 0.0), fix1_permute=(0.78, 1 / N)))
    assert claim.verdict == "inconclusive" and "undefined in" in claim.statistic


def test_groups_on_other_images_are_not_compared():
    ev = _acc(ST=(0.98, 0.0), normal=(0.8, 0.3))
    r = ev.records["normal"]
    ev.records["normal"] = Records(r.clean[:, :300], r.adv[:, :300], r.gap[:, :300], r.runs)
    claim = SPECS["distill-transfers"].check(ev)
    assert claim.verdict == "not measured" and "evaluated on other images" in claim.statistic


def test_manifold_claims_skip_undefined_layers_and_say_so():
    ev = _manifold_models(radius_growth={"ST teacher": 1.0, "AT teacher": 0.1})
    ev.manifolds["ST teacher"]["layers"]["conv1"] = {"defined": False, "undefined": "undefined: because"}
    claim = SPECS["manifold-radius-early"].check(ev)
    assert "input -> fc1" in claim.statistic and "conv1 (undefined: because)" in claim.statistic
    old = _manifold_models()
    del old.manifolds["ST teacher"]["layers"]["conv1"]["per_manifold"]
    assert "predates per-exemplar values" in SPECS["manifold-radius-early"].check(old).statistic
    del old.manifolds["ST teacher"]["layer_order"]
    assert "predates its layer order" in SPECS["manifold-radius-early"].check(old).statistic


def test_theory_claims_keep_the_theory_sections_verdict():
    theory = {
        "statements": [
            {
                "id": "beta-3.5",
                "statement": "beta > 3.5",
                "verdict": "partly",
                "evidence": "magnitude 3.5, literal 2.2",
            },
            {"id": "c2", "statement": "x", "verdict": "confirmed", "evidence": "e"},
            {"id": "c3", "statement": "y", "verdict": "not confirmed", "evidence": "e"},
        ]
    }
    claims = theory_claims(theory)
    assert [(c.id, c.verdict) for c in claims] == [
        ("theory-beta-3.5", "inconclusive"),
        ("theory-c2", "holds"),
        ("theory-c3", "does not hold"),
    ]
    assert "partly" in claims[0].detail and claims[0].paper == "3.5"


def test_check_claims_groups_by_section_and_marks_failed_stages():
    out = check_claims(CASES["fix1-drop"]["holds"], lambda needs: "analyze: boom" if "analyze" in needs else None)
    assert list(out) == ["logits", "ranks", "distillation", "manifolds", "theory"]
    verdicts = {c.id: c.verdict for cs in out.values() for c in cs}
    assert verdicts["fix1-drop"] == "holds" and verdicts["gap-smaller"] == "failed"
    assert verdicts["late-teacher"] == "not measured"


# -- the test of an effect, by hand ----------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "low", "high", "verdict"),
    [
        (Predicate.above(0.0), 0.1, 0.3, "holds"),
        (Predicate.above(0.0), -0.3, -0.1, "does not hold"),
        (Predicate.above(0.0), -0.1, 0.3, "inconclusive"),
        (Predicate.above(0.0), 0.0, 0.3, "inconclusive"),  # touching the threshold is not beyond it
        (Predicate.below(0.5), 0.1, 0.4, "holds"),
        (Predicate.below(0.5), 0.6, 0.9, "does not hold"),
        (Predicate.within(0.059, 0.236), 0.1, 0.2, "holds"),
        (Predicate.within(0.059, 0.236), 0.3, 0.4, "does not hold"),
        (Predicate.within(0.059, 0.236), 0.01, 0.05, "does not hold"),
        (Predicate.within(0.059, 0.236), 0.05, 0.2, "inconclusive"),
        (Predicate.above(0.0), math.nan, math.nan, "inconclusive"),
    ],
)
def test_test_verdicts(test, low, high, verdict):
    assert test.verdict(Estimate((low + high) / 2, low, high, "")) == verdict


# -- the bootstrap ---------------------------------------------------------------------------


def test_paired_images_cancel_exactly():
    """Two groups of the same records differ by exactly 0 in every draw: the images are shared."""
    a = _rows(0.3, 1, 0)
    d = bootstrap_means({"x": {"v": a}, "y": {"v": a.copy()}})
    np.testing.assert_array_equal(d["x"]["v"], d["y"]["v"])


def test_two_images_give_the_exact_resampling_distribution():
    """One run, images [0, 1]: a resample's mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4."""
    d = bootstrap_means({"x": {"v": np.array([[0.0, 1.0]])}}, draws=4000)["x"]["v"]
    freq = [np.mean(d == v) for v in (0.0, 0.5, 1.0)]
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.03)  # 4 sd of a 4000-draw frequency


def test_seeds_only_columns_resample_runs():
    """Three runs' numbers (S, 1): every draw is the mean of three of them, drawn with replacement."""
    v = np.array([[1.0], [2.0], [4.0]])
    d = bootstrap_means({"x": {"v": v}})["x"]["v"]
    possible = {round((a + b + c) / 3, 12) for a in (1, 2, 4) for b in (1, 2, 4) for c in (1, 2, 4)}
    assert {round(x, 12) for x in d} <= possible
    assert np.mean(d) == pytest.approx(7 / 3, abs=0.05)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 30), st.integers(0, 2**16))
def test_draws_lie_within_the_data(s, n, seed):
    a = np.random.default_rng(seed).random((s, n))
    d = bootstrap_means({"x": {"v": a}}, draws=50, seed=seed)["x"]["v"]
    assert a.min() - 1e-12 <= d.min() and d.max() <= a.max() + 1e-12


def test_seeds_held_resample_the_images_only():
    """resample_seeds=False: every draw averages all seeds, so two seeds whose rows are each
    other's complement give exactly 1/2 whatever images are drawn."""
    a = np.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    d = bootstrap_means({"x": {"v": a}}, resample_seeds=False)["x"]["v"]
    np.testing.assert_array_equal(d, np.full_like(d, 0.5))
    assert np.ptp(bootstrap_means({"x": {"v": a}})["x"]["v"]) > 0  # seeds resampled: they spread


# -- how many seeds would decide an inconclusive claim ----------------------------------------


@pytest.mark.parametrize(
    "test,e,want",
    [
        # facing side: lower half-width 3, its image part 1, gap to 0 is 2: 3 * (9 - 1) / (4 - 1) = 8
        (Predicate.above(0.0), Estimate(2.0, -1.0, 5.0, "", images=(1.0, 1.0), seeds=3), "about 8 seeds per group"),
        # below: the upper side faces the threshold: 4 * (4 - 0.25) / (1 - 0.25) = 20
        (Predicate.below(0.0), Estimate(-1.0, -3.0, 1.0, "", images=(0.5, 0.5), seeds=4), "about 20 seeds per group"),
        # the images' own spread already spans the threshold: seeds cannot decide it
        (Predicate.above(0.0), Estimate(2.0, -1.0, 5.0, "", images=(2.5, 2.5), seeds=3), "more test images"),
        # inside a band, both sides must clear: lower 3 * (1 - 0) / (0.25 - 0) = 12, upper 3 * 1 / 2.25 < 3
        (Predicate.within(0.0, 2.0), Estimate(0.5, -0.5, 1.5, "", images=(0.0, 0.0), seeds=3), "about 12 seeds"),
        (Predicate.above(0.0), Estimate(2.0, 1.0, 3.0, "", images=(0.5, 0.5), seeds=3), ""),  # decided
        (Predicate.above(0.0), Estimate(2.0, -1.0, 5.0, "", seeds=3), ""),  # no image-only interval
        (Predicate.above(0.0), Estimate(2.0, -1.0, 5.0, "", images=(1.0, 1.0), seeds=1), ""),  # one seed
    ],
)
def test_seeds_to_decide_by_hand(test, e, want):
    got = test.to_decide(e)
    assert got.startswith(want) if want else got == ""


def _mean_of(group: str):
    return lambda m: np.asarray(m[group]["v"])


def test_image_part_is_all_of_it_when_seeds_agree_on_every_image():
    """Seeds with identical rows: more seeds change nothing, so the images' part is the whole
    seeds-held interval (exactly: every bootstrap of one test set draws the same images)."""
    rows = np.tile(_rows(0.3, 1, 5), (3, 1))
    samples = {"x": {"v": rows}}
    d = bootstrap_means(samples, resample_seeds=False)["x"]["v"]
    low, high = percentile_interval(d)
    assert image_part(samples, _mean_of("x")) == pytest.approx((0.3 - low, high - 0.3), abs=1e-12)


def test_image_part_vanishes_when_images_matter_only_through_the_seed():
    """Each seed's robust images drawn independently (no image is harder than another): the
    images' own part is small against the seeds-held spread (in expectation it is 0)."""
    rows = _rows(0.3, 8, 11)
    samples = {"x": {"v": rows}}
    main = image_part(samples, _mean_of("x"))
    d = bootstrap_means(samples, resample_seeds=False)["x"]["v"]
    low, high = percentile_interval(d)
    assert max(main) < 0.5 * min(rows.mean() - low, high - rows.mean())


def test_seeds_to_decide_are_enough_on_tiled_seeds():
    """Oracle: per-run numbers (no image part) tiled to the projected seed count, the same spread
    over more seeds, give a decided interval; the run's own three seeds did not."""
    v = np.array([[0.9], [-0.3], [1.2]])
    e = estimate({"x": {"v": v}}, lambda m: m["x"]["v"], "", "")
    test = Predicate.above(0.0)
    assert test.verdict(e) == "inconclusive"
    need = int(test.to_decide(e).split()[1])
    tiled = np.tile(v, (math.ceil(need / 3), 1))
    assert test.verdict(estimate({"x": {"v": tiled}}, lambda m: m["x"]["v"], "", "")) == "holds"


def test_bootstrap_refuses_other_images():
    with pytest.raises(ValueError, match=r"columns with \[3, 4\] images"):
        bootstrap_means({"x": {"v": np.zeros((1, 3))}, "y": {"v": np.zeros((1, 4))}})


def test_percentile_interval():
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))
    assert all(math.isnan(x) for x in percentile_interval(np.array([np.nan] * 5 + [1.0] * 5)))


def test_records_refuse_other_images():
    a = {"label": np.array([0, 1]), "clean_logits": np.eye(2), "robust": np.array([True, False])}
    b = {**a, "label": np.array([1, 0])}
    r = Records.from_arrays([a], ["a"])
    assert r.clean.tolist() == [[1.0, 1.0]] and r.adv.tolist() == [[1.0, 0.0]] and r.gap.tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="records of b hold other images than a"):
        Records.from_arrays([a, b], ["a", "b"])


def test_late_teacher_fails_only_with_the_rule_loss_sweep():
    """A failed KL sweep student fails l1-vs-kl, not late-teacher (it reads the L1 sweep)."""
    from logitscope.report.build import Failures

    f = Failures({"distill-sweep-e2-kl-s0": "TrainingDiverged: x"})
    out = check_claims(CASES["late-teacher"]["holds"], lambda needs: f.first(*needs))
    v = {c.id: c.verdict for cs in out.values() for c in cs}
    assert v["l1-vs-kl"] == "failed" and v["late-teacher"] == "holds"
    f = Failures({"eval-val-distill-sweep-e2-l1-s0-e4": "RuntimeError: x"})
    out = check_claims(CASES["late-teacher"]["holds"], lambda needs: f.first(*needs))
    assert {c.id: c.verdict for cs in out.values() for c in cs}["late-teacher"] == "failed"


def test_late_teacher_says_how_the_epoch_was_chosen():
    ev = _sweep(0.4, 0.05)
    assert "teacher epoch 10 (chosen on the val split)" in SPECS["late-teacher"].check(ev).statistic
    ev.teacher["split"] = None  # teacher.fixed_epoch
    assert "teacher epoch 10 (fixed by the preset)" in SPECS["late-teacher"].check(ev).statistic


def test_the_at_st_level_band_stops_short_of_independent_rankings():
    """Half of the paper's 11.8% either way: 21% (near the 25% of independent rankings) is out."""
    claim = SPECS["rank-disagreement-at-st"].check(_analysis("rank_disagreement", {"AT-ST": [0.2, 0.21, 0.22]}))
    assert claim.verdict == "does not hold"
