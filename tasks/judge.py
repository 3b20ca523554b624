from __future__ import annotations

from prefect import task

from codegen_eval import progress
from codegen_eval.calls import run_concurrently
from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.judge import Judgement, JudgeStatus, judge
from codegen_eval.pricing import budget_for
from tasks import finish, open_cache


@task(name="judge", task_run_name="judge-batch-{batch_index}")
def judge_batch(cases: list[Case], generations: list[Generation], config: RunConfig, run_dir: str, batch_index: int = 0):
    if not config.judge:  # --no-judge: verdicts from the checks alone
        progress.advance("judge", len(cases))
        return [Judgement(status=JudgeStatus.SKIPPED, error="judge disabled (--no-judge)") for _ in cases]
    cache = open_cache(config.cache_dir)
    budget = budget_for(run_dir, config.max_cost_usd)

    def one(pair: tuple[Case, Generation]) -> Judgement:
        case, generation = pair
        judgement = judge(case, generation.code, config.judge_model, cache, config.rubric, budget)
        progress.advance("judge")
        return judgement

    judgements = run_concurrently(one, list(zip(cases, generations, strict=True)), config.concurrency)
    return finish(judgements, all(j.calls == 0 for j in judgements))
