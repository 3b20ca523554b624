"""Prefect tasks: thin adapters from the flow to `codegen_eval`, one per stage of a batch of cases.

A task works on a batch, not a case: a Prefect server ingests ~25 task runs/s, so one task per case
per stage would not carry thousands of cases. A batch whose every call came from the cache finishes in
the `Cached` state, so cached work shows as Cached in the Prefect UI.

Every task has `cache_policy=NO_CACHE`: the call and check caches are ours. Prefect's default policy
would hash each task run's inputs (a batch's cases, outputs and verdicts, ~3.5 ms per 100 cases) for a
key that never hits, as it includes the flow run's id.

Once the run is asked to stop (`codegen_eval.stopping`), a task makes no new call and starts no sandbox
job: an item not finished is returned as None (pending), never as an error, and `record` keeps only
the items that are done in every stage.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prefect.states import Completed, State

from codegen_eval import stopping
from codegen_eval.config import RunConfig
from codegen_eval.models.backends import StopRequested
from codegen_eval.models.cache import CallCache
from codegen_eval.models.calls import CallPolicy
from codegen_eval.models.pricing import budget_for
from codegen_eval.models.ratelimit import AdaptiveLimiter, limiter_for


@lru_cache(maxsize=4)
def open_cache(directory: str | None, url: str | None = None) -> CallCache:
    """The run's cache in this process: the database at `url` when set (else CODEGEN_EVAL_CACHE_URL's), else `directory`."""
    return CallCache(directory, url=url)


def completed_or_cached(result: Any, all_cached: bool) -> Any | State:
    """The task's result, shown in Prefect as a "Cached" completion when nothing in it was computed now."""
    return Completed(data=result, name="Cached") if all_cached else result


def call_policy(config: RunConfig, run_dir: str) -> CallPolicy:
    """The run's call policy in this process: one limiter and one budget shared by all its tasks."""
    return CallPolicy(
        limiter=StoppingLimiter(limiter_for(config.concurrency)),  # type: ignore[arg-type]  (the same three methods)
        timeout_s=config.timeout_s,
        max_attempts=config.max_attempts,
        budget=budget_for(run_dir, config.max_cost_usd),
        base_url=config.base_url,
    )


def pool_size(config: RunConfig) -> int:
    """Threads for model calls: a few more than the limit, so calls waiting out a back-off leave room for
    others; not many more, as idle runnable threads cost GIL time at a few hundred calls a second."""
    return config.concurrency + max(4, config.concurrency // 4)


class StoppingLimiter:
    """The run's call limiter, which grants no slot once the run is stopping: the call is then not made
    (`StopRequested`, an error, so never cached). A call waiting for a slot is refused when it gets one."""

    def __init__(self, limiter: AdaptiveLimiter):
        self._limiter = limiter

    def acquire(self) -> None:
        if stopping.requested():
            raise StopRequested()
        self._limiter.acquire()
        if stopping.requested():
            self._limiter.release(succeeded=False)
            raise StopRequested()

    def release(self, succeeded: bool) -> None:
        self._limiter.release(succeeded)

    def rate_limited(self, retry_after_s: float | None) -> None:
        self._limiter.rate_limited(retry_after_s)
