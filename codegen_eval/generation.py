"""Generation: ask the model for code, with the opening fence prefilled and the closing fence as stop."""

from __future__ import annotations

import re

from pydantic import BaseModel

from codegen_eval.backends import Message, ModelRequest, Usage
from codegen_eval.cache import CallCache
from codegen_eval.calls import cached_call
from codegen_eval.dataset import Case

PROMPT = "Write AWS {format} code for the following task. Return ONLY the code — no explanation.\n\nTask:\n{task}"
FORMAT_NAMES = {"python": "Python", "json": "JSON", "regex": "regex"}
PREFILLS = {"python": "```python\n", "json": "```json\n", "regex": "```\n"}
STOP = "```"
MAX_TOKENS = 1024


class Generation(BaseModel):
    case_id: str
    cid: str | None = None  # which candidate, when several recorded outputs grade one case
    code: str = ""
    raw: str = ""
    stop_reason: str | None = None
    usage: Usage = Usage()
    cached: bool = False
    calls: int = 0
    key: str | None = None
    error: str | None = None


def generation_request(case: Case, model: str) -> ModelRequest:
    prompt = PROMPT.format(format=FORMAT_NAMES[case.format], task=case.task)
    return ModelRequest(
        model=model,
        messages=(Message(role="user", content=prompt), Message(role="assistant", content=PREFILLS[case.format])),
        max_tokens=MAX_TOKENS,
        stop_sequences=(STOP,),
    )


def extract_code(text: str) -> str:
    """The code in a continuation of the prefilled fence.

    The stop sequence normally ends it; a backend that ran on past a fence, or a model that opened
    a second fence of its own, is cut back to the code.
    """
    code = text.split(STOP, 1)[0]
    first, _, rest = code.partition("\n")
    if first.strip().lower() in {"python", "json", "regex", "py"} and rest:
        code = rest
    return code.strip("\n").rstrip()


def generate(case: Case, model: str, cache: CallCache) -> Generation:
    result = cached_call(generation_request(case, model), cache)
    if result.response is None:
        return Generation(case_id=case.id, key=result.key, error=result.error, calls=1)
    response = result.response
    return Generation(
        case_id=case.id,
        code=extract_code(response.text),
        raw=response.text,
        stop_reason=response.stop_reason,
        usage=response.usage,
        cached=result.cached,
        calls=0 if result.cached else 1,
        key=result.key,
    )


def recorded(case: Case, output: str, cid: str | None = None) -> Generation:
    """A pre-recorded output as a generation: the first fenced block if it has one, else all of it."""
    fenced = re.search(r"```[\w+-]*\n(.*?)(?:```|\Z)", output, re.DOTALL)
    code = fenced.group(1) if fenced else output
    return Generation(case_id=case.id, cid=cid, code=code.strip("\n").rstrip(), raw=output, stop_reason="recorded")
