from __future__ import annotations

import json
from pathlib import Path

import pytest

from codegen_eval.dataset import DatasetError, batches, content_id, dataset_ids, iter_cases, load_dataset
from tests.conftest import DATASET

GOOD = {
    "id": "a",
    "task": "Write list_s3_buckets()",
    "format": "python",
    "expected": "def list_s3_buckets(): ...",
    "solution_criteria": "lists buckets",
    "difficulty": "easy",
}


def write_jsonl(tmp_path: Path, *records: object, name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    return info.value.problems


# The seed lesson's `dataset = [...]` (lesson 08), character for character.
SEED_TEXT = [
    {
        "task": "Write a Python function `list_s3_buckets()` that uses boto3 to return a list of all S3 bucket names in the account.",
        "format": "python",
        "expected": "import boto3\ndef list_s3_buckets():\n s3 = boto3.client(\"s3\")\n return [b[\"Name\"] for b in s3.list_buckets()[\"Buckets\"]]",
        "solution_criteria": "Function is named list_s3_buckets, uses boto3.client('s3'), calls list_buckets(), returns a list of Name strings.",
        "difficulty": "easy",
    },
    {
        "task": "Write a Python function `upload_to_s3(file_path, bucket, key)` that uploads a local file to S3 and returns the S3 URI.",
        "format": "python",
        "expected": "import boto3\ndef upload_to_s3(file_path, bucket, key):\n boto3.client(\"s3\").upload_file(file_path, bucket, key)\n return f\"s3://{bucket}/{key}\"",
        "solution_criteria": "Takes file_path, bucket, key. Uses upload_file. Returns s3://bucket/key URI.",
        "difficulty": "easy",
    },
    {
        "task": "Write a JSON IAM policy that allows s3:GetObject and s3:PutObject on all objects in a bucket named my-data-bucket.",
        "format": "json",
        "expected": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":[\"s3:GetObject\",\"s3:PutObject\"],\"Resource\":\"arn:aws:s3:::my-data-bucket/*\"}]}",
        "solution_criteria": "Valid IAM policy JSON with s3:GetObject and s3:PutObject on arn:aws:s3:::my-data-bucket/*",
        "difficulty": "medium",
    },
    {
        "task": "Write a Python regex pattern that matches a valid AWS S3 bucket name (3-63 lowercase alphanumeric chars and hyphens, no leading/trailing hyphen).",
        "format": "regex",
        "expected": "^[a-z0-9][a-z0-9\\-]{1,61}[a-z0-9]$",
        "solution_criteria": "Regex matches valid S3 bucket names: 3-63 chars, lowercase alphanumeric and hyphens, no leading or trailing hyphen.",
        "difficulty": "hard",
    },
]


def test_dataset_starts_with_the_seed_cases_verbatim():
    cases = load_dataset(DATASET)[:4]
    assert [c.id for c in cases] == ["s3-list-buckets", "s3-upload-file", "iam-s3-get-put-my-data-bucket", "regex-s3-bucket-name"]
    assert [c.model_dump(include=set(SEED_TEXT[0])) for c in cases] == SEED_TEXT
    assert all(c.tests for c in cases)


def test_invalid_json_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path, GOOD, '{"id": "b", "task": ')
    [problem] = problems(path)
    assert problem.startswith(f"{path}:2: invalid JSON")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"task": None}, "field 'task'"),
        ({"task": "   "}, "field 'task': must not be empty"),
        ({"format": "yaml"}, "field 'format': Input should be 'python', 'json' or 'regex'"),
        ({"difficulty": "trivial"}, "field 'difficulty'"),
        ({"expected": 42}, "field 'expected': Input should be a valid string"),
        ({"tests": {"match": ["a"]}}, "field 'tests': does not fit format 'python'"),
        ({"solution_critera": "typo"}, "field 'solution_critera': unknown field"),
    ],
)
def test_field_errors_name_line_and_field(tmp_path, change, expected):
    record = {**GOOD, "id": "b", **change}
    path = write_jsonl(tmp_path, GOOD, record)
    [problem] = problems(path)
    assert problem.startswith(f"{path}:2: ") and expected in problem


def test_missing_required_field(tmp_path):
    record = {k: v for k, v in GOOD.items() if k != "solution_criteria"}
    [problem] = problems(write_jsonl(tmp_path, record))
    assert ":1: field 'solution_criteria': missing required field" in problem


def test_duplicate_id_names_both_lines(tmp_path):
    [problem] = problems(write_jsonl(tmp_path, GOOD, GOOD))
    assert ":2: field 'id': duplicate id 'a' (first on line 1)" in problem


def test_empty_dataset(tmp_path):
    [problem] = problems(write_jsonl(tmp_path, "  "))
    assert "the dataset is empty" in problem


def test_every_problem_is_reported_at_once(tmp_path):
    path = write_jsonl(tmp_path, {**GOOD, "format": "yaml"}, "not json", {**GOOD, "id": "c", "difficulty": "x"})
    assert [p.split(":")[1] for p in problems(path)] == ["1", "2", "3"]


def test_json_list_keeps_line_numbers(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[\n" + json.dumps(GOOD, indent=2) + ",\n" + json.dumps({**GOOD, "id": "b", "format": "x"}, indent=2) + "\n]\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:10: field 'format'")
    good = tmp_path / "ok.json"
    good.write_text(json.dumps([GOOD, {**GOOD, "id": "b"}]))
    assert [c.id for c in load_dataset(good)] == ["a", "b"]


def test_json_that_is_not_a_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(GOOD))
    assert "expected a JSON list" in problems(path)[0]


def test_missing_id_gets_a_stable_content_id(tmp_path):
    record = {k: v for k, v in GOOD.items() if k != "id"}
    first = load_dataset(write_jsonl(tmp_path, record))[0].id
    again = load_dataset(write_jsonl(tmp_path, {**record, "difficulty": "hard"}, name="e.jsonl"))[0].id
    other = load_dataset(write_jsonl(tmp_path, {**record, "task": "other"}, name="f.jsonl"))[0].id
    assert first == again == content_id(record) and first.startswith("case-") and other != first


def test_tests_field_is_preserved_verbatim(tmp_path):
    tests = {"allow": [{"action": "s3:GetObject", "resource": "arn:aws:s3:::b/*"}], "deny": []}
    policy = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}'
    [case] = load_dataset(write_jsonl(tmp_path, {**GOOD, "format": "json", "expected": policy, "tests": tests}))
    assert case.tests == tests


def test_missing_file(tmp_path):
    assert "no such file" in problems(tmp_path / "nope.jsonl")[0]


def test_a_run_validates_everything_first_then_streams_the_same_cases(tmp_path):
    """A run keeps only the ids (`dataset_ids`, same checks as `load_dataset`) and reads the cases
    batch by batch later (`iter_cases`, `batches`): the same cases, in the same order."""
    bad = write_jsonl(tmp_path, GOOD, {**GOOD, "id": "b", "difficulty": "trivial"}, "{oops", name="bad.jsonl")
    with pytest.raises(DatasetError) as info:
        dataset_ids(bad)
    assert info.value.problems == problems(bad) and len(info.value.problems) == 2

    good = write_jsonl(tmp_path, *({**GOOD, "id": f"c{i}"} for i in range(7)))
    assert dataset_ids(good) == [c.id for c in load_dataset(good)] == [f"c{i}" for i in range(7)]
    assert list(iter_cases(good)) == load_dataset(good)
    read = []
    stream = batches((read.append(c.id) or c for c in iter_cases(good)), 3)
    assert [c.id for c in next(stream)] == ["c0", "c1", "c2"] and len(read) == 3  # nothing read ahead
    assert [len(b) for b in stream] == [3, 1]


def test_a_dataset_edited_during_a_run_is_an_error(tmp_path):
    path = write_jsonl(tmp_path, GOOD)
    stream = iter_cases(path)
    path.write_text(json.dumps({**GOOD, "format": "cobol"}) + "\n")  # read happens on first next()
    with pytest.raises(DatasetError, match="changed during the run"):
        list(stream)


def test_a_byte_order_mark_is_read_not_rejected(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\r\n" + json.dumps({**GOOD, "id": "b"}) + "\r\n").encode())
    assert [c.id for c in load_dataset(path)] == ["a", "b"]
    listed = tmp_path / "d.json"
    listed.write_bytes(b"\xef\xbb\xbf" + json.dumps([GOOD]).encode())
    assert [c.id for c in load_dataset(listed)] == ["a"]


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    bad = json.dumps({**GOOD, "id": "b", "task": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")  # a Windows-1252 editor's "café"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + bad + b"\n" + json.dumps({**GOOD, "id": "c", "format": "x"}).encode() + b"\n")
    first, second = problems(path)
    assert first.startswith(f"{path}:2: invalid UTF-8: byte 0xe9") and second.startswith(f"{path}:3: field 'format'")
    listed = tmp_path / "d.json"
    listed.write_bytes(b"[\n" + json.dumps(GOOD).encode() + b",\n" + bad + b"\n]")
    assert problems(listed)[0].startswith(f"{listed}:3: invalid UTF-8: byte 0xe9")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"format": "regex", "expected": "^[a-z(+$"}, "field 'expected': not a valid regex: unterminated character set at position 1"),
        ({"format": "json", "expected": "{'Version': '2012-10-17'}"}, "field 'expected': not valid JSON: line 1 column 2"),
        ({"format": "json", "expected": "[]"}, "field 'expected': an IAM policy must be a JSON object, got list"),
        ({"expected": "def f(:\n"}, "field 'expected': not valid Python: line 1"),
        ({"tests": {"entry_point": "list_s3_buckets", "check": "def check(c):\n    assert c() = []\n"}}, "field 'tests.check': not valid Python: line 2"),
        ({"tests": {"entry_point": "list_s3_buckets", "check": "assert True\n"}}, "field 'tests.check': defines no function check(candidate)"),
        ({"tests": {"entry_point": "list_buckets", "check": "def check(c):\n    pass\n"}}, "field 'tests.entry_point': the reference (expected) defines no list_buckets()"),
    ],
)
def test_a_reference_or_check_that_cannot_parse_is_rejected(tmp_path, change, expected):
    path = write_jsonl(tmp_path, GOOD, {**GOOD, "id": "b", **change})
    [problem] = problems(path)
    assert problem.startswith(f"{path}:2: {expected}")


def test_prompts_are_the_seeds():
    """Lesson 08's run_prompt() and grade_by_model(), rendered for its first case."""
    from codegen_eval.generation import generation_request
    from codegen_eval.grading.judge import judge_request

    case = load_dataset(DATASET)[0]
    request = generation_request(case, "m")
    assert [m.content for m in request.messages] == [
        "Write AWS PYTHON code for the following task. Return ONLY the code — no explanation.\n\nTask:\n" + case.task,
        "```python\n",
    ] and request.stop_sequences == ("```",)
    prompt = judge_request(case, "OUT", "m").messages[0].content
    assert prompt == (
        "You are an expert AWS engineer reviewing generated code.\n\n"
        f"Task:\n<task>\n{case.task}\n</task>\n\n"
        "Generated code:\n<output>\nOUT\n</output>\n\n"
        f"Reference solution:\n<expected>\n{case.expected}\n</expected>\n\n"
        f"Criteria:\n<criteria>\n{case.solution_criteria}\n</criteria>\n\n"
        "Score the code 1-10. Consider: correctness, idiomatic AWS SDK usage, "
        "edge case handling, and adherence to criteria.\n"
        'Return JSON: {"score": int, "reasoning": str, "strengths": [str], "weaknesses": [str]}'
    )
