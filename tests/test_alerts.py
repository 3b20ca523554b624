"""Regression alerts for real: run events on a `prefect server start`, an automation made by
`codegen-eval alerts create`, and a loopback webhook that must receive one POST for a worse run only."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from codegen_eval.cli import app
from codegen_eval.orchestration.events import RUN_COMPLETED, RUN_REGRESSED, find_regression
from codegen_eval.reporting.statistics import wilson_interval
from tests.conftest import CLAUDE, SECRET, SEED
from tests.messages_api import REGEX_PROMPT, Reply, seed_responder

ROOT = Path(__file__).resolve().parent.parent


# --- the decision, on hand-made runs -------------------------------------------------------------

def write_run(path: Path, verdicts: list[str]) -> Path:
    path.mkdir(parents=True)
    rows = [{"id": f"case-{i}", "format": "python", "difficulty": "easy", "verdict": v, "score": 9.0 if v == "PASS" else 2.0}
            for i, v in enumerate(verdicts)]
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mcnemar_flags_a_significant_loss_and_not_an_even_swap(tmp_path):
    before = write_run(tmp_path / "a", ["PASS"] * 10)
    worse = write_run(tmp_path / "b", ["FAIL"] * 6 + ["PASS"] * 4)  # 6 discordant pairs, all lost: p = 0.031
    regression = find_regression(before, worse)
    assert regression is not None and regression.reasons == ["mcnemar"] and regression.p_value == pytest.approx(0.03125)
    assert regression.regressed == [f"case-{i}" for i in range(6)] and (regression.pass_rate_before, regression.pass_rate_after) == (1.0, 0.4)
    assert find_regression(before, write_run(tmp_path / "c", ["FAIL"] * 5 + ["PASS"] * 5)) is None  # p = 0.0625
    mixed = write_run(tmp_path / "d", ["FAIL"] * 3 + ["PASS"] * 7)
    swapped = write_run(tmp_path / "e", ["PASS"] * 3 + ["FAIL"] * 3 + ["PASS"] * 4)
    assert find_regression(mixed, swapped) is None  # 3 lost, 3 won


def test_alert_drop_flags_a_small_run_that_mcnemar_cannot(tmp_path):
    before = write_run(tmp_path / "a", ["PASS"] * 4)
    after = write_run(tmp_path / "b", ["PASS"] * 3 + ["PARTIAL"])
    assert find_regression(before, after) is None  # one discordant pair proves nothing
    assert find_regression(before, after, alert_drop=0.25) is None  # a drop of exactly 25 % is not beyond 25 %
    regression = find_regression(before, after, alert_drop=0.2)
    assert regression is not None and regression.reasons == ["drop"] and regression.regressed == ["case-3"] and regression.p_value == 1.0


def test_alerts_create_refuses_bad_input_in_one_line(monkeypatch):
    for args, message in ((["--webhook", "ftp://x"], "expected an http:// or https:// URL"),
                          (["--webhook", "http://127.0.0.1:9/", "--name", "Bad Name"], "lowercase letters, digits and dashes")):
        result = CliRunner().invoke(app, ["alerts", "create", *args], env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1, result.output


# --- for real: server, automation, webhook -------------------------------------------------------

class Receiver:
    """A loopback webhook that records each POST (arrival time, JSON body)."""

    def __init__(self):
        self.posts: list[tuple[float, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.posts.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def cli(env: dict, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "codegen_eval.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def read_events(url: str, prefix: str = "codegen-eval.") -> list[dict]:
    body = {"filter": {"event": {"prefix": [prefix]}, "order": "ASC"}, "limit": 50}
    return httpx.post(f"{url}/events/filter", json=body, timeout=10).json()["events"]


def wait_for(predicate, timeout_s: float, every_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every_s)
    return predicate()


def broken_regex(body):
    if body["messages"][0]["content"].startswith(REGEX_PROMPT):
        return Reply(text="^[a-z.-]+$\n```")
    return seed_responder()(body)


def test_a_worse_run_posts_one_alert_and_a_steady_run_none(live_prefect, api, tmp_path):
    receiver = Receiver()
    try:
        created = cli(live_prefect.env, "alerts", "create", "--webhook", receiver.url, "--name", "test-regression")
        again = cli(live_prefect.env, "alerts", "create", "--webhook", receiver.url, "--name", "test-regression")
        assert "created" in created.stderr and "updated" in again.stderr
        assert created.stdout.strip() == again.stdout.strip()  # the same automation, updated in place
        automations = httpx.post(f"{live_prefect.url}/automations/filter", json={}, timeout=10).json()
        assert [a["name"] for a in automations].count("test-regression") == 1
        time.sleep(1)  # the server's trigger service picks up new automations on its next refresh

        env = {**live_prefect.env, "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": SECRET, "CODEGEN_EVAL_CACHE_DIR": str(tmp_path / "cache")}
        args = ["run", "--dataset", str(SEED), "--model", CLAUDE, "--out", str(tmp_path / "runs"), "--alert-drop", "0.2"]
        first = Path(cli(env, *args).stdout.split()[-1])
        steady = Path(cli(env, *args).stdout.split()[-1])  # the same answers (from the cache): not worse
        api.responder = broken_regex  # the regex case now fails its tests: PASS 4 -> PASS 3, a 25 % drop
        worse_proc = cli({**env, "CODEGEN_EVAL_CACHE_DIR": str(tmp_path / "cache-2")}, *args)
        ended = time.time()
        worse = Path(worse_proc.stdout.split()[-1])

        assert wait_for(lambda: receiver.posts, 60), "no webhook POST within 60 s of the run's end"
        delay_from_exit = receiver.posts[0][0] - ended
        time.sleep(5)  # anything else (a second POST, or one for the steady run) would have come by now
        assert len(receiver.posts) == 1, receiver.posts
        text = receiver.posts[0][1]["text"]
        assert text.startswith("codegen-eval regression: " + str(SEED)) and CLAUDE in text
        assert f"run {worse.name}" in text and f"since run {steady.name}" in text
        assert "pass rate 100% → 75% on 4 shared cases" in text and "McNemar p = 1" in text
        assert "regressed cases (1): regex-s3-bucket-name" in text
        assert f"report: {worse.resolve() / 'report.html'}" in text and f"compare-{steady.name}.html" in text

        events = wait_for(lambda: (e := read_events(live_prefect.url)) and len(e) >= 4 and e, 30)
        completed = [e for e in events if e["event"] == RUN_COMPLETED]
        regressed = [e for e in events if e["event"] == RUN_REGRESSED]
        assert [e["resource"]["prefect.resource.id"] for e in completed] == [f"codegen-eval.run.{r.name}" for r in (first, steady, worse)]
        assert [e["resource"]["prefect.resource.id"] for e in regressed] == [f"codegen-eval.run.{worse.name}"]
        payload = completed[-1]["payload"]
        assert payload["pass_rate"] == 0.75 and payload["verdicts"]["PASS"] == 3 and payload["run_dir"] == str(worse.resolve())
        assert payload["pass_rate_ci95"] == [round(x, 4) for x in wilson_interval(3, 4)] and payload["cost_usd"] > 0
        resource = completed[-1]["resource"]
        assert (resource["codegen-eval.dataset"], resource["codegen-eval.model"], resource["codegen-eval.judge"]) == ("seed", CLAUDE, CLAUDE)
        roles = {r["prefect.resource.role"] for r in completed[-1]["related"]}
        assert {"flow-run", "flow", "task-run", "tag"} <= roles
        alert = regressed[0]["payload"]
        assert alert["regressed_cases"] == ["regex-s3-bucket-name"] and alert["p_value"] == 1.0 and alert["reasons"] == ["drop"]
        assert alert["comparison"] == (worse / f"compare-{steady.name}.html").resolve().as_uri()
        delay_from_event = receiver.posts[0][0] - datetime.fromisoformat(regressed[0]["occurred"]).timestamp()
        print(f"webhook POST {delay_from_event:.1f} s after the regressed event, {delay_from_exit:.1f} s after the CLI exited")
        assert delay_from_event < 60
        # The CLI's terminal stays Prefect-quiet: no server or run-log lines, and the log is in the run directory.
        assert "Traceback" not in worse_proc.stderr and "| INFO" not in worse_proc.stderr
        assert (worse / "prefect.log").is_file() and "Finished in state Completed" in (worse / "prefect.log").read_text()
    finally:
        receiver.stop()
