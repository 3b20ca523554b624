from __future__ import annotations

import threading
from pathlib import Path
from uuid import UUID

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact

from codegen_eval.checks import CheckResult
from codegen_eval.config import RunConfig
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.judge import DEFAULT_RUBRIC, Judgement
from codegen_eval.compare import write_comparison
from codegen_eval.report import carry_over, create_run_dir, latest_run, write_report, write_run, write_summary
from codegen_eval.results import CaseResult, Summary, assemble, summarize

Batch = tuple[list[Case], list[Generation], list[list[CheckResult]], list[Judgement]]


@task(name="start-run")
def start_run(config: RunConfig, total: int) -> str:
    run_dir = str(create_run_dir(config.out, config.model_dump(mode="json")))
    artifact = create_progress_artifact(0.0, key=f"progress-{_key(config.dataset, config.model)}", description=f"Cases graded in run {Path(run_dir).name}")
    _progress[run_dir] = _Progress(artifact, total)
    return run_dir


class _Progress:
    """A run's progress artifact; its tasks share it in this process (threads of one task runner)."""

    def __init__(self, artifact_id: UUID, total: int):
        self.artifact_id, self.total, self.done = artifact_id, max(total, 1), 0
        self.lock = threading.Lock()


_progress: dict[str, _Progress] = {}


def advance_progress(run_dir: str, cases: int) -> None:
    """Move the run's progress artifact on by `cases` graded cases."""
    progress = _progress.get(run_dir)
    if progress is None:
        return
    with progress.lock:
        progress.done += cases
        update_progress_artifact(progress.artifact_id, round(100 * progress.done / progress.total, 1))


@task(name="report")
def report(run_dir: str, config: RunConfig, batches: list[Batch], wall_seconds: float | None = None) -> str:
    results = [
        assemble(case, generation, checks, judgement, config.scoring, (config.model, config.judge_model))
        for cases, generations, checks_list, judgements in batches
        for case, generation, checks, judgement in zip(cases, generations, checks_list, judgements, strict=True)
    ]
    if config.retry_errors_of:
        results = carry_over(config.retry_errors_of, results)
    summary = summarize(
        results,
        run_id=Path(run_dir).name,
        dataset=config.dataset,
        model=config.model,
        judge_model=config.judge_model,
        rubric=config.rubric or DEFAULT_RUBRIC.name,
    )
    summary.wall_seconds = wall_seconds
    summary.parent = config.regrade_of
    report_path = write_run(Path(run_dir), summary, results)
    previous = latest_run(Path(run_dir).parent, config.dataset, before=Path(run_dir).name)
    if previous is not None:  # link the report to what changed since the last run of this dataset
        write_comparison(previous, Path(run_dir))
        summary.previous_run = previous.name
        write_summary(Path(run_dir), summary)
        write_report(Path(run_dir), summary, results)
    _publish(summary, results, report_path)
    return run_dir


def _publish(summary: Summary, results: list[CaseResult], report_path: Path) -> None:
    """Prefect artifacts, keyed per dataset and model so the UI versions them run after run."""
    key = _key(summary.dataset, summary.model)
    create_table_artifact(
        key=f"verdicts-{key}",
        table=[
            {"id": r.id, "format": r.format, "difficulty": r.difficulty, "score": r.score, "verdict": r.verdict.value, "status": r.status}
            for r in results
        ],
        description=f"Per-case verdicts of run {summary.run_id}",
    )
    create_markdown_artifact(key=f"summary-{key}", markdown=summary_markdown(summary, report_path), description=f"Summary of run {summary.run_id}")


def summary_markdown(summary: Summary, report_path: Path) -> str:
    """The run at a glance for the Prefect UI: verdicts, pass rates by group, calls, tokens, cost."""
    counts = " · ".join(f"{v} {n}" for v, n in summary.verdicts.items())
    lines = [f"# codegen-eval run {summary.run_id}", "", f"{summary.cases} cases · {counts} · pass rate {summary.pass_rate:.0%}", "",
             "| group | cases | pass rate |", "| --- | --- | --- |"]
    for group in (summary.by_format, summary.by_difficulty):
        for name, verdicts in group.items():
            total = sum(verdicts.values())
            lines.append(f"| {name} | {total} | {verdicts['PASS'] / total:.0%} |")
    lines += ["", "| stage | calls made | from cache | input tokens | output tokens | cost USD |", "| --- | --- | --- | --- | --- | --- |"]
    for name, stage in (("generation", summary.generation), ("judging", summary.judging)):
        cost = f"{stage.cost_usd:.4f}" if stage.cost_usd is not None else "unknown"
        lines.append(f"| {name} | {stage.calls_made} | {stage.calls_cached} | {stage.input_tokens} | {stage.output_tokens} | {cost} |")
    lines += ["", f"[report.html]({report_path.resolve().as_uri()})"]
    return "\n".join(lines) + "\n"


def _key(dataset: str, model: str) -> str:
    """Artifact keys per dataset and model, so the Prefect UI versions them run after run."""
    return _slug(f"{Path(dataset).stem}-{model}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:80]
