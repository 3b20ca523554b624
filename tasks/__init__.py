"""Prefect tasks: thin adapters from the flow to `codegen_eval`, one per stage of a batch of cases.

A task works on a batch, not a case: a Prefect server ingests ~25 task runs/s, so one task per case
per stage would not carry thousands of cases. A batch whose every call came from the cache finishes in
the `Cached` state, so cached work shows as Cached in the Prefect UI.

Every task has `cache_policy=NO_CACHE`: the call and check caches are ours. Prefect's default policy
would hash each task run's inputs (a batch's cases, outputs and verdicts, ~3.5 ms per 100 cases) for a
key that never hits, as it includes the flow run's id.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prefect.states import Completed, State

from codegen_eval.config import RunConfig
from codegen_eval.models.cache import CallCache
from codegen_eval.models.calls import CallPolicy
from codegen_eval.models.pricing import budget_for
from codegen_eval.models.ratelimit import limiter_for


@lru_cache(maxsize=4)
def open_cache(directory: str | None, url: str | None = None) -> CallCache:
    """The run's cache in this process: the database at `url` when set (else CODEGEN_EVAL_CACHE_URL's), else `directory`."""
    return CallCache(directory, url=url)


def finish(result: Any, all_cached: bool) -> Any | State:
    return Completed(data=result, name="Cached") if all_cached else result


def call_policy(config: RunConfig, run_dir: str) -> CallPolicy:
    """The run's call policy in this process: one limiter and one budget shared by all its tasks."""
    return CallPolicy(
        limiter=limiter_for(config.concurrency),
        timeout_s=config.timeout_s,
        max_attempts=config.max_attempts,
        budget=budget_for(run_dir, config.max_cost_usd),
        base_url=config.base_url,
    )


def pool_size(config: RunConfig) -> int:
    """Threads for model calls: a few more than the limit, so calls waiting out a back-off leave room for
    others; not many more, as idle runnable threads cost GIL time at a few hundred calls a second."""
    return config.concurrency + max(4, config.concurrency // 4)
