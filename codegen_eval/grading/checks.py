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
import threading
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from codegen_eval.dataset import AccessProbe, Case, Format, PolicyTests, PythonTests, RegexTests
from codegen_eval.grading import differential, iam
from codegen_eval.grading.sandbox import Limits, Sandbox, SandboxResult

REDOS_LIMITS = Limits(wall_s=3.0, cpu_s=3)
EQUIVALENCE_LIMITS = Limits(wall_s=5.0, cpu_s=5)
# CPython 3.11 before 3.11.9 can corrupt ast.parse state when threads parse at once
# ("AST constructor recursion depth mismatch"): checks run on several threads, so parse one at a time.
_AST_LOCK = threading.Lock()


def parse_python(code: str) -> ast.Module:
    with _AST_LOCK:
        return ast.parse(code)


class CheckStatus(StrEnum):
    OK = "OK"
    NO_CODE = "NO_CODE"
    SYNTAX_ERROR = "SYNTAX_ERROR"
    TEST_FAIL = "TEST_FAIL"
    TIMEOUT = "TIMEOUT"
    SANDBOX_ERROR = "SANDBOX_ERROR"
    WARN = "WARN"  # an advisory check found something
    SKIPPED = "SKIPPED"


class CheckResult(BaseModel):
    name: str
    status: CheckStatus
    message: str = ""
    gate: bool = True
    fraction: float | None = None  # share of test items passed, for checks that count items
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status in (CheckStatus.OK, CheckStatus.WARN, CheckStatus.SKIPPED)


def check_syntax(code: str, fmt: Format) -> CheckResult:
    if not code.strip():
        return CheckResult(name="syntax", status=CheckStatus.NO_CODE, message="the model returned no code")
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
    return CheckResult(name="syntax", status=CheckStatus.OK, message=f"valid {fmt}")


def needs_sandbox(case: Case) -> bool:
    """Whether `run_checks` may run a job in the sandbox for this case's code. When not, its checks are
    CPU work in this process, best done in the caller's thread: on a pool they only contend for the GIL."""
    return case.format == "regex" or (case.format == "python" and case.tests is not None)


def run_checks(case: Case, code: str, sandbox: Sandbox) -> list[CheckResult]:
    syntax = check_syntax(code, case.format)
    if not syntax.passed:
        return [syntax]
    if case.format == "python":
        return [syntax, *python_checks(case, code, sandbox)]
    if case.format == "json":
        return [syntax, *policy_checks(case, code)]
    return [syntax, *regex_checks(case, code, sandbox)]


# --- python ---------------------------------------------------------------------------------------------


def python_checks(case: Case, code: str, sandbox: Sandbox) -> list[CheckResult]:
    results = [undefined_names(code)]
    if case.tests is None:
        return results
    tests = PythonTests.model_validate(case.tests)
    results.append(signature(code, case.expected, tests.entry_point))
    job = {"kind": "python", "code": code, "entry_point": tests.entry_point, "check": tests.check, "aws": tests.aws}
    outcome = sandbox.run(job)
    results.append(_from_sandbox("tests", outcome, fraction=1.0 if outcome.status == "PASS" else 0.0 if outcome.status == "TEST_FAIL" else None))
    return results


def undefined_names(code: str) -> CheckResult:
    from pyflakes import messages

    found = _checker()(parse_python(code), "<candidate>").messages
    undefined = sorted({m.message_args[0] for m in found if isinstance(m, messages.UndefinedName)})
    if undefined:
        return CheckResult(name="names", status=CheckStatus.TEST_FAIL, message=f"undefined names: {', '.join(undefined)}")
    return CheckResult(name="names", status=CheckStatus.OK, message="no undefined names")


@functools.cache
def _checker() -> type:
    """pyflakes' Checker, less most of its cost: its `__init__` makes a `Builtin` binding for each of
    ~160 builtins and adds them one by one (~half of checking a short answer). Here the module scope
    starts with one prebuilt set of those bindings instead, shared by every check. What pyflakes writes
    on a binding, its `used` mark, is kept per check (`_SharedBuiltin`), so one check's code never
    changes another's messages; `tests/test_execution_checks.py` compares every message with pyflakes' own."""
    import contextlib

    from pyflakes import checker

    class Checker(checker.Checker):
        def __init__(self, *args: Any, **kwargs: Any):
            _builtin_marks.marks = {}  # a check runs whole in __init__, in one thread
            try:
                super().__init__(*args, **kwargs)
            finally:
                _builtin_marks.marks = {}

        @property
        def builtIns(self) -> tuple:  # read only by __init__, to bind them one by one: nothing left to do
            return ()

        @builtIns.setter
        def builtIns(self, names: frozenset) -> None:
            self._builtin_names = frozenset(names)

        @contextlib.contextmanager
        def in_scope(self, cls):
            with super().in_scope(cls):
                if len(self.scopeStack) == 1:  # the module scope, which __init__ enters first
                    self.scope.update(_builtin_bindings(self._builtin_names))
                yield

    return Checker


_builtin_marks = threading.local()  # the running check's `used` marks on the shared builtin bindings, by name


@functools.cache
def _builtin_bindings(names: frozenset[str]) -> dict[str, Any]:
    from pyflakes import checker

    class _SharedBuiltin(checker.Builtin):
        def __init__(self, name: str):
            self.name, self.source = name, None  # no `used` of its own: the property below keeps it per check

        @property
        def used(self) -> Any:
            return _builtin_marks.marks.get(self.name, False)

        @used.setter
        def used(self, value: Any) -> None:
            _builtin_marks.marks[self.name] = value

    return {name: _SharedBuiltin(name) for name in names}


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
                decision = iam.evaluate(policy, probe.action, probe.resource, probe.context, _principal(probe))
                if (decision == "allow") != must_allow:
                    wanted = "allowed" if must_allow else "denied"
                    wrong.append(f"{_describe_probe(probe)} should be {wanted}, got {decision}")
    except iam.UnsupportedCondition as exc:
        return CheckResult(name="access", status=CheckStatus.TEST_FAIL, message=str(exc), fraction=0.0)
    fraction = (total - len(wrong)) / total if total else 1.0
    if wrong:
        return CheckResult(name="access", status=CheckStatus.TEST_FAIL, message="; ".join(wrong), fraction=fraction, details={"wrong": wrong})
    return CheckResult(name="access", status=CheckStatus.OK, message=f"{total} of {total} requests decided right", fraction=1.0)


def _principal(probe: AccessProbe) -> iam.Principal | None:
    if probe.principal is None:
        return None
    if probe.principal == "anonymous":
        return iam.ANONYMOUS
    return next(iter(probe.principal.items()))


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


_PARSERS = {"python": parse_python, "json": json.loads, "regex": re.compile}
