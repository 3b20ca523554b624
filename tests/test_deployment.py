"""prefect.yaml for real: a Prefect server on loopback, `prefect deploy --all`, a triggered deployment
run executed by a process worker, and its history read back through the Prefect client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CLAUDE, SECRET, SEED
from tests.loopback import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    if not wait_healthy(url + "/health"):
        server.kill()
        pytest.fail("the Prefect server did not start within 180 s")
    yield url, {**env, "PREFECT_API_URL": url}
    os.killpg(server.pid, 9)
    server.wait()


def prefect(env, *args, timeout=180):
    done = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def test_deployment_runs_through_a_worker_and_lands_in_history(prefect_server, api, tmp_path):
    url, env = prefect_server
    prefect(env, "work-pool", "create", "codegen-eval", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all")
    config = {"dataset": str(SEED), "model": CLAUDE, "out": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")}
    started = time.monotonic()
    output = prefect(env, "deployment", "run", "codegen-eval/nightly", "--params", json.dumps({"config": config}))
    flow_run_id = next(line.split()[-1] for line in output.splitlines() if "UUID" in line)
    worker_env = {**env, "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": SECRET}
    prefect(worker_env, "worker", "start", "--pool", "codegen-eval", "--run-once", timeout=300)
    wall = time.monotonic() - started

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    assert flow_run.state.is_completed(), flow_run.state
    names = {t.name for t in task_runs}  # stage, model and batch, readable in the UI
    assert {f"{stage} · {CLAUDE}" for stage in ("start-run", "report")} <= names and {"sandbox-self-test", "load-dataset"} <= names
    assert {f"{stage} · {CLAUDE} · batch 0" for stage in ("generate", "check", "judge", "record")} <= names
    assert {a.key for a in artifacts} >= {"verdicts-seed-claude-haiku-4-5", "summary-seed-claude-haiku-4-5", "progress-seed-claude-haiku-4-5"}
    assert next(a for a in artifacts if a.key.startswith("progress-")).data == 100.0
    markdown = next(a for a in artifacts if a.key.startswith("summary-")).data
    assert "| python | 2 | 100% |" in markdown and "| generation | 4 | 0 |" in markdown and "report.html" in markdown
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and json.loads((run_dirs[0] / "summary.json").read_text())["verdicts"]["PASS"] == 4
    print(f"deployment run through a worker: {wall:.1f} s wall")

    # The on-demand re-grade deployment, on that run: no generation call.
    api.reset()
    output = prefect(env, "deployment", "run", "codegen-eval-regrade/regrade", "--params",
                     json.dumps({"run_dir": str(run_dirs[0]), "out": str(tmp_path / "runs")}))
    prefect(worker_env, "worker", "start", "--pool", "codegen-eval", "--run-once", timeout=300)
    child = max((tmp_path / "runs").iterdir())
    summary = json.loads((child / "summary.json").read_text())
    assert summary["parent"] == str(run_dirs[0]) and summary["generation"]["calls_made"] == 0
    assert api.count("generate") == 0
