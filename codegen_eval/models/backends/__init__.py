"""Model backends: one small interface, one implementation per way of reaching a model.

A backend turns a `ModelRequest` into a `ModelResponse`. Everything that changes what a model would
answer is either in the request or in the backend's `identity()`, and both go into the cache key.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

LOCAL_MODEL = "local"
OPENAI_PREFIX = "openai:"  # openai:<name>: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, ...)
DEFAULT_CLAUDE_MODEL = "claude-haiku-4-5"  # accepts prefill; not deprecated (SDK 2.13)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)
    role: Literal["user", "assistant"]
    content: str


class ModelRequest(BaseModel):
    """A complete request. A final assistant message is a prefill: the answer continues it."""

    model_config = ConfigDict(frozen=True)
    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    stop_sequences: tuple[str, ...] = ()
    system: str | None = None
    # A JSON schema the answer must satisfy, where the backend can enforce it (local: a grammar).
    json_schema: dict[str, Any] | None = None
    # Sampling; None is the backend's default (the local model: greedy). The seed is derived from the
    # case and sample index, so samples are distinct requests, and cache keys, even where the API takes
    # no seed. Backends that cannot apply them (the Claude SDK) leave them out of the call.
    temperature: float | None = None
    seed: int | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_sampling(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out when unset, so the cache keys of requests made before these fields existed still hold.
        data = handler(self)
        for name in ("temperature", "seed"):
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @property
    def prefill(self) -> str:
        last = self.messages[-1]
        return last.content if last.role == "assistant" else ""


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(input_tokens=self.input_tokens + other.input_tokens, output_tokens=self.output_tokens + other.output_tokens)


class ModelResponse(BaseModel):
    """The model's continuation (after any prefill; the matched stop sequence is not included)."""

    text: str
    stop_reason: str
    usage: Usage = Field(default_factory=Usage)
    latency_s: float | None = None  # the call that produced it (cached with it; None for older entries)


class Backend(Protocol):
    def identity(self) -> dict[str, Any]:
        """What, besides the request, decides the answer (endpoint, weights, sampling)."""

    def complete(self, request: ModelRequest, timeout_s: float | None = None) -> ModelResponse: ...


def takes_temperature(model: str, base_url: str | None = None) -> bool:
    """Whether the model's backend applies a request's temperature (the Claude SDK 2.x has no such argument)."""
    return bool(getattr(get_backend(model, base_url), "takes_temperature", False))


class BackendError(RuntimeError):
    """A model call that failed for good."""


class StopRequested(BackendError):
    """A model call not made (or cut short) because the run is stopping; never cached, like any error."""

    def __init__(self) -> None:
        super().__init__("not made: the run is stopping")


class TransientError(BackendError):
    """A failure worth retrying: rate limited, overloaded, a 5xx, a timeout, a dropped connection."""

    def __init__(self, message: str, kind: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.kind = kind  # rate_limit, overloaded, server, timeout, connection
        self.retry_after_s = retry_after_s


class ConfigError(ValueError):
    """A model that cannot be used as configured (no key, weights missing)."""


# Phrases a backend puts in the error of a call whose output strategy the model refused, so that the
# strategy falls back (`codegen_eval.models.strategies`). The first is the Messages API's own wording.
PREFILL_REJECTED = "does not support assistant message prefill"
SCHEMA_REJECTED = "rejected the structured-output request"


def is_openai_model(model: str) -> bool:
    return model.startswith(OPENAI_PREFIX)


def retry_after_s(headers: Any) -> float | None:
    """The server's requested wait: `retry-after-ms` or `retry-after` in seconds (HTTP dates ignored)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) / scale)
        except (KeyError, TypeError, ValueError):
            continue
    return None


# Keywords structured outputs do not accept; the local grammar uses them to bound a small model.
_UNBOUNDED = {"maxLength", "minLength", "maxItems", "minItems", "minimum", "maximum"}


def api_schema(schema: Any) -> Any:
    """A JSON schema as hosted structured outputs accept it: closed objects, no length or range bounds."""
    if isinstance(schema, dict):
        cleaned = {k: api_schema(v) for k, v in schema.items() if k not in _UNBOUNDED}
        if cleaned.get("type") == "object":
            cleaned["additionalProperties"] = False
        return cleaned
    if isinstance(schema, list):
        return [api_schema(v) for v in schema]
    return schema


def default_model() -> str:
    """Claude when a key is set, the embedded model otherwise, so a fresh machine runs offline."""
    return DEFAULT_CLAUDE_MODEL if os.environ.get("ANTHROPIC_API_KEY") else LOCAL_MODEL


_backends: dict[tuple[str, str | None], Backend] = {}
_backends_lock = threading.Lock()


def get_backend(model: str, base_url: str | None = None) -> Backend:
    """One backend per model (and, for openai: models, base URL) per process: the local weights load once.

    `base_url` is where an `openai:` model is served (else OPENAI_BASE_URL, else OpenAI); other backends ignore it.
    """
    key = (model, base_url if is_openai_model(model) else None)
    with _backends_lock:
        if key not in _backends:
            _backends[key] = _create(*key)
        return _backends[key]


def _create(model: str, base_url: str | None) -> Backend:
    if model == LOCAL_MODEL:
        from codegen_eval.models.backends.local import LocalBackend

        return LocalBackend()
    if is_openai_model(model):
        from codegen_eval.models.backends.openai import OpenAIBackend

        return OpenAIBackend(model, base_url)
    from codegen_eval.models.backends.anthropic import AnthropicBackend

    return AnthropicBackend()


def identities(models: list[str], base_url: str | None = None) -> dict[str, dict[str, Any]]:
    """What answers each model (endpoint, weights, sampling; never a key), for run.json: a run's settings
    alone do not say which server ANTHROPIC_BASE_URL or OPENAI_BASE_URL pointed it at."""
    found: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(models):
        try:
            found[model] = get_backend(model, base_url).identity()
        except ConfigError:  # no key: the run stops at its first call to that model, with this error
            continue
    return found


def reset_backends() -> None:
    """Forget the backends made so far (they read the environment when made)."""
    with _backends_lock:
        _backends.clear()
