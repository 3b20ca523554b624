"""The shipped dataset proves itself, with the command users run: every reference passes its own tests
in the sandbox, a stub answer fails them, and every broken variant fails them."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from codegen_eval.dataset import load_dataset
from tests.conftest import DATASET

CASES = load_dataset(DATASET)
BROKEN = Path(__file__).parent / "data" / "broken_variants.jsonl"


def test_dataset_size_and_mix():
    formats = Counter(c.format for c in CASES)
    assert len(CASES) >= 150 and formats["python"] >= 60 and formats["json"] >= 45 and formats["regex"] >= 45
    assert all(c.tests for c in CASES)
    resource_policies = [c for c in CASES if c.format == "json" and c.tests.get("policy_type") in ("bucket", "trust")]
    assert len(resource_policies) >= 12
    difficulties = Counter(c.difficulty for c in CASES)
    assert min(difficulties.values()) >= 0.28 * len(CASES)  # about a third each
    for fmt in ("python", "json", "regex"):
        assert {c.difficulty for c in CASES if c.format == fmt} == {"easy", "medium", "hard"}


def test_python_cases_span_twelve_services_or_more():
    services = {c.id.split("-")[0] for c in CASES if c.format == "python"}
    assert len(services) >= 12, sorted(services)


def test_validate_proves_every_reference_stub_and_broken_variant(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "codegen_eval.cli", "validate", str(DATASET), "--broken", str(BROKEN)],
        env={"CODEGEN_EVAL_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
