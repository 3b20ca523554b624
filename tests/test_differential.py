"""Differential checks against the reference (issue 26): policies on a generated request space, regexes
by language. Each test here fails on the checks before it: the probes alone pass these wrong answers."""

from __future__ import annotations

import json

import pytest

from codegen_eval.dataset import Case
from codegen_eval.grading import harness
from codegen_eval.grading.checks import CheckStatus, run_checks
from codegen_eval.grading.sandbox import Sandbox
from codegen_eval.grading.scoring import ScoringConfig, Verdict, score_case
from codegen_eval.grading.judge import Judgement, JudgeStatus


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


READ = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::reports/*"}
NO_DELETE = {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::reports/*"}
PROBES = {"allow": [{"action": "s3:GetObject", "resource": "arn:aws:s3:::reports/q1.csv"}],
          "deny": [{"action": "s3:DeleteObject", "resource": "arn:aws:s3:::reports/q1.csv"},
                   {"action": "s3:PutObject", "resource": "arn:aws:s3:::reports/q1.csv"}]}


def policy_case(expected: str, **tests) -> Case:
    return Case(id="p", task="Allow reading reports; explicitly deny deleting its objects.", format="json", expected=expected,
                solution_criteria="c", difficulty="easy", tests={**PROBES, **tests})


def by_name(checks):
    return {c.name: c for c in checks}


def verdict(checks) -> Verdict:
    return score_case(checks, Judgement(status=JudgeStatus.SKIPPED), None, ScoringConfig()).verdict


def test_an_implicit_deny_fails_where_the_case_asks_for_an_explicit_one():
    case = policy_case(policy(READ, NO_DELETE), explicit_deny=True)
    implicit = policy(READ)  # denies the delete too, but only by default: another policy could allow it
    checks = by_name(run_checks(case, implicit, sandbox=None))  # policies need no sandbox
    assert checks["access"].passed  # the probes cannot tell the two denies apart
    assert checks["differential"].status is CheckStatus.TEST_FAIL and checks["differential"].gate
    assert "not explicitly denied: s3:DeleteObject on arn:aws:s3:::reports/q1.csv" in checks["differential"].message
    assert verdict(run_checks(case, implicit, sandbox=None)) is not Verdict.PASS
    # Where the case does not ask for it, the two denies count as one.
    assert by_name(run_checks(policy_case(policy(READ, NO_DELETE)), implicit, sandbox=None))["differential"].passed


def test_an_over_grant_is_found_without_a_probe_for_it():
    case = policy_case(policy(READ))
    over = policy({**READ, "Action": ["s3:GetObject", "s3:GetObjectAcl"]}, NO_DELETE)  # no probe names GetObjectAcl
    checks = by_name(run_checks(case, over, sandbox=None))
    assert checks["access"].passed
    assert "over-grant: s3:GetObjectAcl on arn:aws:s3:::reports/q1.csv" in checks["differential"].message
    assert verdict(run_checks(case, over, sandbox=None)) is not Verdict.PASS
    # Another account's bucket is a neighbour the space tries, though nothing names it.
    wide = policy({**READ, "Resource": "arn:aws:s3:::*/*"})
    assert "over-grant: s3:GetObject on arn:aws:s3:::reports-other/q1.csv" in by_name(run_checks(case, wide, sandbox=None))["differential"].message


def test_a_grant_the_case_leaves_free_is_not_a_difference():
    case = policy_case(policy(READ), may_allow=[{"action": "s3:GetObjectVersion", "resource": "arn:aws:s3:::reports/*"}])
    extra = policy({**READ, "Action": ["s3:GetObject", "s3:GetObjectVersion"]})
    assert by_name(run_checks(case, extra, sandbox=None))["differential"].passed
    equivalent = policy({**READ, "Action": ["s3:getobject"], "Resource": ["arn:aws:s3:::reports/*"]})
    assert by_name(run_checks(case, equivalent, sandbox=None))["differential"].passed


def test_a_half_anchored_regex_differs_from_a_whole_string_reference():
    """Today's equivalence skipped any pattern not anchored at both ends."""
    found = harness._equivalence("[0-9]{12}$", "^[0-9]{12}$")
    assert found["checked"] and not found["equivalent"]
    assert found["accepted_not_expected"] and all(len(s) > 12 and s.endswith(s[-12:]) for s in found["accepted_not_expected"])
    import re

    for text in found["accepted_not_expected"]:  # counterexamples hold under re.search itself
        assert re.search("[0-9]{12}$", text) and not re.search("^[0-9]{12}$", text)
    # "$" also matches before a final newline; \Z does not.
    newline = harness._equivalence("^[0-9]{12}$", r"^[0-9]{12}\Z")
    assert newline["checked"] and any(s.endswith("\n") for s in newline["accepted_not_expected"])
    assert harness._equivalence("^(?:[0-9]{12})$", "^[0-9]{12}$")["equivalent"]
    assert harness._equivalence("[0-9]{12}", "[0-9]{12}")["equivalent"]
    assert not harness._equivalence("^a|b$", "^(?:a|b)$")["checked"]  # anchors of one branch: not modelled


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(slots=1)
    yield box
    box.close()


def test_the_regex_check_shows_a_half_anchored_answer(sandbox):
    case = Case(id="r", task="Match a whole 12-digit account id.", format="regex", expected="^[0-9]{12}$", solution_criteria="c",
                difficulty="easy", tests={"match": ["123456789012"], "no_match": ["12345678901", "account 12345678901"]})
    checks = by_name(run_checks(case, "[0-9]{12}$", sandbox))
    assert checks["tests"].passed  # the strings miss it
    assert checks["equivalence"].status is CheckStatus.WARN and "accepts, unlike expected" in checks["equivalence"].message
