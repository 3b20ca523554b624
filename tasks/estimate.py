"""The run's first line, before the long part: how many cases, which models, and how long it should take,
from a measure of the first case not yet in the cache.

The measure is no extra work: the first case's answer and judgement go to its batch, which takes them
as its own. With --batch nothing is timed: a synchronous call would cost twice a batched one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from codegen_eval import stopping
from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case, iter_cases
from codegen_eval.generation import Generation, generate, generation_request
from codegen_eval.grading.judge import Judgement, JudgeStatus, judge
from codegen_eval.models.backends import LOCAL_MODEL
from codegen_eval.models.calls import is_cached
from codegen_eval.models.strategies import strategy_for
from codegen_eval.reporting.progress import duration
from tasks import call_policy, open_cache


class Judged(BaseModel):
    """A judgement the measure got: by which judge, of which model's answer to which case and sample."""

    judge_model: str
    model: str
    case_id: str
    sample: int
    judgement: Judgement


class Estimate(BaseModel):
    cases: int
    models: list[str]
    judges: list[str]  # empty with --no-judge
    samples: int = 1
    answers_to_get: int  # generation calls not in the cache
    seconds_per_answer: dict[str, float] = {}  # measured on the first uncached case, per model
    seconds_per_judgement: dict[str, float] = {}  # per judge, on that case's answer
    expected_s: float | None = None  # None: nothing was measured (everything cached, or the measure failed)
    # What the measure got, handed to its case's batch, which takes it as its own (calls made and paid
    # by this run, errors and unusable answers included) instead of asking again.
    generations: list[Generation] = []
    judgements: list[Judged] = []

    def for_batch(self, case_ids: set[str]) -> Estimate:
        """Only what the measure got for these cases (a batch's share)."""
        return self.model_copy(update={"generations": [g for g in self.generations if g.case_id in case_ids],
                                       "judgements": [j for j in self.judgements if j.case_id in case_ids]})

    def generation(self, model: str, case_id: str, sample: int) -> Generation | None:
        return next((g for g in self.generations if (g.model, g.case_id, g.sample) == (model, case_id, sample)), None)

    def judgement(self, judge_model: str, generation: Generation) -> Judgement | None:
        wanted = (judge_model, generation.model, generation.case_id, generation.sample)
        return next((j.judgement for j in self.judgements if (j.judge_model, j.model, j.case_id, j.sample) == wanted), None)

    def head(self) -> str:
        """What the run is: cases, models, judges, answers not in the cache."""
        judged = f", judge {', '.join(self.judges)}" if self.judges else ", no judge"
        head = f"{self.cases} cases × {', '.join(self.models)}{judged}: "
        if self.answers_to_get == 0:
            return head + "every answer is in the cache"
        cached = self.cases * len(self.models) * self.samples - self.answers_to_get
        return head + f"{self.answers_to_get} answers to get" + (f" ({cached} in the cache)" if cached else "")

    def measured(self) -> str:
        """How long the first case took, and the run at that pace."""
        if self.expected_s is None:
            return "the first case could not be timed (it gave no answer)"
        took = [f"answer {s:.1f} s" for s in self.seconds_per_answer.values()] + [f"judgement {s:.1f} s" for s in self.seconds_per_judgement.values()]
        return f"the first case took {', '.join(took)}: about {duration(self.expected_s)} in all"


@task(name="estimate", task_run_name="estimate", cache_policy=NO_CACHE)
def estimate(config: RunConfig, run_dir: str, say: Callable[[str], None]) -> Estimate:
    """Count the answers not in the cache and `say` so; then time the first of them (and its judgement)
    per model and `say` what the whole run should take at that pace."""
    cache, policy = open_cache(config.cache_dir), call_policy(config, run_dir)
    strategies = {model: strategy_for(model, cache, config.base_url) for model in config.models}
    judges = config.judge_models if config.judge else []
    cases, missing, first = 0, dict.fromkeys(config.models, 0), {}
    for case in iter_cases(config.dataset):
        cases += 1
        for model in config.models:
            for sample in range(config.samples):
                if not is_cached(generation_request(case, model, strategies[model], sample, config.temperature), cache, policy):
                    missing[model] += 1
                    first.setdefault(model, (case, sample))
    result = Estimate(cases=cases, models=config.models, judges=judges, samples=config.samples, answers_to_get=sum(missing.values()))
    if config.use_batch:
        first = {}
    say(result.head() + ("; timing the first case" if first else ""))
    if not first:
        return result
    for model, (case, sample) in first.items():
        code = _timed_answer(result, case, model, sample, config, cache, policy)
        if code is None:
            if not stopping.requested():
                say(result.measured())
            return result
        for judge_model in judges:
            started = time.perf_counter()
            judgement = judge(case, code, judge_model, cache, config.rubric, policy)
            if judgement.status is JudgeStatus.JUDGE_ERROR and stopping.requested():
                return result  # cut short: the batch asks again (on resume)
            result.judgements.append(Judged(judge_model=judge_model, model=model, case_id=case.id, sample=sample, judgement=judgement))
            if judgement.calls:
                result.seconds_per_judgement.setdefault(judge_model, round(time.perf_counter() - started, 1))
    result.expected_s = _expected_s(result, missing, config.concurrency)
    say(result.measured())
    return result


def _timed_answer(result: Estimate, case: Case, model: str, sample: int, config: RunConfig, cache, policy) -> str | None:
    generation = generate(case, model, cache, policy, sample, config.temperature)
    if generation.error and stopping.requested():
        return None  # cut short: the batch asks again (on resume)
    result.generations.append(generation)
    if generation.error or generation.cached:
        return None
    result.seconds_per_answer[model] = round(generation.latency_s or 0.0, 1)
    return generation.code


def _expected_s(result: Estimate, missing: dict[str, int], concurrency: int) -> float:
    """Calls times their measured time, over the calls a backend makes at once (the local model: one)."""
    def at_once(model: str) -> int:
        return 1 if model == LOCAL_MODEL else concurrency

    total = sum(missing[m] * s / at_once(m) for m, s in result.seconds_per_answer.items())
    answers = sum(missing.values())
    total += sum(answers * s / at_once(j) for j, s in result.seconds_per_judgement.items())
    return total
