import json
from pathlib import Path

import numpy as np
import pytest

from logitscope.analysis.analyze import analyze, read_analysis
from logitscope.analysis.ranks import error_class_rank, pairwise_rank_disagreement
from logitscope.fileio.atomic import atomic_save_npz
from logitscope.report.figures import draw_logit_figures
from logitscope.store.evaluations import find_record
from logitscope.store.logits import LogitStore, write_labels, write_logits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = {
    "fig1_max_logit_evolution",
    "figb1_gap_evolution",
    "fig2a_gap_histograms",
    "fig2b_adv_acc_by_gap",
    "fig3a_rank_scatter",
    "fig3b_rank_disagreement",
    "fig3c_error_class_rank",
    "fig3d_average_overlap",
    "figb2_confidence_quadrants",
    "figb3_neighbors",
}
C = 4
EPOCHS = (0, 1, 2)


def _records(logits: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict:
    correct = logits.argmax(axis=1) == labels
    robust = correct & (rng.random(len(labels)) < 0.5)
    adv = logits.copy()
    broken = np.flatnonzero(correct & ~robust)
    adv[broken, labels[broken]] -= 100.0
    return {
        "label": labels,
        "clean_logits": logits,
        "adv_logits": adv,
        "robust": robust,
        "broken_by": np.where(robust, 0, 1).astype(np.int8),
        "linf": np.zeros(len(labels), np.float32),
        "eps": np.array(0.1),
        "seed": np.array(0),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two ST and two AT runs: 3 epochs of train (80 images) and test (60) logits, 4 classes;
    the AT runs have records on disk for their last epoch."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    labels = {"train": rng.integers(0, C, 80), "test": np.repeat(np.arange(C), 15)}
    out = {"ST": [], "AT": []}
    for group, scale in (("ST", 6.0), ("AT", 1.5)):
        for s in range(2):
            run = root / f"{group}{s}"
            for split, y in labels.items():
                write_labels(run, split, y)
                for e in EPOCHS:
                    z = rng.standard_normal((len(y), C)) + scale * (e + 1) / 3 * np.eye(C)[y]
                    write_logits(run, split, e, z)
            if group == "AT":
                atomic_save_npz(
                    run / "eval" / "paper-epoch_002.npz",
                    **_records(z.astype(np.float32), labels["test"], rng),
                )
            out[group].append(run)
    return out


def test_analyze_everything_and_the_report_draws_every_figure(runs, tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (60, 1, 6, 6), dtype=np.uint8)
    st0 = LogitStore(runs["ST"][0]).get("test")
    given = {str(runs["ST"][0]): _records(np.asarray(st0), np.repeat(np.arange(C), 15), np.random.default_rng(2))}
    res = analyze(runs["ST"], runs["AT"], None, tmp_path, records=given)
    assert not list(tmp_path.glob("*.png"))  # the stage draws nothing

    summary, results = read_analysis(tmp_path)  # the report reads the stored results alone
    assert summary == res == json.loads((tmp_path / "analysis.json").read_text())
    drawn, skipped = draw_logit_figures(summary, results, tmp_path / "figures", images)
    assert set(drawn) == ALL_FIGURES
    assert res["skipped"] == {} and skipped == {}
    for path in drawn.values():
        data = Path(path).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
    # the stored figure inputs are the analyses themselves, rebuilt exactly
    logits4 = [LogitStore(r).get("test") for r in runs["ST"] + runs["AT"]]
    again = pairwise_rank_disagreement(
        logits4, np.repeat(np.arange(C), 15), ["ST0", "ST1", "AT0", "AT1"], ["ST", "ST", "AT", "AT"]
    )
    np.testing.assert_array_equal(results["rank_disagreement"].fraction, again.fraction)
    assert results["rank_disagreement"].names == again.names
    np.testing.assert_array_equal(results["meta"]["labels"], np.repeat(np.arange(C), 15))
    for table in ("distributions", "rank_disagreement", "average_overlap", "error_class_rank", "adv_acc_by_gap"):
        assert (tmp_path / f"{table}.csv").read_text().count("\n") > 1
    assert res["records"]["ST0"] == "given" and res["records"]["ST1"] is None
    assert res["records"]["AT0"].endswith("paper-epoch_002.npz")

    logits = [LogitStore(r).get("test") for r in runs["ST"] + runs["AT"]]
    ref = pairwise_rank_disagreement(
        logits, np.repeat(np.arange(C), 15), ["ST0", "ST1", "AT0", "AT1"], ["ST", "ST", "AT", "AT"]
    ).summary()
    for group in ("AT-AT", "AT-ST", "ST-ST"):
        assert res["rank_disagreement"]["groups"][group]["mean"] == pytest.approx(ref[group]["mean"])
    assert res["rank_disagreement"]["paper"] == {"AT-ST": 0.118, "AT-AT": 0.011}
    assert res["distributions"]["AT1"]["train"]["gap"]["epoch"] == 2
    assert res["evolution"]["ST0"]["train"]["max_logit"]["epochs"] == list(EPOCHS)
    assert set(res["error_class_rank"]) == {"ST natural", "AT natural", "ST adversarial", "AT adversarial"}
    assert res["adv_acc_by_gap"]["AT"]["counts"] and "ST" in res["adv_acc_by_gap"]
    # Mean ± sd over runs is the sample sd (ddof=1): |a - b| / sqrt(2) for two runs.
    for stat, m in (("gap", "mean"), ("max_logit", "skew")):
        a, b = (res["distributions"][n]["test"][stat][m] for n in ("AT0", "AT1"))
        g = res["distribution_groups"]["test"][stat]["AT"][m]
        assert g["n"] == 2
        assert g["mean"] == pytest.approx((a + b) / 2)
        assert g["sd"] == pytest.approx(abs(a - b) / np.sqrt(2))
    fr = [error_class_rank(z, np.repeat(np.arange(C), 15)).fraction for z in logits[2:]]
    np.testing.assert_allclose(res["error_class_rank"]["AT natural"]["sd"], np.abs(fr[0] - fr[1]) / np.sqrt(2))
    np.testing.assert_allclose(res["error_class_rank"]["AT natural"]["mean"], (fr[0] + fr[1]) / 2)
    # What the claims registry resamples: one number per run (or model pair), equal to the above.
    ci = res["claim_inputs"]
    assert ci["gap_mean"]["AT"] == pytest.approx(
        [res["distributions"][n]["test"]["gap"]["mean"] for n in ("AT0", "AT1")]
    )
    assert ci["max_logit_skew"]["ST"] == pytest.approx(
        [res["distributions"][n]["test"]["max_logit"]["skew"] for n in ("ST0", "ST1")]
    )
    assert len(ci["rank_disagreement"]["AT-ST"]) == 4 and len(ci["rank_disagreement"]["AT-AT"]) == 1
    assert np.mean(ci["rank_disagreement"]["AT-ST"]) == pytest.approx(ref["AT-ST"]["mean"])
    assert ci["error_top1"]["AT natural"] == pytest.approx([f[0] for f in fr])
    assert set(ci["neighbors_same_class"]) == {"ST", "AT"} and len(ci["neighbors_same_class"]["AT"]) == 2
    assert all(0 <= v <= 1 for v in ci["neighbors_same_class"]["ST"])


def test_analyze_without_records_or_images(runs, tmp_path):
    res = analyze(runs["ST"][:1], runs["AT"][:1], 1, tmp_path)
    assert set(res["skipped"]) == {
        "fig2b_adv_acc_by_gap",
        "error_class_rank ST adversarial",
        "error_class_rank AT adversarial",
    }
    drawn, skipped = draw_logit_figures(*read_analysis(tmp_path), tmp_path / "figures", None)
    assert set(skipped) == {"fig2b_adv_acc_by_gap", "figb2_confidence_quadrants", "figb3_neighbors"}
    assert set(drawn) == ALL_FIGURES - set(skipped)
    assert "adv_acc_by_gap" not in res
    assert res["distributions"]["ST0"]["test"]["max_logit"]["epoch"] == 1
    assert set(res["rank_disagreement"]["groups"]) == {"AT-ST"}
    # One run per group: the sd over runs is undefined, written as null (not 0).
    one = res["distribution_groups"]["test"]["gap"]["AT"]["mean"]
    assert one["n"] == 1 and one["sd"] is None
    assert one["mean"] == pytest.approx(res["distributions"]["AT0"]["test"]["gap"]["mean"])
    assert all(v is None for v in res["error_class_rank"]["AT natural"]["sd"])
    assert res["rank_disagreement"]["groups"]["AT-ST"]["sd"] is None
    assert "AT-AT" not in res["claim_inputs"]["rank_disagreement"]  # one AT run: no AT-AT pair


def test_analyze_bad_input(runs, tmp_path):
    with pytest.raises(ValueError, match="at least one each"):
        analyze([], runs["AT"], None, tmp_path)
    with pytest.raises(KeyError, match="'val'"):
        analyze(runs["ST"], runs["AT"], None, tmp_path, split="val")
    with pytest.raises(KeyError, match="lack"):
        analyze(runs["ST"], runs["AT"], None, tmp_path, records={"AT0": {"label": np.zeros(3)}})
    analyze(runs["ST"], runs["AT"], None, tmp_path)
    with pytest.raises(ValueError, match="59 images: expected 60, the test split"):
        draw_logit_figures(*read_analysis(tmp_path), tmp_path / "figures", np.zeros((59, 1, 4, 4), np.uint8))


def test_find_record(runs, tmp_path):
    at = runs["AT"][0]
    assert find_record(at).name == "paper-epoch_002.npz"
    assert find_record(at, 2) == find_record(at)
    assert find_record(at, 1) is None
    assert find_record(runs["ST"][0]) is None
