"""How to get clean output from a given model: the output strategy.

- prefill: the answer is prefilled with the opening fence and stopped at the closing one (the seed's
  technique; the embedded model and Claude 4.5-and-older models accept it);
- structured: no prefill; the answer is JSON constrained by a schema (`output_config`), e.g.
  {"code": "..."} for generation or the verdict for the judge (current Claude models reject prefill
  with a 400);
- fenced: plain instructions, and the first fenced block of the answer (for endpoints that support
  neither, e.g. some Messages-API-compatible servers).

Known models are mapped up front. An unknown Claude model starts with prefill; when it answers with
the prefill 400 it is switched to structured (and from structured to fenced when output_config is
refused), and the switch is remembered in the cache directory for later runs. The strategy shapes the
request, so it is part of every cache key.

`openai:` models (any OpenAI-compatible server) start with structured (`response_format` with a JSON
schema) and fall back to fenced when the server refuses it. They never start with prefill unless told
to (CODEGEN_EVAL_OPENAI_STRATEGY=prefill, which wins over anything remembered): a server that does not know vLLM's `continue_final_message`
ignores it without an error and answers in a new turn, so a prefill cannot be tried and checked.
What an openai: model was switched to is remembered per endpoint, since one name can be served by
different servers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum

from codegen_eval.models.backends import (
    LOCAL_MODEL,
    PREFILL_REJECTED,
    SCHEMA_REJECTED,
    ModelRequest,
    ModelResponse,
    is_openai_model,
)
from codegen_eval.models.backends.openai import chosen_strategy, public_endpoint
from codegen_eval.models.cache import CallCache
from codegen_eval.models.calls import CallPolicy, CallResult, cached_call


class Strategy(StrEnum):
    PREFILL = "prefill"
    STRUCTURED = "structured"
    FENCED = "fenced"


# Checked in order, first match wins (so claude-opus-4-5 is prefill, claude-opus-4-6 structured).
KNOWN: list[tuple[str, Strategy]] = [
    (r"^claude-(haiku|sonnet|opus)-4-5\b", Strategy.PREFILL),
    (r"^claude-(3|opus-4-1|opus-4-0|sonnet-4-0|opus-4-2|sonnet-4-2)", Strategy.PREFILL),
    (r"^claude-(opus|sonnet)-4-[6-9]\b", Strategy.STRUCTURED),
    (r"^claude-(haiku|sonnet|opus)-5\b", Strategy.STRUCTURED),
    (r"^claude-(haiku|sonnet|opus)-5-\d", Strategy.STRUCTURED),
    (r"^claude-fable-5", Strategy.STRUCTURED),
]
FALLBACK = {Strategy.PREFILL: Strategy.STRUCTURED, Strategy.STRUCTURED: Strategy.FENCED}


def known_strategy(model: str) -> Strategy | None:
    if model == LOCAL_MODEL:
        return Strategy.PREFILL
    return next((strategy for pattern, strategy in KNOWN if re.search(pattern, model)), None)


def strategy_for(model: str, cache: CallCache, base_url: str | None = None) -> Strategy:
    chosen = chosen_strategy() if is_openai_model(model) else None  # asked for explicitly: it wins
    if chosen:
        return Strategy(chosen)
    remembered = cache.get_note(_note_key(model, base_url))
    if remembered:
        return Strategy(remembered)
    if is_openai_model(model):
        return Strategy.STRUCTURED
    return known_strategy(model) or Strategy.PREFILL


def fallback_after(model: str, strategy: Strategy, error: str, cache: CallCache, base_url: str | None = None) -> Strategy | None:
    """The strategy to try after `error`, remembered for next time; None when the error is not ours."""
    rejected_prefill = strategy is Strategy.PREFILL and PREFILL_REJECTED in error
    rejected_schema = strategy is Strategy.STRUCTURED and (
        ("output_config" in error and "BadRequest" in error) or SCHEMA_REJECTED in error
    )
    if not (rejected_prefill or rejected_schema):
        return None
    following = FALLBACK[strategy]
    cache.set_note(_note_key(model, base_url), following.value)
    return following


def _note_key(model: str, base_url: str | None = None) -> str:
    if is_openai_model(model):  # the same name on another server may behave otherwise
        return f"strategy:{model}@{public_endpoint(base_url)}"
    return f"strategy:{model}"


def call_with_fallback(
    model: str,
    cache: CallCache,
    build: Callable[[Strategy], ModelRequest],
    accept: Callable[[ModelResponse], bool] | None = None,
    policy: CallPolicy | None = None,
) -> tuple[CallResult, Strategy, ModelRequest, int]:
    """Call with the model's strategy; when the model rejects that strategy, switch and call again.

    Returns the last result, its strategy and request, and the number of calls made (not from cache)."""
    base_url = policy.base_url if policy else None
    strategy, made = strategy_for(model, cache, base_url), 0
    while True:
        request = build(strategy)
        result = cached_call(request, cache, accept=accept, policy=policy)
        made += 0 if result.cached else 1
        following = fallback_after(model, strategy, result.error, cache, base_url) if result.error else None
        if following is None:
            return result, strategy, request, made
        strategy = following
