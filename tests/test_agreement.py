"""The judge-measuring statistics against values computed by hand, and several judges combined."""

from __future__ import annotations

from fractions import Fraction

import pytest

from codegen_eval.grading.judge import Judgement, JudgeStatus, JudgeVerdict, combine, judge_cost
from codegen_eval.models.backends import Usage
from codegen_eval.reporting.agreement import (
    Confusion,
    accuracy,
    auc,
    balanced_accuracy,
    best_threshold,
    cohen_kappa,
    confusion,
    krippendorff_alpha_interval,
    roc_curve,
    trapezoid_auc,
)


def table(pp: int, pf: int, fp: int, ff: int) -> Confusion:
    return Confusion(judge_pass_tests_pass=pp, judge_pass_tests_fail=pf, judge_fail_tests_pass=fp, judge_fail_tests_fail=ff)


def test_kappa_of_a_known_two_by_two_table():
    # 50 items: both PASS 20, judge PASS/tests FAIL 5, judge FAIL/tests PASS 10, both FAIL 15.
    # observed 35/50 = 0.7; judge PASS 25/50, tests PASS 30/50; chance 0.5*0.6 + 0.5*0.4 = 0.5;
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    c = table(20, 5, 10, 15)
    assert c.total == 50
    assert accuracy(c) == pytest.approx(0.7)
    assert cohen_kappa(c) == pytest.approx(0.4)
    # balanced accuracy: PASS recall 20/30, FAIL recall 15/20 -> (2/3 + 3/4) / 2 = 17/24
    assert balanced_accuracy(c) == pytest.approx(17 / 24)


def test_kappa_of_a_judge_that_passes_everything_is_zero_and_undefined_when_nothing_varies():
    assert cohen_kappa(table(6, 4, 0, 0)) == pytest.approx(0.0)  # observed 0.6 = chance 0.6
    assert balanced_accuracy(table(6, 4, 0, 0)) == pytest.approx(0.5)
    assert cohen_kappa(table(5, 0, 0, 0)) is None  # chance agreement 1
    assert balanced_accuracy(table(5, 0, 0, 0)) is None  # no failing case
    assert cohen_kappa(Confusion()) is None and accuracy(Confusion()) is None


def test_confusion_counts_pairs_of_judge_and_tests():
    c = confusion([(True, True), (True, False), (True, False), (False, True), (False, False)])
    assert (c.judge_pass_tests_pass, c.judge_pass_tests_fail, c.judge_fail_tests_pass, c.judge_fail_tests_fail) == (1, 2, 1, 1)


def test_alpha_interval_of_a_small_known_matrix():
    # Two judges, three cases: (1, 2), (3, 3), (5, 4). Six pairable values, sum 18, sum of squares 64.
    # Observed: ordered pairs within cases: (1-2)^2 * 2 + 0 + (5-4)^2 * 2 = 4, each over m_u - 1 = 1; / n = 4/6.
    # Expected: 2 (n sum x^2 - (sum x)^2) / (n (n - 1)) = 2 (384 - 324) / 30 = 4.  alpha = 1 - (2/3) / 4 = 5/6.
    assert krippendorff_alpha_interval([[1, 2], [3, 3], [5, 4]]) == pytest.approx(5 / 6)


def test_alpha_interval_skips_missing_values_and_unpairable_cases():
    # A third judge missing on two cases, and a case only one judge scored: neither changes the figure
    # computed on the pairable values 1, 2, 3, 3, 5, 4, 7 (n = 7, sum 25, sum of squares 113).
    with_missing = [[1, 2, None], [3, 3, None], [5, 4, 7], [None, 9, None]]
    # Within cases: 2 + 0 + (1 + 4 + 9) * 2 / (3 - 1) = 16, observed 16/7.
    # Expected: 2 (7*113 - 625) / (7*6) = 332/42.  alpha = 1 - (16/7) / (332/42) = 1 - 96/332 = 59/83.
    assert Fraction(krippendorff_alpha_interval(with_missing)).limit_denominator(1000) == Fraction(59, 83)
    assert krippendorff_alpha_interval([[1, None], [None, 2]]) is None
    assert krippendorff_alpha_interval([[3, 3], [3, 3]]) is None  # no variation at all: undefined


def test_alpha_interval_on_krippendorffs_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing
    # values; interval alpha = 0.849.
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [list(unit) for unit in zip(*observers)]
    assert krippendorff_alpha_interval(units) == pytest.approx(0.849, abs=5e-4)


def test_auc_of_a_known_ranking():
    # Correct items 0.9, 0.8, 0.4; incorrect 0.7, 0.3: of the 6 pairs the correct one ranks higher in 5.
    scores, labels = [0.9, 0.8, 0.4, 0.7, 0.3], [True, True, True, False, False]
    assert auc(scores, labels) == pytest.approx(5 / 6)
    assert trapezoid_auc(roc_curve(scores, labels)) == pytest.approx(5 / 6)
    # Ties count half: a judge that gives everything 8 is a coin toss.
    assert auc([8, 8, 8, 8], [True, False, True, False]) == pytest.approx(0.5)
    assert trapezoid_auc(roc_curve([8, 8, 8, 8], [True, False, True, False])) == pytest.approx(0.5)
    assert auc([9, 9], [True, True]) is None


def test_roc_points_and_best_threshold():
    # Scores 10, 9, 8, 8, 5, 3 with labels C, C, I, C, I, I.
    scores, labels = [10, 9, 8, 8, 5, 3], [True, True, False, True, False, False]
    points = [(p.threshold, p.true_positive_rate, p.false_positive_rate) for p in roc_curve(scores, labels)]
    assert points == [(11, 0, 0), (10, 1 / 3, 0), (9, 2 / 3, 0), (8, 1, 1 / 3), (5, 1, 2 / 3), (3, 1, 1)]
    # balanced accuracy per threshold: 10 -> 2/3, 9 -> 5/6, 8 -> 5/6, 5 -> 2/3, 3 -> 1/2: the tie goes to 9.
    assert best_threshold(scores, labels) == (9, pytest.approx(5 / 6))
    # AUC: correct 10, 9, 8 against incorrect 8, 5, 3: 3 + 3 + (2 + 0.5) = 8.5 of 9.
    assert auc(scores, labels) == pytest.approx(8.5 / 9)
    assert trapezoid_auc(roc_curve(scores, labels)) == pytest.approx(8.5 / 9)


def ok(score: float, calls: int = 1, tokens: int = 100) -> Judgement:
    verdict = JudgeVerdict(score=score, reasoning=f"scored {score}")
    return Judgement(status=JudgeStatus.OK, verdict=verdict, calls=calls, usage=Usage(input_tokens=tokens, output_tokens=tokens))


def test_several_judges_combine_to_the_median_and_keep_the_spread():
    combined = combine({"claude-haiku-4-5": ok(9), "claude-sonnet-4-5": ok(3), "claude-opus-4-5": ok(4)})
    assert combined.status is JudgeStatus.OK and combined.verdict.score == 4 and combined.verdict.reasoning == "scored 4"
    assert combined.spread == 6 and combined.calls == 3 and combined.usage.input_tokens == 300
    assert {m: s.score for m, s in combined.panel.items()} == {"claude-haiku-4-5": 9, "claude-sonnet-4-5": 3, "claude-opus-4-5": 4}
    # Priced per judge: Haiku 4.5 $1/$5, Sonnet 4.5 $3/$15, Opus 4.5 $5/$25 per MTok, 100 tokens in and out each.
    assert judge_cost(combined, "unused") == pytest.approx(100 * (1 + 5 + 3 + 15 + 5 + 25) / 1e6)
    assert "panel" not in combined.model_dump() and "spread" not in combined.model_dump()  # the case row carries them


def test_a_judge_that_fails_is_left_out_of_the_median_and_all_failing_is_an_error():
    error = Judgement(status=JudgeStatus.JUDGE_ERROR, error="no JSON object in the answer", raw="nope")
    combined = combine({"a": ok(8), "b": error})
    assert combined.status is JudgeStatus.OK and combined.verdict.score == 8 and combined.spread is None
    assert combined.panel["b"].status is JudgeStatus.JUDGE_ERROR and combined.panel["b"].score is None
    failed = combine({"a": error, "b": error})
    assert failed.status is JudgeStatus.JUDGE_ERROR and failed.error == "a: no JSON object in the answer; b: no JSON object in the answer"
    assert failed.raw == "nope"
    single = combine({"a": ok(7)})
    assert single.verdict.score == 7 and single.spread is None and list(single.panel) == ["a"]
