from __future__ import annotations

from collections.abc import Iterator

from prefect import task

from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case, dataset_ids, iter_cases, load_outputs
from codegen_eval.dataset_proof import prove_references
from codegen_eval.grading.sandbox import shared_sandbox
from codegen_eval.generation import Generation, recorded
from codegen_eval.reporting.report import errored_ids, previous_generations
from tasks import open_cache

Item = tuple[Case, Generation | None]  # a case, and its output when it is not to be generated


@task(name="load-dataset")
def validate_dataset(path: str, cache_dir: str | None = None) -> list[str]:
    """Validate every case and prove every reference against its own tests (cached in the run's
    cache) before any model call; only the ids are kept (the cases stream later)."""
    ids = dataset_ids(path)
    prove_references(path, shared_sandbox(), open_cache(cache_dir))
    return ids


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


def plan(config: RunConfig, ids: list[str]) -> tuple[Iterator[Item], list[tuple[str, str | None]]]:
    """What the run grades, lazily, and the (id, cid) order the report lists it in.

    A plain run reads its cases from the file batch by batch, so memory does not grow with the
    dataset; grading recorded outputs, a regrade and --retry-errors pair cases up front."""
    if not (config.outputs or config.regrade_of or config.retry_errors_of):
        return ((case, None) for case in iter_cases(config.dataset)), [(case_id, None) for case_id in ids]
    cases = list(iter_cases(config.dataset))
    if config.retry_errors_of:
        cases = select_errored(config.retry_errors_of, cases)
    items: list[Item]
    if config.outputs:
        items = load_recorded(config.outputs, cases)
    elif config.regrade_of:
        items = load_previous(config.regrade_of, cases)
    else:
        items = [(case, None) for case in cases]
    return iter(items), [(case.id, generation.cid if generation else None) for case, generation in items]
