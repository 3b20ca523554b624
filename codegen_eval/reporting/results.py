"""A run's record: one `CaseResult` per case and a `Summary` of the whole run."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import fmean, median

from pydantic import BaseModel

from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.grading.checks import CheckResult
from codegen_eval.grading.judge import Judgement, JudgeScore, judge_cost
from codegen_eval.grading.scoring import ScoringConfig, Verdict, score_case
from codegen_eval.models.backends import LOCAL_MODEL, Usage
from codegen_eval.models.pricing import cost_usd
from codegen_eval.reporting.agreement import AgreementBuilder, JudgeAgreement
from codegen_eval.reporting.statistics import ks_for, mcnemar_exact, pass_at_k, pass_hat_k, wilson_interval

VERDICTS = [v.value for v in Verdict]


class CaseResult(BaseModel):
    id: str
    cid: str | None = None
    model: str | None = None  # who wrote the output (rows of older runs lack it: their run's one model)
    sample: int = 0  # which of the case's samples for that model
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
    sandbox_jobs: int = 0  # jobs its checks ran in the sandbox this run (0 when served from the check cache)
    checks_cached: bool = False  # its checks came from the check cache


class CheckingStats(BaseModel):
    """The checks stage, counted like model calls: sandbox jobs run, and cases whose checks were cached."""

    sandbox_jobs: int = 0
    cases_checked: int = 0  # cases whose checks ran this run
    cases_cached: int = 0  # cases whose checks came from the check cache


class StageStats(BaseModel):
    calls_made: int = 0
    calls_cached: int = 0
    retries: int = 0  # transient API failures (429, 529, 5xx, timeouts) tried again
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0  # of the calls made; None when the model's price is unknown


class GroupStats(BaseModel):
    """One model's outcome on a set of cases; a case's outcome is its share of passing samples."""

    cases: int
    pass_rate: float  # the mean share: pass@1
    pass_at_k: dict[str, float] = {}  # Chen et al.'s unbiased estimator, k in 1, 5, 10 up to the samples
    pass_hat_k: dict[str, float] = {}  # tau-bench's pass^k: all k of k samples pass


class ModelStats(GroupStats):
    """A leaderboard row. The interval takes the case as the unit (samples of one case are not
    independent): Wilson's interval on the sum of per-case shares out of the cases."""

    pass_rate_ci95: tuple[float, float]
    samples: int  # samples per case (the fewest any case has)
    mean_score: float | None
    by_format: dict[str, GroupStats] = {}
    by_difficulty: dict[str, GroupStats] = {}
    input_tokens: int = 0  # of its answers, cached or not: what the model used, not what this run paid
    output_tokens: int = 0
    cost_usd: float | None = 0.0  # paid in this run for its generations and their judging; None: unknown price
    median_latency_s: float | None = None  # per generation call (cached answers keep their call's latency)
    temperature: float | None = None  # as applied; None with a temperature asked for: the backend could not take it


class PairTest(BaseModel):
    """McNemar's exact test between two models on their shared cases. With several samples it is the
    sign test on each case's share of passing samples, which is McNemar's test when there is one."""

    a: str
    b: str
    shared: int
    a_better: int  # cases where a passed (more often) and b did not
    b_better: int
    p_value: float


class Summary(BaseModel):
    run_id: str
    dataset: str
    model: str  # the models, joined by "+"
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
    checking: CheckingStats = CheckingStats()
    judge_agreement: JudgeAgreement | None = None  # the judge against the tests; None when no judge ran
    samples: int = 1  # asked for per case and model
    temperature: float | None = None  # asked for; each model's row says whether it was applied
    models: dict[str, ModelStats] = {}  # the leaderboard, in the order the models were given
    pairwise: list[PairTest] = []  # every pair of models
    pending: int = 0  # results not graded yet: > 0 only in a partial report (while the run goes, or once stopped)
    stopped: bool = False  # the run was stopped (Ctrl-C, SIGTERM) before every result was graded


def case_result(
    case: Case,
    generation: Generation,
    checks: list[CheckResult],
    judgement: Judgement,
    scoring: ScoringConfig,
    models: tuple[str, str] = ("", ""),
    sandbox_jobs: int = 0,
    checks_cached: bool = False,
) -> CaseResult:
    """One case's record; `models` (generator, judge) price its calls (the generator: the generation's own
    model when it names one)."""
    models = (generation.model or models[0], models[1])
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
        model=models[0] or None,
        sample=generation.sample,
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
        sandbox_jobs=sandbox_jobs,
        checks_cached=checks_cached,
    )


@dataclass(slots=True)
class CaseOutcome:
    """One case's samples for one model: how many, how many passed, and the verdicts in sample order.
    A plain slotted class: a 20,000-case run keeps one per case and model."""

    format: str
    difficulty: str
    n: int = 0
    passed: int = 0
    verdicts: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.passed / self.n if self.n else 0.0


# case key (id, or id#cid) -> model -> its samples' outcome; what the leaderboard, grid and pair tests need
Grid = dict[str, dict[str, CaseOutcome]]


class _ModelTally:
    """What a leaderboard row needs of one model's results, gathered in one pass."""

    def __init__(self) -> None:
        self.scores: list[float] = []
        self.latencies: list[float] = []
        self.input_tokens = self.output_tokens = 0
        self.cost_usd: float | None = 0.0
        self.temperature: float | None = None

    def add(self, r: CaseResult) -> None:
        if r.score is not None:
            self.scores.append(r.score)
        g = r.generation
        if g.latency_s is not None:
            self.latencies.append(g.latency_s)
        self.input_tokens += g.usage.input_tokens
        self.output_tokens += g.usage.output_tokens
        self.temperature = g.temperature if g.temperature is not None else self.temperature
        costs = list(r.cost_usd.values())
        self.cost_usd = None if self.cost_usd is None or None in costs else self.cost_usd + sum(costs)


class SummaryBuilder:
    """A run's summary built from a stream of results in one pass, so 20,000 cases need no list
    (per case and model only a small tally is kept, for pass@k and the case x model grid)."""

    def __init__(
        self,
        model: str,
        judge_model: str | list[str],
        judge_thresholds: dict[str, float] | None = None,
        pass_at: float = 8.0,
        models: list[str] | None = None,
        samples: int = 1,
        temperature: float | None = None,
    ):
        self.judge_models = [judge_model] if isinstance(judge_model, str) else list(judge_model)
        self.model, self.judge_model = model, ", ".join(self.judge_models)
        self.agreement = AgreementBuilder(self.judge_models, judge_thresholds, pass_at)
        self.models, self.samples, self.temperature = list(models or [model]), samples, temperature
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
        self.checking = CheckingStats()
        self.grid: Grid = {}
        self.tallies: dict[str, _ModelTally] = {}

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
        self.checking.sandbox_jobs += r.sandbox_jobs
        if r.checks_cached:
            self.checking.cases_cached += 1
        elif r.checks:
            self.checking.cases_checked += 1
        g, j = r.generation, r.judge
        model = r.model or self.models[0]
        _count_calls(self.generation, g.calls, int(g.cached), g.retries, g.usage, model, g.batch)
        for judge_model, part in r.judges.items() if r.judges else [(self.judge_models[0], j)]:  # priced per judge
            _count_calls(self.judging, part.calls, part.cached_calls, part.retries, part.usage, judge_model, part.batch)
        self.agreement.add(r)
        outcome = self.grid.setdefault(case_key(r), {}).setdefault(model, CaseOutcome(format=r.format, difficulty=r.difficulty))
        outcome.n += 1
        outcome.passed += r.verdict.value == "PASS"
        outcome.verdicts.append(r.verdict.value)
        self.tallies.setdefault(model, _ModelTally()).add(r)

    def build(self, *, run_id: str, dataset: str, rubric: str) -> Summary:
        generation, judging = self.generation, self.judging
        models = [m for m in self.models if m in self.tallies] + [m for m in self.tallies if m not in self.models]
        return Summary(
            run_id=run_id,
            dataset=dataset,
            model=self.model,
            judge_model=self.judge_model,
            judge_models=self.judge_models,
            rubric=rubric,
            cases=self.cases,
            verdicts=_every_verdict(self.verdicts),
            pass_rate=round(self.verdicts.get("PASS", 0) / self.cases, 4) if self.cases else 0.0,
            statuses=dict(self.statuses),
            strategies=dict(self.strategies),
            by_format={k: _every_verdict(c) for k, c in sorted(self.by_format.items())},
            by_difficulty={k: _every_verdict(c) for k, c in sorted(self.by_difficulty.items())},
            generation=generation,
            judging=judging,
            total_tokens=sum(s.input_tokens + s.output_tokens for s in (generation, judging)),
            cost_usd=None if None in (generation.cost_usd, judging.cost_usd) else round(generation.cost_usd + judging.cost_usd, 6),
            over_budget=self.statuses.get("OVER_BUDGET", 0),
            small_local_judge=LOCAL_MODEL in self.judge_models and self.judged,
            histogram=self.histogram,
            isolation_missing=sorted(self.isolation_missing),
            checking=self.checking,
            judge_agreement=self.agreement.build(),
            samples=self.samples,
            temperature=self.temperature,
            models={m: self._model_stats(m) for m in models},
            pairwise=[pair_test(self.grid, a, b) for i, a in enumerate(models) for b in models[i + 1:]],
        )

    def _model_stats(self, model: str) -> ModelStats:
        outcomes = [cell[model] for cell in self.grid.values() if model in cell]
        tally = self.tallies[model]
        overall = group_stats(outcomes)
        return ModelStats(
            **overall.model_dump(),
            pass_rate_ci95=tuple(round(x, 4) for x in wilson_interval(sum(o.share for o in outcomes), len(outcomes))),
            samples=min(o.n for o in outcomes),
            mean_score=round(fmean(tally.scores), 2) if tally.scores else None,
            by_format={name: group_stats([o for o in outcomes if o.format == name]) for name in sorted({o.format for o in outcomes})},
            by_difficulty={name: group_stats([o for o in outcomes if o.difficulty == name]) for name in sorted({o.difficulty for o in outcomes})},
            input_tokens=tally.input_tokens,
            output_tokens=tally.output_tokens,
            cost_usd=None if tally.cost_usd is None else round(tally.cost_usd, 6),
            median_latency_s=round(median(tally.latencies), 3) if tally.latencies else None,
            temperature=tally.temperature,
        )


def case_key(r: CaseResult) -> str:
    return r.id + (f"#{r.cid}" if r.cid else "")


def group_stats(outcomes: list[CaseOutcome]) -> GroupStats:
    """pass rate (mean share), pass@k and pass^k over cases, k up to the fewest samples any case has."""
    if not outcomes:
        return GroupStats(cases=0, pass_rate=0.0)
    ks = ks_for(min(o.n for o in outcomes))
    return GroupStats(
        cases=len(outcomes),
        pass_rate=round(fmean(o.share for o in outcomes), 4),
        pass_at_k={str(k): round(fmean(pass_at_k(o.n, o.passed, k) for o in outcomes), 4) for k in ks},
        pass_hat_k={str(k): round(fmean(pass_hat_k(o.n, o.passed, k) for o in outcomes), 4) for k in ks},
    )


def pair_test(grid: Grid, a: str, b: str) -> PairTest:
    shared = [(cell[a].share, cell[b].share) for cell in grid.values() if a in cell and b in cell]
    a_better = sum(x > y for x, y in shared)
    b_better = sum(y > x for x, y in shared)
    return PairTest(a=a, b=b, shared=len(shared), a_better=a_better, b_better=b_better, p_value=round(mcnemar_exact(a_better, b_better), 6))


def summarize(results: Iterable[CaseResult], *, run_id: str, dataset: str, model: str, judge_model: str, rubric: str) -> Summary:
    builder = SummaryBuilder(model, judge_model, models=model.split("+"))
    for r in results:
        builder.add(r)
    return builder.build(run_id=run_id, dataset=dataset, rubric=rubric)


def _count_calls(stats: StageStats, made: int, cached: int, retries: int, usage: Usage, model: str, batch: bool) -> None:
    stats.calls_made += made
    stats.calls_cached += cached
    stats.retries += retries
    # Tokens and cost count what this run paid for, so answers served from the cache add none.
    if made:
        stats.input_tokens += usage.input_tokens
        stats.output_tokens += usage.output_tokens
        cost = cost_usd(model, usage, batch)
        stats.cost_usd = None if cost is None or stats.cost_usd is None else stats.cost_usd + cost


def _every_verdict(counter: Counter[str]) -> dict[str, int]:
    return {v: counter.get(v, 0) for v in VERDICTS}
