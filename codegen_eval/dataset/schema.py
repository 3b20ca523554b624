"""What a case is: its fields, its `tests` per format, and what its reference must satisfy."""

from __future__ import annotations

import ast
import json
import re
import threading
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from codegen_eval.dataset.spying import ADVICE, spying

Format = Literal["python", "json", "regex"]
# CPython 3.11 before 3.11.9 can corrupt ast.parse state when threads parse at once
# ("AST constructor recursion depth mismatch"): checks run on several threads, so parse one at a time.
_AST_LOCK = threading.Lock()


def parse_python(code: str) -> ast.Module:
    with _AST_LOCK:
        return ast.parse(code)

Difficulty = Literal["easy", "medium", "hard"]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class PythonTests(BaseModel):
    """HumanEval convention: `check(candidate)` raises when the candidate is wrong."""

    model_config = _STRICT
    entry_point: NonEmpty
    check: NonEmpty
    aws: bool = True  # run against the job's own AWS endpoint (moto) with fake credentials
    # The AWS services the endpoint serves; by default those the reference and the check create clients for.
    services: list[NonEmpty] | None = None


PrincipalType = Literal["AWS", "Service", "Federated", "CanonicalUser"]


class AccessProbe(BaseModel):
    """One request to a policy. `context` holds condition keys and policy-variable values
    (e.g. {"aws:SecureTransport": "true", "aws:username": "alice"}); `principal` says who asks, for a
    bucket or trust policy: {"AWS": ARN or account id}, {"Service": "lambda.amazonaws.com"},
    {"Federated": provider}, {"CanonicalUser": id}, or "anonymous"."""

    model_config = _STRICT
    action: NonEmpty
    resource: NonEmpty | None = None
    principal: dict[PrincipalType, NonEmpty] | Literal["anonymous"] | None = None
    context: dict[str, str | list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_principal(self) -> AccessProbe:
        if isinstance(self.principal, dict):
            if len(self.principal) != 1:
                raise ValueError("principal names exactly one of AWS, Service, Federated, CanonicalUser")
            aws = self.principal.get("AWS")
            if aws is not None and not re.fullmatch(r"\d{12}|arn:aws[a-z-]*:(iam|sts)::\d{12}:\S+", aws):
                raise ValueError(f"principal AWS {aws!r} is not an account id or an IAM/STS ARN")
        return self


class RequestPattern(BaseModel):
    """Requests named by an action and (optionally) a resource, each with IAM's `*` and `?` wildcards."""

    model_config = _STRICT
    action: NonEmpty
    resource: NonEmpty | None = None


class PolicyTests(BaseModel):
    """Requests the policy must allow, and requests it must not. `policy_type` says what the case
    asks for: an identity policy (probes have a resource, no principal), an S3 bucket policy
    (resource and principal) or a role trust policy (principal; the resource, the role, may be left out).

    Beyond the probes the answer is compared with the reference on a generated request space
    (grading/differential.py). `explicit_deny`: the task asks for explicit denies, so where the
    reference denies explicitly an implicit deny is a difference. `may_allow` / `may_deny`: requests
    the task leaves to the answer (acceptable extra grants, or denials), not compared."""

    model_config = _STRICT
    policy_type: Literal["identity", "bucket", "trust"] = "identity"
    allow: list[AccessProbe] = Field(default_factory=list)
    deny: list[AccessProbe] = Field(default_factory=list)
    explicit_deny: bool = False
    may_allow: list[RequestPattern] = Field(default_factory=list)
    may_deny: list[RequestPattern] = Field(default_factory=list)

    @model_validator(mode="after")
    def _probes_fit_type(self) -> PolicyTests:
        problems = []
        for name, probes in (("allow", self.allow), ("deny", self.deny)):
            for index, probe in enumerate(probes):
                where = f"{name}[{index}]"
                if self.policy_type == "identity" and probe.principal is not None:
                    problems.append(f"{where}: an identity policy's probe has no principal (the policy's holder asks)")
                if self.policy_type != "identity" and probe.principal is None:
                    problems.append(f"{where}: a {self.policy_type} policy's probe needs a principal")
                if self.policy_type != "trust" and probe.resource is None:
                    problems.append(f"{where}: the probe needs a resource")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RegexTests(BaseModel):
    """Strings `re.search(pattern, s)` must find a match in, and strings it must not."""

    model_config = _STRICT
    match: list[str] = Field(default_factory=list)
    no_match: list[str] = Field(default_factory=list)


_TESTS_BY_FORMAT: dict[str, type[BaseModel]] = {
    "python": PythonTests,
    "json": PolicyTests,
    "regex": RegexTests,
}


class Case(BaseModel):
    """One coding task. `tests` is kept exactly as written; its shape depends on `format`."""

    model_config = _STRICT
    id: NonEmpty
    task: NonEmpty
    format: Format
    expected: NonEmpty
    solution_criteria: NonEmpty
    difficulty: Difficulty
    tests: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _tests_fit_format(self) -> Case:
        if self.tests is not None:
            try:
                _TESTS_BY_FORMAT[self.format].model_validate(self.tests)
            except ValidationError as exc:
                details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"does not fit format {self.format!r}: {details}") from None
        return self


def reference_problems(case: Case) -> list[tuple[str, str]]:
    """What is wrong with a case that shows without running anything, as (field, message): a reference
    that does not parse for its format, a `check` that does not parse or defines no `check`, an
    entry point the reference does not define. Running the reference is `proof`'s job."""
    problems: list[tuple[str, str]] = []
    parsed = _parse(case.expected, case.format)
    if isinstance(parsed, str):
        problems.append(("expected", parsed))
    if case.format != "python" or case.tests is None:
        return problems
    tests = PythonTests.model_validate(case.tests)
    check = _parse(tests.check, "python")
    if isinstance(check, str):
        problems.append(("tests.check", check))
    elif "check" not in _module_names(check):
        problems.append(("tests.check", "defines no function check(candidate) at module level"))
    else:
        problems += [("tests.check", f"check line {line} {what}: {ADVICE}") for line, what in spying(check)]
    if isinstance(parsed, ast.Module) and tests.entry_point not in _module_names(parsed):
        problems.append(("tests.entry_point", f"the reference (expected) defines no {tests.entry_point}() at module level"))
    return problems


def _parse(source: str, fmt: Format) -> Any:
    """The parsed source, or a message saying why it does not parse as `fmt`."""
    if fmt == "python":
        try:
            return parse_python(source)
        except SyntaxError as exc:
            return f"not valid Python: line {exc.lineno}: {exc.msg}"
        except (ValueError, RecursionError) as exc:
            return f"not valid Python: {exc}"
    if fmt == "json":
        try:
            policy = parse_policy_json(source)
        except json.JSONDecodeError as exc:
            return f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        except (PolicyJSONError, ValueError, RecursionError) as exc:
            return f"not a valid policy document: {exc}"
        return policy if isinstance(policy, dict) else f"an IAM policy must be a JSON object, got {type(policy).__name__}"
    try:
        return re.compile(source)
    except re.error as exc:
        return f"not a valid regex: {exc.msg} at position {exc.pos}"
    except (RecursionError, OverflowError) as exc:
        return f"not a valid regex: {exc}"


class PolicyJSONError(ValueError):
    """JSON that Python's json module reads but AWS refuses as a policy document."""


def parse_policy_json(text: str) -> Any:
    """JSON read as AWS reads a policy document: NaN / Infinity / -Infinity are not numbers, a key given
    twice in one object is an error (json.loads would keep the last, hiding the first from every check),
    and an unpaired surrogate (a \\ud800 escape, or the raw code point) is not text. Raises
    json.JSONDecodeError for text that is not JSON at all, PolicyJSONError for the rest."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PolicyJSONError(f"an unpaired surrogate at position {exc.start}: not UTF-8 text") from None
    value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    if "\\u" in text and _has_unpaired_surrogate(value):
        raise PolicyJSONError("an unpaired surrogate escape (\\ud800-\\udfff): not UTF-8 text")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise PolicyJSONError(f"the key {key[:80]!r} appears twice in one object")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise PolicyJSONError(f"{name} is not a JSON number")


def _has_unpaired_surrogate(value: Any) -> bool:
    """Whether any string (key or value) in parsed JSON holds a lone surrogate. A loop, not recursion:
    the document may nest as deep as json.loads allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _module_names(module: ast.Module) -> set[str]:
    """Names bound at module level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names
