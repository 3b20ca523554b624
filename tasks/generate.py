from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from codegen_eval import stopping
from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation, accept_generation, generate, generation_request
from codegen_eval.models.batches import prefetch
from codegen_eval.models.calls import is_cached, run_cached_first
from codegen_eval.models.strategies import strategy_for
from codegen_eval.orchestration.naming import task_run_name
from codegen_eval.reporting import progress
from tasks import call_policy, completed_or_cached, open_cache, pool_size
from tasks.estimate import Estimate


@task(name="generate", task_run_name=task_run_name("generate"), cache_policy=NO_CACHE)
def generate_batch(cases: list[Case], config: RunConfig, run_dir: str, batch_index: int = 0, model: str = "", ahead: Estimate | None = None):
    """`config.samples` answers from `model` per case, case by case: [case 0 sample 0, case 0 sample 1, ...];
    None for an answer still pending when the run stopped. `ahead`: answers this run got before the
    batch (the first case, timed), taken as they are."""
    model = model or config.models[0]
    cache = open_cache(config.cache_dir, config.cache_url)
    policy = call_policy(config, run_dir)
    units = [(case, sample) for case in cases for sample in range(config.samples)]
    strategy = strategy_for(model, cache, config.base_url)
    requests = [generation_request(case, model, strategy, sample, config.temperature) for case, sample in units]
    fetched = prefetch(requests, cache, accept_generation, progress.batch_reporter("generate")) if config.use_batch else set()

    def generate_one(unit: tuple[Case, int]) -> Generation | None:
        case, sample = unit
        generation = ahead.generation(model, case.id, sample) if ahead else None
        generation = generation or generate(case, model, cache, policy, sample, config.temperature)
        if generation.error and stopping.requested():  # not made, or cut short, by the stop: pending
            return None
        if generation.key in fetched:  # paid for in this run's batch, not an earlier run's cache
            generation.cached, generation.calls, generation.batch = False, 1, True
        progress.advance("generate")
        return generation

    already_cached = [is_cached(request, cache, policy) for request in requests]
    generations = run_cached_first(generate_one, units, already_cached, pool_size(config))
    return completed_or_cached(generations, all(g is not None and g.cached for g in generations))
