from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from uuid import UUID

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.grading.check_cache import Checked
from codegen_eval.grading.judge import DEFAULT_RUBRIC, Judgement
from codegen_eval.models.backends import identities
from codegen_eval.orchestration.events import pass_rate_ci95, publish_run_events
from codegen_eval.orchestration.naming import task_run_name
from codegen_eval.reporting.agreement import describe
from codegen_eval.reporting.compare import compare_runs, write_comparison
from codegen_eval.reporting.report import summarize_run, write_junit, write_report, write_run
from codegen_eval.reporting.runs import RESULTS, ResultKey, append_results, carry_over, create_run_dir, latest_run, order_results
from codegen_eval.reporting.results import CaseResult, Summary, case_result


@task(name="start-run", task_run_name=task_run_name("start-run"), cache_policy=NO_CACHE)
def start_run(config: RunConfig, total: int) -> str:
    generating = [] if config.outputs or config.regrade_of else config.models
    judging = config.judge_models if config.judge else []
    settings = config.model_dump(mode="json") | {"backends": identities(generating + judging, config.base_url)}
    run_dir = str(create_run_dir(config.out, settings))
    artifact = create_progress_artifact(0.0, key=f"progress-{_key(config.dataset, config.label)}", description=f"Cases graded in run {Path(run_dir).name}")
    (Path(run_dir) / _PROGRESS).write_text(json.dumps({"artifact_id": str(artifact), "total": total}), encoding="utf-8")
    return run_dir


# The progress artifact's state lives in the run directory, not in memory, so tasks running in other
# processes (a Dask worker) move the same bar: each graded batch appends one byte per case.
_PROGRESS, _GRADED = "progress.json", "progress.graded"


def advance_progress(run_dir: str, cases: int) -> None:
    """Move the run's progress artifact on by `cases` graded cases."""
    try:
        progress = json.loads((Path(run_dir) / _PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    fd = os.open(Path(run_dir) / _GRADED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"." * cases)
        done = os.fstat(fd).st_size
    finally:
        os.close(fd)
    update_progress_artifact(UUID(progress["artifact_id"]), round(100 * min(done, progress["total"]) / max(progress["total"], 1), 1))


@task(name="record", task_run_name=task_run_name("record"), cache_policy=NO_CACHE)
def record_batch(
    cases: list[Case], generations: list[Generation | None], checks: list[Checked | None], judgements: list[Judgement | None],
    config: RunConfig, run_dir: str, batch_index: int = 0, model: str = "",
) -> int:
    """Score a batch and append it to results.jsonl at once; returns the number of results recorded.
    Items pending in any stage (a stopped run) are left out: the run resumes them."""
    results = [
        case_result(case, generation, checked.checks, judgement, config.scoring, (model or config.models[0], config.judge_model),
                 sandbox_jobs=checked.sandbox_jobs, checks_cached=checked.cached)
        for case, generation, checked, judgement in zip(cases, generations, checks, judgements, strict=True)
        if generation is not None and checked is not None and judgement is not None
    ]
    append_results(Path(run_dir), results)
    advance_progress(run_dir, len(results))
    return len(results)


@task(name="report", task_run_name=task_run_name("report"), cache_policy=NO_CACHE)
def report(run_dir: str, config: RunConfig, order: list[ResultKey], wall_seconds: float | None = None) -> str:
    """Summary, CSV, JUnit and HTML from results.jsonl, streamed: memory does not grow with the run."""
    path = Path(run_dir)
    if config.retry_errors_of:
        order = carry_over(config.retry_errors_of, path)
    order_results(path, order)
    summary, first, grid = summarize_run(
        path, run_id=path.name, dataset=config.dataset, model=config.label, judge_model=config.judge_models,
        rubric=config.rubric or DEFAULT_RUBRIC.name, table_rows=TABLE_ROWS,
        judge_thresholds=config.judge_thresholds, pass_at=config.scoring.pass_at,
        models=config.models, samples=config.samples, temperature=config.temperature,
    )
    summary.wall_seconds = wall_seconds
    summary.parent = config.regrade_of
    previous = latest_run(path.parent, config.dataset, config.models, before=path.name)
    summary.previous_run = previous.name if previous else None
    report_path = write_run(path, summary, grid)
    # link the report to what changed since the last run of this dataset and models
    comparison = compare_runs(previous, path) if previous is not None else None
    page = write_comparison(previous, path, comparison=comparison) if previous is not None else None
    _publish(summary, first, report_path)
    publish_run_events(path, summary, previous, comparison, page, config.alert_drop)
    return run_dir


def partial_report(run_dir: str, config: RunConfig, total: int, stopped: bool = False) -> Summary:
    """The report page from the results recorded so far, marked partial with how many are pending:
    written while the run goes (open it any time) and when it is stopped. Not a summary.json: a
    partial run is no finished run to compare with, alert on or --retry-errors from."""
    path = Path(run_dir)
    with (path / RESULTS).open("ab") as lock:  # appending batches wait while it is read (a half-written line is no JSON)
        fcntl.flock(lock, fcntl.LOCK_SH)
        summary, _, grid = summarize_run(
            path, run_id=path.name, dataset=config.dataset, model=config.label, judge_model=config.judge_models,
            rubric=config.rubric or DEFAULT_RUBRIC.name, judge_thresholds=config.judge_thresholds, pass_at=config.scoring.pass_at,
            models=config.models, samples=config.samples, temperature=config.temperature,
        )
    summary.pending, summary.stopped = max(total - summary.cases, 0), stopped
    write_junit(path, summary)  # of the results so far; it also takes away what summarize_run wrote for it
    write_report(path, summary, grid)
    return summary


TABLE_ROWS = 1000  # the verdicts table artifact's cap: the server stores artifacts whole


def _publish(summary: Summary, results: list[CaseResult], report_path: Path) -> None:
    """Prefect artifacts, keyed per dataset and model so the UI versions them run after run."""
    key = _key(summary.dataset, summary.model)
    rows = [
        {"id": r.id, "model": r.model, "sample": r.sample, "format": r.format, "difficulty": r.difficulty, "score": r.score, "verdict": r.verdict.value, "status": r.status}
        for r in results
    ]
    more = f" (first {TABLE_ROWS} of {summary.cases}; all in results.csv)" if summary.cases > TABLE_ROWS else ""
    create_table_artifact(key=f"verdicts-{key}", table=rows, description=f"Per-case verdicts of run {summary.run_id}{more}")
    low, high = pass_rate_ci95(summary)
    rate = f"pass rate {summary.pass_rate:.0%} (95% CI {low:.0%}–{high:.0%}) on {summary.cases} cases"
    create_markdown_artifact(key=f"summary-{key}", markdown=summary_markdown(summary, report_path), description=f"Run {summary.run_id}: {rate}")


def summary_markdown(summary: Summary, report_path: Path) -> str:
    """The run at a glance for the Prefect UI: verdicts, pass rates by group, calls, tokens, cost."""
    counts = " · ".join(f"{v} {n}" for v, n in summary.verdicts.items())
    low, high = pass_rate_ci95(summary)
    lines = [f"# codegen-eval run {summary.run_id}", "", f"{summary.cases} results · {counts} · pass rate {summary.pass_rate:.0%} (95% CI {low:.0%}–{high:.0%})", ""]
    ks = sorted({k for stats in summary.models.values() for k in stats.pass_at_k}, key=int)
    lines += ["| model | cases | pass rate | 95 % CI | " + " | ".join(f"pass@{k}" for k in ks) + " | cost USD |",
              "| --- " * (5 + len(ks)) + "|"]
    for model, stats in summary.models.items():
        low, high = stats.pass_rate_ci95
        cost = f"{stats.cost_usd:.4f}" if stats.cost_usd is not None else "n/a"
        at_k = " | ".join(f"{stats.pass_at_k[k]:.2f}" if k in stats.pass_at_k else "–" for k in ks)
        lines.append(f"| {model} | {stats.cases} | {stats.pass_rate:.0%} | {low:.0%}–{high:.0%} | {at_k} | {cost} |")
    lines += ["", "| group | cases | pass rate |", "| --- | --- | --- |"]
    for group in (summary.by_format, summary.by_difficulty):
        for name, verdicts in group.items():
            total = sum(verdicts.values())
            lines.append(f"| {name} | {total} | {verdicts['PASS'] / total:.0%} |")
    lines += ["", "| stage | calls made | from cache | retries | input tokens | output tokens | cost USD |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, stage in (("generation", summary.generation), ("judging", summary.judging)):
        cost = f"{stage.cost_usd:.4f}" if stage.cost_usd is not None else "n/a"
        lines.append(f"| {name} | {stage.calls_made} | {stage.calls_cached} | {stage.retries} | {stage.input_tokens} | {stage.output_tokens} | {cost} |")
    if summary.judge_agreement is not None:
        lines += ["", *(f"- {line.strip()}" for line in describe(summary.judge_agreement))]
    lines += ["", f"[report.html]({report_path.resolve().as_uri()})"]
    return "\n".join(lines) + "\n"


def _key(dataset: str, model: str) -> str:
    """Artifact keys per dataset and model, so the Prefect UI versions them run after run."""
    return _slug(f"{Path(dataset).stem}-{model}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:80]
