"""Checks that need no model: does the output parse, and does it do what the case's tests say.

Python runs in the sandbox against moto; IAM policies are evaluated as data; regexes run in the
sandbox under a timeout. A check either gates the verdict (`gate`) or only informs the report.
A gating check with a `fraction` (the share of test items passed) gives partial credit; any other
failing gating check fails the case outright.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from codegen_eval.dataset import AccessProbe, Case, Format, PolicyTests, PythonTests, RegexTests
from codegen_eval.dataset.schema import parse_policy_json, parse_python
from codegen_eval.grading import differential, iam
from codegen_eval.grading.aws_endpoint import services_used
from codegen_eval.grading.text import clean_data, clean_text
from codegen_eval.grading.sandbox import Limits, Sandbox, SandboxResult

REDOS_LIMITS = Limits(wall_s=3.0, cpu_s=3)
EQUIVALENCE_LIMITS = Limits(wall_s=5.0, cpu_s=5)
# The longest output each format's main-process analysis takes (ast + pyflakes, JSON + IAM evaluation,
# re.compile); longer is refused up front. Each is well past the dataset's longest reference (1,392, 898
# and 262 characters) and keeps the worst case near a second of CPU: pyflakes on 100,000 characters of
# code, and re.compile, which walks every code point of a class range (`(?i)[\x00-\U0010ffff]` costs
# ~6 ms each: 500 characters of them, ~1 s).
MAX_CHARS: dict[str, int] = {"python": 100_000, "json": 100_000, "regex": 500}


class CheckStatus(StrEnum):
    OK = "OK"
    NO_CODE = "NO_CODE"
    SYNTAX_ERROR = "SYNTAX_ERROR"
    TEST_FAIL = "TEST_FAIL"
    TIMEOUT = "TIMEOUT"
    SANDBOX_ERROR = "SANDBOX_ERROR"
    WARN = "WARN"  # an advisory check found something
    SKIPPED = "SKIPPED"
    ANALYSIS_ERROR = "ANALYSIS_ERROR"  # the output could not be analysed (too long, too deep, or the analysis failed)


class CheckResult(BaseModel):
    name: str
    status: CheckStatus
    message: str = ""
    gate: bool = True
    fraction: float | None = None  # share of test items passed, for checks that count items
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("message")
    @classmethod
    def _storable_message(cls, message: str) -> str:
        return clean_text(message)

    @field_validator("details")
    @classmethod
    def _storable_details(cls, details: dict[str, Any]) -> dict[str, Any]:
        return clean_data(details)

    @property
    def passed(self) -> bool:
        return self.status in (CheckStatus.OK, CheckStatus.WARN, CheckStatus.SKIPPED)


def check_syntax(code: str, fmt: Format) -> CheckResult:
    if not code.strip():
        return CheckResult(name="syntax", status=CheckStatus.NO_CODE, message="the model returned no code")
    if len(code) > MAX_CHARS[fmt]:
        return CheckResult(name="syntax", status=CheckStatus.ANALYSIS_ERROR,
                           message=f"not analysed: {len(code):,} characters, over the {MAX_CHARS[fmt]:,} this grader takes for {fmt}")
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no file, API or AWS takes it, in any format
        return _syntax_error(f"an unpaired surrogate at position {exc.start}: not UTF-8 text")
    try:
        _PARSERS[fmt](code)
    except SyntaxError as exc:
        return _syntax_error(f"line {exc.lineno}: {exc.msg}")
    except json.JSONDecodeError as exc:
        return _syntax_error(f"line {exc.lineno} column {exc.colno}: {exc.msg}")
    except re.error as exc:
        return _syntax_error(f"position {exc.pos}: {exc.msg}")
    except (ValueError, RecursionError, OverflowError) as exc:
        return _syntax_error(str(exc) or type(exc).__name__)
    except MemoryError:  # CPython's parser reports nesting past its own stack this way
        return _syntax_error("too deeply nested to parse")
    return CheckResult(name="syntax", status=CheckStatus.OK, message=f"valid {fmt}")


def needs_sandbox(case: Case) -> bool:
    """Whether `run_checks` may run a job in the sandbox for this case's code. When not, its checks are
    CPU work in this process, best done in the caller's thread: on a pool they only contend for the GIL."""
    return case.format == "regex" or (case.format == "python" and case.tests is not None)


def run_checks(case: Case, code: str, sandbox: Sandbox) -> list[CheckResult]:
    """The output's checks. Whatever its text, they end: an analysis that raises is this output's failed
    check, with the reason, never the run's end (the last-resort net below)."""
    syntax = None
    try:
        syntax = check_syntax(code, case.format)
        if not syntax.passed:
            return [syntax]
        if case.format == "python":
            return [syntax, *python_checks(case, code, sandbox)]
        if case.format == "json":
            return [syntax, *policy_checks(case, code)]
        return [syntax, *regex_checks(case, code, sandbox)]
    except Exception as exc:  # noqa: BLE001 (any failure of one output's analysis is that output's)
        failed = CheckResult(name="analysis", status=CheckStatus.ANALYSIS_ERROR,
                             message=f"the checks could not analyse this output: {type(exc).__name__}: {str(exc)[:300]}",
                             details={"unsettled": True})  # may be the machine's (memory): never cached
        return [syntax, failed] if syntax is not None and syntax.passed else [failed]


# --- python ---------------------------------------------------------------------------------------------


def python_checks(case: Case, code: str, sandbox: Sandbox) -> list[CheckResult]:
    results = [undefined_names(code)]
    if case.tests is None:
        return results
    tests = PythonTests.model_validate(case.tests)
    results.append(signature(code, case.expected, tests.entry_point))
    job = {
        "kind": "python", "code": code, "entry_point": tests.entry_point, "check": tests.check, "aws": tests.aws,
        "helpers": _helper_source(case.expected, tests.entry_point, tests.check),
        "services": tests.services or list(_services(case.expected, tests.check)),
    }
    outcome = sandbox.run(job)
    results.append(_from_sandbox("tests", outcome, fraction=1.0 if outcome.status == "PASS" else 0.0 if outcome.status == "TEST_FAIL" else None))
    return results


@functools.lru_cache(maxsize=1024)
def _helper_source(reference: str, entry_point: str, check: str) -> str:
    """The reference's imports and the top-level functions the check calls besides the entry point: trusted
    code the check's process runs, so a check never calls a helper the candidate defined (HumanEval's poly)."""
    import builtins

    try:
        tree, used_by_check = parse_python(reference), parse_python(check)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    used = {n.id for n in ast.walk(used_by_check) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - set(dir(builtins))
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    helpers = [node for node in tree.body if isinstance(node, definitions) and node.name in used and node.name != entry_point]
    if not helpers:
        return ""
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(ast.get_source_segment(reference, node) or "" for node in imports + helpers)


@functools.lru_cache(maxsize=1024)
def _services(reference: str, check: str) -> tuple[str, ...]:
    return tuple(services_used(reference, check))


def undefined_names(code: str) -> CheckResult:
    """pyflakes' undefined names, used as its own API documents (a `Checker` over the parsed module)."""
    from pyflakes import checker, messages

    try:
        found = checker.Checker(parse_python(code), "<candidate>").messages
    except (RecursionError, MemoryError) as exc:  # nests deeper than pyflakes' recursive walk can follow
        return CheckResult(name="names", status=CheckStatus.ANALYSIS_ERROR,
                           message=f"not analysed: pyflakes ran out of {'stack' if isinstance(exc, RecursionError) else 'memory'} (the code nests too deep)")
    undefined = sorted({m.message_args[0] for m in found if isinstance(m, messages.UndefinedName)})
    if undefined:
        return CheckResult(name="names", status=CheckStatus.TEST_FAIL, message=f"undefined names: {', '.join(undefined)}")
    return CheckResult(name="names", status=CheckStatus.OK, message="no undefined names")


def signature(code: str, expected: str, entry_point: str) -> CheckResult:
    """The requested function exists at module level and accepts the reference's positional arguments."""
    found = _function(code, entry_point)
    if found is None:
        return CheckResult(name="signature", status=CheckStatus.TEST_FAIL, message=f"no function {entry_point}() at module level")
    reference = _function(expected, entry_point)
    if reference is None:
        return CheckResult(name="signature", status=CheckStatus.OK, message=f"{entry_point}{_params(found)} defined")
    wanted = len(reference.args.posonlyargs) + len(reference.args.args) - len(reference.args.defaults)
    accepts = len(found.args.posonlyargs) + len(found.args.args)
    required = accepts - len(found.args.defaults)
    if found.args.vararg is None and not (required <= wanted <= accepts):
        return CheckResult(
            name="signature", status=CheckStatus.TEST_FAIL,
            message=f"expected {entry_point}{_params(reference)}, got {entry_point}{_params(found)}",
        )
    return CheckResult(name="signature", status=CheckStatus.OK, message=f"{entry_point}{_params(found)}")


def _function(code: str, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        tree = parse_python(code)
    except SyntaxError:
        return None
    return next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name), None)


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return "(" + ", ".join(a.arg for a in [*fn.args.posonlyargs, *fn.args.args]) + ")"


# --- json: IAM policies -----------------------------------------------------------------------------


def policy_checks(case: Case, code: str) -> list[CheckResult]:
    policy = json.loads(code)
    tests = PolicyTests.model_validate(case.tests) if case.tests is not None else None
    policy_type = tests.policy_type if tests else "identity"
    errors = iam.grammar_errors(policy, policy_type)
    if errors:
        return [CheckResult(name="policy_grammar", status=CheckStatus.TEST_FAIL, message="; ".join(errors[:10]))]
    results = [CheckResult(name="policy_grammar", status=CheckStatus.OK, message=f"valid {_POLICY_NAMES[policy_type]}")]
    results.append(_parliament(code, policy_type))
    if tests is not None:
        results.append(access(policy, tests))
        results.append(differential.policy_check(policy, case.expected, tests))  # issue 26: beyond the probes
    return results


_POLICY_NAMES = {"identity": "identity policy", "bucket": "S3 bucket policy", "trust": "role trust policy"}


def _parliament(code: str, policy_type: str) -> CheckResult:
    if policy_type == "trust":  # parliament reads a trust policy's missing Resource as malformed
        return CheckResult(name="parliament", gate=False, status=CheckStatus.SKIPPED, message="parliament does not read trust policies")
    findings = iam.parliament_findings(code)
    return CheckResult(
        name="parliament", gate=False, status=CheckStatus.WARN if findings else CheckStatus.OK,
        message="; ".join(findings[:10]) if findings else "no findings", details={"findings": findings},
    )


def access(policy: dict[str, Any], tests: PolicyTests) -> CheckResult:
    """Each probe's decision against what the case says it must be."""
    wrong, total = [], len(tests.allow) + len(tests.deny)
    try:
        for must_allow, probes in ((True, tests.allow), (False, tests.deny)):
            for probe in probes:
                decision = iam.evaluate(policy, probe.action, probe.resource, probe.context, differential.probe_principal(probe))
                if (decision == "allow") != must_allow:
                    wanted = "allowed" if must_allow else "denied"
                    wrong.append(f"{_describe_probe(probe)} should be {wanted}, got {decision}")
    except iam.UnsupportedCondition as exc:
        return CheckResult(name="access", status=CheckStatus.TEST_FAIL, message=str(exc), fraction=0.0)
    fraction = (total - len(wrong)) / total if total else 1.0
    if wrong:
        return CheckResult(name="access", status=CheckStatus.TEST_FAIL, message="; ".join(wrong), fraction=fraction, details={"wrong": wrong})
    return CheckResult(name="access", status=CheckStatus.OK, message=f"{total} of {total} requests decided right", fraction=1.0)


def _describe_probe(probe: AccessProbe) -> str:
    text = probe.action + (f" on {probe.resource}" if probe.resource else "")
    if probe.principal is not None:
        text += " by " + (probe.principal if isinstance(probe.principal, str) else next(iter(probe.principal.values())))
    if probe.context:
        text += " with " + ", ".join(f"{k}={v}" for k, v in probe.context.items())
    return text


# --- regex ----------------------------------------------------------------------------------------------


def regex_checks(case: Case, code: str, sandbox: Sandbox) -> list[CheckResult]:
    tests = RegexTests.model_validate(case.tests or {})
    job = {"kind": "regex", "pattern": code, "match": tests.match, "no_match": tests.no_match}
    outcome = sandbox.run(job)
    details = outcome.details
    if outcome.status not in ("PASS", "TEST_FAIL"):
        return [_from_sandbox("tests", outcome)]
    total = details.get("tests_total", 0)
    results = [_from_sandbox("tests", outcome, fraction=details["tests_passed"] / total if total else 1.0)]
    results.append(_redos(code, details, sandbox))
    results.append(_equivalence(code, case.expected, sandbox))
    return results


def _redos(code: str, details: dict[str, Any], sandbox: Sandbox) -> CheckResult:
    findings = [f for f in details.get("redos", []) if "example" in f]
    attack = sandbox.run({"kind": "regex_attack", "pattern": code, "attacks": details.get("attacks", [])}, REDOS_LIMITS)
    if attack.status == "TIMEOUT":
        return CheckResult(name="redos", status=CheckStatus.TIMEOUT, message=f"catastrophic backtracking: an attack string took over {REDOS_LIMITS.wall_s:g} s", details={"static": findings})
    if findings:
        return CheckResult(name="redos", gate=False, status=CheckStatus.WARN, message=f"regexploit: {len(findings)} potential ReDoS, e.g. {findings[0]['example']}", details={"static": findings})
    return CheckResult(name="redos", status=CheckStatus.OK, message="no ReDoS found (static analysis and attack strings)")


def _equivalence(code: str, expected: str, sandbox: Sandbox) -> CheckResult:
    outcome = sandbox.run({"kind": "regex_equivalence", "pattern": code, "expected": expected}, EQUIVALENCE_LIMITS)
    if outcome.status != "PASS":
        reason = f"the analysis took over {EQUIVALENCE_LIMITS.wall_s:g} s" if outcome.status == "TIMEOUT" else outcome.message
        # Cut short by its time limit or the sandbox: a fact about this machine's load, not the pattern.
        return CheckResult(name="equivalence", gate=False, status=CheckStatus.SKIPPED, message=f"not checked: {reason}",
                           details={"unsettled": outcome.status in ("TIMEOUT", "SANDBOX_ERROR")})
    eq = outcome.details
    if not eq.get("checked"):
        return CheckResult(name="equivalence", gate=False, status=CheckStatus.SKIPPED, message=eq.get("reason", "not checked"))
    if eq["equivalent"]:
        return CheckResult(name="equivalence", gate=False, status=CheckStatus.OK, message="same language as the expected pattern")
    parts = []
    if eq["accepted_not_expected"]:
        parts.append(f"accepts, unlike expected: {eq['accepted_not_expected']!r}")
    if eq["expected_not_accepted"]:
        parts.append(f"rejects, unlike expected: {eq['expected_not_accepted']!r}")
    return CheckResult(name="equivalence", gate=False, status=CheckStatus.WARN, message="; ".join(parts) or "differs from expected", details=eq)


def _from_sandbox(name: str, outcome: SandboxResult, fraction: float | None = None) -> CheckResult:
    status = CheckStatus.OK if outcome.status == "PASS" else CheckStatus(outcome.status)
    details = {**outcome.details, "elapsed_ms": round(outcome.elapsed_ms, 1)}
    if outcome.output:
        details["output"] = outcome.output
    if outcome.isolation:
        details["isolation_missing"] = outcome.isolation
    return CheckResult(name=name, status=status, message=outcome.message, fraction=fraction, details=details)


def _syntax_error(message: str) -> CheckResult:
    return CheckResult(name="syntax", status=CheckStatus.SYNTAX_ERROR, message=message)


_PARSERS = {"python": parse_python, "json": parse_policy_json, "regex": re.compile}
