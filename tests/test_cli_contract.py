"""The command line's contract: every option of every command in README.md's usage block takes effect.

The usage block is parsed; each documented (command, option) needs a row in CONTRACT naming the test
here that runs the real CLI with it and asserts its effect (not just that it parses): where the calls
went, what run.json, summary.json and results say, the exit status, the Prefect server's records.
A documented option without a row fails `test_every_documented_option_has_a_contract_row`, naming it;
adding an option means one README line and one row here (and its assertion in a scenario).

Runs are grouped so that one flow run shows several options; everything runs against the loopback
stand-ins (tests/messages_api.py, tests/openai_api.py) and the session's Prefect server, on two cases.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import typer.main
from typer.testing import CliRunner

from codegen_eval.cli import app
from codegen_eval.reporting.report import load_results
from tests.conftest import CLAUDE, SEED
from tests.messages_api import GOOD_VERDICT, Reply, prompt_of, request_kind, seed_responder, shape
from tests.openai_api import OpenAIAPI
from tests.openai_api import Reply as OpenAIReply

README = Path(__file__).resolve().parent.parent / "README.md"

# (command, option, the test below that shows the option taking effect). One row per documented option.
CONTRACT: list[tuple[str, str, str]] = [
    ("run", "--dataset", "test_run_models_samples_judges_rubric_concurrency_batches"),
    ("run", "--model", "test_run_models_samples_judges_rubric_concurrency_batches"),
    ("run", "--samples", "test_run_models_samples_judges_rubric_concurrency_batches"),
    ("run", "--judge-model", "test_run_models_samples_judges_rubric_concurrency_batches"),
    ("run", "--rubric", "test_run_models_samples_judges_rubric_concurrency_batches"),
    ("run", "--out", "test_run_models_samples_judges_rubric_concurrency_batches"),
    ("run", "--concurrency", "test_run_models_samples_judges_rubric_concurrency_batches"),
    ("run", "--batch-size", "test_run_models_samples_judges_rubric_concurrency_batches"),
    ("run", "--temperature", "test_run_openai_model_temperature_base_url_no_judge"),
    ("run", "--base-url", "test_run_openai_model_temperature_base_url_no_judge"),
    ("run", "--no-judge", "test_run_openai_model_temperature_base_url_no_judge"),
    ("run", "--timeout", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--max-attempts", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--fail-under", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--retry-errors", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--batch", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--task-runner", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--dask-address", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--api-key-block", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--alert-drop", "test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert"),
    ("run", "--max-cost", "test_run_and_grade_max_cost"),
    ("run", "--pass-at", "test_run_pass_at_partial_at_calibration"),
    ("run", "--partial-at", "test_run_pass_at_partial_at_calibration"),
    ("run", "--calibration", "test_run_pass_at_partial_at_calibration"),
    ("calibrate", "--judge-model", "test_run_pass_at_partial_at_calibration"),
    ("calibrate", "--labels", "test_run_pass_at_partial_at_calibration"),
    ("calibrate", "--dataset", "test_run_pass_at_partial_at_calibration"),
    ("calibrate", "--rubric", "test_run_pass_at_partial_at_calibration"),
    ("calibrate", "--write", "test_run_pass_at_partial_at_calibration"),
    ("calibrate", "--pass-at", "test_run_pass_at_partial_at_calibration"),
    ("calibrate", "--concurrency", "test_run_pass_at_partial_at_calibration"),
    ("grade", "--outputs", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--dataset", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--judge-model", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--rubric", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--out", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--concurrency", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--batch-size", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--pass-at", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--partial-at", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--calibration", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--fail-under", "test_grade_judges_rubric_thresholds_calibration_batches"),
    ("grade", "--max-cost", "test_run_and_grade_max_cost"),
    ("grade", "--base-url", "test_grade_openai_judge_base_url"),
    ("grade", "--no-judge", "test_grade_no_judge_then_regrade_and_compare"),
    ("regrade", "--rubric", "test_grade_no_judge_then_regrade_and_compare"),
    ("regrade", "--judge-model", "test_grade_no_judge_then_regrade_and_compare"),
    ("regrade", "--calibration", "test_grade_no_judge_then_regrade_and_compare"),
    ("regrade", "--alert-drop", "test_grade_no_judge_then_regrade_and_compare"),
    ("regrade", "--fail-under", "test_grade_no_judge_then_regrade_and_compare"),
    ("regrade", "--no-judge", "test_grade_no_judge_then_regrade_and_compare"),
    ("regrade", "--out", "test_grade_no_judge_then_regrade_and_compare"),
    ("compare", "--out", "test_grade_no_judge_then_regrade_and_compare"),
    ("validate", "--broken", "test_validate_broken"),
    ("alerts create", "--webhook", "test_alerts_create_webhook_name"),
    ("alerts create", "--name", "test_alerts_create_webhook_name"),
]

GENERATORS = [CLAUDE, "claude-sonnet-4-5"]
JUDGES = ["claude-opus-4-5", "claude-opus-4-1"]
RUBRIC = "CONTRACT-RUBRIC {{ format }}\nTask: {{ task }}\nCriteria: {{ criteria }}\nReference: {{ expected }}\n<output>\n{{ output }}\n</output>\n"


# ---- the usage block and the rows ----------------------------------------------------------------

def documented_options() -> dict[str, set[str]]:
    """{command: its --options} from the ```bash block of README.md's "## Usage" section."""
    section = README.read_text(encoding="utf-8").split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    options: dict[str, set[str]] = {}
    command = ""
    for line in block.splitlines():
        if line.startswith("codegen-eval "):
            words = line.split()[1:]
            command = " ".join(w for w in words[: next(i for i, w in enumerate(words) if not w.isalpha() or not w.islower())])
        options.setdefault(command, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))
    return options


def test_the_usage_block_is_parsed():
    usage = documented_options()
    assert set(usage) == {"run", "grade", "regrade", "compare", "calibrate", "validate", "alerts create"}
    assert {"--judge-model", "--task-runner", "--api-key-block"} <= usage["run"] and usage["alerts create"] == {"--webhook", "--name"}


def test_every_documented_option_has_a_contract_row():
    rows = {(command, option) for command, option, _ in CONTRACT}
    missing = sorted(f"{command} {option}" for command, options in documented_options().items() for option in options
                     if (command, option) not in rows)
    assert not missing, f"documented in README's usage block, with no row in CONTRACT: {', '.join(missing)}"


def test_every_row_is_documented_and_its_test_uses_the_option():
    usage = documented_options()
    for command, option, test in CONTRACT:
        assert option in usage.get(command, set()), f"CONTRACT row {command} {option}: not in README's usage block"
        assert test in globals(), f"CONTRACT row {command} {option}: no test {test}"
        assert f'"{option}"' in inspect.getsource(globals()[test]), f"CONTRACT row {command} {option}: {test} never passes {option}"


def test_every_option_of_the_cli_is_documented():
    """The converse: an option the CLI has but the usage block lacks is named."""
    usage = documented_options()
    undocumented = []

    def walk(group, prefix: str) -> None:
        for name, command in group.commands.items():
            path = f"{prefix} {name}".strip()
            if hasattr(command, "commands"):
                walk(command, path)
                continue
            for param in command.params:
                for opt in param.opts:
                    if opt.startswith("--") and opt != "--help" and opt not in usage.get(path, set()):
                        undocumented.append(f"{path} {opt}")

    walk(typer.main.get_command(app), "")
    assert not undocumented, f"options of the CLI missing from README's usage block: {', '.join(sorted(undocumented))}"


# ---- helpers ---------------------------------------------------------------------------------------

def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output[-3000:]
    return result


def run_dir_of(result) -> Path:
    return Path(result.output.strip().splitlines()[-1])


def two_cases(tmp_path: Path) -> Path:
    """The seed's first two cases, each task marked, so a prompt shows which dataset it came from."""
    rows = [json.loads(line) for line in SEED.read_text().splitlines()[:2]]
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps({**row, "task": row["task"] + " (contract dataset)"}) + "\n" for row in rows))
    return path


def references(dataset: Path, tmp_path: Path) -> Path:
    """Each case's reference as a recorded output."""
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    path = tmp_path / "outputs.jsonl"
    path.write_text("".join(json.dumps({"id": r["id"], "cid": "ref", "output": r["expected"]}) + "\n" for r in rows))
    return path


class InFlight:
    """Wraps a responder; `most` is the largest number of requests it was answering at once."""

    def __init__(self, inner, hold_s: float = 0.03):
        self.inner, self.hold_s, self.now, self.most, self._lock = inner, hold_s, 0, 0, threading.Lock()

    def __call__(self, body):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(self.hold_s)
            return self.inner(body)
        finally:
            with self._lock:
                self.now -= 1


def judge_scoring(score) -> callable:
    """The seed's code for generation requests; `score(body)` as the judge's verdict."""

    def respond(body):
        if request_kind(body) == "judge":
            return Reply(text=shape(body, json.dumps({**GOOD_VERDICT, "score": score(body)}) + "\n"))
        return seed_responder()(body)

    return respond


def task_run_names() -> list[str]:
    """The task runs of the newest flow run on the Prefect server."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(limit=1, sort="START_TIME_DESC")[0]
        return [t.name for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))]


def events(prefect_api: str, name: str) -> list[dict]:
    body = {"filter": {"event": {"name": [name]}, "order": "ASC"}, "limit": 50}
    return httpx.post(f"{prefect_api}/events/filter", json=body, timeout=10).json()["events"]


def wait_for(predicate, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return value


@pytest.fixture
def env(prefect_api, api, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    return prefect_api


# ---- scenarios: each a few CLI invocations, each asserting what its options did -------------------

def test_run_models_samples_judges_rubric_concurrency_batches(env, api, tmp_path):
    dataset, rubric, out = two_cases(tmp_path), tmp_path / "judge.j2", tmp_path / "runs"
    rubric.write_text(RUBRIC)
    api.responder = in_flight = InFlight(seed_responder())
    result = cli("run", "--dataset", dataset, "--model", GENERATORS[0], "--model", GENERATORS[1], "--samples", "2",
                 "--judge-model", JUDGES[0], "--judge-model", JUDGES[1], "--rubric", rubric, "--out", out,
                 "--concurrency", "1", "--batch-size", "1")
    run_dir = run_dir_of(result)
    assert run_dir.parent == out  # --out
    rows = load_results(run_dir)
    ids = [json.loads(line)["id"] for line in dataset.read_text().splitlines()]
    assert sorted({r.id for r in rows}) == sorted(ids)  # --dataset
    assert Counter((r.id, r.model) for r in rows) == {(i, m): 2 for i in ids for m in GENERATORS}  # --samples, --model
    assert {r.sample for r in rows} == {0, 1}
    generate = [r for r in api.requests if request_kind(r) == "generate"]
    judge = [r for r in api.requests if request_kind(r) == "judge"]
    assert {r["model"] for r in generate} == set(GENERATORS) and {r["model"] for r in judge} == set(JUDGES)  # --judge-model
    assert all("(contract dataset)" in prompt_of(r) for r in generate)
    assert judge and all("CONTRACT-RUBRIC" in prompt_of(r) for r in judge)  # --rubric
    assert json.loads((run_dir / "run.json").read_text())["judge_models"] == JUDGES
    assert json.loads((run_dir / "summary.json").read_text())["judge_models"] == JUDGES
    assert all(set(r.judges) == set(JUDGES) for r in rows)
    assert in_flight.most == 1  # --concurrency
    generate_tasks = sorted(n for n in task_run_names() if n.startswith("generate"))  # --batch-size: a task per case and model
    assert generate_tasks == sorted(f"generate · {m} · batch {b}" for m in GENERATORS for b in (0, 1))


def test_run_openai_model_temperature_base_url_no_judge(env, api, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server = OpenAIAPI().start()
    try:
        result = cli("run", "--dataset", two_cases(tmp_path), "--model", "openai:contract", "--base-url", server.url,
                     "--temperature", "0.7", "--judge-model", CLAUDE, "--no-judge", "--out", tmp_path / "runs")
    finally:
        server.stop()
    assert len(server.requests) == 2  # --base-url: both generations went there
    assert {r["temperature"] for r in server.requests} == {0.7}  # --temperature
    assert api.count() == 0  # --no-judge: the judge CLAUDE was never called
    assert {r.judge.status.value for r in load_results(run_dir_of(result))} == {"SKIPPED"}
