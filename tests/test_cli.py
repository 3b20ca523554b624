from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from codegen_eval.cli import app
from tests.conftest import CLAUDE, SEED

ROOT = Path(__file__).resolve().parent.parent


def test_bad_dataset_fails_before_any_call_and_writes_nothing(api, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(SEED.read_text().splitlines()[0] + "\n" + '{"id": "x", "format": "yaml"}\n')
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "--dataset", str(bad), "--model", CLAUDE, "--out", str(out)])
    assert result.exit_code == 2
    first_line = result.output.strip().splitlines()[0]
    assert f"{bad}:2: field 'task': missing required field" in first_line
    assert api.count() == 0 and not out.exists()


def test_missing_key_for_claude_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["run", "--dataset", str(SEED), "--model", CLAUDE, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "ANTHROPIC_API_KEY is not set" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_rubric_is_rejected_up_front(api, tmp_path):
    rubric = tmp_path / "judge.j2"
    rubric.write_text("{{ task }} {{ nonsense }}")
    result = CliRunner().invoke(app, ["run", "--dataset", str(SEED), "--model", CLAUDE, "--rubric", str(rubric), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "'nonsense' is undefined" in result.output and api.count() == 0


def test_run_prints_the_run_directory_last(prefect_api, api, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "CODEGEN_EVAL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(SEED), "--model", CLAUDE, "--out", str(tmp_path / "runs"), "--concurrency", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs" and (run_dir / "report.html").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["verdicts"]["PASS"] == 4
    assert "judge" in proc.stderr and "4/4" in proc.stderr  # the progress bars
    # The CLI's flow run stores its parameters as Prefect encodes them.
    from prefect import Flow, get_client

    from codegen_eval.config import RunConfig
    from flows.evaluate import evaluate

    with get_client(sync_client=True) as client:
        stored = client.read_flow_runs(limit=1, sort="START_TIME_DESC")[0].parameters["config"]
    config = RunConfig.model_validate(stored)
    assert config.models == [CLAUDE] and config.concurrency == 2 and config.out == str(tmp_path / "runs")
    assert stored == Flow.serialize_parameters(evaluate, {"config": config})["config"]


def test_a_run_started_here_goes_without_prefect_heartbeats_unless_they_are_asked_for(monkeypatch):
    """Their join costs a cached re-run ~0.5 s; deployments keep them (they do not start here)."""
    from prefect.settings import get_current_settings

    from codegen_eval.cli import _without_heartbeats

    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    monkeypatch.delenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", raising=False)
    assert get_current_settings().flows.heartbeat_frequency is not None
    with _without_heartbeats():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency is not None
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with _without_heartbeats():
        assert get_current_settings().flows.heartbeat_frequency is not None


def test_with_no_prefect_server_a_run_starts_prefects_own_quietly_and_keeps_its_history(api, tmp_path):
    """The main job on a fresh machine: no PREFECT_API_URL. Prefect's own temporary server records the
    run; the terminal shows no Prefect lines; the flow and its task runs are in $PREFECT_HOME's database."""
    import sqlite3

    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), CODEGEN_EVAL_CACHE_DIR=str(tmp_path / "cache"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    proc = subprocess.run(
        [sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(SEED), "--model", CLAUDE, "--out", str(tmp_path / "runs"), "--no-judge"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "| INFO" not in proc.stderr and "temporary server" not in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert "Finished in state Completed" in (run_dir / "prefect.log").read_text()
    with sqlite3.connect(home / "prefect.db") as db:
        flow_runs = db.execute("select state_type from flow_run").fetchall()
        task_runs = db.execute("select count(*) from task_run where state_type = 'COMPLETED'").fetchone()[0]
        events = db.execute("select count(*) from events where event like 'codegen-eval.%'").fetchone()[0]
    assert flow_runs == [("COMPLETED",)] and task_runs >= 4 and events >= 1


def test_run_takes_judge_model_by_name_and_repeated(api, tmp_path):
    """`--judge-model` on `run` is a list, as on `grade`: a name is one judge (it was walked letter by
    letter: "--judge-model l given twice"), and only a name given twice is refused. The bad dataset
    stops each run in preflight, so no flow starts."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    base = ["run", "--dataset", str(bad), "--model", CLAUDE, "--out", str(tmp_path / "r")]
    one = CliRunner().invoke(app, [*base, "--judge-model", "local"])
    assert one.exit_code == 2 and "given twice" not in one.output and f"{bad}:1:" in one.output, one.output
    two = CliRunner().invoke(app, [*base, "--judge-model", "local", "--judge-model", "claude-sonnet-4-5"])
    assert two.exit_code == 2 and "given twice" not in two.output and f"{bad}:1:" in two.output, two.output
    twice = CliRunner().invoke(app, [*base, "--judge-model", "local", "--judge-model", "local"])
    assert twice.exit_code == 2 and "--judge-model local given twice" in twice.output and api.count() == 0
