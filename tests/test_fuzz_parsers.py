"""Property-based fuzzing of every parser that reads model output in the main process (issue 27).

Each property: whatever the text, the function returns a result (never raises, never runs past a time
bound). Python (syntax, undefined names, signature), IAM policies (the JSON syntax gate, the grammar,
access evaluation, the whole policy check with parliament), regexes (the main-process compile), policy
variables and dates. Derandomized with a fixed number of examples, so CI sees the same inputs every run
(about 20 s in all here).
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen_eval.dataset import Case
from codegen_eval.grading import iam
from codegen_eval.grading.checks import CheckResult, check_syntax, policy_checks, signature, undefined_names
from codegen_eval.grading.wildcards import glob_match

BOUND_S = 5.0  # per call: far above any honest input here, far below a backtracking or stalled parser
FUZZ = settings(
    max_examples=150, derandomize=True, database=None, deadline=timedelta(seconds=BOUND_S),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def bounded(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    assert time.perf_counter() - start < BOUND_S, f"{fn.__name__} took {time.perf_counter() - start:.1f} s"
    return result


def repeated(pieces: list[str], most: int) -> st.SearchStrategy[str]:
    """One piece many times (deep nesting, long chains), maybe closed and followed by a tail."""
    counts = st.sampled_from([n for n in (2, 10, 20, 200, 900, 5_000, 20_000, 60_000) if n <= most]) | st.integers(0, most)
    return st.builds(lambda piece, n, tail: piece * n + tail, st.sampled_from(pieces), counts, st.sampled_from(["1", "x", ")", "", "]"]))


# --- python ---------------------------------------------------------------------------------------------

PY_PIECES = ["-", "~", "not ", "lambda: ", "(", "[", "{", "a.", "f(", "x[0]", "1+", "x if y else ", "await ", "*", "'", '"""', "\\", "\n", "    ", ":"]
python_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(PY_PIECES + ["def f(", "):", "return ", "import os", "class A:", "x = ", "@d\n", "# \ud800"]), max_size=80).map("".join),
    st.builds(lambda head, body: head + body, st.sampled_from(["x = ", "def f():\n    return ", "def f(a: '", "print("]), repeated(PY_PIECES, 60_000)),
)


def python_answers(code: str) -> None:
    syntax = bounded(check_syntax, code, "python")
    assert isinstance(syntax, CheckResult)
    if syntax.passed:
        assert isinstance(bounded(undefined_names, code), CheckResult)
        assert isinstance(bounded(signature, code, "def f(a, b=1):\n    pass\n", "f"), CheckResult)


@FUZZ
@given(python_text)
def test_python_parsers_always_answer(code):
    python_answers(code)


@settings(FUZZ, max_examples=120)
@given(st.sampled_from(["x = ", "def f():\n    return "]), repeated(["-", "not ", "lambda: ", "1+", "a.", "f(", "x[0]", "x if y else "], 60_000))
def test_python_parsers_answer_deep_and_long_code(head, body):
    """Chains and nesting past what CPython's parser and pyflakes' recursive walk can follow."""
    python_answers(head + body)


# --- IAM policies ---------------------------------------------------------------------------------------

pattern_text = st.text(st.sampled_from("ab*?:/${}', -"), max_size=40) | repeated(["*a", "*?", "${", "${a ", "?", " "], 5_000)
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20), pattern_text)
condition = st.dictionaries(
    st.sampled_from(["StringLike", "StringNotEquals", "ForAllValues:StringEquals", "ArnLike", "DateLessThan", "DateGreaterThanIfExists",
                     "NumericLessThan", "Bool", "IpAddress", "NotIpAddress", "Null", "BinaryEquals", "Bogus"]),
    st.dictionaries(st.sampled_from(["aws:username", "aws:CurrentTime", "aws:SourceIp", "s3:prefix", "aws:PrincipalTag/team"]),
                    st.one_of(scalar, st.lists(scalar, max_size=3), st.sampled_from(["9" * 40, "1e309", "-1", "2026-13-45", "::/0", "10.0.0.0/33"]))),
    max_size=3,
)
statement = st.fixed_dictionaries(
    {"Effect": st.sampled_from(["Allow", "Deny", "allow"]),
     "Action": st.one_of(st.sampled_from(["s3:GetObject", "s3:*", "*", "s3:Get*"]), st.builds(lambda p: "s3:" + p, pattern_text), st.lists(scalar, max_size=2))},
    optional={"Resource": st.one_of(st.builds(lambda p: "arn:aws:s3:::" + p, pattern_text), st.just("*"), scalar),
              "NotResource": st.builds(lambda p: "arn:aws:s3:::" + p, pattern_text),
              "Principal": st.one_of(st.just("*"), st.dictionaries(st.sampled_from(["AWS", "Service", "Nope"]), st.one_of(scalar, st.just("123456789012")), max_size=2)),
              "Condition": condition, "Sid": scalar},
)
policies = st.fixed_dictionaries({"Version": st.sampled_from(["2012-10-17", "2008-10-17", "x"]), "Statement": st.lists(statement, min_size=1, max_size=3)})
PROBES = {
    "identity": {"allow": [{"action": "s3:GetObject", "resource": "arn:aws:s3:::ab/aaaa:b", "context": {"aws:username": "arn:aws:s3:::" + "a" * 3000, "aws:CurrentTime": "2026-01-01T00:00:00Z",
                                                                                                     "aws:SourceIp": "10.0.0.1", "s3:prefix": ["a", "b"]}}],
                 "deny": [{"action": "s3:PutObject", "resource": "arn:aws:s3:::" + "a" * 2000}]},
    "bucket": {"allow": [{"action": "s3:GetObject", "resource": "arn:aws:s3:::ab/c", "principal": {"AWS": "arn:aws:iam::123456789012:role/x/r"}}],
               "deny": [{"action": "s3:GetObject", "resource": "arn:aws:s3:::ab/c", "principal": "anonymous"}]},
}


REFERENCES = {  # what the probes ask, so the differential check compares the fuzzed policy with a real one
    "identity": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::ab/*"},
    "bucket": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::ab/*", "Principal": {"AWS": "arn:aws:iam::123456789012:role/x/r"}},
}


def policy_case(policy_type: str) -> Case:
    reference = json.dumps({"Version": "2012-10-17", "Statement": [REFERENCES[policy_type]]})
    return Case(id="fuzz", task="t", format="json", expected=reference, solution_criteria="c", difficulty="easy",
                tests={"policy_type": policy_type, **PROBES[policy_type]})


CASES = {kind: policy_case(kind) for kind in PROBES}


def policy_answers(policy: dict, policy_type: str) -> None:
    text = json.dumps(policy)
    if bounded(check_syntax, text, "json").passed:
        results = bounded(policy_checks, CASES[policy_type], text)
        assert results and all(isinstance(r, CheckResult) for r in results)


@FUZZ
@given(policies, st.sampled_from(sorted(CASES)))
def test_policy_checks_always_answer(policy, policy_type):
    policy_answers(policy, policy_type)


@settings(FUZZ, max_examples=60)
@given(repeated(["*a", "*?", "${", "${a ", "?*"], 20_000), st.sampled_from(["Resource", "StringLike", "ArnLike", "Date"]))
def test_policy_checks_answer_long_wildcards_and_variables(text, where):
    """Wildcard and variable text that a regex-based matcher backtracks on for minutes."""
    statement = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::" + text}
    if where in ("StringLike", "ArnLike"):
        statement = {**statement, "Resource": "*", "Condition": {where: {"aws:username": "arn:aws:s3:::" + text}}}
    elif where == "Date":
        statement = {**statement, "Resource": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": text.replace("*", "9").replace("a", "9")}}}
    policy_answers({"Version": "2012-10-17", "Statement": [statement]}, "identity")


json_pieces = ['{"a": ', '"a": 1, ', "[", "]", "{", "}", "NaN", "-Infinity", "1e999", '"\\ud800"', '"\\udfff\\ud800"', '"\\u', "\ud800", ",", ":", '"', "9" * 5000]
json_text = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(json_pieces), max_size=60).map("".join), repeated(["[", '{"a":', '"\\ud800",'], 40_000))


@FUZZ
@given(json_text)
def test_the_policy_syntax_gate_always_answers(text):
    assert isinstance(bounded(check_syntax, text, "json"), CheckResult)


@FUZZ
@given(policies, st.sampled_from(["s3:GetObject", "S3:getobject", "iam:PassRole"]), st.text(max_size=60) | st.just("arn:aws:s3:::" + "a" * 3000),
       st.dictionaries(st.sampled_from(["aws:username", "aws:currenttime", "s3:prefix"]), st.text(max_size=20) | st.lists(st.text(max_size=5), max_size=3), max_size=3))
def test_access_evaluation_always_decides(policy, action, resource, context):
    if not iam.grammar_errors(policy, "identity"):
        try:
            assert bounded(iam.evaluate, policy, action, resource, context) in ("allow", "explicit_deny", "implicit_deny")
        except iam.UnsupportedCondition:
            pass  # a documented refusal (BinaryEquals): the check reports it


# --- policy variables, wildcards and dates ----------------------------------------------------------------


@FUZZ
@given(pattern_text, st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.lists(st.text(max_size=3), max_size=2), max_size=3))
def test_policy_variables_always_resolve_or_say_none(text, context):
    resolved = bounded(iam.resolve_variables, text, context)
    assert resolved is None or all(isinstance(kind, bool) and isinstance(piece, str) for kind, piece in resolved)


def _regex_for(pattern: str, arn: bool) -> re.Pattern[str]:
    """What the wildcard matcher replaced: a regex per pattern (right, but backtracking on long input)."""
    body, colons = [], 0
    for c in pattern:
        inside = arn and colons < 5
        body.append(("[^:]*" if inside else ".*") if c == "*" else ("[^:]" if inside else ".") if c == "?" else re.escape(c))
        colons += c == ":"
    return re.compile("".join(body), re.DOTALL)


@settings(FUZZ, max_examples=400)
@given(st.text(st.sampled_from("ab*?:"), max_size=12), st.text(st.sampled_from("ab:"), max_size=12), st.booleans())
def test_the_wildcard_matcher_agrees_with_a_regex_on_short_text(pattern, value, arn):
    assert glob_match(((True, pattern),), value, arn=arn) == (_regex_for(pattern, arn).fullmatch(value) is not None)


@FUZZ
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A\d{1,400}(\.\d{1,20})?\Z"), st.from_regex(r"\A[0-9]{4}-[0-9]{2}(-[0-9]{2}(T[0-9:.]{0,20}(Z|[+-]\d\d:\d\d)?)?)?\Z")))
def test_dates_parse_or_say_none(text):
    assert bounded(iam.parse_date, text) is None or isinstance(iam.parse_date(text), datetime)


# --- regex: the main-process compile ----------------------------------------------------------------------

REGEX_PIECES = ["(", ")", "(?i)", "(?P<a>", "(?:", "[", "]", "[^", "\x00-\U0010ffff", "a-z", "*", "+", "?", "{1000}", "{2,}", "|", "\\", "\\d",
                "\\1", ".", "^", "$", "(?=", "(?<=a)", "a"]
regex_text = st.one_of(st.text(max_size=100), st.lists(st.sampled_from(REGEX_PIECES), max_size=120).map("".join),
                       repeated(["(", "(?i)[\x00-\U0010ffff]", "(a)", "a{65535}"], 5_000))


@FUZZ
@given(regex_text)
def test_the_regex_syntax_check_always_answers(pattern):
    assert isinstance(bounded(check_syntax, pattern, "regex"), CheckResult)
