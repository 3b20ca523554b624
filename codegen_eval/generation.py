"""Generation: ask the model for code, with the opening fence prefilled and the closing fence as stop."""

from __future__ import annotations

import hashlib
import json
import re

from pydantic import BaseModel

from codegen_eval.dataset import Case
from codegen_eval.models.backends import Message, ModelRequest, ModelResponse, Usage, takes_temperature
from codegen_eval.models.cache import CallCache
from codegen_eval.models.calls import CallPolicy
from codegen_eval.models.strategies import Strategy, call_with_fallback

# The seed lesson's prompt and prefills, word for word: `{format}` is the case's format upper-cased
# ("Write AWS PYTHON code ...", "Write AWS REGEX code ...").
PROMPT = "Write AWS {format} code for the following task. Return ONLY the code — no explanation.\n\nTask:\n{task}"
PREFILLS = {"python": "```python\n", "json": "```json\n", "regex": "```\n"}
STOP = "```"
MAX_TOKENS = 1024
CODE_SCHEMA = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"], "additionalProperties": False}
FENCED_INSTRUCTION = "\n\nPut the code in one fenced code block."


class Generation(BaseModel):
    case_id: str
    cid: str | None = None  # which candidate, when several recorded outputs grade one case
    model: str | None = None  # who wrote it (None in runs recorded before several models per run)
    sample: int = 0  # which of the case's samples (--samples)
    temperature: float | None = None  # the temperature applied; None: the backend's default, or not applicable
    latency_s: float | None = None  # of the call that answered (kept in the cache with the answer)
    code: str = ""
    raw: str = ""
    stop_reason: str | None = None
    usage: Usage = Usage()
    cached: bool = False
    calls: int = 0
    key: str | None = None
    error: str | None = None
    strategy: str | None = None
    truncated: bool = False  # stopped at max_tokens
    refused: bool = False  # stop_reason "refusal": not graded, not cached
    over_budget: bool = False  # not asked: --max-cost would have been exceeded
    batch: bool = False  # answered through a Message Batch (half price)
    retries: int = 0  # transient API failures retried on the way

    def reused(self) -> Generation:
        """This output graded again later (regrade, carried over): it costs no call then."""
        return self.model_copy(update={"calls": 0, "cached": False, "batch": False})


def generation_request(
    case: Case, model: str, strategy: Strategy = Strategy.PREFILL, sample: int = 0, temperature: float | None = None
) -> ModelRequest:
    """The request for one sample. Sample 0 without a temperature is the request as it always was (its
    cache key unchanged); any other sample or a set temperature adds the temperature and a seed."""
    prompt = PROMPT.format(format=case.format.upper(), task=case.task)
    sampling = {} if sample == 0 and temperature is None else {"temperature": temperature, "seed": sample_seed(case.id, sample)}
    if strategy is Strategy.PREFILL:
        messages = (Message(role="user", content=prompt), Message(role="assistant", content=PREFILLS[case.format]))
        return ModelRequest(model=model, messages=messages, max_tokens=MAX_TOKENS, stop_sequences=(STOP,), **sampling)
    if strategy is Strategy.STRUCTURED:
        messages = (Message(role="user", content=prompt),)
        return ModelRequest(model=model, messages=messages, max_tokens=MAX_TOKENS, json_schema=CODE_SCHEMA, **sampling)
    messages = (Message(role="user", content=prompt + FENCED_INSTRUCTION),)
    return ModelRequest(model=model, messages=messages, max_tokens=MAX_TOKENS, **sampling)


def sample_seed(case_id: str, sample: int) -> int:
    """A sampling seed from the case and sample index: reproducible, and different for every sample."""
    return int.from_bytes(hashlib.sha256(f"{case_id}#{sample}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def extract_code(text: str, strategy: Strategy = Strategy.PREFILL) -> str:
    """The code in an answer, by strategy.

    prefill: the continuation of the opened fence; the stop sequence normally ends it, and a backend
    that ran past a fence, or a model that opened a second fence, is cut back to the code.
    structured: the "code" field. fenced: the first fenced block (the whole answer if it has none).
    """
    if strategy is Strategy.STRUCTURED:
        try:
            return str(json.loads(text)["code"]).strip("\n").rstrip()
        except (ValueError, KeyError, TypeError):
            return _first_fenced_block(text)
    if strategy is Strategy.FENCED:
        return _first_fenced_block(text)
    code = text.split(STOP, 1)[0]
    first, _, rest = code.partition("\n")
    if first.strip().lower() in {"python", "json", "regex", "py"} and rest:
        code = rest
    return code.strip("\n").rstrip()


def _first_fenced_block(text: str) -> str:
    fenced = re.search(r"```[\w+-]*\n(.*?)(?:```|\Z)", text, re.DOTALL)
    return (fenced.group(1) if fenced else text).strip("\n").rstrip()


def accept_generation(response: ModelResponse) -> bool:
    """What may be cached: anything but a refusal."""
    return response.stop_reason != "refusal"


def generate(
    case: Case, model: str, cache: CallCache, policy: CallPolicy | None = None, sample: int = 0, temperature: float | None = None
) -> Generation:
    build = lambda s: generation_request(case, model, s, sample, temperature)  # noqa: E731
    result, strategy, _, made = call_with_fallback(model, cache, build, accept_generation, policy)
    applied = temperature if temperature is not None and takes_temperature(model, policy.base_url if policy else None) else None
    if result.response is None:
        return Generation(
            case_id=case.id, model=model, sample=sample, temperature=applied, key=result.key, error=result.error, calls=made,
            strategy=strategy.value, over_budget=result.over_budget, retries=result.retries,
        )
    response = result.response
    return Generation(
        case_id=case.id,
        model=model,
        sample=sample,
        temperature=applied,
        latency_s=response.latency_s,
        code=extract_code(response.text, strategy),
        raw=response.text,
        stop_reason=response.stop_reason,
        usage=response.usage,
        cached=result.cached,
        calls=made,
        key=result.key,
        strategy=strategy.value,
        truncated=response.stop_reason == "max_tokens",
        refused=response.stop_reason == "refusal",
        retries=result.retries,
    )


def recorded(case: Case, output: str, cid: str | None = None, model: str | None = None) -> Generation:
    """A pre-recorded output as a generation: the first fenced block if it has one, else all of it."""
    return Generation(case_id=case.id, cid=cid, model=model, code=_first_fenced_block(output), raw=output, stop_reason="recorded")
