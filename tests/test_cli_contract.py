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
from codegen_eval.reporting.runs import load_results
from tests.conftest import CLAUDE, DATASET, SEED
from tests.messages_api import GOOD_VERDICT, Reply, prompt_of, request_kind, seed_responder, shape
from tests.openai_api import OpenAIAPI
from tests.openai_api import Reply as OpenAIReply

README = Path(__file__).resolve().parent.parent / "README.md"

# (command, option, the test below that shows the option taking effect). One row per documented option.
CONTRACT: list[tuple[str, str, str]] = [
    ("run", "--dataset", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--model", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--samples", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--judge-model", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--rubric", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--out", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--concurrency", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--batch-size", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
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
    ("run", "--pass-at", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--partial-at", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("run", "--calibration", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("calibrate", "--judge-model", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("calibrate", "--labels", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("calibrate", "--dataset", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("calibrate", "--rubric", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("calibrate", "--write", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("calibrate", "--pass-at", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
    ("calibrate", "--concurrency", "test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches"),
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
    ("validate", "--mutants", "test_validate_mutants"),
    ("validate", "--cache-url", "test_cache_url_on_every_command"),
    ("run", "--cache-url", "test_cache_url_on_every_command"),
    ("grade", "--cache-url", "test_cache_url_on_every_command"),
    ("regrade", "--cache-url", "test_cache_url_on_every_command"),
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

def cli(*args: str, code: int | None = 0):
    """The CLI's result; its exit code must be `code` (None: any)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert code is None or result.exit_code == code, result.output[-3000:]
    return result


def run_dir_of(result) -> Path:
    return Path(result.output.strip().splitlines()[-1])


def two_cases(tmp_path: Path) -> Path:
    """The seed's first two cases, each task marked, so a prompt shows which dataset it came from."""
    rows = [json.loads(line) for line in SEED.read_text().splitlines()[:2]]
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps({**row, "task": row["task"] + " (contract dataset)"}) + "\n" for row in rows))
    return path


REFERENCES = {json.loads(line)["id"]: json.loads(line)["expected"] for line in SEED.read_text().splitlines()}


def output_of(body) -> str:
    """The candidate in a judge prompt (the shipped rubric and RUBRIC both put it in <output> tags)."""
    return re.search(r"<output>\n(.*)\n</output>", prompt_of(body), re.S).group(1)


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


def regressed_events(prefect_api: str, run_dir: Path) -> list[dict]:
    """The codegen-eval.run.regressed events the Prefect server holds for this run."""
    body = {"filter": {"event": {"name": ["codegen-eval.run.regressed"]}, "resource": {"id": [f"codegen-eval.run.{run_dir.name}"]}}, "limit": 10}
    return httpx.post(f"{prefect_api}/events/filter", json=body, timeout=10).json()["events"]


def wait_for(predicate, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return value


@pytest.fixture
def env(prefect_api, api, tmp_path, monkeypatch) -> str:
    """The session's Prefect server (its URL), the loopback Messages API, and a cache of this test's own."""
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    return prefect_api


# ---- scenarios: each a few CLI invocations, each asserting what its options did -------------------

def test_calibrate_then_run_models_samples_judges_rubric_thresholds_batches(env, api, tmp_path):
    dataset, rubric, out = two_cases(tmp_path), tmp_path / "judge.j2", tmp_path / "runs"
    rubric.write_text(RUBRIC)
    ids = [json.loads(line)["id"] for line in dataset.read_text().splitlines()]

    # calibrate: the judge gives references 9, a stub 3, on 3 labelled items (not the 4 shipped ones).
    labels, saved, responder = calibration_for(JUDGES[0], dataset, tmp_path)
    api.responder = in_flight = InFlight(responder)
    calibrated = cli("calibrate", "--judge-model", JUDGES[0], "--labels", labels, "--dataset", dataset, "--rubric", rubric,
                     "--write", saved, "--pass-at", "5", "--concurrency", "1")
    assert f"judge {JUDGES[0]} on 3 labelled items ({labels})" in calibrated.output  # --labels
    assert {r["model"] for r in api.requests} == {JUDGES[0]} and api.count() == 3  # --judge-model
    assert all("CONTRACT-RUBRIC" in prompt_of(r) and "(contract dataset)" in prompt_of(r) for r in api.requests)  # --rubric, --dataset
    calibration = json.loads(saved.read_text())  # --write
    assert (calibration["judge_model"], calibration["threshold"], calibration["at_default"]["threshold"]) == (JUDGES[0], 9, 5)  # --pass-at
    assert in_flight.most == 1  # --concurrency

    api.responder = in_flight = InFlight(seed_responder())  # every verdict 9: the score is (9 + 10) / 2 = 9.5
    api.reset()
    result = cli("run", "--dataset", dataset, "--model", GENERATORS[0], "--model", GENERATORS[1], "--samples", "2",
                 "--judge-model", JUDGES[0], "--judge-model", JUDGES[1], "--rubric", rubric, "--out", out,
                 "--concurrency", "1", "--batch-size", "1", "--pass-at", "9.7", "--partial-at", "9.6", "--calibration", saved)
    run_dir = run_dir_of(result)
    assert run_dir.parent == out  # --out
    rows = load_results(run_dir)
    assert sorted({r.id for r in rows}) == sorted(ids)  # --dataset
    assert Counter((r.id, r.model) for r in rows) == {(i, m): 2 for i in ids for m in GENERATORS}  # --samples, --model
    assert {r.sample for r in rows} == {0, 1}
    # --pass-at 9.7 takes PASS away (9.5), --partial-at 9.6 then PARTIAL: only either would leave PARTIAL or PASS
    assert {(r.score, r.verdict.value) for r in rows} == {(9.5, "FAIL")}
    generate = [r for r in api.requests if request_kind(r) == "generate"]
    judge = [r for r in api.requests if request_kind(r) == "judge"]
    assert {r["model"] for r in generate} == set(GENERATORS) and {r["model"] for r in judge} == set(JUDGES)  # --judge-model
    assert all("(contract dataset)" in prompt_of(r) for r in generate)
    assert judge and all("CONTRACT-RUBRIC" in prompt_of(r) for r in judge)  # --rubric
    settings, summary = (json.loads((run_dir / name).read_text()) for name in ("run.json", "summary.json"))
    assert settings["judge_models"] == summary["judge_models"] == JUDGES and all(set(r.judges) == set(JUDGES) for r in rows)
    assert settings["judge_thresholds"] == {JUDGES[0]: 9} and summary["judge_agreement"]["calibrated"] == [JUDGES[0]]  # --calibration
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


class SlowThenFailing:
    """Seed answers, except that each generation's first attempt hangs `hang_s` (past --timeout, well
    within the default) and the `fails` case's second attempt is a 500 (the default --max-attempts
    would try a third time, and pass). `attempts` counts tries per request."""

    def __init__(self, fails: str, hang_s: float = 5.0):
        self.fails, self.hang_s, self.attempts, self._lock = fails, hang_s, Counter(), threading.Lock()

    def __call__(self, body):
        reply = seed_responder()(body)
        if request_kind(body) != "generate":
            return reply
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self._lock:
            attempt = self.attempts[key]
            self.attempts[key] += 1
        if attempt == 0:
            reply.hang_s = self.hang_s
        elif attempt == 1 and self.fails in prompt_of(body):
            return Reply(status=500, error={"type": "api_error", "message": "contract fault"}, headers={"retry-after-ms": "50"})
        return reply


def broken_listing(body):
    """The seed's answers, but a listing that lists nothing (it fails its test)."""
    if request_kind(body) == "generate" and "list_s3_buckets" in prompt_of(body):
        return Reply(text=shape(body, "import boto3\n\ndef list_s3_buckets():\n    return []\n"))
    return seed_responder()(body)


def test_run_faults_then_retry_errors_in_a_batch_then_dask_key_block_alert(env, api, tmp_path, monkeypatch):
    from distributed import LocalCluster
    from prefect.blocks.system import Secret

    dataset, out = two_cases(tmp_path), tmp_path / "runs"
    base = ("run", "--dataset", dataset, "--model", CLAUDE, "--out", out)

    # 1. Each generation's first attempt hangs 5 s: --timeout 1 gives up and retries (the default
    # 120 s would wait). The upload case fails its second attempt too: --max-attempts 2 stops there.
    api.responder = faults = SlowThenFailing("upload_to_s3")
    first = cli(*base, "--timeout", "1", "--max-attempts", "2", "--fail-under", "0.9", code=1)  # --fail-under: 50 % < 90 %
    assert "under --fail-under" in first.output
    first_dir = run_dir_of(first)
    assert sorted(faults.attempts.values()) == [2, 2]  # --timeout: each hung try retried; --max-attempts: no third
    assert {r.id: r.verdict.value for r in load_results(first_dir)} == {"s3-list-buckets": "PASS", "s3-upload-file": "ERROR"}

    # 2. --retry-errors: only the errored case runs again; --batch: its calls go as Message Batches.
    api.responder, api.polls_before_end = seed_responder(), -1  # a batch ends at its first poll
    api.reset()
    second = run_dir_of(cli(*base, "--retry-errors", "--batch"))
    assert json.loads((second / "run.json").read_text())["retry_errors_of"] == str(first_dir)
    assert {r.id: r.verdict.value for r in load_results(second)} == {"s3-list-buckets": "PASS", "s3-upload-file": "PASS"}
    assert api.count() == 0  # no synchronous call
    batched = [item["params"] for batch in api.batches.values() for item in batch["requests"]]
    assert [request_kind(b) for b in batched].count("generate") == 1 and all("upload_to_s3" in prompt_of(b) for b in batched)

    # 3. On a Dask scheduler of our own (--task-runner dask --dask-address), with the key from a Secret
    # block (--api-key-block), and a drop of 100 % -> 50 % past --alert-drop 0.2 (McNemar alone: p = 1).
    Secret(value="sk-ant-contract-BLOCK-KEY").save("contract-key", overwrite=True)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache-2"))  # answered afresh
    api.responder = broken_listing
    api.reset()
    with LocalCluster(n_workers=1, threads_per_worker=8, processes=False, dashboard_address=None) as cluster:
        third = run_dir_of(cli(*base, "--task-runner", "dask", "--dask-address", cluster.scheduler_address,
                               "--api-key-block", "contract-key", "--alert-drop", "0.2"))
        ran_on_dask = set(cluster.scheduler.task_prefixes)
    assert {"generate_batch", "judge_batch"} <= ran_on_dask, ran_on_dask
    assert api.count() == 4 and all("sk-ant-contract-BLOCK-KEY" in h.get("x-api-key", "") + h.get("authorization", "") for h in api.headers)
    regressed = wait_for(lambda: regressed_events(env, third))
    assert regressed and regressed[0]["payload"]["reasons"] == ["drop"], regressed


def calibration_for(judge: str, dataset: Path, tmp_path: Path) -> tuple[Path, Path, callable]:
    """What `calibrate` needs for a file whose threshold is 9: labels (the references correct, a stub
    incorrect), where to write it, and a judge that scores the references 9 and the stub 3."""
    labels, saved = tmp_path / f"labels-{judge}.jsonl", tmp_path / f"calibration-{judge}.json"
    ids = [json.loads(line)["id"] for line in dataset.read_text().splitlines()]
    labels.write_text("".join(json.dumps(row) + "\n" for row in [
        *({"id": i, "output": REFERENCES[i], "label": "correct"} for i in ids), {"id": ids[0], "output": "def nothing():\n    pass\n", "label": "incorrect"}]))
    responder = judge_scoring(lambda body: 9 if output_of(body).strip() in {REFERENCES[i].strip() for i in ids} else 3)
    return labels, saved, responder


def test_grade_judges_rubric_thresholds_calibration_batches(env, api, tmp_path):
    dataset, rubric, out = two_cases(tmp_path), tmp_path / "judge.j2", tmp_path / "graded"
    rubric.write_text(RUBRIC)
    labels, saved, api.responder = calibration_for(JUDGES[0], dataset, tmp_path)
    cli("calibrate", "--judge-model", JUDGES[0], "--labels", labels, "--dataset", dataset, "--write", saved)
    api.responder = in_flight = InFlight(seed_responder())
    api.reset()
    outputs = references(dataset, tmp_path)
    result = cli("grade", "--outputs", outputs, "--dataset", dataset, "--judge-model", JUDGES[0], "--rubric", rubric, "--out", out,
                 "--concurrency", "1", "--batch-size", "1", "--pass-at", "9.7", "--partial-at", "9.6", "--calibration", saved,
                 "--fail-under", "0.5", code=1)  # --fail-under: 0 % < 50 %
    run_dir = run_dir_of(result)
    assert run_dir.parent == out  # --out
    rows = load_results(run_dir)
    assert {r.id: r.output for r in rows} == {json.loads(line)["id"]: json.loads(line)["output"] for line in outputs.read_text().splitlines()}  # --outputs
    assert all("(contract dataset)" in r.task for r in rows)  # --dataset
    assert {(r.score, r.verdict.value) for r in rows} == {(9.5, "FAIL")}  # --pass-at 9.7 and --partial-at 9.6 (9.5 is PASS by default)
    assert api.count("generate") == 0 and {r["model"] for r in api.requests} == {JUDGES[0]}  # --judge-model
    assert all("CONTRACT-RUBRIC" in prompt_of(r) for r in api.requests) and api.count() == 2  # --rubric
    assert json.loads((run_dir / "run.json").read_text())["judge_thresholds"] == {JUDGES[0]: 9}  # --calibration
    assert in_flight.most == 1  # --concurrency
    assert sorted(n.rsplit(" ", 1)[-1] for n in task_run_names() if n.startswith("check")) == ["0", "1"]  # --batch-size


def test_grade_openai_judge_base_url(env, api, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    dataset = two_cases(tmp_path)
    server = OpenAIAPI(default=OpenAIReply(text=json.dumps(GOOD_VERDICT))).start()
    try:
        result = cli("grade", "--outputs", references(dataset, tmp_path), "--dataset", dataset, "--judge-model", "openai:contract-judge",
                     "--base-url", server.url, "--out", tmp_path / "runs")
    finally:
        server.stop()
    assert [r["model"] for r in server.requests] == ["contract-judge"] * 2 and api.count() == 0  # --base-url
    assert {r.verdict.value for r in load_results(run_dir_of(result))} == {"PASS"}


def test_run_and_grade_max_cost(env, api, tmp_path):
    dataset = two_cases(tmp_path)
    ran = run_dir_of(cli("run", "--dataset", dataset, "--model", CLAUDE, "--max-cost", "0.000001", "--out", tmp_path / "runs"))
    assert api.count() == 0 and json.loads((ran / "summary.json").read_text())["over_budget"] == 2
    graded = run_dir_of(cli("grade", "--outputs", references(dataset, tmp_path), "--dataset", dataset, "--judge-model", CLAUDE,
                            "--max-cost", "0.000001", "--out", tmp_path / "graded"))
    assert api.count() == 0 and json.loads((graded / "summary.json").read_text())["over_budget"] == 2
    assert {r.judge.status.value for r in load_results(graded)} == {"OVER_BUDGET"}


def test_grade_no_judge_then_regrade_and_compare(env, api, tmp_path):
    dataset, rubric, out = two_cases(tmp_path), tmp_path / "judge.j2", tmp_path / "graded"
    rubric.write_text(RUBRIC)
    parent = run_dir_of(cli("grade", "--outputs", references(dataset, tmp_path), "--dataset", dataset, "--no-judge", "--out", out))
    assert api.count() == 0 and {r.verdict.value for r in load_results(parent)} == {"PASS"}  # --no-judge: the checks' 10

    labels, saved, api.responder = calibration_for(JUDGES[1], dataset, tmp_path)
    cli("calibrate", "--judge-model", JUDGES[1], "--labels", labels, "--dataset", dataset, "--write", saved)
    api.responder = judge_scoring(lambda body: 2)  # (2 + 10) / 2 = 6: PARTIAL, a drop of 100 % (McNemar alone: p = 0.5)
    api.reset()
    result = cli("regrade", parent, "--rubric", rubric, "--judge-model", JUDGES[1], "--calibration", saved,
                 "--alert-drop", "0.2", "--fail-under", "0.5", code=1)  # --fail-under: 0 % < 50 %
    regraded = run_dir_of(result)
    assert regraded.parent == out and {r.verdict.value for r in load_results(regraded)} == {"PARTIAL"}
    assert {r["model"] for r in api.requests} == {JUDGES[1]} and api.count() == 2  # --judge-model
    assert all("CONTRACT-RUBRIC" in prompt_of(r) for r in api.requests)  # --rubric
    assert json.loads((regraded / "run.json").read_text())["judge_thresholds"] == {JUDGES[1]: 9}  # --calibration
    regressed = wait_for(lambda: regressed_events(env, regraded))
    assert regressed and regressed[0]["payload"]["reasons"] == ["drop"], regressed  # --alert-drop

    api.reset()
    elsewhere = run_dir_of(cli("regrade", parent, "--no-judge", "--out", tmp_path / "elsewhere"))
    assert elsewhere.parent == tmp_path / "elsewhere" and api.count() == 0  # --out, --no-judge
    assert {r.verdict.value for r in load_results(elsewhere)} == {"PASS"}

    page = tmp_path / "page.html"
    compared = cli("compare", parent, regraded, "--out", page)
    assert compared.output.strip().splitlines()[-1] == str(page) and regraded.name in page.read_text()  # --out


def test_validate_broken(env, tmp_path):
    dataset = two_cases(tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"id": "s3-list-buckets", "output": REFERENCES["s3-list-buckets"]}) + "\n")  # passes: not broken
    cli("validate", dataset)
    flagged = cli("validate", dataset, "--broken", broken, code=2)
    assert "s3-list-buckets" in flagged.output


def test_validate_mutants(env, tmp_path):
    """The mutation score per case and the survivors; a case whose tests miss a mutant is below its floor."""
    shipped = json.loads(next(line for line in DATASET.read_text().splitlines() if '"id": "regex-account-id"' in line))
    strong = tmp_path / "strong.jsonl"
    strong.write_text(json.dumps(shipped) + "\n")
    weak = tmp_path / "weak.jsonl"  # without its 13-digit string, a mutant that drops the trailing $ survives
    no_match = [s for s in shipped["tests"]["no_match"] if s != "1234567890123"]
    weak.write_text(json.dumps({**shipped, "tests": {**shipped["tests"], "no_match": no_match}}) + "\n")
    assert "mutation" not in cli("validate", strong).output.lower()
    assert "mutation" in cli("validate", strong, "--mutants").output.lower()
    flagged = cli("validate", weak, "--mutants", code=1)
    assert "BELOW FLOOR" in flagged.output, flagged.output[-2000:]


def test_cache_url_on_every_command(env, api, postgres, cache_url, tmp_path, monkeypatch):
    """With --cache-url, answers, checks and proofs go to PostgreSQL, and the local cache directory stays empty."""
    # --cache-url sets CODEGEN_EVAL_CACHE_URL for the process (its Dask workers inherit it): these runs share
    # the test's process, so the variable is put back afterwards, or every later test would use PostgreSQL.
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_URL", cache_url)
    monkeypatch.delenv("CODEGEN_EVAL_CACHE_URL")
    dataset = two_cases(tmp_path)
    local = tmp_path / "cache"
    cli("validate", dataset, "--cache-url", cache_url)
    graded = run_dir_of(cli("grade", "--outputs", references(dataset, tmp_path), "--dataset", dataset, "--no-judge",
                            "--out", tmp_path / "runs", "--cache-url", cache_url))
    cli("regrade", graded, "--no-judge", "--cache-url", cache_url)
    asked = api.count()
    cli("run", "--dataset", dataset, "--model", CLAUDE, "--no-judge", "--out", tmp_path / "runs", "--cache-url", cache_url)
    assert api.count() == asked + 2
    cli("run", "--dataset", dataset, "--model", CLAUDE, "--no-judge", "--out", tmp_path / "runs", "--cache-url", cache_url)
    assert api.count() == asked + 2  # the second run's answers came from PostgreSQL
    assert not local.exists() or not any(local.iterdir())


def test_alerts_create_webhook_name(prefect_api):
    result = cli("alerts", "create", "--webhook", "http://127.0.0.1:9/contract-hook", "--name", "contract-alert")
    automation = httpx.get(f"{prefect_api}/automations/{result.output.strip().splitlines()[-1]}", timeout=10).json()
    assert automation["name"] == "contract-alert"  # --name
    block_id = automation["actions"][0]["block_document_id"]
    block = httpx.get(f"{prefect_api}/block_documents/{block_id}", params={"include_secrets": "true"}, timeout=10).json()
    assert block["name"] == "contract-alert" and block["data"]["url"] == "http://127.0.0.1:9/contract-hook"  # --webhook
