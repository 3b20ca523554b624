"""The API key of a deployment lives in a Prefect Secret block: a deployment run through a process worker
that has no key in its environment reads it from the block, and its value then appears nowhere: not in
the flow run's parameters, logs, artifacts or events, nor in the server's database file, the run
directory, the call cache or anything the worker wrote."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import CLAUDE, SEED

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))
KEY = "sk-ant-block-only-7d3e1a9c5b"  # distinct from conftest.SECRET: this one exists only in the block
BLOCK = "anthropic-test-key"


def prefect(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    return done


def files_holding(needle: bytes, *roots: Path) -> list[str]:
    hits = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and needle in path.read_bytes():
                hits.append(str(path))
    return hits


def test_deployment_reads_the_key_from_a_secret_block_and_leaks_it_nowhere(live_prefect, api, tmp_path):
    env = {k: v for k, v in live_prefect.env.items() if k != "ANTHROPIC_API_KEY"}
    save = "import sys; from prefect.blocks.system import Secret; Secret(value=sys.stdin.read()).save(sys.argv[1], overwrite=True)"
    saved = subprocess.run([sys.executable, "-c", save, BLOCK], input=KEY, env=env, capture_output=True, text=True, timeout=120)
    assert saved.returncode == 0, saved.stderr[-2000:]
    prefect(env, "work-pool", "create", "codegen-eval", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all")

    runs, cache = tmp_path / "runs", tmp_path / "cache"
    config = {"dataset": str(SEED), "model": CLAUDE, "out": str(runs), "cache_dir": str(cache), "api_key_block": BLOCK}
    output = prefect(env, "deployment", "run", "codegen-eval/nightly-claude", "--params", json.dumps({"config": config})).stdout
    flow_run_id = next(line.split()[-1] for line in output.splitlines() if "UUID" in line)
    worker_home = tmp_path / "worker-home"
    worker_env = {**env, "ANTHROPIC_BASE_URL": api.url, "PREFECT_HOME": str(worker_home)}  # and no ANTHROPIC_API_KEY
    worker = prefect(worker_env, "worker", "start", "--pool", "codegen-eval", "--run-once", timeout=420)

    # The key reached the API, so it came from the block.
    assert api.count() == 8 and all(KEY in h.get("x-api-key", "") + h.get("authorization", "") for h in api.headers)
    (run_dir,) = runs.iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["verdicts"]["PASS"] == 4

    api_url = live_prefect.url
    flow_run = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10).json()
    assert flow_run["state"]["type"] == "COMPLETED"
    assert flow_run["parameters"]["config"]["api_key_block"] == BLOCK
    # Readable in the UI: the run's name and tags say what it evaluated.
    assert flow_run["name"].startswith(f"seed · {CLAUDE} · ")
    assert {"nightly", "dataset:seed", f"model:{CLAUDE}", f"judge:{CLAUDE}"} <= set(flow_run["tags"])
    task_runs = httpx.post(f"{api_url}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}, timeout=10).json()
    assert {f"generate · {CLAUDE} · batch 0", f"check · {CLAUDE} · batch 0", f"judge · {CLAUDE} · batch 0"} <= {t["name"] for t in task_runs}

    # Wait for the run's events to be stored, so the database holds everything the run sent.
    def run_events():
        body = {"filter": {"event": {"prefix": ["codegen-eval.run.completed"]}, "related": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 10}
        return httpx.post(f"{api_url}/events/filter", json=body, timeout=10).json()["events"]

    deadline = time.monotonic() + 60
    while not (events := run_events()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert events, "no codegen-eval.run.completed event for the deployment run"
    related = {r["prefect.resource.role"]: r for r in events[0]["related"]}
    assert related["deployment"]["prefect.resource.name"] == "nightly-claude" and "flow-run" in related

    everything = {
        "flow run": flow_run,
        "logs": httpx.post(f"{api_url}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}, timeout=10).json(),
        "artifacts": httpx.post(f"{api_url}/artifacts/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}, timeout=10).json(),
        "events": httpx.post(f"{api_url}/events/filter", json={"filter": {"related": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 50}, timeout=10).json(),
    }
    assert everything["logs"] and everything["artifacts"] and everything["events"]["events"]
    assert KEY not in json.dumps(everything)
    assert KEY not in worker.stdout + worker.stderr
    time.sleep(2)  # let SQLite's WAL settle; the -wal file is searched too
    assert list(live_prefect.home.glob("*.db*")), "the server's database file was not where expected"
    assert files_holding(KEY.encode(), live_prefect.home, worker_home, run_dir, cache) == []
    (tmp_path / "control").write_text(f"x{KEY}x")  # the search does find the key where it is
    assert files_holding(KEY.encode(), tmp_path / "control") == [str(tmp_path / "control")]
