"""openai:<name> models through the official SDK.

What a model answers is tested against a real OpenAI-compatible server: llama-cpp-python's own
(`llama_api`, the embedded GGUF on loopback). The failure paths a real server will not produce on cue
(429 with retry-after, 5xx, hangs, refusing response_format or a prefill) go to `tests/openai_api.py`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codegen_eval.cli import app
from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case
from codegen_eval.generation import generate, generation_request
from codegen_eval.grading.judge import JudgeStatus, judge
from codegen_eval.models.backends import ConfigError, Usage, get_backend, reset_backends
from codegen_eval.models.cache import CallCache, request_key
from codegen_eval.models.calls import CallPolicy
from codegen_eval.models.pricing import cost_usd
from codegen_eval.models.strategies import Strategy, strategy_for
from tests.openai_api import OpenAIAPI, Reply, refuses_prefill, refuses_response_format

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-openai-test-SECRET-7b1e0a"  # must never reach an artifact, a log or a cache key
MODEL = "openai:qwen"
# Short answers: the real server runs a 0.5B model on a busy CPU.
REGEX = Case(id="digits", task="A regular expression matching one or more ASCII digits, nothing else.", format="regex",
             expected=r"^[0-9]+$", solution_criteria="Anchored; digits only.", difficulty="easy",
             tests={"match": ["7", "123"], "no_match": ["", "a1"]})
VERDICT = '{"score": 9, "reasoning": "correct", "strengths": ["short"], "weaknesses": []}'


@pytest.fixture(autouse=True)
def openai_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for name in ("OPENAI_BASE_URL", "CODEGEN_EVAL_OPENAI_STRATEGY", "CODEGEN_EVAL_OPENAI_EXTRA_BODY"):
        monkeypatch.delenv(name, raising=False)
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def stand_in():
    server = OpenAIAPI().start()
    yield server
    server.stop()


def policy(url: str, **kwargs) -> CallPolicy:
    return CallPolicy(base_url=url, **{"max_attempts": 3, **kwargs})


# --- against the real server ------------------------------------------------------------------------


@pytest.mark.local_model
def test_real_server_refuses_json_schema_so_fenced_is_used_and_remembered(llama_api, cache_dir):
    cache = CallCache(cache_dir)
    generation = generate(REGEX, MODEL, cache, policy(llama_api))
    # llama_cpp.server answers a json_schema response_format with a 500: a refusal, not retried as an outage.
    assert generation.error is None and generation.retries == 0 and generation.calls == 2
    assert generation.strategy == "fenced" and generation.stop_reason == "end_turn"
    assert generation.code and "```" not in generation.code
    assert generation.usage.input_tokens > 20 and generation.usage.output_tokens > 0
    assert strategy_for(MODEL, cache, llama_api) is Strategy.FENCED
    # Remembered per endpoint: the same name elsewhere starts from structured again.
    assert strategy_for(MODEL, cache, "http://127.0.0.1:9/v1") is Strategy.STRUCTURED

    again = generate(REGEX, MODEL, cache, policy(llama_api))
    assert again.cached and again.calls == 0 and again.code == generation.code


@pytest.mark.local_model
def test_real_server_greedy_answers_are_repeatable_and_keyed_by_endpoint(llama_api, cache_dir):
    backend = get_backend(MODEL, llama_api)
    request = generation_request(REGEX, MODEL, Strategy.FENCED)
    first, second = backend.complete(request), backend.complete(request)
    assert first.text == second.text and first.text.strip()
    identity = backend.identity()
    assert identity["endpoint"] == llama_api and identity["sampling"] == {"temperature": 0.0, "seed": 0}
    other = get_backend(MODEL, "http://127.0.0.1:9/v1").identity()
    assert request_key(request, identity) != request_key(request, other)
    assert KEY not in json.dumps(identity)


@pytest.mark.local_model
def test_cli_run_against_the_real_server_keeps_the_key_out_and_shows_cost_na(prefect_api, llama_api, tmp_path):
    dataset = tmp_path / "one.jsonl"
    dataset.write_text(REGEX.model_dump_json(exclude_none=True) + "\n")
    cache = tmp_path / "cache"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "CODEGEN_EVAL_CACHE_DIR": str(cache), "OPENAI_API_KEY": KEY}
    proc = subprocess.run(
        [sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(dataset), "--model", MODEL, "--base-url", llama_api,
         "--no-judge", "--out", str(tmp_path / "runs")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    settings = json.loads((run_dir / "run.json").read_text())
    assert settings["base_url"] == llama_api and settings["backends"][MODEL]["endpoint"] == llama_api.rstrip("/")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["generation"]["cost_usd"] is None and summary["generation"]["calls_made"] >= 1
    assert summary["generation"]["input_tokens"] > 0
    assert re.search(r"^ *generation( +\d+){5} +n/a *$", proc.stderr, re.MULTILINE), proc.stderr  # the cost column of the CLI table
    assert "<td>n/a</td>" in (run_dir / "report.html").read_text()
    result = json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])
    assert result["generation"]["strategy"] == "fenced" and result["output"]
    # The key is in no artifact, cache entry or log line.
    for path in [*run_dir.rglob("*"), *cache.rglob("*")]:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in proc.stdout + proc.stderr


# --- failure paths, against the stand-in ---------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds(stand_in, cache_dir):
    stand_in.script = [Reply(status=429, message="slow down", headers={"retry-after": "1"})]
    stand_in.default = Reply(text='{"code": "^[0-9]+$"}')
    generation = generate(REGEX, MODEL, CallCache(cache_dir), policy(stand_in.url))
    assert generation.error is None and generation.retries == 1 and generation.code == "^[0-9]+$"
    assert generation.strategy == "structured" and len(stand_in.requests) == 2
    assert stand_in.arrivals[1] - stand_in.arrivals[0] >= 0.95  # the server's retry-after, not a 0.5 s back-off


def test_5xx_is_retried_and_a_timeout_is_retried(stand_in, cache_dir):
    stand_in.script = [Reply(status=503, message="overloaded"), Reply(hang_s=6, text='{"code": "late"}')]
    stand_in.default = Reply(text='{"code": "^[0-9]+$"}')
    generation = generate(REGEX, MODEL, CallCache(cache_dir), policy(stand_in.url, timeout_s=2.0))
    assert generation.error is None and generation.retries == 2 and generation.code == "^[0-9]+$"
    assert len(stand_in.requests) == 3


def test_errors_that_persist_fail_after_max_attempts_and_are_not_cached(stand_in, make_cache):
    stand_in.default = Reply(status=500, message="boom")
    cache = make_cache()
    generation = generate(REGEX, MODEL, cache, policy(stand_in.url, max_attempts=2))
    assert generation.error and "boom" in generation.error and generation.retries == 1 and len(stand_in.requests) == 2
    assert len(cache) == 0


def test_a_server_refusing_response_format_falls_back_to_fenced_and_it_is_remembered(stand_in, make_cache):
    stand_in.responder = refuses_response_format
    cache = make_cache()
    generation = generate(REGEX, MODEL, cache, policy(stand_in.url))
    assert generation.strategy == "fenced" and generation.calls == 2 and generation.retries == 0
    assert generation.code == "def answer():\n    return 42"  # the first fenced block
    assert "response_format" in stand_in.requests[0] and "response_format" not in stand_in.requests[1]
    assert "fenced code block" in stand_in.requests[1]["messages"][-1]["content"]

    other = REGEX.model_copy(update={"id": "other", "task": "A regex for one lowercase letter."})
    assert generate(other, MODEL, cache, policy(stand_in.url)).calls == 1  # no structured attempt this time
    assert "response_format" not in stand_in.requests[2]

    # The judge follows the same remembered strategy: the rubric alone, the verdict found in the text.
    stand_in.responder, stand_in.default = None, Reply(text=f"Here it is:\n{VERDICT}")
    judgement = judge(REGEX, "^[0-9]+$", MODEL, cache, policy=policy(stand_in.url))
    assert judgement.status is JudgeStatus.OK and judgement.verdict.score == 9 and judgement.calls == 1
    assert "response_format" not in stand_in.requests[-1]


def test_structured_requests_carry_a_strict_json_schema(stand_in, cache_dir):
    stand_in.default = Reply(text=VERDICT)
    judgement = judge(REGEX, "^[0-9]+$", MODEL, CallCache(cache_dir), policy=policy(stand_in.url))
    assert judgement.status is JudgeStatus.OK and judgement.verdict.score == 9
    body = stand_in.requests[0]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["additionalProperties"] is False and "maximum" not in schema["properties"]["score"]
    assert body["model"] == "qwen" and body["temperature"] == 0 and body["seed"] == 0 and body["max_tokens"] == 1024
    assert {k.lower(): v for k, v in stand_in.headers[0].items()}["authorization"] == f"Bearer {KEY}"


def test_prefill_when_asked_continues_the_final_message(stand_in, cache_dir, monkeypatch):
    monkeypatch.setenv("CODEGEN_EVAL_OPENAI_STRATEGY", "prefill")
    stand_in.default = Reply(text="^[0-9]+$\n")
    generation = generate(REGEX, MODEL, CallCache(cache_dir), policy(stand_in.url))
    assert generation.strategy == "prefill" and generation.code == "^[0-9]+$" and generation.stop_reason == "stop_sequence"
    body = stand_in.requests[0]
    assert body["messages"][-1] == {"role": "assistant", "content": "```\n"} and body["stop"] == ["```"]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert "response_format" not in body


def test_a_server_refusing_the_prefill_falls_back_to_structured(stand_in, cache_dir, monkeypatch):
    monkeypatch.setenv("CODEGEN_EVAL_OPENAI_STRATEGY", "prefill")
    stand_in.responder = refuses_prefill
    stand_in.default = Reply(text='{"code": "^[0-9]+$"}')
    generation = generate(REGEX, MODEL, CallCache(cache_dir), policy(stand_in.url))
    assert generation.strategy == "structured" and generation.code == "^[0-9]+$" and generation.calls == 2


def test_the_key_is_scrubbed_from_errors_and_never_in_keys(stand_in, cache_dir):
    stand_in.default = Reply(status=401, message=f"Incorrect API key provided: {KEY}")
    generation = generate(REGEX, MODEL, CallCache(cache_dir), policy(stand_in.url))
    assert generation.error and "AuthenticationError" in generation.error and KEY not in generation.error
    assert generation.retries == 0 and len(stand_in.requests) == 1  # a 401 is not retried
    assert KEY not in generation.key and KEY not in json.dumps(get_backend(MODEL, stand_in.url).identity())
    config = RunConfig(model=MODEL, base_url=stand_in.url, judge=False)
    assert KEY not in config.model_dump_json()


def test_key_and_base_url_rules(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        get_backend("openai:gpt-4o-mini")
    get_backend(MODEL, "http://127.0.0.1:9/v1")  # a local server needs no key: a placeholder is sent
    with pytest.raises(ConfigError, match="needs a model name"):
        get_backend("openai:", "http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="must not carry credentials"):
        RunConfig(model=MODEL, base_url="http://user:secret@127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="openai:<name> models only"):
        RunConfig(model="local", base_url="http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    reset_backends()
    assert get_backend(MODEL).identity()["endpoint"] == "http://127.0.0.1:9/v1"


def test_cli_rejects_a_bad_base_url_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["run", "--model", MODEL, "--base-url", "ftp://example/v1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "not an http(s) URL" in result.output and not (tmp_path / "r").exists()


def test_prices_for_known_openai_models_and_none_for_unknown():
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd("openai:gpt-4o-mini", usage) == pytest.approx(0.75)
    assert cost_usd("openai:gpt-4o-2024-08-06", usage) == pytest.approx(12.5)
    assert cost_usd("openai:gpt-4.1-nano", usage) == pytest.approx(0.5)
    assert cost_usd(MODEL, usage) is None and cost_usd("openai:gpt-4o-audio-preview", usage) is None
