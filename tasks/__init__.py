"""Prefect tasks: thin adapters from the flow to `codegen_eval`, one per stage of a batch of cases.

A task works on a batch, not a case: a Prefect server ingests ~25 task runs/s, so one task per case
per stage would not carry thousands of cases. A batch whose every call came from the cache finishes in
the `Cached` state, so cached work shows as Cached in the Prefect UI.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prefect.states import Completed, State

from codegen_eval.cache import CallCache


@lru_cache(maxsize=4)
def open_cache(directory: str | None) -> CallCache:
    return CallCache(directory)


def finish(result: Any, all_cached: bool) -> Any | State:
    return Completed(data=result, name="Cached") if all_cached else result
