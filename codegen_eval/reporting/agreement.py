"""How far a judge can be trusted, measured: against the tests, between judges, over score thresholds.

The statistics are plain functions of plain numbers (each figure is None where it is undefined, e.g.
Cohen's kappa when chance agreement is 1). `AgreementBuilder` gathers one run's figures from its
results as they stream past, for `summary.json` (`judge_agreement`), the CLI summary and the report.

A judge "passes" a case when its score is at or above a threshold (the run's PASS threshold, or a
calibrated one); the tests pass a case when every gating check passes. Only cases that have
executable tests and whose output reached the judge (a usable score) are counted.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from statistics import median
from typing import Any

from pydantic import BaseModel

LOW_KAPPA = 0.2  # below this the judge's scores carry little information about the tests' verdict
SPREAD_FLAG = 4.0  # judges this far apart (max - min) on one case are flagged
LISTED = 200  # disagreeing or disputed cases kept in summary.json (the counts are always complete)


# --- statistics -----------------------------------------------------------------------------------------


class Confusion(BaseModel):
    """The judge's PASS/FAIL against the tests' PASS/FAIL, counted."""

    judge_pass_tests_pass: int = 0
    judge_pass_tests_fail: int = 0
    judge_fail_tests_pass: int = 0
    judge_fail_tests_fail: int = 0

    @property
    def total(self) -> int:
        return self.judge_pass_tests_pass + self.judge_pass_tests_fail + self.judge_fail_tests_pass + self.judge_fail_tests_fail

    def add(self, judge_pass: bool, tests_pass: bool) -> None:
        name = f"judge_{'pass' if judge_pass else 'fail'}_tests_{'pass' if tests_pass else 'fail'}"
        setattr(self, name, getattr(self, name) + 1)


def confusion(pairs: Iterable[tuple[bool, bool]]) -> Confusion:
    """`pairs` of (judge passes, tests pass)."""
    table = Confusion()
    for judge_pass, tests_pass in pairs:
        table.add(judge_pass, tests_pass)
    return table


def accuracy(c: Confusion) -> float | None:
    return (c.judge_pass_tests_pass + c.judge_fail_tests_fail) / c.total if c.total else None


def balanced_accuracy(c: Confusion) -> float | None:
    """The mean of the judge's hit rate on passing and on failing cases; None unless both occur."""
    passing = c.judge_pass_tests_pass + c.judge_fail_tests_pass
    failing = c.judge_pass_tests_fail + c.judge_fail_tests_fail
    if not passing or not failing:
        return None
    return (c.judge_pass_tests_pass / passing + c.judge_fail_tests_fail / failing) / 2


def cohen_kappa(c: Confusion) -> float | None:
    """(observed - chance agreement) / (1 - chance agreement); None when chance agreement is 1
    (both raters gave one and the same answer throughout)."""
    n = c.total
    if not n:
        return None
    observed = (c.judge_pass_tests_pass + c.judge_fail_tests_fail) / n
    judge_pass = (c.judge_pass_tests_pass + c.judge_pass_tests_fail) / n
    tests_pass = (c.judge_pass_tests_pass + c.judge_fail_tests_pass) / n
    chance = judge_pass * tests_pass + (1 - judge_pass) * (1 - tests_pass)
    return None if chance >= 1 else (observed - chance) / (1 - chance)


def krippendorff_alpha_interval(units: Iterable[Sequence[float | None]]) -> float | None:
    """Krippendorff's alpha, interval metric: 1 - observed / expected disagreement.

    `units` holds one row per case with each judge's value (None: missing). Only units with two
    values or more count. Both disagreements are sums of squared differences over ordered pairs of
    values, computed from sums (sum over i != j of (x_i - x_j)^2 = 2 (m sum x^2 - (sum x)^2)), so a
    20,000-case run takes one pass. None when fewer than two values are pairable or all are equal."""
    n, total, squares, within = 0, 0.0, 0.0, 0.0
    for unit in units:
        values = [float(v) for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        s, q = sum(values), sum(v * v for v in values)
        within += 2 * (m * q - s * s) / (m - 1)
        n, total, squares = n + m, total + s, squares + q
    if n < 2:
        return None
    expected = 2 * (n * squares - total * total) / (n * (n - 1))
    if expected <= 1e-12:
        return None
    return 1 - (within / n) / expected


class RocPoint(BaseModel):
    threshold: float  # the judge passes scores >= threshold
    false_positive_rate: float
    true_positive_rate: float


def roc_curve(scores: Sequence[float], labels: Sequence[bool]) -> list[RocPoint]:
    """One point per distinct score as the threshold, from the strictest (nothing passes; threshold
    above every score) to the most lenient (everything passes). Needs both labels present."""
    positives, negatives = sum(labels), len(labels) - sum(labels)
    if not positives or not negatives:
        raise ValueError("a ROC curve needs both correct and incorrect items")
    points = [RocPoint(threshold=max(scores) + 1, false_positive_rate=0.0, true_positive_rate=0.0)]
    for threshold in sorted(set(scores), reverse=True):
        passed = [label for score, label in zip(scores, labels, strict=True) if score >= threshold]
        tp = sum(passed)
        points.append(RocPoint(threshold=threshold, false_positive_rate=(len(passed) - tp) / negatives, true_positive_rate=tp / positives))
    return points


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve: the chance that a correct item outscores an incorrect one, ties
    counting half (Mann-Whitney). None unless both labels occur."""
    good = [s for s, label in zip(scores, labels, strict=True) if label]
    bad = [s for s, label in zip(scores, labels, strict=True) if not label]
    if not good or not bad:
        return None
    bad.sort()
    wins = sum(bisect_left(bad, s) + 0.5 * (bisect_right(bad, s) - bisect_left(bad, s)) for s in good)
    return wins / (len(good) * len(bad))


def trapezoid_auc(points: Sequence[RocPoint]) -> float:
    """The area under ROC points by the trapezoid rule (equals `auc` on the same data)."""
    ordered = sorted((p.false_positive_rate, p.true_positive_rate) for p in points)
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(ordered, ordered[1:]))


def best_threshold(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """The score threshold (one of the scores) that maximises balanced accuracy, and that accuracy.
    Ties go to the higher threshold: a stricter judge makes fewer false PASSes."""
    best: tuple[float, float] | None = None
    for threshold in sorted(set(scores)):
        value = balanced_accuracy(confusion((s >= threshold, label) for s, label in zip(scores, labels, strict=True)))
        if value is None:
            raise ValueError("a threshold needs both correct and incorrect items")
        if best is None or value >= best[1]:
            best = (threshold, value)
    if best is None:
        raise ValueError("no scores")
    return best


# --- a run's agreement ----------------------------------------------------------------------------------


class AgreementStats(BaseModel):
    """One judge (or the median of several) against the tests."""

    cases: int  # cases with executable tests and a usable judge score
    threshold: float  # the judge passes a case at score >= threshold
    confusion: Confusion
    accuracy: float | None
    balanced_accuracy: float | None
    kappa: float | None
    auc: float | None  # of the raw score against the tests' pass, independent of the threshold

    @property
    def low_information(self) -> bool:
        return self.kappa is None or self.kappa < LOW_KAPPA


def agreement_stats(scores: Sequence[float], tests_pass: Sequence[bool], threshold: float) -> AgreementStats:
    table = confusion((s >= threshold, t) for s, t in zip(scores, tests_pass, strict=True))
    return AgreementStats(
        cases=table.total, threshold=threshold, confusion=table, accuracy=_round(accuracy(table)),
        balanced_accuracy=_round(balanced_accuracy(table)), kappa=_round(cohen_kappa(table)), auc=_round(auc(scores, tests_pass)),
    )


class CaseRef(BaseModel):
    id: str
    cid: str | None = None
    index: int  # position in the run (results.jsonl order), which gives its report page
    judge_score: float | None = None
    tests_pass: bool | None = None
    spread: float | None = None
    scores: dict[str, float | None] = {}  # per judge, for disputed cases


class JudgeAgreement(BaseModel):
    """summary.json's `judge_agreement`: the judge measured against the tests on this run."""

    judges: list[str]
    calibrated: list[str] = []  # judges whose PASS threshold came from `calibrate` rather than the run's PASS threshold
    combined: AgreementStats  # the case's judge score: the median of the judges
    per_judge: dict[str, AgreementStats]
    inter_judge_alpha: float | None = None  # Krippendorff's alpha (interval) between judges; None with one judge
    judge_pass_tests_fail: list[CaseRef] = []  # the worse disagreement: listed first (at most LISTED)
    judge_fail_tests_pass: list[CaseRef] = []
    disputed: list[CaseRef] = []  # cases whose judges differ by SPREAD_FLAG or more (at most LISTED)
    disputed_total: int = 0
    low_information: bool  # kappa < LOW_KAPPA (or undefined): the judge's scores tell little about the tests

    @property
    def disagreements(self) -> list[CaseRef]:
        """Disagreeing cases, "judge PASS, tests FAIL" before "judge FAIL, tests PASS"."""
        return [*self.judge_pass_tests_fail, *self.judge_fail_tests_pass]


class AgreementBuilder:
    """Gathers a run's judge scores and test outcomes as results stream past; `build` computes."""

    def __init__(self, judges: Sequence[str], thresholds: dict[str, float] | None = None, pass_at: float = 8.0):
        self.judges = list(judges)
        self.calibrated = [j for j in self.judges if j in (thresholds or {})]
        self.thresholds = {j: (thresholds or {}).get(j, pass_at) for j in self.judges}
        self.threshold = median(self.thresholds.values()) if self.judges else pass_at
        self.combined: tuple[list[float], list[bool]] = ([], [])
        self.per_judge: dict[str, tuple[list[float], list[bool]]] = {}
        self.units: list[list[float | None]] = []
        self.fp: list[CaseRef] = []
        self.fn: list[CaseRef] = []
        self.disputed: list[CaseRef] = []
        self.disputed_total = 0
        self.index = 0
        self.seen_judge = False

    def add(self, result: Any) -> None:
        """`result`: a CaseResult (duck-typed here so that this module stays free of the run record)."""
        index, self.index = self.index, self.index + 1
        scores = _judge_scores(result, self.judges[0] if self.judges else "judge")
        if not scores:
            return
        self.seen_judge = True
        if len(self.judges) > 1:
            self.units.append([scores.get(j) for j in self.judges])
        spread = getattr(result, "judge_spread", None)
        if spread is not None and spread >= SPREAD_FLAG:
            self.disputed_total += 1
            if len(self.disputed) < LISTED:
                self.disputed.append(CaseRef(id=result.id, cid=result.cid, index=index, spread=spread, scores=scores))
        tests_pass = _tests_pass(result)
        combined = result.judge.verdict.score if result.judge.verdict is not None and result.judge.status.value == "OK" else None
        if tests_pass is None:
            return
        for judge, score in scores.items():
            if score is not None:
                judge_scores, judge_truths = self.per_judge.setdefault(judge, ([], []))
                judge_scores.append(score)
                judge_truths.append(tests_pass)
        if combined is None:
            return
        self.combined[0].append(combined)
        self.combined[1].append(tests_pass)
        judge_pass = combined >= self.threshold
        if judge_pass != tests_pass:
            bucket = self.fp if judge_pass else self.fn
            if len(bucket) < LISTED:
                bucket.append(CaseRef(id=result.id, cid=result.cid, index=index, judge_score=combined, tests_pass=tests_pass))

    def build(self) -> JudgeAgreement | None:
        """None when no case reached a judge (e.g. --no-judge)."""
        if not self.seen_judge:
            return None
        combined = agreement_stats(*self.combined, self.threshold)
        per_judge = {j: agreement_stats(*self.per_judge.get(j, ([], [])), self.thresholds[j]) for j in self.judges}
        return JudgeAgreement(
            judges=self.judges, calibrated=self.calibrated, combined=combined, per_judge=per_judge,
            inter_judge_alpha=_round(krippendorff_alpha_interval(self.units)) if len(self.judges) > 1 else None,
            judge_pass_tests_fail=self.fp, judge_fail_tests_pass=self.fn[: max(0, LISTED - len(self.fp))],
            disputed=self.disputed, disputed_total=self.disputed_total, low_information=combined.low_information,
        )


def _judge_scores(result: Any, only_judge: str) -> dict[str, float | None]:
    """Each judge's usable score on this case ({} when no judge gave one). Results written before
    several judges existed have no `judges`: their one judgement stands for the run's judge."""
    panel = getattr(result, "judges", None) or {}
    if panel:
        scores = {judge: entry.score for judge, entry in panel.items()}
        return scores if any(s is not None for s in scores.values()) else {}
    verdict = result.judge.verdict
    return {only_judge: verdict.score} if verdict is not None and result.judge.status.value == "OK" else {}


def _tests_pass(result: Any) -> bool | None:
    """Whether the tests pass this case; None when the case has no executable tests. Results from
    before `has_tests` was recorded count a case as tested when a check counted test items."""
    tested = getattr(result, "has_tests", None)
    if tested is None:
        tested = any(c.fraction is not None for c in result.checks)
    if not tested:
        return None
    return all(c.passed for c in result.checks if c.gate)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def describe(agreement: JudgeAgreement) -> list[str]:
    """The agreement in a few plain lines, for the CLI summary and the Prefect UI."""
    c = agreement.combined
    who = "the judges' median" if len(agreement.judges) > 1 else "the judge"
    calibrated = " (calibrated)" if agreement.calibrated else ""
    lines = [f"Judge vs tests: {c.cases} case(s) with tests, {who} passes at score >= {c.threshold:g}{calibrated}: {format_stats(c)}",
             f"  judge PASS, tests FAIL {c.confusion.judge_pass_tests_fail} · judge FAIL, tests PASS {c.confusion.judge_fail_tests_pass}"
             f" · both PASS {c.confusion.judge_pass_tests_pass} · both FAIL {c.confusion.judge_fail_tests_fail}"]
    if len(agreement.judges) > 1:
        lines += [f"  {judge} (PASS at >= {s.threshold:g}): {format_stats(s)}" for judge, s in agreement.per_judge.items()]
        alpha = "undefined" if agreement.inter_judge_alpha is None else f"{agreement.inter_judge_alpha:.2f}"
        lines.append(f"  between judges: Krippendorff's α {alpha} · {agreement.disputed_total} case(s) with a spread >= {SPREAD_FLAG:g}")
    if agreement.low_information:
        lines.append(f"  κ {'undefined' if c.kappa is None else f'{c.kappa:.2f} < {LOW_KAPPA}'}: the judge's scores carry little information on this run.")
    return lines


def format_stats(s: AgreementStats) -> str:
    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    return f"accuracy {show(s.accuracy)} · balanced accuracy {show(s.balanced_accuracy)} · κ {show(s.kappa)} · AUC {show(s.auc)}"
