"""Reading a file of cases (JSONL, JSON, HumanEval) and recorded outputs, validated.

Every problem in a file is reported at once, each naming file, line and field, and always before any
model call: a typo in case 900 must not cost the 899 calls before it.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from codegen_eval.dataset.schema import Case, NonEmpty, reference_problems

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


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
    _validate_all(Path(path), lambda _, case: cases.append(case))
    return cases


def dataset_ids(path: str | Path) -> list[str]:
    """Validate the whole file like `load_dataset`, keeping only the ids: a run then reads its cases
    batch by batch (`iter_cases`) and never holds a 20,000-case dataset in memory."""
    ids: list[str] = []
    _validate_all(Path(path), lambda _, case: ids.append(case.id))
    return ids


def iter_cases(path: str | Path) -> Iterator[Case]:
    """The cases of a file that `dataset_ids` or `load_dataset` accepted, one at a time."""
    return (case for _, case in numbered_cases(path))


def numbered_cases(path: str | Path) -> Iterator[tuple[int, Case]]:
    """`iter_cases` with the line each case starts on."""
    path, problems = Path(path), []
    yield from _validate(path, _records(path, problems), problems)
    if problems:  # the file was edited after it was validated
        raise DatasetError([f"{path} changed during the run:"] + [message for _, message in problems])


def read_cases(path: str | Path) -> tuple[list[tuple[int, Case]], list[str]]:
    """Every valid case with its line, and every problem, without raising: for a report of it all."""
    path, kept = Path(path), []
    try:
        _validate_all(path, lambda lineno, case: kept.append((lineno, case)))
    except DatasetError as exc:
        return kept, exc.problems
    return kept, []


def _validate_all(path: Path, keep: Callable[[int, Case], None]) -> None:
    """Every case to `keep`; then, if anything was wrong, a DatasetError naming each problem in line order."""
    if not path.is_file():
        raise DatasetError([f"{path}: no such file"])
    problems: list[tuple[int, str]] = []  # (line, message)
    valid = 0
    for lineno, case in _validate(path, _records(path, problems), problems):
        keep(lineno, case)
        valid += 1
    if not valid and not problems:
        problems.append((0, f"{path}: the dataset is empty"))
    if problems:
        raise DatasetError([message for _, message in sorted(problems, key=lambda p: p[0])])


def _records(path: Path, problems: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    data = _read_bytes(path)
    return _read_json(path, data, problems) if path.suffix == ".json" else _read_jsonl(path, data, problems)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped, without the UTF-8 byte-order mark Windows editors write."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.removeprefix(codecs.BOM_UTF8)


def _read_jsonl(path: Path, data: bytes, problems: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    # Split on "\n" only: str.splitlines() would also split inside a string holding U+2028.
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append((lineno, f"{path}:{lineno}: {_bad_utf8(raw, exc)}"))
            continue
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((lineno, f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})"))


def _bad_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line (save the file as UTF-8)"


def _read_json(path: Path, data: bytes, problems: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    """Walk the top-level list element by element so each case keeps the line it starts on."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        line = data[data.rfind(b"\n", 0, exc.start) + 1 :].split(b"\n", 1)[0]
        column_exc = UnicodeDecodeError("utf-8", line, exc.start - (data.rfind(b"\n", 0, exc.start) + 1), exc.end, exc.reason)
        problems.append((lineno, f"{path}:{lineno}: {_bad_utf8(line, column_exc)}"))
        return
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


def _validate(path: Path, records: Iterable[tuple[int, Any]], problems: list[tuple[int, str]]) -> Iterator[tuple[int, Case]]:
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
            problems.extend((lineno, f"{where}: {describe_error(err)}") for err in exc.errors())
            continue
        static = reference_problems(case)
        if static:
            problems.extend((lineno, f"{where}: field '{field}': {message}") for field, message in static)
            continue
        if case.id in first_line_of:
            problems.append((lineno, f"{where}: field 'id': duplicate id {case.id!r} (first on line {first_line_of[case.id]})"))
            continue
        first_line_of[case.id] = lineno
        yield lineno, case


def describe_error(err: Any) -> str:
    """One pydantic error as `field 'name': message`, in the words a dataset author needs."""
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
    return [(case, output) for _, case, output in numbered_outputs(path, cases)]


def numbered_outputs(path: str | Path, cases: list[Case]) -> list[tuple[int, Case, RecordedOutput]]:
    """`load_outputs` with the line each output is on."""
    by_id = {case.id: case for case in cases}
    problems: list[tuple[int, str]] = []
    pairs, seen = [], set()
    for lineno, recorded in read_case_records(path, RecordedOutput, by_id, problems):
        if (recorded.id, recorded.cid) in seen:
            problems.append((lineno, f"{path}:{lineno}: field 'cid': a second output for {recorded.id!r} with cid {recorded.cid!r}"))
        else:
            seen.add((recorded.id, recorded.cid))
            pairs.append((lineno, by_id[recorded.id], recorded))
    if not pairs and not problems:
        problems.append((0, f"{path}: no outputs"))
    raise_problems(problems)
    return pairs


def read_case_records(path: str | Path, model: type[M], ids: Collection[str], problems: list[tuple[int, str]]) -> list[tuple[int, M]]:
    """Each line of a JSONL file as `model`, whose `id` names a case in `ids`, with its line number; what
    does not validate or names no case goes to `problems` (see `raise_problems`). A missing file raises."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError([f"{path}: no such file"])
    found = []
    for lineno, record in _read_jsonl(path, _read_bytes(path), problems):
        try:
            item = model.model_validate(record)
        except ValidationError as exc:
            problems.extend((lineno, f"{path}:{lineno}: {describe_error(err)}") for err in exc.errors())
            continue
        case_id = getattr(item, "id")
        if case_id not in ids:
            problems.append((lineno, f"{path}:{lineno}: field 'id': no case {case_id!r} in the dataset"))
        else:
            found.append((lineno, item))
    return found


def raise_problems(problems: list[tuple[int, str]]) -> None:
    """A DatasetError holding every problem, in line order; nothing when there is none."""
    if problems:
        raise DatasetError([message for _, message in sorted(problems, key=lambda p: p[0])])
