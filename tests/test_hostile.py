"""Outputs written to game the grader cannot forge their own verdict or move another case's.

tests/data/hostile_outputs.jsonl holds one wrong answer per technique (fake results on every
descriptor, exits, lying return values, patched builtins, boto3 and moto, frame and gc tricks, kills,
ctypes, ...). Graded in one run among honest outputs, each must end non-PASS, and every honest output
must get exactly the verdict it gets in a run without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codegen_eval.config import RunConfig
from codegen_eval.dataset import load_dataset
from codegen_eval.grading import wire
from codegen_eval.reporting.runs import load_results
from codegen_eval.reporting.results import CaseResult
from flows.evaluate import evaluate
from tests.conftest import DATASET

DATA = Path(__file__).resolve().parent / "data"
HOSTILE = [json.loads(line) for line in (DATA / "hostile_outputs.jsonl").read_text().splitlines()]
HONEST_CASES = ["s3-list-all-keys", "s3-delete-prefix", "dynamodb-put-if-absent", "secrets-get-json", "sqs-drain-queue"]


def honest_outputs() -> list[dict]:
    cases = {c.id: c for c in load_dataset(DATASET)}
    rows = map(json.loads, (DATA / "broken_variants.jsonl").read_text().splitlines())
    broken = {row["id"]: row["output"] for row in rows if row["cid"] == "broken"}
    rows = []
    for case_id in HONEST_CASES:
        rows.append({"id": case_id, "cid": "honest:reference", "output": cases[case_id].expected})
        rows.append({"id": case_id, "cid": "honest:broken", "output": broken[case_id]})
    return rows


def grade(rows: list[dict], tmp_path: Path, name: str) -> dict[tuple[str, str], CaseResult]:
    outputs = tmp_path / f"{name}.jsonl"
    outputs.write_text("".join(json.dumps({k: r[k] for k in ("id", "cid", "output")}) + "\n" for r in rows))
    config = RunConfig(dataset=str(DATASET), model="recorded", judge=False, outputs=str(outputs), out=str(tmp_path / name))
    return {(r.id, r.cid): r for r in load_results(Path(evaluate(config)))}


def test_the_corpus_covers_twenty_techniques_or_more():
    assert len({row["technique"] for row in HOSTILE}) >= 20


def test_no_forged_verdict_and_no_cross_talk(prefect_api, tmp_path):
    honest = grade(honest_outputs(), tmp_path, "honest")
    assert {k[1]: v.verdict for k, v in honest.items() if k[0] == "s3-list-all-keys"} == {"honest:reference": "PASS", "honest:broken": "FAIL"}
    # Hostile outputs interleaved with the honest ones, so a forged line has every chance to land elsewhere.
    mixed_rows = [row for pair in zip(honest_outputs(), HOSTILE) for row in pair] + HOSTILE[len(honest):]
    mixed = grade(mixed_rows, tmp_path, "mixed")
    verdicts = {row["technique"]: mixed[(row["id"], row["cid"])].verdict for row in HOSTILE}
    assert {technique: v for technique, v in verdicts.items() if v not in ("FAIL", "PARTIAL")} == {}
    assert {k: mixed[k].verdict for k in honest} == {k: v.verdict for k, v in honest.items()}


class Lying(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize("value", [None, True, 3, 2**80, 1.5, "é", b"\x00\xff", [1, (2, 3)], {"a": {1, 2}}, {(1, 2): frozenset({3})}, ()])
def test_plain_data_crosses_unchanged(value):
    decoded = wire.decode(json.loads(json.dumps(wire.encode(value))))
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize("value", [Lying(3), [Lying(3)], {"k": object()}, range(3)])
def test_anything_else_is_refused_by_name(value):
    with pytest.raises(wire.WireError, match="cannot be passed as plain data"):
        wire.encode(value)


@pytest.mark.parametrize("frame", [["X", []], ["L", "x"], ["D", [[1]]], ["S", [["L", []]]], ["B", "!!"], {"a": 1}, ["L"]])
def test_malformed_frames_are_refused(frame):
    with pytest.raises(wire.WireError):
        wire.decode(frame)
