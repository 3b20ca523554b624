from __future__ import annotations

from prefect import task

from codegen_eval import progress
from codegen_eval.calls import run_concurrently
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.judge import Judgement, JudgeStatus, judge
from tasks import finish, open_cache


@task(name="judge", task_run_name="judge-batch-{batch_index}")
def judge_batch(
    cases: list[Case],
    generations: list[Generation],
    model: str,
    rubric: str | None,
    cache_dir: str | None,
    concurrency: int,
    batch_index: int = 0,
    enabled: bool = True,
):
    cache = open_cache(cache_dir)
    if not enabled:  # --no-judge: verdicts from the checks alone
        progress.advance("judge", len(cases))
        return [Judgement(status=JudgeStatus.SKIPPED, error="judge disabled (--no-judge)") for _ in cases]

    def one(pair: tuple[Case, Generation]) -> Judgement:
        case, generation = pair
        judgement = judge(case, generation.code, model, cache, rubric)
        progress.advance("judge")
        return judgement

    judgements = run_concurrently(one, list(zip(cases, generations, strict=True)), concurrency)
    return finish(judgements, all(j.calls == 0 for j in judgements))
