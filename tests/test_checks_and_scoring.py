from __future__ import annotations

import pytest

from codegen_eval.dataset import load_dataset
from codegen_eval.generation import extract_code
from codegen_eval.grading.checks import CheckStatus, check_syntax, undefined_names
from codegen_eval.grading.judge import Judgement, JudgeStatus, JudgeVerdict, parse_verdict
from codegen_eval.grading.scoring import ScoringConfig, Verdict, score_case
from tests.conftest import SEED


@pytest.mark.parametrize(
    ("code", "fmt", "status", "message"),
    [
        ("def f():\n    return 1", "python", CheckStatus.OK, ""),
        ("def f(:\n", "python", CheckStatus.SYNTAX_ERROR, "line 1"),
        ('{"Version": "2012-10-17"}', "json", CheckStatus.OK, ""),
        ('{"Version": }', "json", CheckStatus.SYNTAX_ERROR, "column 13"),
        ("^[a-z]+$", "regex", CheckStatus.OK, ""),
        ("^[a-z+$", "regex", CheckStatus.SYNTAX_ERROR, "unterminated character set"),
        ("   \n", "python", CheckStatus.NO_CODE, "no code"),
        ("", "regex", CheckStatus.NO_CODE, "no code"),
    ],
)
def test_syntax_per_format(code, fmt, status, message):
    result = check_syntax(code, fmt)
    assert result.status is status and message in result.message


def test_extract_code_cuts_at_a_fence_and_drops_a_repeated_language_tag():
    assert extract_code("x = 1\n```\nExplanation") == "x = 1"
    assert extract_code("python\nx = 1\n") == "x = 1"
    assert extract_code("\n^a$\n") == "^a$"


def test_parse_verdict_accepts_a_json_object_and_reports_what_is_wrong():
    verdict = parse_verdict('Sure: {"score": 7, "reasoning": "ok", "strengths": "fast", "weaknesses": []}')
    assert verdict.score == 7 and verdict.strengths == ["fast"]
    for text, problem in [
        ("no json here", "no JSON object"),
        ('{"score": 7,}', "invalid JSON"),
        ('{"score": 11, "reasoning": "x"}', "score"),
        ('{"reasoning": "x"}', "score: Field required"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_verdict(text)


def ok(score: float) -> Judgement:
    return Judgement(status=JudgeStatus.OK, verdict=JudgeVerdict(score=score, reasoning="r"))


def test_score_is_the_mean_of_judge_and_checks_with_thresholds():
    syntax_ok = [check_syntax("x = 1", "python")]
    config = ScoringConfig()
    assert score_case(syntax_ok, ok(9), None, config).model_dump() == {"score": 9.5, "verdict": Verdict.PASS, "status": "OK"}
    assert score_case(syntax_ok, ok(6), None, config).verdict is Verdict.PASS  # (6 + 10) / 2 = 8
    assert score_case(syntax_ok, ok(5), None, config).verdict is Verdict.PARTIAL
    assert score_case(syntax_ok, ok(1), None, ScoringConfig(partial_at=6)).verdict is Verdict.FAIL
    assert score_case(syntax_ok, ok(6), None, ScoringConfig(judge_weight=3, checks_weight=1)).score == 7.0


def test_a_failing_check_is_fail_whatever_the_judge_says():
    broken = [check_syntax("def f(:", "python")]
    result = score_case(broken, ok(10), None, ScoringConfig())
    assert (result.verdict, result.status, result.score) == (Verdict.FAIL, "SYNTAX_ERROR", 5.0)


def test_judge_error_is_error_not_fail_and_generation_error_is_error():
    syntax_ok = [check_syntax("x = 1", "python")]
    judge_error = Judgement(status=JudgeStatus.JUDGE_ERROR, error="invalid JSON", raw="garbage")
    assert score_case(syntax_ok, judge_error, None, ScoringConfig()).model_dump() == {
        "score": None, "verdict": Verdict.ERROR, "status": "JUDGE_ERROR"}
    assert score_case([], Judgement(status=JudgeStatus.SKIPPED), "GENERATION_ERROR", ScoringConfig()).verdict is Verdict.ERROR


def test_no_code_fails_without_a_judge():
    no_code = [check_syntax("", "python")]
    result = score_case(no_code, Judgement(status=JudgeStatus.SKIPPED), None, ScoringConfig())
    assert (result.verdict, result.status, result.score) == (Verdict.FAIL, "NO_CODE", 0.0)


def test_a_degraded_sandbox_is_said_at_the_top_of_the_report():
    from codegen_eval.generation import recorded
    from codegen_eval.grading.checks import CheckResult, CheckStatus
    from codegen_eval.grading.judge import Judgement, JudgeStatus
    from codegen_eval.grading.scoring import ScoringConfig
    from codegen_eval.reporting.report import render_report
    from codegen_eval.reporting.results import case_result, summarize

    case = load_dataset(SEED)[0]
    degraded = CheckResult(name="tests", status=CheckStatus.OK, details={"isolation_missing": ["an unprivileged uid (not root)"]})
    result = case_result(case, recorded(case, case.expected), [degraded], Judgement(status=JudgeStatus.SKIPPED), ScoringConfig())
    summary = summarize([result], run_id="r", dataset="d", model="m", judge_model="j", rubric="x")
    assert summary.isolation_missing == ["an unprivileged uid (not root)"]
    page = render_report(summary, [result])
    assert page.index('id="sandbox-degraded"') < page.index('class="cards"') and "an unprivileged uid (not root)" in page
    clean = summarize([case_result(case, recorded(case, case.expected), [], Judgement(status=JudgeStatus.SKIPPED), ScoringConfig())],
                      run_id="r", dataset="d", model="m", judge_model="j", rubric="x")
    assert 'id="sandbox-degraded"' not in render_report(clean, [])


UNDEFINED_NAME_CORNERS = [
    "def f():\n    return undefined_thing + len(x)\n",
    "del len\nprint(len)\n",
    "def f():\n    del print\n",
    "len = 3\ndef f():\n    return len + open\n",
    "def f():\n    print(x)\n    x = 1\n",
    "class C:\n    a = 1\n    b = [a for _ in range(3)]\n    def m(self):\n        return a\n",
    "def f():\n    global g\n    g = 1\ndef h():\n    return g + missing\n",
    "__all__ = ['a', 'b']\na = 1\n",
    "try:\n    import boto3\nexcept ImportError:\n    boto3 = None\nprint(__file__, __name__, __builtins__, WindowsError)\n",
    "from os import *\nprint(path, nowhere)\n",
    "def f(x: 'Missing') -> 'int':\n    return [y for y in x if z]\n",
    "lambda: q\nif True:\n    def g():\n        return g\nelse:\n    pass\nprint(g, __class__)\n",
    "class K:\n    def m(self):\n        return __class__, super()\n",
    "import os as print\n",
    "print(1)\nimport os as print\n",
    "def f():\n    print(x)\n    print = 1\n",
]


def pyflakes_undefined(code: str) -> str:
    """The names check's message as pyflakes' documented API gives it: `api.check` with a Reporter."""
    import io

    from pyflakes import api, messages, reporter

    class Collect(reporter.Reporter):
        def __init__(self) -> None:
            super().__init__(io.StringIO(), io.StringIO())
            self.found: list = []

        def flake(self, message) -> None:
            self.found.append(message)

    collected = Collect()
    api.check(code, "<candidate>", collected)
    names = sorted({m.message_args[0] for m in collected.found if isinstance(m, messages.UndefinedName)})
    return f"undefined names: {', '.join(names)}" if names else "no undefined names"


def test_the_names_check_says_what_pyflakes_says_from_many_threads_at_once():
    """Over every reference in the dataset, HumanEval's solutions and corner cases, run from 8 threads
    at once, `undefined_names` reports exactly the undefined names pyflakes' own API reports."""
    import gzip
    import json
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from tests.conftest import DATASET

    humaneval = Path(__file__).resolve().parent / "data" / "HumanEval.jsonl.gz"
    corpus = [case.expected for case in load_dataset(DATASET) if case.format == "python"]
    corpus += [row["prompt"] + row["canonical_solution"] for row in map(json.loads, gzip.open(humaneval, "rt"))]
    corpus += UNDEFINED_NAME_CORNERS

    expected = [pyflakes_undefined(code) for code in corpus]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda code: undefined_names(code).message, corpus * 3)) == expected * 3
    undefined = [code for code, message in zip(corpus, expected) if message.startswith("undefined")]
    assert len(undefined) >= 8  # the corpus does hold undefined names


# --- any output yields a verdict (issue 27) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "fmt", "status", "message"),
    [
        ("x = " + "-" * 50_000 + "1", "python", CheckStatus.SYNTAX_ERROR, "too deeply nested"),  # MemoryError in the parser
        ("x = " + "a." * 40_000 + "a", "python", CheckStatus.SYNTAX_ERROR, "recursion"),
        ("# x\n" * 30_000, "python", CheckStatus.ANALYSIS_ERROR, "120,000 characters, over the 100,000"),
        ("(?i)" + "[\x00-\U0010ffff]" * 100, "regex", CheckStatus.ANALYSIS_ERROR, "504 characters, over the 500"),
        ("x = '\ud800'", "python", CheckStatus.SYNTAX_ERROR, "an unpaired surrogate at position 5: not UTF-8 text"),
        ("^a\udc00$", "regex", CheckStatus.SYNTAX_ERROR, "an unpaired surrogate at position 2: not UTF-8 text"),
        ('{"Version": "2012-10-17", "Id": NaN}', "json", CheckStatus.SYNTAX_ERROR, "NaN is not a JSON number"),
        ('{"Id": Infinity}', "json", CheckStatus.SYNTAX_ERROR, "Infinity is not a JSON number"),
        ('{"Id": [-Infinity]}', "json", CheckStatus.SYNTAX_ERROR, "-Infinity is not a JSON number"),
        ('{"Statement": [{"Condition": {"Bool": {"a": "true", "a": "false"}}}]}', "json", CheckStatus.SYNTAX_ERROR, "the key 'a' appears twice"),
        ('{"Effect": "Deny", "Effect": "Allow"}', "json", CheckStatus.SYNTAX_ERROR, "the key 'Effect' appears twice"),
        ('{"Id": "\\ud800"}', "json", CheckStatus.SYNTAX_ERROR, "unpaired surrogate escape"),
        ('{"Id": {"\\udfff": 1}}', "json", CheckStatus.SYNTAX_ERROR, "unpaired surrogate escape"),
        ('{"Id": "\udc00"}', "json", CheckStatus.SYNTAX_ERROR, "unpaired surrogate at position 8"),
        ('{"Id": "\\ud83d\\ude00 \\u00e9"}', "json", CheckStatus.OK, ""),  # a pair is one character: fine
        ("[" * 50_000 + "]" * 50_000, "json", CheckStatus.SYNTAX_ERROR, "recursion"),
    ],
)
def test_hostile_text_gets_a_check_result(code, fmt, status, message):
    result = check_syntax(code, fmt)
    assert result.status is status and message in result.message


def test_code_too_deep_for_pyflakes_is_not_analysed_rather_than_a_crash():
    result = undefined_names("x = " + "+".join(["1"] * 900))
    assert result.status is CheckStatus.ANALYSIS_ERROR and "nests too deep" in result.message and not result.passed


def test_an_unexpected_failure_in_the_checks_is_that_outputs_failed_check():
    from codegen_eval.grading.check_cache import settled
    from codegen_eval.grading.checks import run_checks
    from tests.conftest import DATASET

    case = next(c for c in load_dataset(DATASET) if c.format == "regex")
    checks = run_checks(case, case.expected, None)  # no sandbox: regex_checks' first call raises AttributeError
    assert [(c.name, c.status) for c in checks] == [("syntax", CheckStatus.OK), ("analysis", CheckStatus.ANALYSIS_ERROR)]
    assert "AttributeError" in checks[1].message and not settled(checks)
    assert score_case(checks, Judgement(status=JudgeStatus.SKIPPED), None, ScoringConfig()).verdict is Verdict.FAIL


def test_records_of_hostile_text_are_valid_json_and_xml(tmp_path):
    """A lone surrogate in the output and in a check message, and C0 controls in the message, as a
    candidate's exception can carry them: results.jsonl, the check cache key, results.csv and junit.xml
    are all written, read back and parse."""
    from xml.etree import ElementTree

    from codegen_eval.generation import Generation
    from codegen_eval.grading.check_cache import checks_key
    from codegen_eval.grading.checks import CheckResult
    from codegen_eval.reporting.report import summarize_run, write_junit
    from codegen_eval.reporting.runs import append_results, load_results
    from codegen_eval.reporting.results import case_result
    from tests.conftest import DATASET

    case = next(c for c in load_dataset(DATASET) if c.format == "python")
    code = "def f():\n    raise ValueError('\ud800')  # \udfff\n"
    hostile = "ValueError: \ud800 \x00\x01\x0b\x1b[31m \ufffe"
    checks = [CheckResult(name="tests", status=CheckStatus.TEST_FAIL, message=hostile, details={"output": hostile, hostile: [hostile]})]
    assert checks[0].message == "ValueError: \ufffd \x00\x01\x0b\x1b[31m \ufffe" and "\ufffd" in checks[0].details["output"]
    assert checks_key(case, code).startswith("checks:")
    result = case_result(case, Generation(case_id=case.id, cid="hostile:\x07", code=code, raw="\ud800"), checks,
                      Judgement(status=JudgeStatus.SKIPPED), ScoringConfig())
    append_results(tmp_path, [result])
    [stored] = load_results(tmp_path)
    assert stored.output == "def f():\n    raise ValueError('\ufffd')  # \ufffd\n" and stored.verdict is Verdict.FAIL
    summary, _, _ = summarize_run(tmp_path, run_id="r", dataset="d", model="m", judge_model="m", rubric="r")
    suite = ElementTree.parse(write_junit(tmp_path, summary)).getroot()
    failure = suite.find("testcase/failure")
    assert suite.find("testcase").get("name") == f"{case.id}#hostile:\ufffd" and failure is not None
    assert failure.text == "tests: ValueError: \ufffd \ufffd\ufffd\ufffd\ufffd[31m \ufffd"
