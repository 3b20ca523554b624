"""Every model call goes through here: cache first, then the backend, on a bounded shared pool."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pydantic import BaseModel

from codegen_eval.backends import BackendError, ModelRequest, ModelResponse, get_backend
from codegen_eval.cache import CallCache, request_key
from codegen_eval.pricing import Budget, cost_usd, worst_case_usd

T = TypeVar("T")
R = TypeVar("R")


class CallResult(BaseModel):
    key: str
    cached: bool
    response: ModelResponse | None = None
    error: str | None = None
    over_budget: bool = False  # not made: its worst-case cost would pass --max-cost


def cached_call(
    request: ModelRequest,
    cache: CallCache,
    accept: Callable[[ModelResponse], bool] | None = None,
    budget: Budget | None = None,
) -> CallResult:
    """Answer from the cache, or call the model and store the answer if `accept` approves it."""
    backend = get_backend(request.model)
    identity = backend.identity()
    key = request_key(request, identity)
    hit = cache.get(key)
    if hit is not None:
        return CallResult(key=key, cached=True, response=hit)
    estimate = worst_case_usd(request) if budget else 0.0
    if budget and not budget.reserve(estimate):
        return CallResult(key=key, cached=False, error="not made: the --max-cost budget would be exceeded", over_budget=True)
    try:
        response = backend.complete(request)
    except BackendError as exc:
        if budget:
            budget.settle(estimate, 0.0)
        return CallResult(key=key, cached=False, error=str(exc))
    if budget:
        budget.settle(estimate, cost_usd(request.model, response.usage) or 0.0)
    if accept is None or accept(response):
        cache.put(key, request, identity, response)
    return CallResult(key=key, cached=False, response=response)


_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def run_concurrently(fn: Callable[[T], R], items: Iterable[T], concurrency: int, pool_name: str = "model-call") -> list[R]:
    """Map `fn` over `items` on one process-wide pool per (name, size).

    Generation and judging tasks of every batch share the "model-call" pool, so at most `concurrency`
    model calls are in flight whatever Prefect runs in parallel (Prefect's own pool is unbounded).
    """
    with _pools_lock:
        pool = _pools.get((pool_name, concurrency))
        if pool is None:
            pool = _pools[(pool_name, concurrency)] = ThreadPoolExecutor(concurrency, thread_name_prefix=pool_name)
    return list(pool.map(fn, items))
