"""A run's record: one `CaseResult` per case and a `Summary` of the whole run."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from pydantic import BaseModel

from codegen_eval.models.backends import LOCAL_MODEL, Usage
from codegen_eval.grading.checks import CheckResult
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.grading.judge import Judgement, JudgeScore, judge_cost
from codegen_eval.models.pricing import cost_usd
from codegen_eval.reporting.agreement import AgreementBuilder, JudgeAgreement
from codegen_eval.grading.scoring import ScoringConfig, Verdict, score_case

VERDICTS = [v.value for v in Verdict]


class CaseResult(BaseModel):
    id: str
    cid: str | None = None
    format: str
    difficulty: str
    task: str
    output: str
    checks: list[CheckResult]
    judge: Judgement  # several judges: the combined view (the median score)
    judges: dict[str, JudgeScore] = {}  # each judge's score, or its error
    judge_spread: float | None = None  # max - min of the judges' scores (two judges or more)
    has_tests: bool | None = None  # the case has executable tests (None: recorded before this was kept)
    score: float | None
    verdict: Verdict
    status: str
    generation: Generation
    cost_usd: dict[str, float | None] = {}  # {"generation", "judge"}: what this run paid; None: unknown price


class StageStats(BaseModel):
    calls_made: int = 0
    calls_cached: int = 0
    retries: int = 0  # transient API failures (429, 529, 5xx, timeouts) tried again
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0  # of the calls made; None when the model's price is unknown


class Summary(BaseModel):
    run_id: str
    dataset: str
    model: str
    judge_model: str  # the judges, comma-separated
    judge_models: list[str] = []
    rubric: str
    cases: int
    verdicts: dict[str, int]
    pass_rate: float
    statuses: dict[str, int]
    strategies: dict[str, int]  # how the code was asked for: prefill, structured, fenced (or recorded)
    by_format: dict[str, dict[str, int]]
    by_difficulty: dict[str, dict[str, int]]
    generation: StageStats
    judging: StageStats
    total_tokens: int
    cost_usd: float | None
    over_budget: int  # cases left ungraded (in part or whole) by --max-cost
    small_local_judge: bool
    histogram: list[int] = [0] * 10  # cases per score bin [0,1), [1,2), ..., [9,10]
    wall_seconds: float | None = None
    parent: str | None = None  # the run this one re-graded
    previous_run: str | None = None  # the latest earlier run of the same dataset, compared in compare-<id>.html
    isolation_missing: list[str] = []  # sandbox isolation that could not be applied (not root, no namespaces)
    judge_agreement: JudgeAgreement | None = None  # the judge against the tests; None when no judge ran


def assemble(
    case: Case,
    generation: Generation,
    checks: list[CheckResult],
    judgement: Judgement,
    scoring: ScoringConfig,
    models: tuple[str, str] = ("", ""),
) -> CaseResult:
    """One case's record; `models` (generator, judge) price its calls."""
    failure = (
        "OVER_BUDGET" if generation.over_budget
        else "GENERATION_ERROR" if generation.error
        else "REFUSED" if generation.refused
        else None
    )
    score = score_case(checks, judgement, failure, scoring)
    return CaseResult(
        id=case.id,
        cid=generation.cid,
        format=case.format,
        difficulty=case.difficulty,
        task=case.task,
        output=generation.code,
        checks=checks,
        judge=judgement,
        judges=judgement.panel,
        judge_spread=judgement.spread,
        has_tests=case.tests is not None,
        score=score.score,
        verdict=score.verdict,
        status=score.status,
        generation=generation,
        cost_usd={
            "generation": cost_usd(models[0], generation.usage, generation.batch) if generation.calls else 0.0,
            "judge": judge_cost(judgement, models[1]),
        },
    )


class SummaryBuilder:
    """A run's summary built from a stream of results in one pass, so 20,000 cases need no list."""

    def __init__(self, model: str, judge_model: str | list[str], judge_thresholds: dict[str, float] | None = None, pass_at: float = 8.0):
        self.judge_models = [judge_model] if isinstance(judge_model, str) else list(judge_model)
        self.model, self.judge_model = model, ", ".join(self.judge_models)
        self.agreement = AgreementBuilder(self.judge_models, judge_thresholds, pass_at)
        self.cases = 0
        self.verdicts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.strategies: Counter[str] = Counter()
        self.by_format: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_difficulty: dict[str, Counter[str]] = defaultdict(Counter)
        self.generation, self.judging = StageStats(), StageStats()
        self.histogram = [0] * 10  # cases per score bin [0,1), [1,2), ..., [9,10]
        self.judged = False
        self.isolation_missing: set[str] = set()

    def add(self, r: CaseResult) -> None:
        self.cases += 1
        self.verdicts[r.verdict.value] += 1
        self.statuses[r.status] += 1
        self.strategies[r.generation.strategy or "recorded"] += 1
        self.by_format[r.format][r.verdict.value] += 1
        self.by_difficulty[r.difficulty][r.verdict.value] += 1
        if r.score is not None:
            self.histogram[min(int(r.score), 9)] += 1
        self.judged = self.judged or r.judge.status.value != "SKIPPED"
        for check in r.checks:
            self.isolation_missing.update(check.details.get("isolation_missing", []))
        g, j = r.generation, r.judge
        _add(self.generation, g.calls, int(g.cached), g.retries, g.usage, self.model, g.batch)
        for judge_model, part in r.judges.items() if r.judges else [(self.judge_models[0], j)]:  # priced per judge
            _add(self.judging, part.calls, part.cached_calls, part.retries, part.usage, judge_model, part.batch)
        self.agreement.add(r)

    def build(self, *, run_id: str, dataset: str, rubric: str) -> Summary:
        generation, judging = self.generation, self.judging
        return Summary(
            run_id=run_id,
            dataset=dataset,
            model=self.model,
            judge_model=self.judge_model,
            judge_models=self.judge_models,
            rubric=rubric,
            cases=self.cases,
            verdicts=_full(self.verdicts),
            pass_rate=round(self.verdicts.get("PASS", 0) / self.cases, 4) if self.cases else 0.0,
            statuses=dict(self.statuses),
            strategies=dict(self.strategies),
            by_format={k: _full(c) for k, c in sorted(self.by_format.items())},
            by_difficulty={k: _full(c) for k, c in sorted(self.by_difficulty.items())},
            generation=generation,
            judging=judging,
            total_tokens=sum(s.input_tokens + s.output_tokens for s in (generation, judging)),
            cost_usd=None if None in (generation.cost_usd, judging.cost_usd) else round(generation.cost_usd + judging.cost_usd, 6),
            over_budget=self.statuses.get("OVER_BUDGET", 0),
            small_local_judge=LOCAL_MODEL in self.judge_models and self.judged,
            histogram=self.histogram,
            isolation_missing=sorted(self.isolation_missing),
            judge_agreement=self.agreement.build(),
        )


def summarize(results: Iterable[CaseResult], *, run_id: str, dataset: str, model: str, judge_model: str, rubric: str) -> Summary:
    builder = SummaryBuilder(model, judge_model)
    for r in results:
        builder.add(r)
    return builder.build(run_id=run_id, dataset=dataset, rubric=rubric)


def _add(stats: StageStats, made: int, cached: int, retries: int, usage: Usage, model: str, batch: bool) -> None:
    stats.calls_made += made
    stats.calls_cached += cached
    stats.retries += retries
    # Tokens and cost count what this run paid for, so answers served from the cache add none.
    if made:
        stats.input_tokens += usage.input_tokens
        stats.output_tokens += usage.output_tokens
        cost = cost_usd(model, usage, batch)
        stats.cost_usd = None if cost is None or stats.cost_usd is None else stats.cost_usd + cost


def _full(counter: Counter[str]) -> dict[str, int]:
    return {v: counter.get(v, 0) for v in VERDICTS}
