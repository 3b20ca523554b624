"""Prices and the cost of calls: the one place that knows what a token costs.

$ per million tokens (input, output), list prices as of 2026-11; Message Batches cost half. A model
with no entry (e.g. an openai: model on your own server) has no known cost: None, shown as "n/a",
never 0, so an unknown price is not mistaken for a free one.
"""

from __future__ import annotations

import functools
import re
import threading

from codegen_eval.models.backends import LOCAL_MODEL, ModelRequest, Usage

PRICES: list[tuple[str, float, float]] = [
    (r"^claude-opus-5-5", 4.00, 20.00),
    (r"^claude-sonnet-5-5", 2.00, 10.00),
    (r"^claude-haiku-5-5", 0.10, 0.50),  # prompts up to 100K tokens
    (r"^claude-opus-4-[5-8]", 5.00, 25.00),
    (r"^claude-sonnet-4-[56]", 3.00, 15.00),
    (r"^claude-haiku-4-5", 1.00, 5.00),
    # OpenAI's list prices (standard tier) for openai:<name>; longer names first (gpt-4o-mini before gpt-4o).
    (r"^openai:gpt-5-nano\b", 0.05, 0.40),
    (r"^openai:gpt-5-mini\b", 0.25, 2.00),
    (r"^openai:gpt-5(-\d{4}-\d\d-\d\d)?$", 1.25, 10.00),
    (r"^openai:gpt-4\.1-nano\b", 0.10, 0.40),
    (r"^openai:gpt-4\.1-mini\b", 0.40, 1.60),
    (r"^openai:gpt-4\.1(-\d{4}-\d\d-\d\d)?$", 2.00, 8.00),
    (r"^openai:gpt-4o-mini(-\d{4}-\d\d-\d\d)?$", 0.15, 0.60),
    (r"^openai:gpt-4o(-\d{4}-\d\d-\d\d)?$", 2.50, 10.00),
    (r"^openai:o4-mini(-\d{4}-\d\d-\d\d)?$", 1.10, 4.40),
]
BATCH_DISCOUNT = 0.5
CHARS_PER_TOKEN_LOW = 3.0  # a deliberately low guess, so that estimates err high


@functools.lru_cache(maxsize=256)  # asked 3-4 times per case with the same few names; ~20 patterns each
def price(model: str) -> tuple[float, float] | None:
    if model == LOCAL_MODEL or model.startswith("recorded"):
        return (0.0, 0.0)
    return next(((i, o) for pattern, i, o in PRICES if re.search(pattern, model)), None)


def cost_usd(model: str, usage: Usage, batch: bool = False) -> float | None:
    rates = price(model)
    if rates is None:
        return None
    cost = (usage.input_tokens * rates[0] + usage.output_tokens * rates[1]) / 1e6
    return cost * (BATCH_DISCOUNT if batch else 1.0)


def worst_case_usd(request: ModelRequest) -> float:
    """An upper estimate of a call's cost before it is made: a generous prompt size, max_tokens out."""
    chars = sum(len(m.content) for m in request.messages) + len(request.system or "")
    estimate = Usage(input_tokens=int(chars / CHARS_PER_TOKEN_LOW) + 50, output_tokens=request.max_tokens)
    return cost_usd(request.model, estimate) or 0.0


class Budget:
    """A spending cap shared by every call of a run: a call is made only if its worst case fits."""

    def __init__(self, limit_usd: float):
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self._reserved = 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate: float) -> bool:
        with self._lock:
            if self.spent_usd + self._reserved + estimate > self.limit_usd:
                return False
            self._reserved += estimate
            return True

    def settle(self, estimate: float, actual: float) -> None:
        with self._lock:
            self._reserved -= estimate
            self.spent_usd += actual


_budgets: dict[str, Budget] = {}
_budgets_lock = threading.Lock()


def budget_for(run: str, limit_usd: float | None) -> Budget | None:
    """The run's budget (one per run, shared by its tasks in this process); None without a cap."""
    if limit_usd is None:
        return None
    with _budgets_lock:
        return _budgets.setdefault(run, Budget(limit_usd))
