"""Calibrating a judge: labelled candidates graded by the judge alone, and how well its score separates
correct from incorrect (`codegen-eval calibrate`).

A labelled item is `{"id", "output", "label": "correct" | "incorrect", "cid"?}` where `id` names a case
of the dataset (the judge sees its task, expected solution and criteria). Without a labels file the
set comes from the shipped dataset: each case's reference is correct and its deliberately broken
variant (tests/data/broken_variants.jsonl, proven to fail the case's tests in CI) incorrect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codegen_eval.dataset import Case, DatasetError
from codegen_eval.dataset.load import raise_problems, read_case_records
from codegen_eval.generation import recorded
from codegen_eval.grading.judge import JudgeStatus, judge
from codegen_eval.models.cache import CallCache
from codegen_eval.models.calls import CallPolicy, run_concurrently
from codegen_eval.reporting.agreement import AgreementStats, RocPoint, agreement_stats, auc, best_threshold, roc_curve

BROKEN_VARIANTS = Path(__file__).resolve().parents[2] / "tests" / "data" / "broken_variants.jsonl"
SHIPPED = "shipped"  # `labels` of a calibration built from the dataset and its broken variants


class LabelledItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    output: str
    label: Literal["correct", "incorrect"]
    cid: str | None = None


class ScoredItem(BaseModel):
    id: str
    cid: str | None = None
    label: Literal["correct", "incorrect"]
    score: float | None  # None: the judge gave no usable score
    error: str | None = None


class Calibration(BaseModel):
    """What `calibrate --write` saves and `run --calibration` reads (`judge_model`, `threshold`)."""

    judge_model: str
    rubric: str | None
    labels: str  # the labels file, or "shipped"
    items: int
    scored: int  # items the judge gave a usable score
    threshold: float  # the score threshold that maximises balanced accuracy (ties: the higher)
    at_best: AgreementStats  # the judge at `threshold`
    at_default: AgreementStats  # the judge at the run's default PASS threshold
    auc: float | None
    roc: list[RocPoint]
    calls_made: int
    calls_cached: int
    scores: list[ScoredItem]


def load_labels(path: str | Path, cases: list[Case]) -> list[LabelledItem]:
    """Labelled items, validated like a dataset: every problem as `file:line: field 'x': message`."""
    problems: list[tuple[int, str]] = []
    items = [item for _, item in read_case_records(path, LabelledItem, {case.id for case in cases}, problems)]
    if not items and not problems:
        problems.append((0, f"{path}: no labelled items"))
    raise_problems(problems)
    _need_both_labels(items, str(path))
    return items


def shipped_labels(cases: list[Case], broken: str | Path = BROKEN_VARIANTS) -> list[LabelledItem]:
    """Each case's reference (correct) and its broken variant (incorrect), for the cases that have one."""
    broken = Path(broken)
    if not broken.is_file():
        raise DatasetError([f"{broken}: no such file: without --labels, calibrate needs the repository's broken variants"])
    variants = {}
    for line in broken.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("cid", "broken") == "broken":  # the case's one hand-written variant, not the extra ones
                variants[record["id"]] = record["output"]
    items = []
    for case in cases:
        if case.id in variants:
            items.append(LabelledItem(id=case.id, cid="reference", output=case.expected, label="correct"))
            items.append(LabelledItem(id=case.id, cid="broken", output=variants[case.id], label="incorrect"))
    if not items:
        raise DatasetError([f"{broken}: no broken variant matches a case of the dataset: pass --labels"])
    return items


def calibrate(
    items: list[LabelledItem], cases: list[Case], judge_model: str, cache: CallCache, *, rubric: str | None = None,
    policy: CallPolicy | None = None, workers: int = 8, default_threshold: float = 8.0, labels: str = SHIPPED,
    on_item: Callable[[], None] | None = None,
) -> Calibration:
    """Grade every item with the judge alone (cached like any judge call) and measure it."""
    by_id = {case.id: case for case in cases}

    def grade(item: LabelledItem) -> tuple[ScoredItem, int, int]:
        case = by_id[item.id]
        # Unwrapped as `grade` unwraps a recorded output: the same judge request, so the same cache entry.
        judgement = judge(case, recorded(case, item.output).code, judge_model, cache, rubric, policy)
        if on_item:
            on_item()
        score = judgement.verdict.score if judgement.status is JudgeStatus.OK and judgement.verdict else None
        error = None if score is not None else judgement.error or judgement.status.value
        return ScoredItem(id=item.id, cid=item.cid, label=item.label, score=score, error=error), judgement.calls, judgement.cached_calls

    graded = run_concurrently(grade, items, workers)
    scored = [item for item, _, _ in graded]
    usable = [s for s in scored if s.score is not None]
    _need_both_labels(usable, f"the judge's usable scores ({len(usable)} of {len(items)} items)")
    scores = [s.score for s in usable]
    correct = [s.label == "correct" for s in usable]
    threshold, _ = best_threshold(scores, correct)
    return Calibration(
        judge_model=judge_model, rubric=rubric, labels=labels, items=len(items), scored=len(usable), threshold=threshold,
        at_best=agreement_stats(scores, correct, threshold), at_default=agreement_stats(scores, correct, default_threshold),
        auc=auc(scores, correct), roc=roc_curve(scores, correct),
        calls_made=sum(made for _, made, _ in graded), calls_cached=sum(cached for _, _, cached in graded), scores=scored,
    )


def load_calibration(path: str | Path) -> Calibration:
    """A file written by `calibrate --write`; ValueError naming the file when it is not one."""
    try:
        return Calibration.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"calibration {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"calibration {path}: not written by `codegen-eval calibrate --write` ({'.'.join(map(str, first['loc'])) or 'file'}: {first['msg']})") from None


def _need_both_labels(items: list, what: str) -> None:
    labels = {item.label for item in items}
    if labels != {"correct", "incorrect"}:
        raise DatasetError([f"{what}: calibration needs both correct and incorrect items (found only {', '.join(sorted(labels)) or 'none'})"])
