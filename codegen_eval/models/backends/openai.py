"""Any OpenAI-compatible server through the official `openai` SDK: `--model openai:<name>`.

One backend serves OpenAI itself, vLLM, Ollama, llama.cpp's servers, LM Studio and hosted
OpenAI-compatible APIs. The base URL comes from `--base-url` (RunConfig.base_url), else
OPENAI_BASE_URL, else OpenAI's; the key only from OPENAI_API_KEY (a placeholder is sent to a server
that needs none). The key is never part of the identity, an error message or a log.

As with Claude, the SDK's own retries are off: 429 (with its retry-after), 5xx, timeouts and dropped
connections are raised as `TransientError` for `codegen_eval.models.ratelimit`. A server that refuses
the request's output strategy (a prefill, a JSON-schema `response_format`) gets a plain, non-transient
error naming the refusal, so the strategy falls back.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

from codegen_eval.models.backends import (
    OPENAI_PREFIX,
    PREFILL_REJECTED,
    SCHEMA_REJECTED,
    BackendError,
    ConfigError,
    ModelRequest,
    ModelResponse,
    TransientError,
    Usage,
    api_schema,
    retry_after_s,
)

DEFAULT_ENDPOINT = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "no-key-needed"  # local servers ignore the key, but the SDK insists on one
# Greedy, so the same request gives the same answer where the server allows it (a seed where sampling remains).
SAMPLING: dict[str, Any] = {"temperature": 0.0, "seed": 0}
# OpenAI's reasoning models reject any temperature but the default, and stop sequences.
_NO_SAMPLING = re.compile(r"^(o\d|gpt-5)")
# Extra request fields for a non-OpenAI server, as JSON (e.g. llama.cpp's {"repeat_penalty": 1.0}).
EXTRA_BODY_ENV = "CODEGEN_EVAL_OPENAI_EXTRA_BODY"
# Where openai: models start, instead of structured (e.g. prefill against vLLM); see strategies.py.
STRATEGY_ENV = "CODEGEN_EVAL_OPENAI_STRATEGY"
STRATEGIES = ("prefill", "structured", "fenced")
# vLLM's and llama.cpp's way to continue a final assistant message instead of starting a new one.
PREFILL_FIELDS = {"continue_final_message": True, "add_generation_prompt": False}


def endpoint_url(base_url: str | None) -> str:
    """The base URL to call: the argument, else OPENAI_BASE_URL, else OpenAI's."""
    return (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_ENDPOINT).rstrip("/")


def public_endpoint(base_url: str | None) -> str:
    """The endpoint as it is shown and hashed (cache keys, strategy notes): never with credentials."""
    parts = urlsplit(endpoint_url(base_url))
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def chosen_strategy() -> str | None:
    chosen = os.environ.get(STRATEGY_ENV) or None
    if chosen is not None and chosen not in STRATEGIES:
        raise ConfigError(f"{STRATEGY_ENV}={chosen!r}: use one of {', '.join(STRATEGIES)}")
    return chosen


def check_base_url(url: str) -> str:
    """A base URL fit to be saved in run.json: http(s), with no credentials or query in it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base URL {url!r} is not an http(s) URL")
    if parts.username or parts.password or parts.query:
        raise ValueError("a base URL must not carry credentials or a query: put the key in OPENAI_API_KEY")
    return url.rstrip("/")


class OpenAIBackend:
    takes_temperature = True  # a request's temperature and seed (several samples per case) are sent

    def __init__(self, model: str, base_url: str | None = None, timeout_s: float = 600.0):
        self.name = model.removeprefix(OPENAI_PREFIX)
        if not self.name:
            raise ConfigError("openai: needs a model name, e.g. openai:gpt-4o-mini")
        self.endpoint = check_base_url(endpoint_url(base_url)) if base_url else endpoint_url(None)
        key = os.environ.get("OPENAI_API_KEY")
        if not key and self.endpoint == DEFAULT_ENDPOINT:
            raise ConfigError("OPENAI_API_KEY is not set: set it, or point --base-url / OPENAI_BASE_URL at a local server")
        self._key = key or PLACEHOLDER_KEY
        self._extra_body = _extra_body()
        chosen_strategy()  # a bad value is a ConfigError now, before any call
        import openai  # here, not at the top: the strategy and config helpers above must not pay for the SDK

        self._sdk = openai
        self._client = openai.OpenAI(api_key=self._key, base_url=self.endpoint, max_retries=0, timeout=timeout_s)

    def identity(self) -> dict[str, Any]:
        # Where and how the model is asked; never the key.
        identity: dict[str, Any] = {"backend": "openai", "endpoint": public_endpoint(self.endpoint), "sampling": self._sampling()}
        if self._extra_body:
            identity["extra_body"] = self._extra_body
        return identity

    def complete(self, request: ModelRequest, timeout_s: float | None = None) -> ModelResponse:
        options = {"timeout": timeout_s} if timeout_s else {}
        try:
            completion = self._client.chat.completions.create(**self.params(request), **options)
        except self._sdk.APIError as exc:
            raise self._error(exc, request) from exc
        return _response(completion, request)

    def params(self, request: ModelRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [m.model_dump() for m in request.messages]
        # OpenAI has renamed max_tokens (its reasoning models refuse the old name); most other servers know only it.
        tokens = "max_completion_tokens" if self.endpoint == DEFAULT_ENDPOINT else "max_tokens"
        kwargs: dict[str, Any] = {"model": self.name, "messages": messages, tokens: request.max_tokens, **self._sampling(request)}
        if request.stop_sequences and not _NO_SAMPLING.match(self.name):
            kwargs["stop"] = list(request.stop_sequences)
        extra = dict(self._extra_body)
        if request.prefill:
            extra.update(PREFILL_FIELDS)
        elif request.json_schema is not None:
            schema = {"name": "answer", "schema": api_schema(request.json_schema), "strict": True}
            kwargs["response_format"] = {"type": "json_schema", "json_schema": schema}
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def _sampling(self, request: ModelRequest | None = None) -> dict[str, Any]:
        """Greedy with seed 0 by default; a sample's own temperature and seed when the request has them."""
        if _NO_SAMPLING.match(self.name):
            return {}
        sampling = dict(SAMPLING)
        if request is not None and request.temperature is not None:
            sampling["temperature"] = request.temperature
        if request is not None and request.seed is not None:
            sampling["seed"] = request.seed
        return sampling

    def _error(self, exc: Any, request: ModelRequest) -> BackendError:
        """The SDK's exception as ours: a refused strategy is named; transient ones carry their kind."""
        message = f"{type(exc).__name__}: {_short(exc)}".replace(self._key, "[key]")
        if isinstance(exc, self._sdk.APITimeoutError):
            return TransientError(message, "timeout")
        if isinstance(exc, self._sdk.APIConnectionError):
            return TransientError(message, "connection")
        status = getattr(exc, "status_code", None)
        # llama-cpp-python answers a response_format it does not know with a 500 holding a validation
        # error: a refusal, not an outage, so it must not be retried.
        refused = status in (400, 422) or (status == 500 and "response_format" in message)
        if refused and request.prefill and any(field in message for field in (*PREFILL_FIELDS, "prefill")):
            return BackendError(f"the server {PREFILL_REJECTED} ({message})")
        if refused and request.json_schema is not None and not request.prefill and "response_format" in message:
            return BackendError(f"the server {SCHEMA_REJECTED} ({message})")
        retry_after = retry_after_s(exc.response.headers) if isinstance(exc, self._sdk.APIStatusError) else None
        if status == 429:
            return TransientError(message, "rate_limit", retry_after)
        if status in (408, 409) or (status is not None and status >= 500):
            return TransientError(message, "server", retry_after)
        return BackendError(message)


def _response(completion: Any, request: ModelRequest) -> ModelResponse:
    choice = completion.choices[0]
    message = choice.message
    if getattr(message, "refusal", None):
        return ModelResponse(text=message.refusal, stop_reason="refusal", usage=_usage(completion))
    # The API does not say which stop ended an answer; like the local backend, a request with stop
    # sequences that ended normally is taken to have met one.
    stop_reason = {
        "length": "max_tokens",
        "content_filter": "refusal",
        "stop": "stop_sequence" if request.stop_sequences else "end_turn",
    }.get(choice.finish_reason or "", choice.finish_reason or "unknown")
    return ModelResponse(text=message.content or "", stop_reason=stop_reason, usage=_usage(completion))


def _usage(completion: Any) -> Usage:
    usage = completion.usage  # some servers send none
    return Usage(input_tokens=usage.prompt_tokens or 0, output_tokens=usage.completion_tokens or 0) if usage else Usage()


def _extra_body() -> dict[str, Any]:
    raw = os.environ.get(EXTRA_BODY_ENV)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{EXTRA_BODY_ENV} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{EXTRA_BODY_ENV} must be a JSON object")
    return value


def _short(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", exc))[:500]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])[:500]
    return str(exc)[:500]
