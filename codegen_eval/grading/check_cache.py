"""Check results are artifacts too: the same output, against the same case, graded by the same checker,
gets the same checks, so they are stored beside the model calls and a cached re-run, a regrade with a
new rubric or a repeated sample runs nothing in the sandbox.

The key holds the output, the case's format, tests and reference (the signature and equivalence checks
read it) and `checker_fingerprint()` (the grading code and the versions of the tools that decide a
verdict). Results that depend on the machine's load or isolation, not on the code, are never stored:
a TIMEOUT, a SANDBOX_ERROR, an analysis cut short by its time limit, a run in a degraded sandbox.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from codegen_eval.dataset import Case
from codegen_eval.grading.checks import CheckResult, CheckStatus, run_checks
from codegen_eval.grading.fingerprint import checker_fingerprint
from codegen_eval.grading.sandbox import Sandbox, SandboxResult
from codegen_eval.models.cache import CacheError, CallCache, canonical_json

CHECKS_VERSION = 1  # bump when what stored checks mean changes
UNSETTLED = {CheckStatus.TIMEOUT, CheckStatus.SANDBOX_ERROR}


@dataclass
class Checked:
    checks: list[CheckResult]
    sandbox_jobs: int  # jobs this case ran in the sandbox (0 when served from the cache)
    cached: bool


def checks_key(case: Case, code: str) -> str:
    basis = {"v": CHECKS_VERSION, "checker": checker_fingerprint(), "format": case.format, "expected": case.expected,
             "tests": case.tests, "code": code}
    # surrogatepass: an output may hold a lone surrogate (a JSON "\ud800" escape); it still needs a key
    return "checks:" + hashlib.sha256(canonical_json(basis).encode("utf-8", "surrogatepass")).hexdigest()


class _Counting:
    """The sandbox, counting the jobs one case runs in it."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox, self.jobs = sandbox, 0

    def run(self, job: dict[str, Any], limits: Any = None) -> SandboxResult:
        self.jobs += 1
        return self.sandbox.run(job, limits)


def settled(checks: list[CheckResult]) -> bool:
    """Whether these results say something about the code alone, and so may be reused."""
    return not any(c.status in UNSETTLED or c.details.get("unsettled") or c.details.get("isolation_missing") for c in checks)


def is_checked(case: Case, code: str, cache: CallCache | None) -> bool:
    """Whether `cached_checks` would answer from the cache."""
    return cache is not None and cache.has_note(checks_key(case, code))


def cached_checks(case: Case, code: str, sandbox: Sandbox, cache: CallCache | None) -> Checked:
    key = checks_key(case, code)
    stored = cache.get_note(key) if cache is not None else None
    if stored is not None:
        return Checked([CheckResult.model_validate(c) for c in json.loads(stored)], 0, cached=True)
    counting = _Counting(sandbox)
    checks = run_checks(case, code, counting)  # type: ignore[arg-type]  (it only calls .run)
    if cache is not None and settled(checks):
        try:
            cache.set_note(key, json.dumps([c.model_dump(mode="json") for c in checks]))
        except CacheError:
            pass  # the checks stand; they are only not remembered
    return Checked(checks, counting.jobs, cached=False)
