"""Claude through the official SDK.

The SDK's own retries are off: transient failures (429, 529, 5xx, timeouts) are raised as
`TransientError` and retried by `codegen_eval.models.ratelimit`, which also shrinks the run's concurrency on a
429. Sampling arguments are never sent: `messages.create` in SDK 2.x has no `temperature` (or seed)
argument, so a request's temperature and seed only tell samples apart in the cache key.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from codegen_eval.models.backends import (
    BackendError,
    ConfigError,
    ModelRequest,
    ModelResponse,
    TransientError,
    Usage,
    api_schema,
    retry_after_s,
)

if TYPE_CHECKING:
    import anthropic

DEFAULT_ENDPOINT = "https://api.anthropic.com"


class AnthropicBackend:
    takes_temperature = False

    def __init__(self, max_retries: int = 0, timeout_s: float = 600.0):
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise ConfigError("ANTHROPIC_API_KEY is not set: set it, or use --model local for the embedded model")
        self._options = {"max_retries": max_retries, "timeout": timeout_s}
        self._sdk: anthropic.Anthropic | None = None
        self._lock = threading.Lock()

    @property
    def _client(self) -> anthropic.Anthropic:
        return self._connect()

    @property
    def _batches(self) -> Any:
        self._connect()
        return self._batch_api

    def _connect(self) -> anthropic.Anthropic:
        # Made at the first call, not here: importing the SDK costs ~1.5 s of CPU on 2 busy cores, and a
        # fully cached run never calls.
        if self._sdk is None:
            with self._lock:
                if self._sdk is None:
                    import anthropic

                    # The SDK reads the key and ANTHROPIC_BASE_URL from the environment itself.
                    client = anthropic.Anthropic(**self._options)
                    # Batch submission and polling are few and not rate-limited per case: the SDK's retries do.
                    self._batch_api = client.with_options(max_retries=2).messages.batches
                    self._sdk = client
        return self._sdk

    def identity(self) -> dict[str, Any]:
        # The endpoint is part of what answers; the key is not and never leaves the client.
        endpoint = os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_ENDPOINT
        return {"backend": "anthropic", "endpoint": endpoint.split("@")[-1].rstrip("/")}

    def complete(self, request: ModelRequest, timeout_s: float | None = None) -> ModelResponse:
        import anthropic

        options = {"timeout": timeout_s} if timeout_s else {}
        client = self._client  # made at the first call: its ~1 s import is no call's latency (the first 32 would share it)
        started = time.perf_counter()
        try:
            # The raw reply, read as JSON: the SDK's typed Message costs ~0.4 ms of CPU a call to build
            # (a fifth of the request path), and only its text, stop reason and usage are used here.
            raw = client.messages.with_raw_response.create(**self.params(request), **options)
        except anthropic.APIError as exc:
            raise _error(exc) from exc
        try:
            return _response(raw.http_response.json(), latency_s=round(time.perf_counter() - started, 3))
        except (ValueError, AttributeError) as exc:  # a 200 whose body is not a Message: the server's fault
            raise TransientError(f"unreadable answer: {type(exc).__name__}: {exc}"[:300], "server") from exc

    # Message Batches: half price, asynchronous (most finish within an hour).
    def submit_batch(self, items: list[tuple[str, ModelRequest]]) -> str:
        import anthropic

        requests = [{"custom_id": custom_id, "params": self.params(request)} for custom_id, request in items]
        try:
            return self._batches.create(requests=requests).id
        except anthropic.APIError as exc:
            raise BackendError(f"{type(exc).__name__}: {_short(exc)}") from exc

    def batch_progress(self, batch_id: str) -> tuple[bool, int]:
        """(ended, requests finished so far)."""
        batch = self._batches.retrieve(batch_id)
        counts = batch.request_counts
        done = counts.succeeded + counts.errored + counts.canceled + counts.expired
        return batch.processing_status == "ended", done

    def batch_results(self, batch_id: str) -> Iterator[tuple[str, ModelResponse | None]]:
        """(custom_id, the answer, or None for a request that errored, was canceled or expired)."""
        for item in self._batches.results(batch_id):
            yield item.custom_id, _response(item.result.message.model_dump()) if item.result.type == "succeeded" else None

    def params(self, request: ModelRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [m.model_dump() for m in request.messages],
        }
        if request.stop_sequences:
            kwargs["stop_sequences"] = list(request.stop_sequences)
        if request.system:
            kwargs["system"] = request.system
        if request.json_schema is not None and not request.prefill:
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": api_schema(request.json_schema)}}
        return kwargs


def _response(message: dict[str, Any], latency_s: float | None = None) -> ModelResponse:
    """A Message as JSON: thinking blocks may come first; only text blocks are the answer."""
    text = "".join(block.get("text", "") for block in message.get("content") or [] if block.get("type") == "text")
    usage = message.get("usage") or {}
    return ModelResponse(text=text, stop_reason=message.get("stop_reason") or "unknown", latency_s=latency_s,
                         usage=Usage(input_tokens=usage.get("input_tokens") or 0, output_tokens=usage.get("output_tokens") or 0))


def _error(exc: anthropic.APIError) -> BackendError:
    """The SDK's exception as ours: transient ones carry their kind and the server's retry-after."""
    import anthropic

    message = f"{type(exc).__name__}: {_short(exc)}"
    if isinstance(exc, anthropic.APITimeoutError):
        return TransientError(message, "timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return TransientError(message, "connection")
    status = getattr(exc, "status_code", None)
    if status == 429:
        return TransientError(message, "rate_limit", _retry_after_s(exc))
    if status == 529:
        return TransientError(message, "overloaded", _retry_after_s(exc))
    if status in (408, 409) or (status is not None and status >= 500):
        return TransientError(message, "server", _retry_after_s(exc))
    return BackendError(message)


def _retry_after_s(exc: anthropic.APIError) -> float | None:
    response = getattr(exc, "response", None)
    return retry_after_s(response.headers) if response is not None else None


def _short(exc: anthropic.APIError) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", exc))
    return str(exc)[:300]
