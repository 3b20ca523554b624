"""The evaluation flow: wiring only. Each batch of cases goes generate -> check -> judge -> record,
once per model (tasks named with it); then the report is built from what was recorded.

With `config.outputs`, recorded outputs stand in for generation (`codegen-eval grade`); with
`config.regrade_of`, an earlier run's outputs do (`codegen-eval regrade`): no generation call either way.

While the run goes, the report page is rewritten from what is recorded (at most every
`PARTIAL_REPORT_EVERY_S`), marked partial. Asked to stop (`codegen_eval.stopping`), the flow submits no
more batches, gives those in flight `GRACE_S` to wind down (their tasks start no new call or job),
writes the partial report and ends Cancelled.
"""

from __future__ import annotations

import time
from collections import deque

from prefect import flow, get_run_logger
from prefect.states import Cancelled, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import opaque as _opaque

from codegen_eval import stopping
from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case, batches
from codegen_eval.generation import Generation
from codegen_eval.orchestration.api_key import use_api_key_block
from codegen_eval.orchestration.naming import flow_run_name, tag_flow_run, task_name
from codegen_eval.reporting import progress
from tasks.check import check_batch, sandbox_self_test
from tasks.dataset import Item, plan, validate_dataset
from tasks.estimate import Estimate, estimate
from tasks.generate import generate_batch
from tasks.judge import judge_batch
from tasks.report import partial_report, record_batch, report, start_run

# Batches whose results are not yet recorded. Enough to keep the call limiter busy while one batch is
# being checked; bounded, and cases are read batch by batch, so a 20,000-case run holds a few batches
# in memory, not all of them.
IN_FLIGHT_BATCHES = 4
TASKS_PER_BATCH = 4  # generate, check, judge, record
PARTIAL_REPORT_EVERY_S = 30.0  # a partial report reads every result so far: not after every batch of a fast run


# Bounded: Prefect's default thread pool has no limit. Model calls have their own bounded pool.
@flow(name="codegen-eval", task_runner=ThreadPoolTaskRunner(max_workers=IN_FLIGHT_BATCHES * TASKS_PER_BATCH), log_prints=True,
      flow_run_name=flow_run_name)
def evaluate(config: RunConfig) -> str | State:
    """Evaluate a model on a dataset: generate, check, judge, report. Returns the run directory (the
    Cancelled state holds it when the run was stopped).

    Args:
        config: What to evaluate and how; each field is described in the form.
    """
    started = time.perf_counter()
    stopping.reinstall()  # a CLI run's Ctrl-C/SIGTERM handling, over the flow engine's own SIGTERM handler
    use_api_key_block(config.api_key_block)  # the key from a Prefect Secret block, into this process only
    tag_flow_run(config)
    sandbox_self_test(config.cache_dir, config.cache_url)  # a sandbox that cannot grade here stops the run before its references are proven
    ids = validate_dataset(config.dataset, config.cache_dir, config.cache_url)
    items, order = plan(config, ids)
    run_dir = start_run(config, len(order))
    ahead = _first_lines(config, run_dir)
    in_flight: deque = deque()
    # opaque: Prefect resolves a future but does not walk the objects inside (~1 s per 1,000 cases).
    # prefect-dask 0.3.7 hands opaque() to its workers as a bare tuple, so there it is left out.
    opaque = _opaque if config.task_runner == "thread" else _as_is
    settings = opaque(config)
    reported = time.monotonic()
    for index, batch in enumerate(batches(items, config.batch_size)):
        if stopping.requested():
            break
        for model, cases, given in _per_model(config, batch):  # one chain of tasks per (model, batch)
            batch_cases = opaque(cases)
            # The case timed for the first lines: its batch takes what the measure got.
            batch_ahead = opaque(ahead.for_batch({case.id for case, _ in batch}) if ahead else None)
            if given is None:
                generations = generate_batch.submit(opaque([case for case, _ in batch]), settings, run_dir, index, model, batch_ahead)
            else:
                generations = given
            checks = check_batch.submit(batch_cases, opaque(generations), index, model, config.cache_dir, config.cache_url)
            judge = judge_batch.with_options(task_run_name=task_name("judge", {"model": model, "batch_index": index}))
            judgements = judge.submit(batch_cases, opaque(generations), settings, run_dir, index, batch_ahead)
            recorded = record_batch.submit(batch_cases, opaque(generations), opaque(checks), opaque(judgements), settings, run_dir, index, model)
            in_flight.append((generations, checks, judgements, recorded))
            if len(in_flight) >= IN_FLIGHT_BATCHES and _wait(in_flight.popleft()):
                progress.batch_done()
                if time.monotonic() - reported >= PARTIAL_REPORT_EVERY_S and not stopping.requested():
                    partial_report(run_dir, config, len(order))
                    reported = time.monotonic()
    while in_flight:
        if _wait(in_flight.popleft()):
            progress.batch_done()
    if stopping.requested():
        summary = partial_report(run_dir, config, len(order), stopped=True)
        message = f"stopped: {summary.cases} of {len(order)} results graded, {summary.pending} pending"
        stopping.stopped(message, run_dir)
        return Cancelled(message=message, data=run_dir)
    return report(run_dir, config, order, round(time.perf_counter() - started, 3))


def _first_lines(config: RunConfig, run_dir: str) -> Estimate | None:
    """Before the long part: what the run is, and how long it should take from its first case. Returns
    the estimate, with what the measure got (for its batch to take)."""
    if config.outputs or config.regrade_of or config.retry_errors_of or stopping.requested():
        return None
    if config.task_runner == "thread":  # off this thread, so a stop's grace holds while it calls the model
        future = estimate.submit(config, run_dir, _announce)
        return future.result() if _wait((future,)) else None
    return estimate(config, run_dir, _announce)  # on a Dask worker its lines would not reach this process


def _announce(line: str) -> None:
    """The run's first lines: on the CLI's stderr, and in the flow run's log (a deployment's only output)."""
    progress.say(line)
    get_run_logger().info(line)


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


def _wait(stages: tuple) -> bool:
    """Wait for a batch stage by stage, so a failure surfaces as its own error (e.g. a full cache
    disk), not as a later stage that never started. Once a stop's grace is over, a batch still in
    flight is abandoned (False): what it stored is in the caches, and the run resumes the rest."""
    for stage in stages:
        if isinstance(stage, list):
            continue
        while True:
            try:
                stage.result(timeout=0.5)  # in steps, so a stop's grace is kept
                break
            except TimeoutError:
                if stopping.past_grace():
                    return False
    return True


def task_runner_for(config: RunConfig) -> TaskRunner:
    """The runner `config.task_runner` names: threads here, or a Dask cluster for the fan-out."""
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # optional: the `dask` extra

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": IN_FLIGHT_BATCHES * TASKS_PER_BATCH // 2})
    return ThreadPoolTaskRunner(max_workers=IN_FLIGHT_BATCHES * TASKS_PER_BATCH)


def run_evaluation(config: RunConfig, return_state: bool = False):
    """Run the flow on the task runner the config asks for; returns the run directory (or, with
    `return_state`, the flow run's final state: Cancelled for a stopped run, its data the run directory)."""
    return evaluate.with_options(task_runner=task_runner_for(config))(config, return_state=return_state)
