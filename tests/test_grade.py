"""Grading recorded outputs (no generator), HumanEval import, and --no-judge."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codegen_eval.cli import app
from codegen_eval.config import RunConfig
from codegen_eval.dataset import DatasetError, load_dataset, load_outputs
from codegen_eval.reporting.runs import load_results
from flows.evaluate import evaluate
from tests.conftest import SEED

# openai/human-eval's data/HumanEval.jsonl.gz, MIT (tests/data/HumanEval.LICENSE): the suite needs nothing outside the repo.
HUMANEVAL = Path(__file__).resolve().parent / "data" / "HumanEval.jsonl.gz"


def write_outputs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_humaneval_is_recognised_and_mapped():
    cases = load_dataset(HUMANEVAL)
    assert len(cases) == 164 and cases[0].id == "HumanEval/0" and cases[0].format == "python"
    assert cases[0].tests["entry_point"] == "has_close_elements" and cases[0].tests["aws"] is False


def test_all_164_humaneval_canonical_solutions_pass(prefect_api, tmp_path):
    with gzip.open(HUMANEVAL, "rt") as f:
        problems = [json.loads(line) for line in f]
    outputs = write_outputs(tmp_path / "canonical.jsonl", [{"id": p["task_id"], "output": p["prompt"] + p["canonical_solution"]} for p in problems])
    config = RunConfig(dataset=str(HUMANEVAL), model="recorded", judge_model="local", judge=False, outputs=str(outputs), out=str(tmp_path / "runs"))
    summary = json.loads((Path(evaluate(config)) / "summary.json").read_text())
    assert summary["verdicts"] == {"PASS": 164, "PARTIAL": 0, "FAIL": 0, "ERROR": 0}
    assert summary["generation"]["calls_made"] == 0 and summary["judging"]["calls_made"] == 0


def test_grade_several_candidates_per_case_with_the_judge(prefect_api, api, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(cache_dir))
    cases = {c.id: c for c in load_dataset(SEED)}
    rows = [
        {"id": "s3-list-buckets", "cid": "good", "output": "```python\n" + cases["s3-list-buckets"].expected + "```\nDone."},
        {"id": "s3-list-buckets", "cid": "bad", "output": "def list_s3_buckets():\n    return []\n"},
        {"id": "regex-s3-bucket-name", "output": cases["regex-s3-bucket-name"].expected},
    ]
    outputs = write_outputs(tmp_path / "outputs.jsonl", rows)
    result = CliRunner().invoke(app, ["grade", "--dataset", str(SEED), "--outputs", str(outputs), "--judge-model", "claude-haiku-4-5", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    verdicts = {(r.id, r.cid): r.verdict.value for r in load_results(run_dir)}
    assert verdicts == {("s3-list-buckets", "good"): "PASS", ("s3-list-buckets", "bad"): "FAIL", ("regex-s3-bucket-name", None): "PASS"}
    assert api.count("generate") == 0 and api.count("judge") == 3


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"id": "nope", "output": "x"}, "field 'id': no case 'nope' in the dataset"),
        ({"id": "s3-list-buckets"}, "field 'output': missing required field"),
    ],
)
def test_bad_outputs_file_names_line_and_field(tmp_path, row, problem):
    outputs = write_outputs(tmp_path / "o.jsonl", [{"id": "s3-list-buckets", "output": "x"}, row])
    with pytest.raises(DatasetError) as info:
        load_outputs(outputs, load_dataset(SEED))
    assert info.value.problems == [f"{outputs}:2: {problem}"]


def test_duplicate_candidate_is_rejected(tmp_path):
    outputs = write_outputs(tmp_path / "o.jsonl", [{"id": "s3-list-buckets", "output": "x"}] * 2)
    with pytest.raises(DatasetError, match="a second output for 's3-list-buckets'"):
        load_outputs(outputs, load_dataset(SEED))


def test_run_no_judge_makes_no_judge_calls(prefect_api, api, tmp_path):
    config = RunConfig(dataset=str(SEED), model="claude-haiku-4-5", judge=False, out=str(tmp_path / "runs"), cache_dir=str(tmp_path / "c"))
    results = load_results(Path(evaluate(config)))
    assert api.count("judge") == 0 and {r.verdict.value for r in results} == {"PASS"} and {r.score for r in results} == {10.0}


def test_an_output_with_a_lone_surrogate_is_judged_without_crashing_the_run(prefect_api, api, tmp_path):
    """A model may answer `\\ud800` (a JSON escape the API passes on): the syntax gate fails it, the judge is
    still asked (its request is keyed and sent), and the run writes its results."""
    seed = load_dataset(SEED)
    outputs = write_outputs(tmp_path / "out.jsonl", [{"id": seed[0].id, "output": seed[0].expected + "\n# \ud800"}])
    config = RunConfig(dataset=str(SEED), model="recorded", judge_model="claude-haiku-4-5", outputs=str(outputs), out=str(tmp_path / "runs"),
                       cache_dir=str(tmp_path / "cache"))
    (result,) = load_results(Path(evaluate(config)))
    assert result.verdict == "FAIL" and result.checks[0].status == "SYNTAX_ERROR"
