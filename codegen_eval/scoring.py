"""Scoring: checks and judge score in, one number and a verdict out, decided in code.

    score = (judge_weight * judge_score + checks_weight * checks_score) / (judge_weight + checks_weight)

where checks_score is 10 when every check passes and 0 otherwise (lesson 09: the mean of the model's
score and the syntax score). Verdict: PASS when score >= pass_at, PARTIAL when >= partial_at, FAIL
below, and FAIL whenever a check fails (a judge cannot talk a broken output into a pass). ERROR when
the case could not be graded: the generation call failed, or the checks passed but the judge gave no
usable answer (JUDGE_ERROR). Without a judge (skipped), the score is the checks score.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from codegen_eval.checks import CheckResult
from codegen_eval.judge import Judgement, JudgeStatus


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
    checks: list[CheckResult], judgement: Judgement, generation_error: str | None, config: ScoringConfig
) -> Score:
    if generation_error:
        return Score(score=None, verdict=Verdict.ERROR, status="GENERATION_ERROR")
    failed = next((c for c in checks if not c.passed), None)
    checks_score = 0.0 if failed else 10.0
    if judgement.status is JudgeStatus.OK and judgement.verdict is not None:
        total = config.judge_weight + config.checks_weight
        score = (config.judge_weight * judgement.verdict.score + config.checks_weight * checks_score) / total
    elif failed or judgement.status is JudgeStatus.SKIPPED:
        score = checks_score
    else:
        return Score(score=None, verdict=Verdict.ERROR, status=JudgeStatus.JUDGE_ERROR.value)
    if failed:
        return Score(score=round(score, 2), verdict=Verdict.FAIL, status=failed.status.value)
    verdict = Verdict.PASS if score >= config.pass_at else Verdict.PARTIAL if score >= config.partial_at else Verdict.FAIL
    return Score(score=round(score, 2), verdict=verdict, status="OK")
