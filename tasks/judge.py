from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from codegen_eval import stopping
from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.grading.judge import Judgement, JudgeStatus, combine, judge, judge_request, usable
from codegen_eval.models.backends import ModelRequest
from codegen_eval.models.batches import key_of, prefetch
from codegen_eval.models.cache import CallCache
from codegen_eval.models.calls import is_cached, run_cached_first
from codegen_eval.models.strategies import strategy_for
from codegen_eval.orchestration.naming import task_run_name
from codegen_eval.reporting import progress
from tasks import call_policy, completed_or_cached, open_cache, pool_size
from tasks.estimate import Estimate


@task(name="judge", task_run_name=task_run_name("judge"), cache_policy=NO_CACHE)
def judge_batch(cases: list[Case], generations: list[Generation | None], config: RunConfig, run_dir: str, batch_index: int = 0,
                ahead: Estimate | None = None):
    """Every judge grades every case of the batch (each judge's calls cached on their own); a case's
    judgement is their combination (`combine`: the median score). None where the output is pending, or
    a judge's call was not made because the run is stopping. `ahead`: judgements this run got before
    the batch (the first case, timed), taken as they are."""
    if not config.judge:  # --no-judge: verdicts from the checks alone
        progress.advance("judge", sum(g is not None for g in generations))
        return [Judgement(status=JudgeStatus.SKIPPED, error="judge disabled (--no-judge)") if g is not None else None for g in generations]
    cache = open_cache(config.cache_dir, config.cache_url)
    policy = call_policy(config, run_dir)
    pairs = list(zip(cases, generations, strict=True))
    strategies = {model: strategy_for(model, cache, config.base_url) for model in config.judge_models}
    # Per case, each judge's first request (a case with no code is not judged).
    requests = [{model: judge_request(case, g.code, model, config.rubric, strategy) for model, strategy in strategies.items()}
                if g is not None and g.code.strip() else {} for case, g in pairs]
    batched = _sent_ahead(requests, cache, config.judge_models) if config.use_batch else {}

    def judged_by(model: str, index: int, case: Case, generation: Generation) -> Judgement:
        if ahead and (judgement := ahead.judgement(model, generation)):
            return judgement
        judgement = judge(case, generation.code, model, cache, config.rubric, policy)
        if (key := batched.get((index, model))) is not None:  # paid for in this run's batch
            judgement.calls, judgement.cached_calls, judgement.batch = judgement.calls + 1, judgement.cached_calls - 1, True
            judgement.usage += cache.get(key).usage
        return judgement

    def judge_one(item: tuple[int, tuple[Case, Generation | None]]) -> Judgement | None:
        index, (case, generation) = item
        if generation is None:
            return None
        parts = {model: judged_by(model, index, case, generation) for model in config.judge_models}
        if stopping.requested() and any(part.status is JudgeStatus.JUDGE_ERROR for part in parts.values()):  # not asked, or cut short: pending
            return None
        judgement = combine(parts)
        progress.advance("judge")
        return judgement

    already_cached = [all(is_cached(request, cache, policy) for request in asked.values()) for asked in requests]
    judgements = run_cached_first(judge_one, list(enumerate(pairs)), already_cached, pool_size(config))
    return completed_or_cached(judgements, all(j is not None and j.calls == 0 for j in judgements))


def _sent_ahead(requests: list[dict[str, ModelRequest]], cache: CallCache, models: list[str]) -> dict[tuple[int, str], str]:
    """--batch: every judge's first requests go ahead as one Message Batch per judge. Returns, for each
    answer that batch stored, the (pair index, judge) that paid for it: the first to ask, as samples
    of a case may ask the same request (the same code), which is paid once and cached for the rest."""
    paid: dict[tuple[int, str], str] = {}
    for model in models:  # one batch per judge: one backend each
        fetched = prefetch([asked[model] for asked in requests if model in asked], cache, usable, progress.batch_reporter("judge"))
        for index, asked in enumerate(requests):
            if model in asked and (key := key_of(asked[model])) in fetched:
                fetched.discard(key)
                paid[index, model] = key
    return paid
