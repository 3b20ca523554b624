"""The dataset: what a case is, and how a file of cases is read and validated.

Every problem in a file is reported at once, each naming file, line and field, and always before any
model call: a typo in case 900 must not cost the 899 calls before it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

Format = Literal["python", "json", "regex"]
Difficulty = Literal["easy", "medium", "hard"]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

_STRICT = ConfigDict(extra="forbid", frozen=True)
T = TypeVar("T")


class PythonTests(BaseModel):
    """HumanEval convention: `check(candidate)` raises when the candidate is wrong."""

    model_config = _STRICT
    entry_point: NonEmpty
    check: NonEmpty
    aws: bool = True  # run inside moto's mock_aws() with fake credentials


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


class PolicyTests(BaseModel):
    """Requests the policy must allow, and requests it must not. `policy_type` says what the case
    asks for: an identity policy (probes have a resource, no principal), an S3 bucket policy
    (resource and principal) or a role trust policy (principal; the resource, the role, may be left out)."""

    model_config = _STRICT
    policy_type: Literal["identity", "bucket", "trust"] = "identity"
    allow: list[AccessProbe] = Field(default_factory=list)
    deny: list[AccessProbe] = Field(default_factory=list)

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


HUMANEVAL_FIELDS = {"task_id", "prompt", "canonical_solution", "test", "entry_point"}


def from_humaneval(record: dict[str, Any]) -> dict[str, Any]:
    """A HumanEval problem as a case: the candidate is the whole function (prompt plus body)."""
    return {
        "id": record["task_id"],
        "task": "Complete this Python function. Return the whole function, signature and docstring included.\n\n"
        + record["prompt"],
        "format": "python",
        "expected": record["prompt"] + record["canonical_solution"],
        "solution_criteria": "Does exactly what the docstring says, for every input it allows.",
        "difficulty": "medium",
        "tests": {"entry_point": record["entry_point"], "check": record["test"], "aws": False},
    }


class DatasetError(ValueError):
    """A dataset that cannot be used. `problems` holds one "file:line: field: message" per issue."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:20]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__("\n".join(shown) + more)


def content_id(record: dict[str, Any]) -> str:
    """A stable id for a case that has none: the same task and format always give the same id."""
    basis = json.dumps([record.get("format"), record.get("task")], ensure_ascii=False)
    return "case-" + hashlib.sha256(basis.encode()).hexdigest()[:12]


def load_dataset(path: str | Path) -> list[Case]:
    """Read a `.jsonl` file (one case per line) or a `.json` file (a list of cases) and validate it."""
    cases: list[Case] = []
    _validate_all(Path(path), cases.append)
    return cases


def dataset_ids(path: str | Path) -> list[str]:
    """Validate the whole file like `load_dataset`, keeping only the ids: a run then reads its cases
    batch by batch (`iter_cases`) and never holds a 20,000-case dataset in memory."""
    ids: list[str] = []
    _validate_all(Path(path), lambda case: ids.append(case.id))
    return ids


def iter_cases(path: str | Path) -> Iterator[Case]:
    """The cases of a file that `dataset_ids` or `load_dataset` accepted, one at a time."""
    path, problems = Path(path), []
    yield from _validate(path, _records(path, problems), problems)
    if problems:  # the file was edited after it was validated
        raise DatasetError([f"{path} changed during the run:"] + [message for _, message in problems])


def _validate_all(path: Path, keep: Callable[[Case], None]) -> None:
    """Every case to `keep`; then, if anything was wrong, a DatasetError naming each problem in line order."""
    if not path.is_file():
        raise DatasetError([f"{path}: no such file"])
    problems: list[tuple[int, str]] = []  # (line, message)
    valid = 0
    for case in _validate(path, _records(path, problems), problems):
        keep(case)
        valid += 1
    if not valid and not problems:
        problems.append((0, f"{path}: the dataset is empty"))
    if problems:
        raise DatasetError([message for _, message in sorted(problems, key=lambda p: p[0])])


def _records(path: Path, problems: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    text = gzip.decompress(path.read_bytes()).decode("utf-8") if path.suffix == ".gz" else path.read_text(encoding="utf-8")
    return _read_json(path, text, problems) if path.suffix == ".json" else _read_jsonl(path, text, problems)


def _read_jsonl(path: Path, text: str, problems: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((lineno, f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})"))


def _read_json(path: Path, text: str, problems: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    """Walk the top-level list element by element so each case keeps the line it starts on."""
    decoder = json.JSONDecoder()
    try:
        top = decoder.decode(text)
    except json.JSONDecodeError as exc:
        problems.append((exc.lineno, f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"))
        return
    if not isinstance(top, list):
        problems.append((1, f"{path}:1: expected a JSON list of cases, got {type(top).__name__}"))
        return
    pos = text.index("[") + 1
    for _ in top:
        while text[pos] in " \t\r\n,":
            pos += 1
        value, end = decoder.raw_decode(text, pos)
        yield text.count("\n", 0, pos) + 1, value
        pos = end


def _validate(path: Path, records: Iterable[tuple[int, Any]], problems: list[tuple[int, str]]) -> Iterator[Case]:
    first_line_of: dict[str, int] = {}
    for lineno, record in records:
        where = f"{path}:{lineno}"
        if not isinstance(record, dict):
            problems.append((lineno, f"{where}: expected a JSON object, got {type(record).__name__}"))
            continue
        if HUMANEVAL_FIELDS <= record.keys():
            record = from_humaneval(record)
        elif "id" not in record:
            record = {"id": content_id(record), **record}
        try:
            case = Case.model_validate(record)
        except ValidationError as exc:
            problems.extend((lineno, f"{where}: {_describe(err)}") for err in exc.errors())
            continue
        if case.id in first_line_of:
            problems.append((lineno, f"{where}: field 'id': duplicate id {case.id!r} (first on line {first_line_of[case.id]})"))
            continue
        first_line_of[case.id] = lineno
        yield case


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"])
    if err["type"] == "missing":
        return f"field '{loc}': missing required field"
    if err["type"] == "string_too_short":
        return f"field '{loc}': must not be empty"
    if err["type"] == "extra_forbidden":
        return f"field '{loc}': unknown field"
    # Only the tests validator raises at model level, so an empty location means `tests`.
    return f"field '{loc or 'tests'}': {err['msg'].removeprefix('Value error, ')}"


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive groups of at most `size` items (the unit of work of a Prefect task), read lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class RecordedOutput(BaseModel):
    """A pre-recorded model output to grade; `cid` tells several candidates for one case apart."""

    model_config = ConfigDict(extra="forbid")
    id: NonEmpty
    output: str
    cid: str | None = None


def load_outputs(path: str | Path, cases: list[Case]) -> list[tuple[Case, RecordedOutput]]:
    """Recorded outputs paired with their cases, validated like a dataset (file, line, field)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError([f"{path}: no such file"])
    by_id = {case.id: case for case in cases}
    problems: list[tuple[int, str]] = []
    pairs, seen = [], set()
    for lineno, record in _read_jsonl(path, path.read_text(encoding="utf-8"), problems):
        try:
            recorded = RecordedOutput.model_validate(record)
        except ValidationError as exc:
            problems.extend((lineno, f"{path}:{lineno}: {_describe(err)}") for err in exc.errors())
            continue
        if recorded.id not in by_id:
            problems.append((lineno, f"{path}:{lineno}: field 'id': no case {recorded.id!r} in the dataset"))
        elif (recorded.id, recorded.cid) in seen:
            problems.append((lineno, f"{path}:{lineno}: field 'cid': a second output for {recorded.id!r} with cid {recorded.cid!r}"))
        else:
            seen.add((recorded.id, recorded.cid))
            pairs.append((by_id[recorded.id], recorded))
    if not pairs and not problems:
        problems.append((0, f"{path}: no outputs"))
    if problems:
        raise DatasetError([message for _, message in sorted(problems, key=lambda p: p[0])])
    return pairs
