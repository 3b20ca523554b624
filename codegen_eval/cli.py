"""The `codegen-eval` command. Validates everything it can before the first model call."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from codegen_eval import progress
from codegen_eval.backends import ConfigError, default_model, get_backend
from codegen_eval.cache import CacheError, CallCache
from codegen_eval.config import DEFAULT_DATASET, DEFAULT_OUT, RunConfig
from codegen_eval.dataset import DatasetError, load_dataset
from codegen_eval.scoring import ScoringConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Measure how well LLMs write AWS code.")
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """codegen-eval: generate, check, judge and report, as cached Prefect tasks."""


@app.command()
def run(
    dataset: Annotated[Path, typer.Option(help="Cases as .jsonl or .json.")] = Path(DEFAULT_DATASET),
    model: Annotated[Optional[str], typer.Option(help="Model that writes the code; 'local' is the embedded model.")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="Model that grades; defaults to --model.")] = None,
    rubric: Annotated[Optional[Path], typer.Option(help="A Jinja2 judge template replacing the shipped one.")] = None,
    out: Annotated[Path, typer.Option(help="Where run directories are written.")] = Path(DEFAULT_OUT),
    concurrency: Annotated[int, typer.Option(min=1, max=512, help="Model calls in flight at most.")] = 8,
    batch_size: Annotated[int, typer.Option(min=1, help="Cases per Prefect task.")] = 50,
    pass_at: Annotated[float, typer.Option(help="Score at or above which a case is PASS.")] = 8.0,
    partial_at: Annotated[float, typer.Option(help="Score at or above which a case is PARTIAL.")] = 5.0,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Skip the LLM judge: verdicts from the checks alone.")] = False,
) -> None:
    """Evaluate a model on a dataset; prints the run directory as the last line."""
    model = model or default_model()
    config = RunConfig(
        dataset=str(dataset),
        model=model,
        judge_model=judge_model or model,
        rubric=str(rubric) if rubric else None,
        out=str(out),
        cache_dir=os.environ.get("CODEGEN_EVAL_CACHE_DIR"),
        concurrency=concurrency,
        batch_size=batch_size,
        judge=not no_judge,
        scoring=ScoringConfig(pass_at=pass_at, partial_at=partial_at),
    )
    cases = _preflight(config)
    run_dir = _run_flow(config, total=len(cases))
    print(run_dir)


def _preflight(config: RunConfig) -> list:
    """Everything that can be wrong before a model is called: dataset, rubric, models, cache."""
    try:
        cases = load_dataset(config.dataset)
        if config.rubric:
            _check_rubric(config.rubric)
        for model in {config.model, config.judge_model} if config.judge else {config.model}:
            get_backend(model)
        CallCache(config.cache_dir)
    except DatasetError as exc:
        _fail("invalid dataset: " + "\n".join(exc.problems))
    except (ConfigError, CacheError, OSError, ValueError) as exc:
        _fail(str(exc))
    return cases


def _check_rubric(path: str) -> None:
    import jinja2

    from codegen_eval.judge import load_rubric

    try:
        load_rubric(path).render(task="t", output="o", expected="e", criteria="c", format="python")
    except (jinja2.TemplateError, OSError) as exc:
        raise ValueError(f"rubric {path}: {exc}") from exc


def _run_flow(config: RunConfig, total: int) -> str:
    # A busy 2-core machine needs more than Prefect's default 20 s to start its ephemeral server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.evaluate import evaluate

    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        stages = {stage: bar.add_task(stage, total=total) for stage in ("generate", "check", "judge")}

        def listener(stage: str, n: int) -> None:
            bar.advance(stages[stage], n)

        progress.subscribe(listener)
        try:
            return evaluate(config)
        finally:
            progress.unsubscribe(listener)


def _fail(message: str) -> None:
    # Plain text (a message may hold "[...]"), never wrapped: scripts grep these lines.
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True, highlight=False)
    raise typer.Exit(2)


if __name__ == "__main__":
    sys.exit(app())
