"""The evaluation flow: wiring only. Each batch of cases goes generate -> check -> judge; then report."""

from __future__ import annotations

import time
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from codegen_eval.config import RunConfig
from codegen_eval.dataset import batches
from tasks.check import check_batch
from tasks.dataset import load_cases
from tasks.generate import generate_batch
from tasks.judge import judge_batch
from tasks.report import report, start_run


# Bounded: Prefect's default thread pool has no limit. Model calls have their own bounded pool.
@flow(name="codegen-eval", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def evaluate(config: RunConfig) -> str:
    started = time.perf_counter()
    cases = load_cases(config.dataset)
    run_dir = start_run(config)
    stages = []
    for index, batch in enumerate(batches(cases, config.batch_size)):
        generations = generate_batch.submit(batch, config.model, config.cache_dir, config.concurrency, index)
        checks = check_batch.submit(batch, generations, index)
        judgements = judge_batch.submit(
            batch, generations, config.judge_model, config.rubric, config.cache_dir, config.concurrency, index, config.judge
        )
        stages.append((batch, generations, checks, judgements))
    finished = [(b, g.result(), c.result(), j.result()) for b, g, c, j in stages]
    return report(run_dir, config, finished, round(time.perf_counter() - started, 3))
