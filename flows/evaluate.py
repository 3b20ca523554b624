"""The evaluation flow: wiring only. Each batch of cases goes generate -> check -> judge -> record,
once per model (tasks named with it); then the report is built from what was recorded.

With `config.outputs`, recorded outputs stand in for generation (`codegen-eval grade`); with
`config.regrade_of`, an earlier run's outputs do (`codegen-eval regrade`): no generation call either way.
"""

from __future__ import annotations

import time
from collections import deque

from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import opaque as _opaque

from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case, batches
from codegen_eval.generation import Generation
from codegen_eval.orchestration.api_key import use_api_key_block
from codegen_eval.orchestration.naming import flow_run_name, tag_flow_run, task_name
from tasks.check import check_batch, sandbox_self_test
from tasks.dataset import Item, plan, validate_dataset
from tasks.generate import generate_batch
from tasks.judge import judge_batch
from tasks.report import record_batch, report, start_run

# Batches whose results are not yet recorded. Enough to keep the call limiter busy while one batch is
# being checked; bounded, and cases are read batch by batch, so a 20,000-case run holds a few batches
# in memory, not all of them.
IN_FLIGHT_BATCHES = 4
TASKS_PER_BATCH = 4  # generate, check, judge, record


# Bounded: Prefect's default thread pool has no limit. Model calls have their own bounded pool.
@flow(name="codegen-eval", task_runner=ThreadPoolTaskRunner(max_workers=IN_FLIGHT_BATCHES * TASKS_PER_BATCH), log_prints=True,
      flow_run_name=flow_run_name)
def evaluate(config: RunConfig) -> str:
    """Evaluate a model on a dataset: generate, check, judge, report. Returns the run directory.

    Args:
        config: What to evaluate and how; each field is described in the form.
    """
    started = time.perf_counter()
    use_api_key_block(config.api_key_block)  # the key from a Prefect Secret block, into this process only
    tag_flow_run(config)
    sandbox_self_test(config.cache_dir, config.cache_url)  # a sandbox that cannot grade here stops the run before its references are proven
    ids = validate_dataset(config.dataset, config.cache_dir, config.cache_url)
    items, order = plan(config, ids)
    run_dir = start_run(config, len(order))
    in_flight: deque = deque()
    # opaque: Prefect resolves a future but does not walk the objects inside (~1 s per 1,000 cases).
    # prefect-dask 0.3.7 hands opaque() to its workers as a bare tuple, so there it is left out.
    opaque = _opaque if config.task_runner == "thread" else _as_is
    settings = opaque(config)
    for index, batch in enumerate(batches(items, config.batch_size)):
        for model, cases, given in _per_model(config, batch):  # one chain of tasks per (model, batch)
            batch_cases = opaque(cases)
            if given is None:
                generations = generate_batch.submit(opaque([case for case, _ in batch]), settings, run_dir, index, model)
            else:
                generations = given
            checks = check_batch.submit(batch_cases, opaque(generations), index, model, config.cache_dir, config.cache_url)
            judge = judge_batch.with_options(task_run_name=task_name("judge", {"model": model, "batch_index": index}))
            judgements = judge.submit(batch_cases, opaque(generations), settings, run_dir, index)
            recorded = record_batch.submit(batch_cases, opaque(generations), opaque(checks), opaque(judgements), settings, run_dir, index, model)
            in_flight.append((generations, checks, judgements, recorded))
            if len(in_flight) >= IN_FLIGHT_BATCHES:
                _wait(in_flight.popleft())
    while in_flight:
        _wait(in_flight.popleft())
    return report(run_dir, config, order, round(time.perf_counter() - started, 3))


def _per_model(config: RunConfig, batch: list[Item]) -> list[tuple[str, list[Case], list[Generation] | None]]:
    """A batch as (model, cases, outputs) per model. Cases to generate appear once per sample, as the
    generate task returns them; given outputs (recorded, or an earlier run's) are grouped by their model."""
    if config.outputs or config.regrade_of:
        groups: dict[str, tuple[list[Case], list[Generation]]] = {}
        for case, generation in batch:
            cases, generations = groups.setdefault(generation.model or config.models[0], ([], []))
            cases.append(case)
            generations.append(generation)
        return [(model, cases, generations) for model, (cases, generations) in groups.items()]
    cases = [case for case, _ in batch for _ in range(config.samples)]
    return [(model, cases, None) for model in config.models]


def _as_is(value):
    return value


def _wait(stages: tuple) -> None:
    """Wait for a batch stage by stage, so a failure surfaces as its own error (e.g. a full cache
    disk), not as a later stage that never started."""
    for stage in stages:
        if not isinstance(stage, list):
            stage.result()


def task_runner_for(config: RunConfig) -> TaskRunner:
    """The runner `config.task_runner` names: threads here, or a Dask cluster for the fan-out."""
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # optional: the `dask` extra

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": IN_FLIGHT_BATCHES * TASKS_PER_BATCH // 2})
    return ThreadPoolTaskRunner(max_workers=IN_FLIGHT_BATCHES * TASKS_PER_BATCH)


def run_evaluation(config: RunConfig) -> str:
    """Run the flow on the task runner the config asks for; returns the run directory."""
    return evaluate.with_options(task_runner=task_runner_for(config))(config)
