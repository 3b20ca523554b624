"""Stopping a real `codegen-eval run` (the CLI, in its own process) with Ctrl-C or SIGTERM: it ends
within 10 s with exit 130 and a line saying how to resume, keeps every finished answer (a rerun makes
only the missing calls), writes a partial report, leaves the flow run Cancelled in a real Prefect
server, and no process of the run behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import SECRET, SEED
from tests.messages_api import MessagesAPI, synthetic_cases, synthetic_responder

ROOT = Path(__file__).resolve().parent.parent
CLAUDE = "claude-haiku-4-5"
CASES = 12  # x (generation + judgement) = 24 calls; 2 at a time, 0.6 s each: ~8 s of calls, stopped in the middle


def start(args: list[str], env: dict[str, str], stderr: Path) -> subprocess.Popen:
    """The CLI in a session of its own (so a test can signal it alone); stderr to a file, to be read while it runs."""
    with stderr.open("w") as sink:
        return subprocess.Popen([sys.executable, "-m", "codegen_eval.cli", "run", *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=sink, text=True, start_new_session=True)


def wait_for(predicate, timeout_s: float, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every_s)
    return None


def processes_of(pid: int) -> list[psutil.Process]:
    """The run's process and everything under it now (zygotes, sandbox jobs, a temporary Prefect server)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def stop_and_wait(proc: subprocess.Popen, sig: int, stderr: Path, again: bool = False) -> tuple[float, str, str, list[psutil.Process]]:
    """Send `sig` (twice with `again`), wait for the exit; returns seconds to exit, stdout, stderr, the processes seen."""
    seen = processes_of(proc.pid)
    sent = time.monotonic()
    proc.send_signal(sig)
    if again:
        time.sleep(0.3)
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"still running 30 s after {signal.Signals(sig).name}:\n{stderr.read_text()[-3000:]}")
    return time.monotonic() - sent, out, stderr.read_text(), seen


def left_behind(seen: list[psutil.Process]) -> list[str]:
    alive = []
    for process in seen:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def last_flow_run_state(api_url: str) -> str:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.sorting import FlowRunSort

    with SyncPrefectClient(api_url) as client:
        run = client.read_flow_runs(limit=1, sort=FlowRunSort.START_TIME_DESC)[0]
    return run.state.type.value


@pytest.fixture
def slow_api():
    server = MessagesAPI(synthetic_responder(), latency_s=0.6).start()
    yield server
    server.stop()


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    path = tmp_path / "synthetic.jsonl"
    path.write_text("".join(json.dumps(case) + "\n" for case in synthetic_cases(CASES, executable=True)))
    return path


def env_for(prefect_api: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_api, "CODEGEN_EVAL_CACHE_DIR": str(tmp_path / "cache"), **extra}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_run_ends_cancelled_keeps_its_answers_and_resumes(prefect_api, slow_api, synthetic, tmp_path, sig):
    env = env_for(prefect_api, tmp_path, ANTHROPIC_BASE_URL=slow_api.url, ANTHROPIC_API_KEY=SECRET)
    args = ["--dataset", str(synthetic), "--model", CLAUDE, "--out", str(tmp_path / "runs"), "--concurrency", "2", "--batch-size", "3"]
    proc = start(args, env, tmp_path / "stderr")
    assert wait_for(lambda: slow_api.count() >= 6, 120), (tmp_path / "stderr").read_text()
    seconds, out, err, seen = stop_and_wait(proc, sig, tmp_path / "stderr")

    assert seconds < 10 and proc.returncode == 130, (seconds, proc.returncode, err[-3000:])
    assert "to resume, run the same command: codegen-eval run --dataset" in err
    run_dir = Path(out.strip().splitlines()[-1])
    report = (run_dir / "report.html").read_text()
    assert "Partial report" in report and "The run was stopped" in report
    assert not (run_dir / "summary.json").exists()  # not a finished run to compare with or alert on
    assert last_flow_run_state(prefect_api) == "CANCELLED"
    assert left_behind(seen) == []
    made = slow_api.count()
    assert made < 2 * CASES  # it did stop starting calls
    if sig != signal.SIGINT:
        return  # the resume is the same whatever the signal: shown once

    slow_api.reset()
    again = subprocess.run([sys.executable, "-m", "codegen_eval.cli", "run", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert slow_api.count() == 2 * CASES - made  # every answer the stopped run got was kept
    summary = json.loads((Path(again.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
    assert summary["cases"] == CASES and summary["verdicts"]["PASS"] == CASES


def test_a_second_ctrl_c_ends_the_run_at_once(prefect_api, slow_api, synthetic, tmp_path):
    env = env_for(prefect_api, tmp_path, ANTHROPIC_BASE_URL=slow_api.url, ANTHROPIC_API_KEY=SECRET)
    proc = start(["--dataset", str(synthetic), "--model", CLAUDE, "--out", str(tmp_path / "runs"), "--concurrency", "2"], env, tmp_path / "stderr")
    assert wait_for(lambda: slow_api.count() >= 2, 120), (tmp_path / "stderr").read_text()
    seconds, _, err, seen = stop_and_wait(proc, signal.SIGINT, tmp_path / "stderr", again=True)
    assert seconds < 3 and proc.returncode == 130, (seconds, proc.returncode, err[-3000:])
    assert "to resume, run the same command" in err
    assert left_behind(seen) == []


@pytest.mark.local_model
def test_ctrl_c_interrupts_the_local_model_mid_generation(prefect_api, tmp_path):
    env = env_for(prefect_api, tmp_path, CODEGEN_EVAL_THREADS="1")  # one thread: a busy machine's cores are not oversubscribed
    stderr = tmp_path / "stderr"
    proc = start(["--dataset", str(SEED), "--model", "local", "--out", str(tmp_path / "runs")], env, stderr)
    try:
        # Before the long part, the run says what it is, then times its first case.
        first = wait_for(lambda: next((line for line in stderr.read_text().splitlines() if "timing the first case" in line), None), 240)
        assert first and first.startswith("4 cases × local, judge local: 4 answers to get"), stderr.read_text()
        assert wait_for(lambda: "create_completion" in stack_of(proc.pid), 120), "never seen generating"
        seconds, out, err, seen = stop_and_wait(proc, signal.SIGINT, stderr)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert seconds < 10 and proc.returncode == 130, (seconds, proc.returncode, err[-3000:])
    assert "the first case took" not in err  # the generation was cut short, not finished
    assert "to resume, run the same command" in err
    assert (Path(out.strip().splitlines()[-1]) / "report.html").is_file()
    assert last_flow_run_state(prefect_api) == "CANCELLED"
    assert left_behind(seen) == []


def stack_of(pid: int) -> str:
    """The Python stacks of a process now (py-spy, a dev dependency), to send a signal mid-generation."""
    done = subprocess.run([str(Path(sys.executable).with_name("py-spy")), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    return done.stdout
