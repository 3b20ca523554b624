"""The LLM judge: a rubric template in, a validated verdict out, or a JUDGE_ERROR, never a crash.

Several judges may grade one case (`combine`): the case's judge score is their median, and how far
apart they are (max - min) is kept.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from statistics import median
from typing import Any

import jinja2
from pydantic import BaseModel, Field, ValidationError

from codegen_eval.dataset import Case
from codegen_eval.models.backends import Message, ModelRequest, ModelResponse, Usage
from codegen_eval.models.cache import CallCache
from codegen_eval.models.calls import CallPolicy, cached_call
from codegen_eval.models.pricing import cost_usd
from codegen_eval.models.strategies import Strategy, call_with_fallback

DEFAULT_RUBRIC = Path(__file__).parent.parent / "templates" / "judge.j2"
PREFILL = "```json\n"
STOP = "```"
MAX_TOKENS = 1024
RETRY_PROMPT = (
    "That answer could not be used: {problem}. Reply again with only the JSON object, with the keys "
    '"score" (an integer from 1 to 10), "reasoning", "strengths" and "weaknesses".'
)


class JudgeVerdict(BaseModel):
    score: float = Field(ge=1, le=10)
    reasoning: str
    strengths: list[str] = Field(default_factory=list)
    weaknesses: list[str] = Field(default_factory=list)


# Bounded strings and lists: a small model under a grammar otherwise repeats itself until max_tokens.
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "reasoning": {"type": "string", "maxLength": 400},
        "strengths": {"type": "array", "items": {"type": "string", "maxLength": 160}, "maxItems": 3},
        "weaknesses": {"type": "array", "items": {"type": "string", "maxLength": 160}, "maxItems": 3},
    },
    "required": ["score", "reasoning", "strengths", "weaknesses"],
}


class JudgeStatus(StrEnum):
    OK = "OK"
    JUDGE_ERROR = "JUDGE_ERROR"
    SKIPPED = "SKIPPED"
    OVER_BUDGET = "OVER_BUDGET"  # not asked: --max-cost would have been exceeded


class JudgeScore(BaseModel):
    """One judge's part in a case: its score (None when it gave none), and the calls it cost."""

    score: float | None = None
    status: JudgeStatus
    error: str | None = None
    calls: int = 0
    cached_calls: int = 0
    retries: int = 0
    usage: Usage = Usage()
    batch: bool = False


class Judgement(BaseModel):
    status: JudgeStatus
    verdict: JudgeVerdict | None = None
    error: str | None = None
    raw: str | None = None  # kept when the answer could not be used
    calls: int = 0
    cached_calls: int = 0
    usage: Usage = Usage()  # of the calls made, not those served from the cache
    batch: bool = False  # first answer came through a Message Batch (half price)
    retries: int = 0  # transient API failures retried on the way
    # Several judges: each one's part, and max - min of their scores. The run record keeps these on the
    # case row (`judges`, `judge_spread`), not inside `judge`.
    panel: dict[str, JudgeScore] = Field(default_factory=dict, exclude=True)
    spread: float | None = Field(default=None, exclude=True)


@lru_cache(maxsize=8)
def load_rubric(path: str | None = None) -> jinja2.Template:
    """A rubric is a Jinja2 template; an unknown variable in it is an error, not silently empty."""
    source = Path(path or DEFAULT_RUBRIC).read_text(encoding="utf-8")
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(source)


def judge_request(case: Case, output: str, model: str, rubric: str | None = None, strategy: Strategy = Strategy.PREFILL) -> ModelRequest:
    """prefill: "```json" + stop (and a grammar on the local model); structured: the verdict schema as
    structured output, valid by construction; fenced: the rubric alone, the JSON object found in the text."""
    prompt = load_rubric(rubric).render(
        task=case.task, output=sendable(output), expected=case.expected, criteria=case.solution_criteria, format=case.format
    )
    user = Message(role="user", content=prompt)
    if strategy is Strategy.PREFILL:
        messages = (user, Message(role="assistant", content=PREFILL))
        return ModelRequest(model=model, messages=messages, max_tokens=MAX_TOKENS, stop_sequences=(STOP,), json_schema=VERDICT_SCHEMA)
    schema = VERDICT_SCHEMA if strategy is Strategy.STRUCTURED else None
    return ModelRequest(model=model, messages=(user,), max_tokens=MAX_TOKENS, json_schema=schema)


_SURROGATE = re.compile("[\ud800-\udfff]")


def sendable(text: str) -> str:
    """The text as it can go over the wire: a lone surrogate (a model may answer `\\ud800`) has no UTF-8
    form, and no API takes it, so the judge reads U+FFFD in its place."""
    return _SURROGATE.sub("\ufffd", text)


def parse_verdict(text: str) -> JudgeVerdict:
    """The verdict in a judge's answer; raises ValueError saying what is wrong with it."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the answer")
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from None
    for key in ("strengths", "weaknesses"):
        if isinstance(data, dict) and isinstance(data.get(key), str):
            data[key] = [data[key]]
    try:
        return JudgeVerdict.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None


def usable(response: ModelResponse) -> bool:
    """What may be cached: an answer holding a valid verdict."""
    try:
        parse_verdict(response.text)
    except ValueError:
        return False
    return True


def judge(
    case: Case, output: str, model: str, cache: CallCache, rubric: str | None = None, policy: CallPolicy | None = None
) -> Judgement:
    """Grade one output: one attempt, and one retry that tells the judge what was wrong."""
    if not output.strip():
        return Judgement(status=JudgeStatus.SKIPPED, error="no code to judge")
    judgement = Judgement(status=JudgeStatus.JUDGE_ERROR)
    build = lambda s: judge_request(case, output, model, rubric, s)  # noqa: E731
    result, _, request, made = call_with_fallback(model, cache, build, usable, policy)
    for attempt in range(2):
        if attempt:
            result = cached_call(request, cache, accept=usable, policy=policy)
            made = 0 if result.cached else 1
        judgement.calls += made
        judgement.cached_calls += 1 if result.cached else 0
        judgement.retries += result.retries
        if result.response is None:
            judgement.error = result.error
            if result.over_budget:
                judgement.status = JudgeStatus.OVER_BUDGET
            return judgement  # the API failed (after its retries): asking again now would fail too
        if not result.cached:  # usage counts what this run paid for
            judgement.usage += result.response.usage
        try:
            judgement.verdict = parse_verdict(result.response.text)
        except ValueError as exc:
            judgement.error, judgement.raw = str(exc), result.response.text
            request = _retry_request(request, result.response.text, str(exc))
            continue
        judgement.status, judgement.error, judgement.raw = JudgeStatus.OK, None, None
        return judgement
    return judgement


def _retry_request(request: ModelRequest, answer: str, problem: str) -> ModelRequest:
    """The conversation so far, the unusable answer, and what was wrong with it."""
    prefill = request.prefill
    messages = (
        *request.messages[: -1 if prefill else None],
        Message(role="assistant", content=prefill + answer),
        Message(role="user", content=RETRY_PROMPT.format(problem=problem)),
        *((Message(role="assistant", content=prefill),) if prefill else ()),
    )
    return request.model_copy(update={"messages": messages})


def combine(judgements: dict[str, Judgement]) -> Judgement:
    """Several judges' judgements of one case as one: the median of the usable scores, with the
    reasoning of the judge nearest to it; calls and tokens summed. With no usable score at all, the
    case's judge status is the first judge's (e.g. JUDGE_ERROR), with every judge's error."""
    panel = {model: _score_of(j) for model, j in judgements.items()}
    usable = {model: j for model, j in judgements.items() if j.status is JudgeStatus.OK and j.verdict is not None}
    first = next(iter(judgements.values()))
    combined = Judgement(
        status=first.status, calls=sum(j.calls for j in judgements.values()), cached_calls=sum(j.cached_calls for j in judgements.values()),
        usage=sum((j.usage for j in judgements.values()), Usage()), batch=any(j.batch for j in judgements.values()),
        retries=sum(j.retries for j in judgements.values()), panel=panel,
    )
    if not usable:
        errors = [f"{model}: {j.error}" for model, j in judgements.items() if j.error]
        combined.error = "; ".join(errors) if len(judgements) > 1 else first.error
        combined.raw = next((j.raw for j in judgements.values() if j.raw), None)
        return combined
    scores = [j.verdict.score for j in usable.values()]
    middle = median(scores)
    nearest = min(usable.values(), key=lambda j: abs(j.verdict.score - middle))
    combined.status, combined.verdict = JudgeStatus.OK, nearest.verdict.model_copy(update={"score": middle})
    combined.spread = max(scores) - min(scores) if len(scores) > 1 else None
    return combined


def judge_cost(judgement: Judgement, model: str) -> float | None:
    """USD this run paid for a case's judging, priced per judge (None when a price is unknown)."""
    parts = judgement.panel.items() if judgement.panel else [(model, judgement)]
    costs = [cost_usd(m, part.usage, part.batch) if part.calls else 0.0 for m, part in parts]
    return None if None in costs else sum(costs)


def _score_of(judgement: Judgement) -> JudgeScore:
    score = judgement.verdict.score if judgement.status is JudgeStatus.OK and judgement.verdict else None
    return JudgeScore(
        score=score, status=judgement.status, error=judgement.error, calls=judgement.calls, cached_calls=judgement.cached_calls,
        retries=judgement.retries, usage=judgement.usage, batch=judgement.batch,
    )
