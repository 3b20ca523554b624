"""A dataset is proven before any model call: `codegen-eval validate`, and the proof `run` makes first."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codegen_eval.cli import app
from codegen_eval.dataset import DatasetError
from codegen_eval.grading.proof import prove_references, validate
from codegen_eval.grading.sandbox import Sandbox
from tests.conftest import CLAUDE, SEED

BROKEN = Path(__file__).parent / "data" / "broken_variants.jsonl"
POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}'
PROBES = {"allow": [{"action": "s3:GetObject", "resource": "arn:aws:s3:::b/k"}], "deny": [{"action": "s3:PutObject", "resource": "arn:aws:s3:::b/k"}]}
PY = {"id": "py", "task": "Write double(x).", "format": "python", "expected": "def double(x):\n    return 2 * x\n",
      "solution_criteria": "doubles", "difficulty": "easy",
      "tests": {"entry_point": "double", "check": "def check(candidate):\n    assert candidate(3) == 6\n", "aws": False}}
JSON = {"id": "pol", "task": "Allow reading b.", "format": "json", "expected": POLICY, "solution_criteria": "reads b",
        "difficulty": "easy", "tests": PROBES}
REGEX = {"id": "re", "task": "Match digits.", "format": "regex", "expected": "^[0-9]+$", "solution_criteria": "digits",
         "difficulty": "easy", "tests": {"match": ["123"], "no_match": ["12a", ""]}}


def with_tests(case: dict, **tests) -> dict:
    return {**case, "tests": {**case["tests"], **tests}}


# Each malformed case (line 2 of its file, after a good one) and the field its problem must name.
MALFORMED = {
    "regex that does not compile": ({**REGEX, "expected": "^[a-z(+$"}, "expected", "not a valid regex"),
    "policy that is not JSON": ({**JSON, "expected": "{'Version': '2012-10-17'}"}, "expected", "not valid JSON"),
    "python reference with a syntax error": ({**PY, "expected": "def double(x)\n    return 2 * x\n"}, "expected", "not valid Python"),
    "check with a syntax error": (with_tests(PY, check="def check(candidate):\n    assert candidate(3) = 6\n"), "tests.check", "not valid Python: line 2"),
    "check that defines no check": (with_tests(PY, check="def test(candidate):\n    assert candidate(3) == 6\n"), "tests.check", "defines no function check"),
    "entry point the reference lacks": (with_tests(PY, entry_point="triple"), "tests.entry_point", "defines no triple()"),
    "reference failing its python test": ({**PY, "expected": "def double(x):\n    return x + 1\n"}, "expected", "fails its own tests: tests TEST_FAIL"),
    "reference failing its probes": ({**JSON, "tests": {**PROBES, "allow": [{"action": "s3:ListBucket", "resource": "arn:aws:s3:::b"}]}},
                                     "expected", "s3:ListBucket on arn:aws:s3:::b should be allowed"),
    "reference failing its strings": (with_tests(REGEX, match=["123", "12 3"]), "expected", "fails its own tests"),
}


def write_jsonl(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(slots=2)
    yield box
    box.close()


@pytest.mark.parametrize("kind", MALFORMED)
def test_run_rejects_a_bad_reference_before_any_call(kind, api, tmp_path, monkeypatch):
    case, field, message = MALFORMED[kind]
    good = {**PY, "id": "good"}
    dataset = write_jsonl(tmp_path / "d.jsonl", good, case)
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "--dataset", str(dataset), "--model", CLAUDE, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"{dataset}:2: field '{field}': " in result.output and message in result.output, result.output
    assert api.count() == 0 and not out.exists()


def test_the_flow_proves_too(run, api, tmp_path):
    """Deployments call the flow, not the CLI: its load step refuses a failing reference the same way."""
    dataset = write_jsonl(tmp_path / "d.jsonl", {**PY, "expected": "def double(x):\n    return x\n"})
    with pytest.raises(DatasetError, match=f"{dataset}:1: field 'expected': fails its own tests"):
        run(dataset=str(dataset))
    assert api.count() == 0


def test_trivial_tests_are_caught(sandbox, tmp_path):
    cases = [
        PY, JSON, REGEX,  # fine
        {**with_tests(PY, check="def check(candidate):\n    candidate(3)\n"), "id": "py-trivial"},
        {**JSON, "id": "pol-allow-only", "tests": {"allow": PROBES["allow"]}},
        {**REGEX, "id": "re-no-match-only", "tests": {"no_match": ["12a"]}},
    ]
    dataset = write_jsonl(tmp_path / "d.jsonl", *cases)
    proof = validate(dataset, None, sandbox, None)
    assert proof.lines() == [
        f"{dataset}:4: field 'tests': trivial: the stub answer 'def double(*args, **kwargs):\\n    pass\\n' passes them",
        f"{dataset}:6: field 'tests': trivial: the stub answer '^$' passes them",
    ]
    assert {fmt: (t.proven, t.non_trivial, t.with_tests) for fmt, t in proof.tallies.items()} == {
        "python": (2, 1, 2), "json": (2, 2, 2), "regex": (2, 1, 2)}  # an allow-everything policy differs from the reference


def test_validate_command_catches_a_passing_broken_variant_and_writes_nothing(tmp_path, monkeypatch):
    dataset = write_jsonl(tmp_path / "d.jsonl", PY, REGEX)
    broken = write_jsonl(tmp_path / "broken.jsonl",
                         {"id": "py", "output": "def double(x):\n    return x\n"},
                         {"id": "re", "output": "^\\d+$"},  # not broken at all: same language
                         {"id": "nope", "output": "x"})
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["validate", str(dataset), "--broken", str(broken)])
    assert result.exit_code == 2
    lines = [line for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert lines == [f"{broken}:3: field 'id': no case 'nope' in the dataset"]  # the file is refused as a whole
    broken.write_text("".join(broken.read_text().splitlines(keepends=True)[:2]))
    result = CliRunner().invoke(app, ["validate", str(dataset), "--broken", str(broken)])
    assert result.exit_code == 2 and result.stdout.splitlines()[0] == f"{broken}:2: field 'output': the broken variant of 're' passes every test"
    assert "broken variants fail" in result.stderr and "1/1" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "cache"])  # no run directory; proofs cached


def test_the_shipped_seed_validates(tmp_path, monkeypatch):
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(BROKEN.read_text().splitlines(keepends=True)[:4]))
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["validate", str(SEED), "--broken", str(broken)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "0 problem(s)" in result.stderr


def test_a_cached_proof_skips_the_sandbox(tmp_path, make_cache):
    dataset = write_jsonl(tmp_path / "d.jsonl", *({**PY, "id": f"py-{i}", "expected": f"def double(x):\n    return 2 * x  # {i}\n"} for i in range(6)))
    cache = make_cache()
    timings, sandboxes = [], []
    for _ in range(2):
        box = Sandbox(slots=2)
        started = time.perf_counter()
        proof = prove_references(dataset, box, cache)
        timings.append(time.perf_counter() - started)
        sandboxes.append(len(box._all))  # zygotes started: 0 means the sandbox was never used
        box.close()
        assert proof.problems == [] and proof.tallies["python"].proven == 6
    assert sandboxes[0] > 0 and sandboxes[1] == 0
    assert proof.from_cache == 6 and proof.sandbox_runs == 0
    print(f"proof of 6 cases: {timings[0]:.3f} s cold, {timings[1]:.3f} s cached")
    assert timings[1] < timings[0]
