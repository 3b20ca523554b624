"""How to get clean output from a given model: the output strategy.

- prefill: the answer is prefilled with the opening fence and stopped at the closing one (the seed's
  technique; the embedded model and Claude 4.5-and-older models accept it);
- structured: no prefill; the answer is JSON constrained by a schema (`output_config`), e.g.
  {"code": "..."} for generation or the verdict for the judge (current Claude models reject prefill
  with a 400);
- fenced: plain instructions, and the first fenced block of the answer (for endpoints that support
  neither, e.g. some Messages-API-compatible servers).

Known models are mapped up front. An unknown model starts with prefill; when it answers with the
prefill 400 it is switched to structured (and from structured to fenced when output_config is
refused), and the switch is remembered in the cache directory for later runs. The strategy shapes the
request, so it is part of every cache key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum

from codegen_eval.models.backends import LOCAL_MODEL, ModelRequest, ModelResponse
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
PREFILL_REJECTED = "does not support assistant message prefill"
FALLBACK = {Strategy.PREFILL: Strategy.STRUCTURED, Strategy.STRUCTURED: Strategy.FENCED}


def known_strategy(model: str) -> Strategy | None:
    if model == LOCAL_MODEL:
        return Strategy.PREFILL
    return next((strategy for pattern, strategy in KNOWN if re.search(pattern, model)), None)


def strategy_for(model: str, cache: CallCache) -> Strategy:
    remembered = cache.get_note(_note_key(model))
    if remembered:
        return Strategy(remembered)
    return known_strategy(model) or Strategy.PREFILL


def fallback_after(model: str, strategy: Strategy, error: str, cache: CallCache) -> Strategy | None:
    """The strategy to try after `error`, remembered for next time; None when the error is not ours."""
    rejected_prefill = strategy is Strategy.PREFILL and PREFILL_REJECTED in error
    rejected_schema = strategy is Strategy.STRUCTURED and "output_config" in error and "BadRequest" in error
    if not (rejected_prefill or rejected_schema):
        return None
    following = FALLBACK[strategy]
    cache.set_note(_note_key(model), following.value)
    return following


def _note_key(model: str) -> str:
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
    strategy, made = strategy_for(model, cache), 0
    while True:
        request = build(strategy)
        result = cached_call(request, cache, accept=accept, policy=policy)
        made += 0 if result.cached else 1
        following = fallback_after(model, strategy, result.error, cache) if result.error else None
        if following is None:
            return result, strategy, request, made
        strategy = following
