"""Staying near an API's rate limit without falling over it.

- `AdaptiveLimiter`: the process-wide cap on model calls in flight, shared by generation and judging.
  A 429 halves it (at most once per `cooldown_s`, so a burst of 429s from one moment counts once) and
  pauses new calls for the server's `retry-after`; every `limit` successes add one slot back, up to the
  configured ceiling (additive increase, multiplicative decrease, as TCP does).
- `with_retries`: a transient failure (429, 529 overloaded, 5xx, timeout, dropped connection) is tried
  again after a jittered exponential back-off, bounded in attempts and in delay; a 429's `retry-after`
  wins over the back-off. Anything else fails at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from codegen_eval.models.backends import TransientError

T = TypeVar("T")

BASE_DELAY_S = 0.5
MAX_DELAY_S = 30.0


class AdaptiveLimiter:
    def __init__(self, ceiling: int, cooldown_s: float = 1.0):
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self.shrinks = 0  # times a 429 halved the limit: reported, and asserted on in tests
        self._cooldown_s = cooldown_s
        self._last_shrink = float("-inf")
        self._paused_until = 0.0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            while True:
                wait = self._paused_until - time.monotonic()
                if wait <= 0 and self.in_flight < int(self.limit):
                    self.in_flight += 1
                    return
                self._cond.wait(timeout=wait if wait > 0 else None)

    def release(self, succeeded: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            if succeeded and self.limit < self.ceiling:
                self.limit = min(self.ceiling, self.limit + 1 / self.limit)
            # Wake only as many waiters as there are free slots: waking all 2x-limit threads per call
            # costs more GIL time than the calls themselves at a few hundred calls a second.
            self._cond.notify(max(1, int(self.limit) - self.in_flight))

    def rate_limited(self, retry_after_s: float | None) -> None:
        """A 429: shrink (once per cooldown) and hold new calls for `retry_after_s`."""
        with self._cond:
            now = time.monotonic()
            if now - self._last_shrink >= self._cooldown_s:
                self.limit = max(1.0, self.limit / 2)
                self._last_shrink = now
                self.shrinks += 1
            if retry_after_s:
                self._paused_until = max(self._paused_until, now + retry_after_s)


def backoff_s(attempt: int, base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S) -> float:
    """Delay before retry number `attempt` (0-based): exponential, capped, with full jitter on the upper half."""
    ceiling = min(cap_s, base_s * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def with_retries(call: Callable[[], T], limiter: AdaptiveLimiter | None, max_attempts: int) -> tuple[T, int]:
    """`call()` inside a limiter slot, retried on transient errors; returns (its result, retries made).

    The last transient error is raised once `max_attempts` are spent; the caller records it.
    """
    for attempt in range(max_attempts):
        if limiter:
            limiter.acquire()
        try:
            result = call()
        except TransientError as exc:
            if limiter:
                limiter.release(succeeded=False)
                if exc.kind == "rate_limit":
                    limiter.rate_limited(exc.retry_after_s)
            if attempt + 1 == max_attempts:
                raise
            delay = exc.retry_after_s if exc.retry_after_s is not None else backoff_s(attempt)
            time.sleep(min(delay, MAX_DELAY_S))  # outside the slot: a waiting retry holds no capacity
            continue
        except BaseException:
            if limiter:
                limiter.release(succeeded=False)
            raise
        if limiter:
            limiter.release(succeeded=True)
        return result, attempt
    raise AssertionError("unreachable: max_attempts must be >= 1")


_limiters: dict[int, AdaptiveLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(concurrency: int) -> AdaptiveLimiter:
    """The process's limiter for this ceiling: every task of a run shares it."""
    with _limiters_lock:
        return _limiters.setdefault(concurrency, AdaptiveLimiter(concurrency))
