"""The evaluation flow: wiring only. Each batch of cases goes generate -> check -> judge; then report.

With `config.outputs`, recorded outputs stand in for generation (`codegen-eval grade`); with
`config.regrade_of`, an earlier run's outputs do (`codegen-eval regrade`): no generation call either way.
"""

from __future__ import annotations

import time

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from codegen_eval.config import RunConfig
from codegen_eval.dataset import batches
from tasks.check import check_batch
from tasks.dataset import load_cases, load_previous, load_recorded, select_errored
from tasks.generate import generate_batch
from tasks.judge import judge_batch
from tasks.report import report, start_run


# Bounded: Prefect's default thread pool has no limit. Model calls have their own bounded pool.
@flow(name="codegen-eval", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def evaluate(config: RunConfig) -> str:
    started = time.perf_counter()
    cases = load_cases(config.dataset)
    if config.retry_errors_of:
        cases = select_errored(config.retry_errors_of, cases)
    if config.outputs:
        items = load_recorded(config.outputs, cases)
    elif config.regrade_of:
        items = load_previous(config.regrade_of, cases)
    else:
        items = [(case, None) for case in cases]
    run_dir = start_run(config, len(items))
    stages = []
    for index, batch in enumerate(batches(items, config.batch_size)):
        batch_cases = [case for case, _ in batch]
        if config.outputs or config.regrade_of:
            generations = [generation for _, generation in batch]
        else:
            generations = generate_batch.submit(batch_cases, config, run_dir, index)
        checks = check_batch.submit(batch_cases, generations, index)
        judgements = judge_batch.submit(batch_cases, generations, config, run_dir, index)
        stages.append((batch_cases, generations, checks, judgements))
    finished = [(b, _value(g), c.result(), j.result()) for b, g, c, j in stages]
    return report(run_dir, config, finished, round(time.perf_counter() - started, 3))


def _value(generations):
    """A batch's generations: already a list when recorded, a task future when generated."""
    return generations if isinstance(generations, list) else generations.result()
