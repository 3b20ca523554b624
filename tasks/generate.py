from __future__ import annotations

from prefect import task

from codegen_eval import progress
from codegen_eval.calls import run_concurrently
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation, generate
from tasks import finish, open_cache


@task(name="generate", task_run_name="generate-batch-{batch_index}")
def generate_batch(cases: list[Case], model: str, cache_dir: str | None, concurrency: int, batch_index: int = 0):
    cache = open_cache(cache_dir)

    def one(case: Case) -> Generation:
        generation = generate(case, model, cache)
        progress.advance("generate")
        return generation

    generations = run_concurrently(one, cases, concurrency)
    return finish(generations, all(g.cached for g in generations))
