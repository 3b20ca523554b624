"""Re-grading, comparison, exports and --fail-under (parts of the Prefect-operations issue)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from codegen_eval.cli import app
from codegen_eval.reporting.compare import compare_runs
from codegen_eval.reporting.statistics import mcnemar_exact
from tests.conftest import CLAUDE, SEED, stored_calls
from tests.messages_api import REGEX_PROMPT, Reply, seed_responder


def broken_regex(body):
    if body["messages"][0]["content"].startswith(REGEX_PROMPT):
        return Reply(text="^[a-z.-]+$\n```")
    return seed_responder()(body)


def test_regrade_makes_no_generation_calls_and_links_its_parent(run, api, tmp_path, cache_dir, monkeypatch):
    parent = run()
    rubric = tmp_path / "new_judge.j2"
    rubric.write_text("Grade again.\n{{ task }}\n{{ output }}\n{{ expected }}\n{{ criteria }}\nJSON please.")
    api.reset()
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(cache_dir))
    result = CliRunner().invoke(app, ["regrade", str(parent), "--rubric", str(rubric), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    child = Path(result.output.strip().splitlines()[-1])
    summary = json.loads((child / "summary.json").read_text())
    assert summary["generation"]["calls_made"] == 0 and summary["judging"]["calls_made"] == 4
    assert api.count("generate") == 0 and api.count("judge") == 4
    assert json.loads((child / "run.json").read_text())["regrade_of"] == str(parent) and summary["parent"] == str(parent)
    assert str(parent) in (child / "report.html").read_text()


def test_compare_puts_regressions_first_with_a_paired_test(run, api, tmp_path):
    before = run()
    api.responder = broken_regex
    after = run(cache_dir=str(tmp_path / "other-cache"))
    comparison = compare_runs(before, after)
    assert comparison.shared == 4 and comparison.regressions == 1 and comparison.improvements == 0
    assert comparison.deltas[0].id == "regex-s3-bucket-name" and comparison.deltas[0].change == "regression"
    assert comparison.mcnemar_p == 1.0  # one discordant pair proves nothing
    assert comparison.pass_rates["format"]["regex"][:2] == (1.0, 0.0)
    assert json.loads((after / "summary.json").read_text())["previous_run"] == before.name  # linked automatically
    assert f'href="compare-{before.name}.html"' in (after / "report.html").read_text()
    result = CliRunner().invoke(app, ["compare", str(before), str(after)])
    page = Path(result.output.strip().splitlines()[-1])
    assert result.exit_code == 0 and page.parent == after
    html = page.read_text()
    assert html.index("regex-s3-bucket-name") < html.index("s3-list-buckets") and "McNemar exact p = <b>1.0000" in html


def test_mcnemar_exact():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625)
    assert mcnemar_exact(10, 1) == pytest.approx(24 / 2048)
    assert mcnemar_exact(3, 3) == 1.0


def test_csv_and_junit_exports(run, api):
    api.responder = broken_regex
    run_dir = run()
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    assert [r["id"] for r in rows][:1] == ["s3-list-buckets"] and len(rows) == 4
    assert {r["verdict"] for r in rows} == {"PASS", "PARTIAL"} and rows[0]["strategy"] == "prefill"  # partial credit
    suite = ElementTree.parse(run_dir / "junit.xml").getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "1" and suite.get("errors") == "0"
    failed = [case for case in suite.iter("testcase") if case.find("failure") is not None]
    assert [case.get("name") for case in failed] == ["regex-s3-bucket-name"]
    assert "should match but did not" in failed[0].find("failure").text


def test_fail_under_exits_non_zero_but_still_reports(prefect_api, api, tmp_path, monkeypatch):
    api.responder = broken_regex
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    args = ["run", "--dataset", str(SEED), "--model", CLAUDE, "--out", str(tmp_path / "runs")]
    failing = CliRunner().invoke(app, [*args, "--fail-under", "0.9"])
    assert failing.exit_code == 1 and "under --fail-under" in failing.output
    passing = CliRunner().invoke(app, [*args, "--fail-under", "0.75"])
    assert passing.exit_code == 0


def test_kill_9_then_rerun_repeats_no_finished_call(prefect_api, api, tmp_path):
    """The cache is the journal: every answer is stored as it arrives, so a run killed at any point
    and started again makes exactly the calls that had not finished."""
    import os
    import signal
    import subprocess
    import sys
    import time


    def slow(body):
        time.sleep(0.4)
        return seed_responder()(body)

    api.responder = slow
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "CODEGEN_EVAL_CACHE_DIR": str(cache_dir)}
    command = [sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(SEED), "--model", CLAUDE,
               "--out", str(tmp_path / "runs"), "--concurrency", "1"]
    first = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while api.count() < 4 and time.monotonic() < deadline:  # half of the 8 calls under way
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = stored_calls(cache_dir)
    assert 3 <= finished < 8
    api.reset()
    second = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert api.count() == 8 - finished  # nothing that had finished was asked again
    summary = json.loads((Path(second.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
    assert summary["verdicts"]["PASS"] == 4
    assert summary["generation"]["calls_cached"] + summary["judging"]["calls_cached"] == finished


def test_retry_errors_reruns_only_the_errored_cases(run, api, tmp_path, cache_dir, monkeypatch):
    def flaky(body):
        if body["messages"][0]["content"].startswith("Write AWS") and "upload_to_s3" in body["messages"][0]["content"]:
            return Reply(status=400, error={"type": "invalid_request_error", "message": "flaky for test"})
        return seed_responder()(body)

    api.responder = flaky
    first_dir = run()
    assert json.loads((first_dir / "summary.json").read_text())["verdicts"]["ERROR"] == 1
    api.responder = seed_responder()
    api.reset()
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(cache_dir))
    second = CliRunner().invoke(app, ["run", "--dataset", str(SEED), "--model", CLAUDE, "--out", str(tmp_path / "runs"), "--retry-errors"])
    assert second.exit_code == 0, second.output
    second_dir = Path(second.output.strip().splitlines()[-1])
    summary = json.loads((second_dir / "summary.json").read_text())
    assert summary["cases"] == 4 and summary["verdicts"]["PASS"] == 4
    assert api.count() == 2 and summary["generation"]["calls_made"] == 1  # one generation and its judgement
    assert json.loads((second_dir / "run.json").read_text())["retry_errors_of"] == str(first_dir)
