"""Scoring: checks and judge score in, one number and a verdict out, decided in code.

    score = (judge_weight * judge_score + checks_weight * checks_score) / (judge_weight + checks_weight)

checks_score is 10 x the smallest share of test items passed (python: the check passes or not;
regex: strings classified right; IAM: requests decided right), 10 when the case has no tests and every
gating check passes, and 0 when a gating check without items fails (no code, syntax error, undefined
names, wrong signature, timeout, sandbox error). Verdict, with defaults pass_at 8 and partial_at 5:
- a fatal check failure is FAIL, whatever the judge says;
- some test items failing is PARTIAL at best: a judge can never lift a failing test to PASS;
- otherwise PASS at score >= pass_at, PARTIAL at >= partial_at, FAIL below.
ERROR when the case could not be graded: the generation call failed (GENERATION_ERROR), the model
refused (REFUSED), or the checks passed but the judge gave no usable answer (JUDGE_ERROR). Without a judge (skipped), the score is the checks score.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from codegen_eval.grading.checks import CheckResult
from codegen_eval.grading.judge import Judgement, JudgeStatus


class Verdict(StrEnum):
    PASS = "PASS"
    PARTIAL = "PARTIAL"
    FAIL = "FAIL"
    ERROR = "ERROR"


class ScoringConfig(BaseModel):
    judge_weight: float = Field(0.5, ge=0)
    checks_weight: float = Field(0.5, ge=0)
    pass_at: float = 8.0
    partial_at: float = 5.0


class Score(BaseModel):
    score: float | None
    verdict: Verdict
    status: str


def score_case(
    checks: list[CheckResult], judgement: Judgement, generation_failure: str | None, config: ScoringConfig
) -> Score:
    """`generation_failure`: why there is nothing to grade (GENERATION_ERROR, REFUSED), or None."""
    if generation_failure:
        return Score(score=None, verdict=Verdict.ERROR, status=generation_failure)
    failed = [c for c in checks if c.gate and not c.passed]
    fatal = next((c for c in failed if c.fraction is None), None)
    fractions = [c.fraction for c in checks if c.gate and c.fraction is not None]
    checks_score = 0.0 if fatal else 10.0 * min(fractions, default=1.0)
    if judgement.status is JudgeStatus.OK and judgement.verdict is not None:
        total = config.judge_weight + config.checks_weight
        score = (config.judge_weight * judgement.verdict.score + config.checks_weight * checks_score) / total
    elif failed or judgement.status is JudgeStatus.SKIPPED:
        score = checks_score
    else:  # JUDGE_ERROR or OVER_BUDGET: the judge's part is missing
        return Score(score=None, verdict=Verdict.ERROR, status=judgement.status.value)
    score = round(score, 2)
    if fatal:
        return Score(score=score, verdict=Verdict.FAIL, status=fatal.status.value)
    if failed:  # some test items failed: partial credit at most
        verdict = Verdict.PARTIAL if score >= config.partial_at else Verdict.FAIL
        return Score(score=score, verdict=verdict, status=failed[0].status.value)
    verdict = Verdict.PASS if score >= config.pass_at else Verdict.PARTIAL if score >= config.partial_at else Verdict.FAIL
    return Score(score=score, verdict=verdict, status="OK")
