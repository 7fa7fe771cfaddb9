"""The teacher rules of `choose_teacher` on hand-made sweep results, and the preset's check of
``teacher.rule`` / ``natural_tolerance``."""

from __future__ import annotations

import pytest
from plan_helpers import TINY

from logitscope.plan.graph import validate_plan_inputs
from logitscope.plan.preset import apply_preset_overrides
from logitscope.plan.stages import choose_teacher

# teacher epoch -> (natural, adversarial) of its two seeds' students (means in the comments)
RESULTS = {
    6: [(0.80, 0.20), (0.90, 0.16)],  # 0.85 / 0.18: the most robust
    10: [(0.94, 0.12), (0.96, 0.14)],  # 0.95 / 0.13
    20: [(0.98, 0.08), (0.98, 0.06)],  # 0.98 / 0.07: the most natural
    30: [(0.99, 0.02), (0.97, 0.04)],  # 0.98 / 0.03
}


def sweep_and_summaries(results=RESULTS, loss="l1"):
    sweep, summaries = {}, {}
    for epoch, seeds in results.items():
        for seed, (nat, adv) in enumerate(seeds):
            name = f"sweep-e{epoch}-{loss}-s{seed}"
            sweep[name] = {"teacher_epoch": epoch, "loss": loss}
            summaries[name] = {"clean_acc": nat, "robust_acc": adv, "n": 200}
    return sweep, summaries


def test_robustness_takes_the_most_robust_student_whatever_its_natural_accuracy():
    epoch, reason = choose_teacher(*sweep_and_summaries(), "l1", "robustness", data="the validation split")
    assert epoch == 6
    assert "18.0% adversarial and 85.0% natural" in reason and "maximum robustness" in reason


def test_trade_off_takes_the_most_robust_within_the_natural_tolerance():
    sweep, summaries = sweep_and_summaries()
    # best natural 0.98: tolerance 0.05 admits 0.95 (epoch 10) and above, not 0.85
    assert choose_teacher(sweep, summaries, "l1", "trade-off", 0.05)[0] == 10
    assert choose_teacher(sweep, summaries, "l1", "trade-off", 0.02)[0] == 20
    assert choose_teacher(sweep, summaries, "l1", "trade-off", 0.13)[0] == 6
    with pytest.raises(ValueError, match="needs natural_tolerance"):
        choose_teacher(sweep, summaries, "l1", "trade-off")


def test_ties_go_to_the_higher_natural_accuracy_then_the_earlier_epoch():
    tied = {4: [(0.80, 0.30)], 8: [(0.90, 0.30)], 12: [(0.90, 0.30)]}
    assert choose_teacher(*sweep_and_summaries(tied), "l1", "robustness")[0] == 8


def test_only_the_rules_loss_is_read_and_unknown_rules_are_refused():
    sweep, summaries = sweep_and_summaries()
    kl_sweep, kl_summaries = sweep_and_summaries({30: [(0.99, 0.9)]}, loss="kl")  # KL: ignored
    assert choose_teacher({**sweep, **kl_sweep}, {**summaries, **kl_summaries}, "l1", "robustness")[0] == 6
    with pytest.raises(ValueError, match=r"^rule='best': expected one of robustness, trade-off$"):
        choose_teacher(sweep, summaries, "l1", "best")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["teacher.rule=best"], r"^teacher.rule='best': expected one of robustness, trade-off$"),
        (
            ["teacher.rule=trade-off"],
            r"^teacher.natural_tolerance=None: expected a number in \[0, 1\] for rule trade-off$",
        ),
        (["teacher.rule=trade-off", "teacher.natural_tolerance=1.5"], r"^teacher.natural_tolerance=1.5: expected"),
        (["teacher.natural_tolerance=0.05"], r"^teacher.natural_tolerance=0.05: applies to rule trade-off only"),
    ],
)
def test_the_preset_rule_is_checked_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_plan_inputs(apply_preset_overrides(TINY, overrides), None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_trade_off_with_its_tolerance_is_accepted(tmp_path):
    preset = apply_preset_overrides(TINY, ["teacher.rule=trade-off", "teacher.natural_tolerance=0.05"])
    validate_plan_inputs(preset, None, tmp_path / "out")
