from __future__ import annotations

from prefect import task

from codegen_eval.reporting import progress
from codegen_eval.models.calls import run_concurrently
from codegen_eval.grading.checks import CheckResult, run_checks
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.grading.sandbox import shared_sandbox
from codegen_eval.grading.selftest import ensure_sandbox_works
from codegen_eval.naming import task_run_name


@task(name="sandbox-self-test")
def sandbox_self_test() -> None:
    """Known-good and known-bad snippets graded before any model call: a sandbox that cannot read its
    own libraries fails the run here, not every case later."""
    ensure_sandbox_works(shared_sandbox())


@task(name="check", task_run_name=task_run_name("check"))
def check_batch(cases: list[Case], generations: list[Generation], batch_index: int = 0, model: str = "") -> list[list[CheckResult]]:
    sandbox = shared_sandbox()

    def one(pair: tuple[Case, Generation]) -> list[CheckResult]:
        case, generation = pair
        checks = run_checks(case, generation.code, sandbox)
        progress.advance("check")
        return checks

    # One thread per sandbox slot: checks are CPU-bound and run in the sandbox's processes.
    return run_concurrently(one, list(zip(cases, generations, strict=True)), sandbox.slots, pool_name="sandbox")
