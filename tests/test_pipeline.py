"""The seed's four cases end to end: real Prefect server, real SDK, loopback Messages API."""

from __future__ import annotations

import json
from pathlib import Path

from codegen_eval.reporting.runs import load_results
from tests.conftest import CLAUDE, SECRET
from tests.messages_api import Reply, seed_responder


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_seed_cases_end_to_end(run, api):
    run_dir = run()
    summary = summary_of(run_dir)
    assert summary["cases"] == 4 and summary["verdicts"] == {"PASS": 4, "PARTIAL": 0, "FAIL": 0, "ERROR": 0}
    assert summary["by_format"]["python"]["PASS"] == 2 and summary["by_difficulty"]["hard"]["PASS"] == 1
    assert summary["generation"]["calls_made"] == 4 and summary["judging"]["calls_made"] == 4
    assert summary["generation"]["input_tokens"] > 0 and summary["total_tokens"] > 0
    results = load_results(run_dir)
    assert [r.id for r in results] == ["s3-list-buckets", "s3-upload-file", "iam-s3-get-put-my-data-bucket", "regex-s3-bucket-name"]
    first = results[0]
    assert first.output.startswith("import boto3") and "```" not in first.output and "This lists" not in first.output
    assert first.generation.stop_reason == "stop_sequence" and first.judge.verdict.score == 9 and first.score == 9.5
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {"id", "format", "difficulty", "output", "checks", "judge", "score", "verdict", "status"} <= rows[0].keys()
    html = (run_dir / "report.html").read_text()
    assert "list_s3_buckets" in html and "PASS" in html
    settings = json.loads((run_dir / "run.json").read_text())
    assert settings["models"] == [CLAUDE] and settings["backends"] == {CLAUDE: {"backend": "anthropic", "endpoint": api.url}}


def test_prefill_and_stop_sequence_are_sent(run, api):
    run()
    generations = [r for r in api.requests if r["messages"][0]["content"].startswith("Write AWS")]
    assert len(generations) == 4
    prefills = sorted(r["messages"][-1]["content"] for r in generations)
    assert prefills == ["```\n", "```json\n", "```python\n", "```python\n"]
    assert all(r["messages"][-1]["role"] == "assistant" and r["stop_sequences"] == ["```"] for r in api.requests)
    assert all("temperature" not in r for r in api.requests)
    python_prompts = [r["messages"][0]["content"] for r in generations if r["messages"][-1]["content"] == "```python\n"]
    assert all(p.startswith("Write AWS PYTHON code for the following task. Return ONLY the code — no explanation.\n\nTask:\n") for p in python_prompts)


def test_second_run_makes_no_calls(run, api):
    run()
    api.reset()
    second = summary_of(run())
    assert api.count() == 0
    assert second["generation"] == {"calls_made": 0, "calls_cached": 4, "retries": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    assert second["judging"]["calls_made"] == 0 and second["judging"]["calls_cached"] == 4
    assert second["verdicts"]["PASS"] == 4


def test_rubric_change_rejudges_without_regenerating(run, api, tmp_path):
    run()
    rubric = tmp_path / "strict_judge.j2"
    rubric.write_text("Be strict when grading.\nTask: {{ task }}\nOutput: {{ output }}\nExpected: {{ expected }}\nCriteria: {{ criteria }}\nAnswer in JSON.")
    api.reset()
    summary = summary_of(run(rubric=str(rubric)))
    assert api.count("generate") == 0 and api.count("judge") == 4
    assert summary["generation"]["calls_made"] == 0 and summary["judging"]["calls_made"] == 4
    assert all(r["messages"][0]["content"].startswith("Be strict") for r in api.requests)


def test_changed_model_regenerates(run, api):
    run()
    api.reset()
    run(model="claude-opus-4-5")
    assert api.count("generate") == 4


def test_judge_garbage_is_judge_error_with_raw_text_and_is_not_cached(run, api):
    api.responder = seed_responder(verdict="I think this is pretty good, 9/10!")
    run_dir = run()
    results = load_results(run_dir)
    assert {r.verdict.value for r in results} == {"ERROR"} and {r.status for r in results} == {"JUDGE_ERROR"}
    assert results[0].judge.raw.startswith("I think") and "no JSON object" in results[0].judge.error
    assert api.count("judge") == 8  # one retry each, telling the judge what was wrong
    retry = [r for r in api.requests if len(r["messages"]) == 4][0]
    assert "could not be used: no JSON object" in retry["messages"][2]["content"]
    assert summary_of(run_dir)["verdicts"]["ERROR"] == 4
    api.reset()
    run()
    assert api.count("generate") == 0 and api.count("judge") == 8  # invalid answers were not cached


def test_judge_that_recovers_on_retry(run, api):
    answers = iter(["not json at all"])

    def respond(body):
        if len(body["messages"]) == 2 and not body["messages"][0]["content"].startswith("Write AWS"):
            return Reply(text=next(answers, json.dumps({"score": 8, "reasoning": "fine", "strengths": [], "weaknesses": []})) + "```")
        return seed_responder()(body)

    api.responder = respond
    results = load_results(run())
    assert sum(r.judge.calls for r in results) == 5 and {r.judge.status.value for r in results} == {"OK"}


def test_api_errors_are_errors_and_never_cached(run, api):
    api.responder = lambda body: Reply(status=400, error={"type": "invalid_request_error", "message": "bad request for test"})
    run_dir = run()
    results = load_results(run_dir)
    assert {r.status for r in results} == {"GENERATION_ERROR"} and "bad request for test" in results[0].generation.error
    api.responder = seed_responder()
    api.reset()
    assert summary_of(run())["verdicts"]["PASS"] == 4 and api.count("generate") == 4


def test_model_output_is_escaped_in_the_report(run, api):
    evil = "<script>alert('pwned')</script>"
    api.responder = lambda body: Reply(text=f"x = 1  # {evil}\n```") if body["messages"][0]["content"].startswith("Write AWS") else seed_responder()(body)
    html = (run() / "report.html").read_text()
    assert evil not in html and "&lt;script&gt;alert(" in html


def test_secret_never_reaches_artifacts_or_cache(run, api, cache_dir):
    run_dir = run()
    assert api.headers[0].get("x-api-key") == SECRET or SECRET in api.headers[0].get("authorization", "")
    for path in [*run_dir.rglob("*"), *cache_dir.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_prefect_records_batches_as_cached_and_publishes_artifacts(run, api):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    run()
    run_dir = run()
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(limit=1, sort="START_TIME_DESC")[0]
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        states = {t.name.split(" · ")[0]: t.state.name for t in task_runs}
        key = "verdicts-seed-claude-haiku-4-5"  # <dataset stem>-<model>
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert states["generate"] == "Cached" and states["judge"] == "Cached"
    assert {t.name for t in task_runs} >= {"generate · claude-haiku-4-5 · batch 0", "judge · claude-haiku-4-5 · batch 0"}
    latest = max(artifacts, key=lambda a: a.created)
    rows = json.loads(latest.data) if isinstance(latest.data, str) else latest.data
    assert [row["verdict"] for row in rows] == ["PASS"] * 4 and run_dir.name in latest.description
