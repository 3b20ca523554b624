"""Mutation adequacy (issue 26): the operators, and `validate --mutants` reporting a weak case."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from codegen_eval.cli import app
from codegen_eval.dataset import Case
from codegen_eval.grading.mutants import mutants, policy_mutants, python_mutants, regex_mutants, spread
from tests.conftest import DATASET

PAGED = '''import boto3
def keys(bucket):
    s3 = boto3.client("s3")
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}):
        out += [o["Key"] for o in page.get("Contents", [])]
    if not out:
        raise ValueError("empty")
    return sorted(out)
'''


def test_python_operators_make_the_mistakes_models_make():
    made = {(m.operator, m.where.split(": ", 1)[1]) for m in python_mutants(PAGED)}
    assert any(op == "drop-keyword" and where.startswith("drop PaginationConfig=") for op, where in made)
    assert any(op == "first-iteration" for op, _ in made)
    assert any(op == "remove-raise" for op, _ in made)
    assert any(op == "swallow-exceptions" for op, _ in made)
    assert any(op == "returned-shape" and "unsorted" in where for op, where in made)
    assert any(op == "operator" and "drop `not`" in where for op, where in made)
    for mutant in python_mutants(PAGED):
        compile(mutant.code, "<mutant>", "exec")  # every mutant parses


def test_policy_operators():
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": "arn:aws:s3:::b/in/*", "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-1"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})
    found = {(m.operator, m.where) for m in policy_mutants(policy)}
    expected = {("flip-effect", "statement 1: Effect Allow -> Deny"), ("drop-action", "statement 1: Action 's3:GetObject' dropped"),
                ("widen", "statement 1: Resource 'arn:aws:s3:::b/in/*' -> 'arn:aws:s3:::b/*'"), ("principal-star", 'statement 1: Principal -> "*"'),
                ("weaken-operator", "statement 1: StringEquals -> StringLike"), ("drop-deny", "statement 2: the Deny statement dropped"),
                ("drop-transport-mfa", "statement 2: condition Bool aws:SecureTransport dropped")}
    assert expected <= found, expected - found


def test_regex_operators():
    found = {m.code for m in regex_mutants(r"^(?:AKIA|ASIA)[A-Z0-9]{16}\Z")}
    assert {r"(?:AKIA|ASIA)[A-Z0-9]{16}\Z", r"^(?:AKIA|ASIA)[A-Z0-9]{16}", r"^(?:AKIA|ASIA)[A-Z0-9]{16}$",
            r"^(?:AKIA|ASIA)[A-Z0-9]{16,}\Z", r"^(?:ASIA)[A-Z0-9]{16}\Z", r"^(?:AKIA|ASIA)[^/]{16}\Z"} <= found
    for pattern in found:
        re.compile(pattern)


def test_the_pick_is_deterministic_and_spread_over_operators():
    case = next(Case.model_validate(json.loads(line)) for line in DATASET.read_text().splitlines() if json.loads(line)["format"] == "python")
    assert mutants(case) == mutants(case)
    every = python_mutants(case.expected)
    picked = spread(every, 4)
    assert len(picked) == min(4, len(every)) and len({m.operator for m in picked}) == min(4, len({m.operator for m in every}))


def test_validate_reports_a_case_whose_tests_lost_an_assertion(tmp_path, monkeypatch):
    shipped = next(json.loads(line) for line in DATASET.read_text().splitlines() if json.loads(line)["id"] == "regex-account-id")
    weak = {**shipped, "id": "regex-account-id-weak",
            "tests": {**shipped["tests"], "no_match": [s for s in shipped["tests"]["no_match"] if s != "1234567890123"]}}
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(json.dumps(shipped) + "\n" + json.dumps(weak) + "\n")
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["validate", str(dataset), "--mutants"])
    assert result.exit_code == 1, result.output
    scores = dict(re.findall(rf"{re.escape(str(dataset))}:\d: (\S+): mutation score (.*)", result.output))
    assert re.fullmatch(r"1\.00 \((\d+)/\1 killed\)", scores["regex-account-id"]), scores
    assert re.fullmatch(r"0\.\d\d \(\d+/\d+ killed\) BELOW FLOOR 0\.90", scores["regex-account-id-weak"]), scores
    assert "survived [drop-anchor] drop the trailing $" in result.output
