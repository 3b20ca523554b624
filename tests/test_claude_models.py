"""Current and older Claude models through the emulator: strategies, stop reasons, retries."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from codegen_eval.dataset import load_dataset
from codegen_eval.generation import generation_request
from codegen_eval.models.cache import CallCache
from codegen_eval.models.calls import cached_call
from codegen_eval.models.strategies import Strategy, known_strategy, strategy_for
from codegen_eval.reporting.runs import load_results
from tests.conftest import CLAUDE, SEED
from tests.messages_api import PREFILL_400, REGEX_PROMPT, Reply, code_for, request_kind, seed_responder, shape


def last_messages(api):
    return [r["messages"][-1]["role"] for r in api.requests]


@pytest.mark.parametrize(
    ("model", "strategy"),
    [("claude-haiku-4-5", "prefill"), ("claude-sonnet-4-5", "prefill"), ("claude-opus-4-5", "prefill"),
     ("claude-sonnet-4-6", "structured"), ("claude-opus-4-8", "structured"), ("claude-sonnet-5-5", "structured"),
     ("claude-haiku-5-5", "structured"), ("claude-opus-5", "structured"), ("claude-fable-5-1", "structured"), ("local", "prefill")],
)
def test_known_models_are_mapped_up_front(model, strategy):
    assert known_strategy(model).value == strategy


def test_current_model_gets_structured_output_and_clean_code(run, api):
    run_dir = run("claude-sonnet-4-6")
    results = load_results(run_dir)
    assert {r.verdict.value for r in results} == {"PASS"} and {r.generation.strategy for r in results} == {"structured"}
    assert results[0].output.startswith("import boto3") and "```" not in results[0].output
    assert "assistant" not in last_messages(api)  # never a prefill, so never the 400
    generation = next(r for r in api.requests if r["messages"][0]["content"].startswith("Write AWS"))
    assert generation["output_config"]["format"]["schema"]["properties"] == {"code": {"type": "string"}}
    judge_schema = next(r for r in api.requests if not r["messages"][0]["content"].startswith("Write AWS"))["output_config"]["format"]["schema"]
    assert judge_schema["additionalProperties"] is False and "maxLength" not in json.dumps(judge_schema)
    assert "structured</span>" in (run_dir / "report.html").read_text()


def test_older_model_keeps_prefill(run, api):
    run_dir = run("claude-haiku-4-5")
    assert {r.generation.strategy for r in load_results(run_dir)} == {"prefill"}
    assert set(last_messages(api)) == {"assistant"} and all("output_config" not in r for r in api.requests)
    assert json.loads((run_dir / "summary.json").read_text())["strategies"] == {"prefill": 4}


def test_unknown_model_switches_on_the_prefill_400_and_remembers(run, api, cache_dir):
    results = load_results(run("claude-new-model"))
    assert {r.verdict.value for r in results} == {"PASS"} and {r.generation.strategy for r in results} == {"structured"}
    rejected = [r for r in api.requests if r["messages"][-1]["role"] == "assistant"]
    assert 1 <= len(rejected) <= 8  # the first calls, before the switch was known
    assert strategy_for("claude-new-model", CallCache(cache_dir)) is Strategy.STRUCTURED
    api.reset()
    run("claude-new-model", rubric=str(Path(__file__).parent / "data" / "terse_judge.j2"))
    assert "assistant" not in last_messages(api) and api.count("generate") == 0  # remembered; generations cached


def test_thinking_blocks_are_skipped(run, api):
    api.responder = seed_responder(thinking="Let me think about boto3 first.")
    results = load_results(run("claude-haiku-4-5"))
    assert {r.verdict.value for r in results} == {"PASS"} and "think" not in results[0].output


def test_max_tokens_marks_the_output_truncated(run, api):
    def respond(body):
        if body["messages"][0]["content"].startswith("Write AWS") and "list_s3_buckets" in body["messages"][0]["content"]:
            return Reply(text="import boto3\n\ndef list_s3_buckets():\n    s3 = boto3.client(\"s", stop_reason="max_tokens")
        return seed_responder()(body)

    api.responder = respond
    run_dir = run("claude-haiku-4-5")
    truncated = next(r for r in load_results(run_dir) if r.id == "s3-list-buckets")
    assert truncated.generation.truncated and truncated.verdict.value == "FAIL" and truncated.status == "SYNTAX_ERROR"
    assert "truncated at max_tokens" in (run_dir / "report.html").read_text()


def test_refusal_is_refused_not_fail_and_not_cached(run, api):
    def respond(body):
        if body["messages"][0]["content"].startswith(REGEX_PROMPT):
            return Reply(text="I can't help with that.", stop_reason="refusal")
        return seed_responder()(body)

    api.responder = respond
    refused = next(r for r in load_results(run("claude-haiku-4-5")) if r.id == "regex-s3-bucket-name")
    assert (refused.verdict.value, refused.status, refused.generation.refused) == ("ERROR", "REFUSED", True)
    api.reset()
    run("claude-haiku-4-5")
    assert api.count("generate") == 1  # asked again: a refusal is not a cached success


def test_sdk_retries_carry_429_and_529(run, api):
    seen: dict[str, int] = {}

    def respond(body):
        key = json.dumps(body["messages"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            return Reply(status=429, error={"type": "rate_limit_error", "message": "slow down"}, headers={"retry-after": "0"})
        if seen[key] == 2 and "list_s3_buckets" in key:
            return Reply(status=529, error={"type": "overloaded_error", "message": "overloaded"}, headers={"retry-after": "0"})
        return seed_responder()(body)

    api.responder = respond
    results = load_results(run("claude-haiku-4-5"))
    assert {r.verdict.value for r in results} == {"PASS"}
    assert api.count() == 8 * 2 + 2  # every call retried once after 429; list_s3_buckets' twice (529)


def test_a_200_whose_body_is_not_a_message_is_retried_not_a_crash(run, api):
    """The answer is read from the reply's JSON (not the SDK's typed Message): a body that is not a
    Message is a transient server fault, retried like a 5xx."""
    served: dict[str, int] = {}

    def respond(body):
        key = json.dumps(body["messages"])
        served[key] = served.get(key, 0) + 1
        return Reply(body="<html>502 from a proxy</html>") if served[key] == 1 else seed_responder()(body)

    api.responder = respond
    results = load_results(run("claude-haiku-4-5"))
    assert {r.verdict.value for r in results} == {"PASS"} and api.count() == 8 * 2
    assert sum(r.generation.retries + r.judge.retries for r in results) == 8


def test_a_calls_latency_leaves_out_the_clients_set_up(api, cache_dir, monkeypatch):
    """The SDK is imported and its client made at the first call (~1 s on 2 busy cores), while that
    call and every other one started with it wait: none of that is a call's latency (the report's
    median latency per model would otherwise charge it to whichever model is asked first)."""
    import anthropic

    real = anthropic.Anthropic

    def slow_client(**options):
        time.sleep(0.5)  # stands for the import and set-up
        return real(**options)

    monkeypatch.setattr(anthropic, "Anthropic", slow_client)
    request = generation_request(load_dataset(SEED)[0], CLAUDE, Strategy.PREFILL)
    started = time.perf_counter()
    result = cached_call(request, CallCache(cache_dir))
    assert time.perf_counter() - started >= 0.5 and result.response is not None
    assert 0 < result.response.latency_s < 0.4


def test_prefill_400_text_is_the_apis(api):
    assert PREFILL_400.status == 400 and "does not support assistant message prefill" in PREFILL_400.error["message"]


def test_cost_is_accounted_per_stage(run, api):
    run_dir = run("claude-haiku-4-5")
    summary = json.loads((run_dir / "summary.json").read_text())
    generation, judging = summary["generation"], summary["judging"]
    expected = (generation["input_tokens"] * 1.0 + generation["output_tokens"] * 5.0) / 1e6  # Haiku 4.5: $1 / $5
    assert generation["cost_usd"] == pytest.approx(expected) and judging["cost_usd"] > 0
    assert summary["cost_usd"] == pytest.approx(generation["cost_usd"] + judging["cost_usd"])
    per_case = [json.loads(line)["cost_usd"] for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert sum(c["generation"] for c in per_case) == pytest.approx(generation["cost_usd"])


def test_max_cost_stops_new_calls_and_reports_the_ungraded(run, api):
    # A call is made only if its worst case (1,024 output tokens: ~$0.0053 on Haiku) still fits; the
    # loopback answers cost ~$0.0003 each, so a $0.006 cap allows a few calls, not all eight.
    run_dir = run("claude-haiku-4-5", max_cost_usd=0.006, concurrency=1)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 1 <= api.count() < 8 and summary["over_budget"] >= 1
    assert summary["cost_usd"] <= 0.006
    assert "left ungraded" in (run_dir / "report.html").read_text()
    statuses = {r.status for r in load_results(run_dir)}
    assert "OVER_BUDGET" in statuses and "FAIL" not in {r.verdict.value for r in load_results(run_dir)}


@pytest.fixture
def fast_polls(monkeypatch):
    import codegen_eval.models.batches as batches

    monkeypatch.setattr(batches, "POLL_SECONDS", 0.01)


def test_batch_gives_the_same_verdicts_at_half_price(run, api, fast_polls, tmp_path):
    sync = load_results(run("claude-sonnet-4-6", cache_dir=str(tmp_path / "sync-cache")))
    api.reset()
    batch_dir = run("claude-sonnet-4-6", use_batch=True)
    batched = load_results(batch_dir)
    assert [(r.id, r.verdict, r.score) for r in batched] == [(r.id, r.verdict, r.score) for r in sync]
    assert api.count() == 0 and len(api.batches) == 2  # nothing synchronous: one batch per stage
    assert all(r.generation.batch and r.judge.batch for r in batched)
    summary = json.loads((batch_dir / "summary.json").read_text())
    assert summary["generation"]["calls_made"] == 4 and summary["judging"]["calls_made"] == 4
    sonnet = (summary["generation"]["input_tokens"] * 3 + summary["generation"]["output_tokens"] * 15) / 1e6
    assert summary["generation"]["cost_usd"] == pytest.approx(sonnet / 2)


def test_batch_with_samples_sends_each_distinct_judge_request_once(run, api, fast_polls):
    """Samples of a case with different code ask the judge different first requests: all of them go in
    the judge's batch, none is made synchronously; samples with the same code share one request, paid once."""
    answered: Counter[str] = Counter()
    lock = threading.Lock()
    good = seed_responder()

    def respond(body):
        if request_kind(body) == "generate":
            with lock:
                answered[json.dumps(body, sort_keys=True)] += 1
                n = answered[json.dumps(body, sort_keys=True)]
            if n == 2:  # each case's second sample: the same code plus a comment, so its judge request differs
                code = code_for(body) + "# the second sample\n"
                return Reply(text=shape(body, code, json.dumps({"code": code})))
        return good(body)

    api.responder = respond
    run_dir = run("claude-sonnet-4-6", use_batch=True, samples=3)
    results = load_results(run_dir)
    assert api.count() == 0 and len(api.batches) == 2 and len(results) == 4 * 3
    assert len({r.output for r in results}) == 4 * 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["generation"]["calls_made"] == 4 * 3 and summary["judging"]["calls_made"] == 4 * 2
    assert sum(r.judge.batch for r in results) == 4 * 2


def test_batch_never_resubmits_cache_hits(run, api, fast_polls):
    run("claude-haiku-4-5")
    api.reset()
    run("claude-haiku-4-5", use_batch=True)
    assert api.batches == {} and api.count() == 0


def test_interrupted_batch_is_resumed_by_its_id(run, api, fast_polls, cache_dir, monkeypatch):
    import codegen_eval.models.batches as batches

    api.polls_before_end = 10**6  # the batch never ends: the first run is interrupted while polling
    calls = {"n": 0}
    original = batches.time.sleep

    def interrupt(seconds):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        original(seconds)

    monkeypatch.setattr(batches.time, "sleep", interrupt)
    with pytest.raises(BaseException):
        run("claude-haiku-4-5", use_batch=True)
    assert len(api.batches) == 1
    monkeypatch.setattr(batches.time, "sleep", original)
    api.polls_before_end = 0
    results = load_results(run("claude-haiku-4-5", use_batch=True))
    assert {r.verdict.value for r in results} == {"PASS"}
    assert len(api.batches) == 2  # the generation batch was polled again, not resubmitted; one judge batch
