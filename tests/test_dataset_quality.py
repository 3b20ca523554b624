"""The shipped dataset proves itself: every reference passes its own tests, every broken variant fails."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from codegen_eval.grading.checks import run_checks
from codegen_eval.dataset import load_dataset, load_outputs
from codegen_eval.generation import recorded
from codegen_eval.grading.sandbox import Sandbox
from tests.conftest import DATASET

CASES = load_dataset(DATASET)
BROKEN = Path(__file__).parent / "data" / "broken_variants.jsonl"


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def test_dataset_size_and_mix():
    formats = Counter(c.format for c in CASES)
    assert len(CASES) >= 40 and formats["python"] >= 16 and formats["json"] >= 12 and formats["regex"] >= 12
    assert all(c.tests for c in CASES)
    assert set(Counter(c.difficulty for c in CASES)) == {"easy", "medium", "hard"}
    for fmt in ("python", "json", "regex"):
        assert {c.difficulty for c in CASES if c.format == fmt} == {"easy", "medium", "hard"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_reference_passes_its_tests(case, sandbox):
    failed = [(c.name, c.status.value, c.message) for c in run_checks(case, case.expected, sandbox) if c.gate and not c.passed]
    assert failed == []


BROKEN_PAIRS = load_outputs(BROKEN, CASES)


def test_every_case_has_a_broken_variant():
    assert sorted(case.id for case, _ in BROKEN_PAIRS) == sorted(c.id for c in CASES)


@pytest.mark.parametrize("pair", BROKEN_PAIRS, ids=lambda p: p[0].id)
def test_broken_variant_fails_its_tests(pair, sandbox):
    case, output = pair
    code = recorded(case, output.output).code
    assert code != case.expected
    checks = run_checks(case, code, sandbox)
    assert any(c.gate and not c.passed for c in checks), json.dumps([c.model_dump(mode="json") for c in checks])[:2000]
