"""Checks per format, on real candidates, through the real sandbox."""

from __future__ import annotations

import json

import pytest

from codegen_eval.dataset import Case, load_dataset
from codegen_eval.grading.checks import CheckStatus, run_checks, signature, undefined_names
from codegen_eval.grading.judge import Judgement, JudgeStatus, JudgeVerdict
from codegen_eval.grading.sandbox import Sandbox
from codegen_eval.grading.scoring import ScoringConfig, Verdict, score_case
from tests.conftest import DATASET, SEED

SEED_CASES = {case.id: case for case in load_dataset(SEED)}
CASES = {case.id: case for case in load_dataset(DATASET)}


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(slots=2)
    yield box
    box.close()


def by_name(checks):
    return {c.name: c for c in checks}


def test_reference_solutions_pass_every_gating_check(sandbox):
    for case in SEED_CASES.values():
        checks = run_checks(case, case.expected, sandbox)
        assert all(c.passed for c in checks if c.gate), (case.id, checks)


def test_python_wrong_answer_under_moto_fails_with_the_assertion(sandbox):
    case = SEED_CASES["s3-list-buckets"]
    wrong = "import boto3\n\ndef list_s3_buckets():\n    return boto3.client('s3').list_buckets()['Buckets']\n"
    tests = by_name(run_checks(case, wrong, sandbox))["tests"]
    # The raw bucket dicts hold datetimes: only plain data crosses from the candidate's process to the check.
    assert tests.status is CheckStatus.TEST_FAIL and "not plain data" in tests.message and "datetime.datetime" in tests.message
    assert tests.fraction == 0.0


def test_the_names_check_reports_what_pyflakes_reports():
    """`undefined_names` gives pyflakes' own verdict, on every reference and odd shadowing."""
    from tests.test_checks_and_scoring import pyflakes_undefined

    texts = [case.expected for case in CASES.values() if case.format == "python"]
    texts += ["len = 3\nprint(len)\n", "def f():\n    global print\n    del print\n", "class A:\n    __module__\n    x = y\n",
              "import os as print\n", "[open for open in range(3)]\nopen\n", "def f(x=min):\n    max = 1\n    return undefined\n"]
    for text in texts:
        assert undefined_names(text).message == pyflakes_undefined(text), text
    assert undefined_names("def f():\n    print(len(x), __file__)\n").message == "undefined names: x"


def test_python_undefined_names_and_signature():
    assert undefined_names("def f():\n    return boto3.client('s3')\n").message == "undefined names: boto3"
    assert undefined_names("import boto3\ndef f():\n    return boto3\n").status is CheckStatus.OK
    expected = "def upload(path, bucket, key):\n    pass\n"
    assert signature("def upload(p, b):\n    pass\n", expected, "upload").message == "expected upload(path, bucket, key), got upload(p, b)"
    assert signature("def upload(p, b, k, extra=None):\n    pass\n", expected, "upload").status is CheckStatus.OK
    assert "no function upload()" in signature("def other():\n    pass\n", expected, "upload").message


def test_policy_checks_catch_over_broad_and_mismatched_policies(sandbox):
    case = CASES["iam-read-only-my-data-bucket"]
    broad = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
    access = by_name(run_checks(case, broad, sandbox))["access"]
    assert access.status is CheckStatus.TEST_FAIL and "s3:PutObject on arn:aws:s3:::my-data-bucket/reports/2026.csv should be denied" in access.message
    assert access.fraction == pytest.approx(2 / 5)
    mismatched = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "arn:aws:s3:::my-data-bucket"}]})
    checks = by_name(run_checks(case, mismatched, sandbox))
    assert checks["parliament"].status is CheckStatus.WARN and "RESOURCE_MISMATCH" in checks["parliament"].message
    assert checks["access"].status is CheckStatus.TEST_FAIL
    invalid = json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject"}]})
    assert by_name(run_checks(case, invalid, sandbox))["policy_grammar"].status is CheckStatus.TEST_FAIL


def test_regex_checks_tests_equivalence_and_redos(sandbox):
    case = SEED_CASES["regex-s3-bucket-name"]
    loose = "^[a-z0-9.-]{3,63}$"
    checks = by_name(run_checks(case, loose, sandbox))
    assert checks["tests"].status is CheckStatus.TEST_FAIL and "'-bucket'" in checks["tests"].message
    assert 0 < checks["tests"].fraction < 1
    assert checks["equivalence"].status is CheckStatus.WARN and "accepts, unlike expected" in checks["equivalence"].message
    evil = "^([a-z0-9]+)+[.-]?[a-z0-9]$"
    redos = by_name(run_checks(case, evil, sandbox))["redos"]
    assert redos.status is CheckStatus.TIMEOUT and redos.gate


def test_a_slow_equivalence_analysis_is_skipped_not_a_timeout(sandbox):
    # A DFA of 2^16 states: interegular's construction does not finish within the job's 5 s; the analysis is advisory.
    case = CASES["regex-s3-uri"]
    checks = by_name(run_checks(case, r"^s3://[a-z0-9.-]*a[a-z0-9.-]{16}$", sandbox))
    assert checks["tests"].status is CheckStatus.TEST_FAIL
    # Ended by the 5 s wall clock ("took over 5 s") or by the CPU rlimit's kill, whichever comes first: skipped either way.
    equivalence = checks["equivalence"]
    assert equivalence.status is CheckStatus.SKIPPED and not equivalence.gate
    assert "took over 5 s" in equivalence.message or "killed by SIG" in equivalence.message, equivalence.message


def ok(score):
    return Judgement(status=JudgeStatus.OK, verdict=JudgeVerdict(score=score, reasoning="r"))


def test_a_failing_test_is_never_lifted_to_pass(sandbox):
    case = SEED_CASES["regex-s3-bucket-name"]
    checks = run_checks(case, "^[a-z0-9.-]{3,63}$", sandbox)
    result = score_case(checks, ok(10), None, ScoringConfig())
    assert result.verdict is Verdict.PARTIAL and result.status == "TEST_FAIL"
    no_judge = score_case(checks, Judgement(status=JudgeStatus.SKIPPED), None, ScoringConfig())
    assert no_judge.verdict in (Verdict.PARTIAL, Verdict.FAIL) and no_judge.score < 10
    timeout = run_checks(case, "^([a-z0-9]+)+[.-]?[a-z0-9]$", sandbox)
    assert score_case(timeout, ok(10), None, ScoringConfig()).verdict is Verdict.FAIL


def test_case_without_tests_is_checked_for_syntax_and_names_only(sandbox):
    case = Case(id="x", task="t", format="python", expected="e", solution_criteria="c", difficulty="easy")
    assert [c.name for c in run_checks(case, "x = 1\n", sandbox)] == ["syntax", "names"]
