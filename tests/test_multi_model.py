"""Several models and several samples in one run: real Prefect server, real SDK, loopback Messages API.

Two Claude model ids share one loopback server; the second writes a broken regex on every other call
for the same request, so its samples differ and pass@k has something to estimate.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from codegen_eval.cli import app, summary_lines
from codegen_eval.config import RunConfig, regrade_config
from codegen_eval.reporting.compare import compare_runs
from codegen_eval.reporting.runs import load_results
from codegen_eval.reporting.results import Summary
from codegen_eval.reporting.statistics import wilson_interval
from tests.conftest import CLAUDE, SEED
from tests.messages_api import REGEX_PROMPT, Reply, prompt_of, request_kind, seed_responder

SONNET = "claude-sonnet-4-5"
MODELS = [CLAUDE, SONNET]
BROKEN_REGEX = "^[a-z.-]+$\n```"


def flaky_sonnet():
    """Sonnet's 2nd, 4th, ... answer to the same regex request is broken; everything else is right."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    good = seed_responder()

    def respond(body):
        if body["model"] == SONNET and request_kind(body) == "generate" and prompt_of(body).startswith(REGEX_PROMPT):
            with lock:
                seen[json.dumps(body, sort_keys=True)] += 1
                n = seen[json.dumps(body, sort_keys=True)]
            if n % 2 == 0:
                return Reply(text=BROKEN_REGEX)
        return good(body)

    return respond


def summary_of(run_dir: Path) -> Summary:
    return Summary.model_validate_json((run_dir / "summary.json").read_text())


def test_two_models_five_samples_leaderboard_and_cache(run, api):
    api.responder = flaky_sonnet()
    run_dir = run(models=MODELS, samples=5)
    rows = load_results(run_dir)
    assert len(rows) == 4 * 2 * 5
    assert [(r.model, r.sample) for r in rows[:10]] == [(m, s) for m in MODELS for s in range(5)]  # case by case
    assert api.count("generate") == 40 and all("temperature" not in r and "seed" not in r for r in api.requests)

    summary = summary_of(run_dir)
    haiku, sonnet = summary.models[CLAUDE], summary.models[SONNET]
    assert list(summary.models) == MODELS and summary.samples == 5
    assert (haiku.cases, haiku.samples, haiku.pass_rate, haiku.pass_at_k) == (4, 5, 1.0, {"1": 1.0, "5": 1.0})
    # sonnet: three cases 5/5, the regex 3/5 (calls 1, 3, 5 right)
    assert sonnet.pass_rate == pytest.approx((3 + 0.6) / 4) and sonnet.pass_at_k["1"] == pytest.approx(0.9)
    assert sonnet.pass_at_k["5"] == 1.0 and sonnet.pass_hat_k["5"] == pytest.approx(0.75)
    assert sonnet.by_format["regex"].pass_rate == pytest.approx(0.6) and sonnet.by_format["regex"].pass_hat_k["5"] == 0.0
    assert sonnet.pass_rate_ci95 == pytest.approx(wilson_interval(3.6, 4), abs=1e-4)
    assert sonnet.cost_usd > 0 and sonnet.output_tokens > 0 and sonnet.median_latency_s > 0 and sonnet.mean_score > 0
    assert [(t.a, t.b, t.shared, t.a_better, t.b_better) for t in summary.pairwise] == [(CLAUDE, SONNET, 4, 1, 0)]
    raw = json.loads((run_dir / "summary.json").read_text())["models"][SONNET]
    assert {"cases", "pass_rate", "pass_rate_ci95", "pass_at_k", "pass_hat_k", "cost_usd"} <= raw.keys()

    html = (run_dir / "report.html").read_text()
    assert html.index('id="leaderboard"') < html.index('id="grid"') < html.index("<h2>Charts</h2>")
    assert ">3/5</td>" in html and 'id="pairwise"' in html
    junit = (run_dir / "junit.xml").read_text()
    assert f'name="regex-s3-bucket-name [{SONNET}] sample 1"' in junit and 'tests="40"' in junit

    api.reset()
    again = summary_of(run(models=MODELS, samples=5))
    assert api.count() == 0 and again.models[SONNET].pass_rate == sonnet.pass_rate  # every sample came from the cache


def test_prefect_tasks_are_per_model_and_batch(run, api):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run(models=MODELS, batch_size=2)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(limit=1, sort="START_TIME_DESC")[0]
        names = {t.name for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))}
    for model in MODELS:
        for stage in ("generate", "check", "judge", "record"):
            assert {f"{stage} · {model} · batch 0", f"{stage} · {model} · batch 1"} <= names, sorted(names)


def test_temperature_the_claude_api_cannot_take_is_reported(run, api):
    run_dir = run(models=MODELS, samples=2, temperature=0.7)
    assert all("temperature" not in r for r in api.requests)
    summary = summary_of(run_dir)
    assert summary.temperature == 0.7 and {m.temperature for m in summary.models.values()} == {None}
    assert 'id="temperature-note"' in (run_dir / "report.html").read_text()


def test_sample_zero_without_temperature_keeps_its_cache_key(run, api):
    run()  # a single-model, single-sample run: the requests as they always were
    api.reset()
    run(models=[CLAUDE], samples=3)
    assert api.count("generate") == 4 * 2  # sample 0 came from the cache; samples 1 and 2 are new


def test_regrade_keeps_model_and_sample(run, api, tmp_path, cache_dir):
    from flows.evaluate import evaluate

    api.responder = flaky_sonnet()
    parent = run(models=MODELS, samples=2)
    api.reset()
    child = Path(evaluate(regrade_config(parent, out=str(tmp_path / "runs"))))
    assert api.count("generate") == 0
    assert [(r.id, r.model, r.sample, r.verdict) for r in load_results(child)] == [
        (r.id, r.model, r.sample, r.verdict) for r in load_results(parent)
    ]
    assert summary_of(child).models[SONNET].pass_rate == summary_of(parent).models[SONNET].pass_rate


def test_old_single_model_run_still_regrades(run, api, tmp_path):
    """A run written before several models: run.json has `model`, rows have no model or sample."""
    from flows.evaluate import evaluate

    parent = run()
    settings = json.loads((parent / "run.json").read_text())
    settings["model"] = settings.pop("models")[0]
    for name in ("samples", "temperature"):
        settings.pop(name)
    (parent / "run.json").write_text(json.dumps(settings))
    rows = [json.loads(line) for line in (parent / "results.jsonl").read_text().splitlines()]
    for row in rows:
        for name in ("model", "sample"):
            row.pop(name)
            row["generation"].pop(name)
    (parent / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert RunConfig.model_validate(settings).models == [CLAUDE]
    child = Path(evaluate(regrade_config(parent, out=str(tmp_path / "runs"))))
    assert {(r.model, r.sample) for r in load_results(child)} == {(CLAUDE, 0)}
    assert summary_of(child).models[CLAUDE].pass_rate == 1.0


def test_retry_errors_with_several_models(run, api, tmp_path, cache_dir, monkeypatch):
    def sonnet_fails_regex(body):
        if body["model"] == SONNET and request_kind(body) == "generate" and prompt_of(body).startswith(REGEX_PROMPT):
            return Reply(status=400, error={"type": "invalid_request_error", "message": "no"})
        return seed_responder()(body)

    api.responder = sonnet_fails_regex
    out = tmp_path / "runs"
    first = run(models=MODELS, samples=2)
    assert summary_of(first).verdicts["ERROR"] == 2
    api.responder = seed_responder()
    api.reset()
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(cache_dir))
    args = ["run", "--dataset", str(SEED), "--model", CLAUDE, "--model", SONNET, "--samples", "2", "--out", str(out), "--retry-errors"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    retried = Path(result.output.strip().splitlines()[-1])
    assert api.count("generate") == 2  # sonnet's two regex samples; haiku's came from the cache
    rows = load_results(retried)
    assert len(rows) == 16 and {r.verdict.value for r in rows} == {"PASS"}
    assert [(r.id, r.model, r.sample) for r in rows] == [(r.id, r.model, r.sample) for r in load_results(first)]


def test_compare_pairs_multi_model_runs_by_model_and_sample(run, api, tmp_path):
    before = run(models=MODELS, samples=2)
    api.responder = flaky_sonnet()
    after = run(models=MODELS, samples=2, cache_dir=str(tmp_path / "cache-2"))
    comparison = compare_runs(before, after)
    assert comparison.shared == 16 and comparison.regressions == 1  # sonnet's regex, sample 1
    assert comparison.deltas[0].id in {f"regex-s3-bucket-name [{SONNET}]", f"regex-s3-bucket-name [{SONNET}] sample 1"}  # which sample broke depends on timing


def test_cli_takes_several_models_and_its_summary_fits_80_columns(prefect_api, api, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    api.responder = flaky_sonnet()
    args = ["run", "--dataset", str(SEED), "--model", CLAUDE, "--model", SONNET, "--samples", "5", "--temperature", "0.5",
            "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    assert json.loads((run_dir / "run.json").read_text())["models"] == MODELS
    console = Console(width=80, record=True, file=open("/dev/null", "w"))
    for line in summary_lines(summary_of(run_dir)):
        console.print(line)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    sonnet_line = next(line for line in text.splitlines() if line.startswith(SONNET))
    assert "90%" in sonnet_line and "0.90" in sonnet_line and "1.00" in sonnet_line  # pass rate, pass@1, pass@5
    assert "temperature 0.5 not applied" in text

    twice = CliRunner().invoke(app, ["run", "--dataset", str(SEED), "--model", CLAUDE, "--model", CLAUDE, "--out", str(tmp_path / "r")])
    assert twice.exit_code == 2 and "given twice" in twice.output
