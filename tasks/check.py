from __future__ import annotations

from prefect import task

from codegen_eval.checks import CheckResult, run_checks
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation


@task(name="check", task_run_name="check-batch-{batch_index}")
def check_batch(cases: list[Case], generations: list[Generation], batch_index: int = 0) -> list[list[CheckResult]]:
    return [run_checks(g.code, case.format) for case, g in zip(cases, generations, strict=True)]
