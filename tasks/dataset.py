from __future__ import annotations

from prefect import task

from codegen_eval.dataset import Case, load_dataset, load_outputs
from codegen_eval.generation import Generation, recorded
from codegen_eval.report import errored_ids, previous_generations


@task(name="load-dataset")
def load_cases(path: str) -> list[Case]:
    return load_dataset(path)


@task(name="load-outputs")
def load_recorded(path: str, cases: list[Case]) -> list[tuple[Case, Generation]]:
    return [(case, recorded(case, r.output, r.cid)) for case, r in load_outputs(path, cases)]


@task(name="select-errored")
def select_errored(run_dir: str, cases: list[Case]) -> list[Case]:
    """The cases that ended ERROR in an earlier run (--retry-errors)."""
    errored = errored_ids(run_dir)
    return [case for case in cases if case.id in errored]


@task(name="load-previous-run")
def load_previous(run_dir: str, cases: list[Case]) -> list[tuple[Case, Generation]]:
    return previous_generations(run_dir, cases)
