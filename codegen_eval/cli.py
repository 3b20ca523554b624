"""The `codegen-eval` command. Validates everything it can before the first model call."""

from __future__ import annotations

import atexit
import gc
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from codegen_eval import stopping
from codegen_eval.config import DEFAULT_DATASET, DEFAULT_OUT, RunConfig, regrade_config
from codegen_eval.dataset import DatasetError, dataset_ids, load_dataset, load_outputs
from codegen_eval.grading.sandbox import StoppingSandbox, shared_sandbox
from codegen_eval.grading.scoring import ScoringConfig
from codegen_eval.grading.selftest import SandboxBroken, ensure_sandbox_works
from codegen_eval.models.backends import ConfigError, default_model, get_backend
from codegen_eval.models.cache import CacheError, CallCache
from codegen_eval.models.pricing import price
from codegen_eval.orchestration.quiet_prefect import PrefectServerError, quiet_prefect, turn_analytics_off
from codegen_eval.reporting import progress
from codegen_eval.reporting.runs import errored_ids, latest_run, previous_generations

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Measure how well LLMs write AWS code.")
err = Console(stderr=True)


alerts = typer.Typer(no_args_is_help=True, help="Regression alerts on a Prefect server (PREFECT_API_URL).")
app.add_typer(alerts, name="alerts")


@app.callback()
def main() -> None:
    """codegen-eval: generate, check, judge and report, as cached Prefect tasks."""
    turn_analytics_off()  # before Prefect is imported: the tool runs offline
    # Last at exit (atexit runs in reverse; the sandbox, Prefect's workers and logging have closed):
    # the interpreter's final garbage collections walk every object Prefect and pydantic made, ~0.45 s
    # of a 2.5 s cached run, only to free memory the OS takes back anyway.
    atexit.register(gc.freeze)


Dataset = Annotated[Path, typer.Option(help="Cases as .jsonl, .json or HumanEval .jsonl(.gz).")]
JudgeModel = Annotated[Optional[list[str]], typer.Option(help="Model that grades; repeat for several judges (the case's judge score is their median). Defaults to --model.")]
Calibration = Annotated[Optional[list[Path]], typer.Option(help="A file from `calibrate --write`: its threshold is where that judge passes a case when measured against the tests (one per judge).")]
Rubric = Annotated[Optional[Path], typer.Option(help="A Jinja2 judge template replacing the shipped one.")]
Out = Annotated[Path, typer.Option(help="Where run directories are written.")]
Concurrency = Annotated[int, typer.Option(min=1, max=512, help="Model calls in flight at most.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Cases per Prefect task.")]
PassAt = Annotated[float, typer.Option(help="Score at or above which a case is PASS.")]
PartialAt = Annotated[float, typer.Option(help="Score at or above which a case is PARTIAL.")]
NoJudge = Annotated[bool, typer.Option("--no-judge", help="Skip the LLM judge: verdicts from the checks alone.")]
FailUnder = Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Exit 1 when the pass rate is below this (0-1).")]
BaseUrl = Annotated[Optional[str], typer.Option(help="Where openai:<name> models are served (default: OPENAI_BASE_URL, else OpenAI).")]
MaxCost = Annotated[Optional[float], typer.Option(min=0.0, help="Stop making calls once this many USD would be exceeded.")]
CacheUrl = Annotated[Optional[str], typer.Option(help="A PostgreSQL database holding the cache, shared by every host (postgresql://user@host:5432/db); default: CODEGEN_EVAL_CACHE_URL, else the cache directory.")]
AlertDrop = Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Emit codegen-eval.run.regressed when the pass rate drops by more than this (0-1) since the last run of the dataset and model (McNemar p < 0.05 always does).")]


@app.command()
def run(
    dataset: Dataset = Path(DEFAULT_DATASET),
    model: Annotated[Optional[list[str]], typer.Option(help="Model that writes the code; 'local' is the embedded model. Repeat for several.")] = None,
    judge_model: Annotated[Optional[list[str]], typer.Option(help="Model that grades; repeat for several judges (the case's judge score is their median). Defaults to the first --model.")] = None,
    rubric: Rubric = None,
    out: Out = Path(DEFAULT_OUT),
    concurrency: Concurrency = 8,
    batch_size: BatchSize = 100,
    pass_at: PassAt = 8.0,
    partial_at: PartialAt = 5.0,
    no_judge: NoJudge = False,
    max_cost: MaxCost = None,
    batch: Annotated[bool, typer.Option("--batch", help="Send uncached calls as Message Batches (half price, slower).")] = False,
    fail_under: FailUnder = None,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="Run again only the ERROR cases of the last run of this dataset and model.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds one model call may take before it is retried.")] = 120.0,
    max_attempts: Annotated[int, typer.Option(min=1, help="Tries per call on 429, 529, 5xx and timeouts.")] = 6,
    task_runner: Annotated[str, typer.Option(help="thread, or dask (a LocalCluster, or --dask-address).")] = "thread",
    dask_address: Annotated[Optional[str], typer.Option(help="A running Dask scheduler, e.g. tcp://10.0.0.5:8786.")] = None,
    samples: Annotated[int, typer.Option(min=1, max=100, help="Answers per case and model (pass@k).")] = 1,
    temperature: Annotated[Optional[float], typer.Option(min=0.0, max=2.0, help="Sampling temperature where the backend takes one (not the Claude API).")] = None,
    calibration: Calibration = None,
    base_url: BaseUrl = None,
    alert_drop: AlertDrop = None,
    api_key_block: Annotated[Optional[str], typer.Option(help="A Prefect Secret block holding the Anthropic API key, read by the flow.")] = None,
    cache_url: CacheUrl = None,
) -> None:
    """Evaluate one or more models on a dataset; prints the run directory as the last line."""
    _use_cache_url(cache_url)
    models = model or [default_model()]
    if len(set(models)) != len(models):
        _fail(f"--model: a model is given twice: {' '.join(models)}")
    config = _config(dataset, models[0], judge_model or [models[0]], rubric, out, concurrency, batch_size, pass_at, partial_at, no_judge)
    config = _calibrated(config, calibration)
    update = {"models": models, "samples": samples, "temperature": temperature, "max_cost_usd": max_cost, "use_batch": batch,
              "timeout_s": timeout, "max_attempts": max_attempts, "task_runner": task_runner, "dask_address": dask_address,
              "base_url": base_url, "alert_drop": alert_drop, "api_key_block": api_key_block}
    if retry_errors:
        last = latest_run(out, str(dataset), models)
        if last is None:
            _fail(f"--retry-errors: no earlier run of {dataset} with {' '.join(models)} in {out}")
        update["retry_errors_of"] = str(last)
    try:
        config = RunConfig.model_validate({**config.model_dump(), **update})
    except ValueError as exc:
        _fail(str(exc))
    _execute(config, fail_under)


@app.command()
def validate(
    dataset: Annotated[Path, typer.Argument(help="Cases as .jsonl, .json or HumanEval .jsonl(.gz).")],
    broken: Annotated[Optional[Path], typer.Option(help='Broken variants ({"id", "output"} per line): each must fail its case\'s tests.')] = None,
    cache_url: CacheUrl = None,
    mutants: Annotated[bool, typer.Option("--mutants", help="Also grade mutants of each reference with its tests: mutation score per case, per format and overall, survivors listed; exit 1 below the floors (0.90 a case, 0.95 overall).")] = False,
) -> None:
    """Prove a dataset without calling a model: each reference passes its own tests in the sandbox, a
    stub answer fails them, every --broken variant fails them. One line per problem; exit 2 on any.
    With --mutants, exit 1 when a case's mutation score is below its floor."""
    from codegen_eval.grading.proof import validate as prove

    _use_cache_url(cache_url)
    try:
        cache = CallCache(os.environ.get("CODEGEN_EVAL_CACHE_DIR"))
    except CacheError as exc:
        err.print(f"{exc}: proving without a cache", style="yellow", highlight=False)
        cache = None
    try:
        ensure_sandbox_works(shared_sandbox(), cache)  # else every reference would seem to fail its tests
    except SandboxBroken as exc:
        _fail(str(exc))
    with _proof_progress("validate") as advance:
        proof = prove(dataset, broken, shared_sandbox(), cache, advance)
    for line in proof.lines():
        print(line)
    _print_proof_table(proof)
    if proof.problems:
        raise typer.Exit(2)
    if mutants:
        _mutation_adequacy(dataset, cache)


def _mutation_adequacy(dataset: Path, cache: CallCache | None) -> None:
    from codegen_eval.grading.mutation import CASE_FLOOR, DATASET_FLOOR, measure

    seen = [0]

    def done(case) -> None:  # one line per case on stderr: the whole run takes minutes
        seen[0] += 1
        score = "-" if case.score is None else f"{case.score:.2f}"
        err.print(f"mutants [{seen[0]}] {case.case.id}: {case.count('killed')}/{case.scored} killed ({score})", highlight=False)

    adequacy = measure(dataset, shared_sandbox(), cache, done)
    for line in adequacy.lines():
        print(line)
    from rich.table import Table

    table = Table(title=f"mutation scores (floors: {CASE_FLOOR:.2f} a case, {DATASET_FLOOR:.2f} overall)", title_justify="left")
    for column in ("format", "cases", "killed / mutants", "score", "below floor"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for fmt in [*sorted({c.case.format for c in adequacy.cases}), None]:
        chosen = [c for c in adequacy.cases if fmt is None or c.case.format == fmt]
        killed, scored = adequacy.totals(fmt)
        score = adequacy.score(fmt)
        table.add_row(fmt or "all", str(len(chosen)), f"{killed}/{scored}", "-" if score is None else f"{score:.3f}",
                      str(sum(c.below_floor for c in chosen)))
    err.print(table)
    if adequacy.failing:
        raise typer.Exit(1)


@app.command()
def grade(
    outputs: Annotated[Path, typer.Option(help='Recorded outputs: {"id", "output", "cid"?} per line.')],
    dataset: Dataset = Path(DEFAULT_DATASET),
    judge_model: JudgeModel = None,
    rubric: Rubric = None,
    out: Out = Path(DEFAULT_OUT),
    concurrency: Concurrency = 8,
    batch_size: BatchSize = 100,
    pass_at: PassAt = 8.0,
    partial_at: PartialAt = 5.0,
    no_judge: NoJudge = False,
    max_cost: MaxCost = None,
    fail_under: FailUnder = None,
    calibration: Calibration = None,
    base_url: BaseUrl = None,
    cache_url: CacheUrl = None,
) -> None:
    """Grade pre-recorded outputs without calling a generator; prints the run directory last."""
    _use_cache_url(cache_url)
    config = _config(dataset, f"recorded:{outputs.name}", judge_model or [default_model()], rubric, out, concurrency, batch_size, pass_at, partial_at, no_judge)
    config = _calibrated(config, calibration)
    try:
        config = RunConfig.model_validate({**config.model_dump(), "outputs": str(outputs), "max_cost_usd": max_cost, "base_url": base_url})
    except ValueError as exc:
        _fail(str(exc))
    _execute(config, fail_under)


@app.command()
def regrade(
    run_dir: Annotated[Path, typer.Argument(help="An earlier run directory.", exists=True, file_okay=False)],
    rubric: Rubric = None,
    judge_model: JudgeModel = None,
    out: Annotated[Optional[Path], typer.Option(help="Where the new run directory is written (default: next to RUN_DIR).")] = None,
    no_judge: NoJudge = False,
    fail_under: FailUnder = None,
    calibration: Calibration = None,
    alert_drop: AlertDrop = None,
    cache_url: CacheUrl = None,
) -> None:
    """Check and judge an earlier run's outputs again (current checks, rubric, judge): 0 generation calls."""
    _use_cache_url(cache_url)
    _distinct(judge_model or [])
    try:
        config = regrade_config(run_dir, str(rubric) if rubric else None, judge_model or None, str(out) if out else None, not no_judge)
    except (OSError, ValueError) as exc:
        _fail(f"{run_dir}: not a run directory ({exc})")
    if alert_drop is not None:
        config = config.model_copy(update={"alert_drop": alert_drop})
    _execute(_calibrated(config, calibration), fail_under)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="The earlier run.", exists=True, file_okay=False)],
    run_b: Annotated[Path, typer.Argument(help="The later run.", exists=True, file_okay=False)],
    out: Annotated[Optional[Path], typer.Option(help="Where to write the page (default: RUN_B/compare-<A>.html).")] = None,
) -> None:
    """Compare two runs: per-case changes, pass rates, McNemar's test; prints the page's path."""
    from codegen_eval.reporting.compare import write_comparison

    try:
        print(write_comparison(run_a, run_b, out))
    except (OSError, ValueError) as exc:
        _fail(f"cannot compare {run_a} and {run_b}: {exc}")


@alerts.command("create")
def alerts_create(
    webhook: Annotated[str, typer.Option(help="URL that receives a POST {\"text\": ...} per regressed run.")],
    name: Annotated[str, typer.Option(help="Name of the webhook block and of the automation.")] = "codegen-eval-regression",
) -> None:
    """Create (or update) a webhook block and an automation that posts when a run regresses."""
    turn_analytics_off()
    from prefect.settings import get_current_settings

    from codegen_eval.orchestration.alerts import check_alert_input, create_alert

    try:
        check_alert_input(webhook, name)  # bad input is named before the server is looked for
    except ValueError as exc:
        _fail(str(exc))
    if get_current_settings().api.url is None:
        _fail("alerts live on a Prefect server: start one (prefect server start) and set PREFECT_API_URL")
    try:
        setup = create_alert(webhook, name)
    except ValueError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 (the server's answer, in one line)
        _fail(f"could not create the alert on {get_current_settings().api.url}: {exc}")
    verb = "created" if setup.created else "updated"
    err.print(f"automation {setup.name!r} {verb}: on codegen-eval.run.regressed, POST to {webhook}", highlight=False)
    print(setup.automation_id)


@app.command()
def calibrate(
    judge_model: Annotated[str, typer.Option(help="The judge to calibrate, e.g. local or a Claude model id.")],
    labels: Annotated[Optional[Path], typer.Option(help='Labelled candidates: {"id", "output", "label": "correct"|"incorrect", "cid"?} per line. Default: each reference and its broken variant.')] = None,
    dataset: Dataset = Path(DEFAULT_DATASET),
    rubric: Rubric = None,
    write: Annotated[Optional[Path], typer.Option(help="Save the calibration here, for `run --calibration FILE`.")] = None,
    pass_at: Annotated[float, typer.Option(help="The default PASS threshold, measured beside the best one.")] = 8.0,
    concurrency: Concurrency = 8,
) -> None:
    """Grade labelled candidates with the judge alone: balanced accuracy, κ, ROC and AUC, best threshold."""
    from codegen_eval.reporting.calibration import SHIPPED, load_labels, shipped_labels
    from codegen_eval.reporting.calibration import calibrate as run_calibration
    from codegen_eval.models.calls import CallPolicy
    from codegen_eval.models.ratelimit import limiter_for

    try:
        cases = load_dataset(dataset)
        items = load_labels(labels, cases) if labels else shipped_labels(cases)
        if rubric:
            _check_rubric(str(rubric))
        get_backend(judge_model)
        cache = CallCache(os.environ.get("CODEGEN_EVAL_CACHE_DIR"))
    except DatasetError as exc:
        _fail("invalid input: " + "\n".join(exc.problems))
    except (ConfigError, CacheError, OSError, ValueError) as exc:
        _fail(str(exc))
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("judge", total=len(items))
            result = run_calibration(
                items, cases, judge_model, cache, rubric=str(rubric) if rubric else None, workers=concurrency + 4,
                policy=CallPolicy(limiter=limiter_for(concurrency)), default_threshold=pass_at,
                labels=str(labels) if labels else SHIPPED, on_item=lambda: bar.advance(task),
            )
    except DatasetError as exc:
        _fail("; ".join(exc.problems))
    except CacheError as exc:
        _fail(f"{exc}. Every answer stored before this is kept: run the same command again.")
    _print_calibration(result)
    if write:
        write.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
        print(write)


def _print_calibration(result) -> None:
    """The figures on stdout: they are the command's result."""
    from codegen_eval.reporting.agreement import format_stats

    unusable = result.items - result.scored
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"judge {result.judge_model} on {result.items} labelled items ({result.labels}): {result.scored} scored"
              + (f", {unusable} without a usable score (left out)" if unusable else "")
              + f"; {result.calls_made} calls made, {result.calls_cached} from cache")
    for name, stats in (("default", result.at_default), ("best", result.at_best)):
        out.print(f"{name} threshold {stats.threshold:g}: {format_stats(stats)}")
    out.print(f"AUC {result.auc:.3f}" if result.auc is not None else "AUC n/a")
    out.print("ROC (the judge passes score >= threshold):")
    for point in result.roc[1:]:
        out.print(f"  >= {point.threshold:g}: true positive rate {point.true_positive_rate:.2f}, false positive rate {point.false_positive_rate:.2f}")
    out.print(f"best threshold (maximises balanced accuracy): {result.threshold:g}")
    if result.at_best.low_information:
        out.print("κ < 0.2 even at the best threshold: this judge's scores carry little information about correctness.")


def _config(dataset, model, judge_models, rubric, out, concurrency, batch_size, pass_at, partial_at, no_judge) -> RunConfig:
    _distinct(judge_models)
    return RunConfig(
        dataset=str(dataset),
        model=model,
        judge_models=judge_models,
        rubric=str(rubric) if rubric else None,
        out=str(out),
        cache_dir=os.environ.get("CODEGEN_EVAL_CACHE_DIR"),
        cache_url=os.environ.get("CODEGEN_EVAL_CACHE_URL"),  # kept without its password
        concurrency=concurrency,
        batch_size=batch_size,
        judge=not no_judge,
        scoring=ScoringConfig(pass_at=pass_at, partial_at=partial_at),
    )


def _use_cache_url(url: str | None) -> None:
    """--cache-url, for this process and the worker processes it starts: through the environment, as
    CODEGEN_EVAL_CACHE_URL would be, so a password in it stays out of the run's settings."""
    from codegen_eval.models.cache_pg import is_database_url

    if url is None:
        return
    if not is_database_url(url):
        _fail("--cache-url: not a PostgreSQL URL (postgresql://user@host:5432/db)")
    os.environ["CODEGEN_EVAL_CACHE_URL"] = url


def _distinct(judge_models: list[str]) -> None:
    twice = sorted({m for m in judge_models if judge_models.count(m) > 1})
    if twice:
        _fail(f"--judge-model {', '.join(twice)} given twice")


def _calibrated(config: RunConfig, paths: list[Path] | None) -> RunConfig:
    """Each calibration file's threshold for its judge, which must be one of this run's judges."""
    from codegen_eval.reporting.calibration import load_calibration

    thresholds, files = dict(config.judge_thresholds), list(config.calibrations)
    for path in paths or []:
        try:
            calibration = load_calibration(path)
        except ValueError as exc:
            _fail(str(exc))
        if calibration.judge_model not in config.judge_models:
            _fail(f"calibration {path} is for judge {calibration.judge_model!r}, not one of this run's judges ({', '.join(config.judge_models)})")
        thresholds[calibration.judge_model] = calibration.threshold
        files.append(str(path))
    return config.model_copy(update={"judge_thresholds": thresholds, "calibrations": files}) if paths else config


def _execute(config: RunConfig, fail_under: float | None = None) -> None:
    # Ctrl-C or SIGTERM: stop cleanly (see codegen_eval/stopping.py); a second one ends the process at once.
    stopping.handle_signals(f"to resume, run the same command: {_same_command()}")
    stopping.on_exit(_close_sandbox)
    total = _preflight(config)
    if stopping.requested():  # before any model call
        _stopped()
    try:
        with quiet_prefect(config.out) as quiet:
            stopping.on_exit(lambda: _kill_server(quiet))
            run_dir, cancelled = _run_flow(config, total)
            quiet.run_dir = Path(run_dir)
    except CacheError as exc:  # e.g. the disk filled up, or the database went away, mid-run
        _fail(f"{exc}. Every answer stored before this is kept: {exc.remedy}.")
    except PrefectServerError as exc:
        _fail(str(exc))
    if cancelled:
        _stopped()
    pass_rate = _print_summary(Path(run_dir))
    print(run_dir)
    if fail_under is not None and pass_rate < fail_under:
        err.print(f"pass rate {pass_rate:.1%} is under --fail-under {fail_under:.1%}", style="bold red", highlight=False)
        raise typer.Exit(1)


def _same_command() -> str:
    """This command as the user could type it again (the entry point's name, not `python -m ...`)."""
    return shlex.join(["codegen-eval", *sys.argv[1:]])


def _stopped() -> None:
    """A stopped run: its sandbox closed, what was kept, where its partial report is, how to resume; exit 130."""
    _close_sandbox()
    stopping.farewell()
    raise typer.Exit(stopping.EXIT_CODE)


def _close_sandbox() -> None:
    from codegen_eval.grading import sandbox

    if sandbox._shared is not None:  # noqa: SLF001 (never start one only to close it)
        sandbox._shared.close()  # noqa: SLF001


def _kill_server(quiet) -> None:
    quiet.kill_server()


def _print_summary(run_dir: Path) -> float:
    """Verdicts, models, calls, tokens and cost on stderr, so stdout stays the run directory alone."""
    from codegen_eval.reporting.results import Summary

    summary = Summary.model_validate_json((run_dir / "summary.json").read_text())
    for line in summary_lines(summary):
        err.print(line)
    return summary.pass_rate


def summary_lines(summary) -> list:
    """The CLI's summary as rich renderables, each within 80 columns: a line per model (pass rate, its
    95 % interval, pass@k, cost), then calls per stage."""
    from rich.table import Table

    from codegen_eval.orchestration.events import pass_rate_ci95

    verdicts = " · ".join(f"{verdict} {count}" for verdict, count in summary.verdicts.items())
    low, high = pass_rate_ci95(summary)
    lines: list = [Text(f"{summary.cases} results · pass rate {summary.pass_rate:.0%} (95% CI {low:.0%}–{high:.0%})\n{verdicts}")]
    ks = sorted({k for stats in summary.models.values() for k in stats.pass_at_k}, key=int)
    models = Table(box=None, pad_edge=False)
    for column in ("model", "cases", "pass", "95% CI", *(f"pass@{k}" for k in ks), "cost USD"):
        models.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
    for model, stats in summary.models.items():
        low, high = stats.pass_rate_ci95
        cost = f"{stats.cost_usd:.4f}" if stats.cost_usd is not None else "n/a"
        at_k = [f"{stats.pass_at_k[k]:.2f}" if k in stats.pass_at_k else "–" for k in ks]
        models.add_row(model, str(stats.cases), f"{stats.pass_rate:.0%}", f"{low:.0%}–{high:.0%}", *at_k, cost)
    lines.append(models)
    if summary.temperature is not None:
        ignored = [m for m, stats in summary.models.items() if stats.temperature is None]
        if ignored:
            lines.append(Text(f"temperature {summary.temperature} not applied (the backend takes none): {', '.join(ignored)}"))
    lines.append(stage_table(summary))
    if summary.over_budget:
        lines.append(Text(f"{summary.over_budget} case(s) left ungraded by --max-cost", style="bold yellow"))
    if summary.judge_agreement is not None:
        from codegen_eval.reporting.agreement import describe

        style = "yellow" if summary.judge_agreement.low_information else ""
        lines.append(Text("\n".join(describe(summary.judge_agreement)), style=style))
    return lines


def stage_table(summary):
    """Calls, tokens and cost per stage, within 80 columns (a plain terminal) even at 20,000 cases and millions of tokens."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("stage", "calls", "cached", "retries", "tokens in", "tokens out", "cost USD"):
        table.add_column(column, justify="left" if column == "stage" else "right", no_wrap=True)
    for name, stage in (("generation", summary.generation), ("judging", summary.judging)):
        cost = f"{stage.cost_usd:.4f}" if stage.cost_usd is not None else "n/a"
        table.add_row(name, f"{stage.calls_made:,}", f"{stage.calls_cached:,}", f"{stage.retries:,}",
                      f"{stage.input_tokens:,}", f"{stage.output_tokens:,}", cost)
    checking = summary.checking  # sandbox jobs run, and cases whose checks came from the check cache
    table.add_row("checks", f"{checking.sandbox_jobs:,}", f"{checking.cases_cached:,}", "", "", "", "")
    return table


def _preflight(config: RunConfig) -> int:
    """Everything that can be wrong before a model is called: dataset, outputs, rubric, models, cache.

    Returns the number of items to grade."""
    try:
        if config.outputs:
            total = len(load_outputs(config.outputs, load_dataset(config.dataset)))
        elif config.regrade_of:
            total = len(previous_generations(config.regrade_of, load_dataset(config.dataset)))
        else:  # the ids suffice: the run itself streams the cases
            ids = dataset_ids(config.dataset)
            cases = len(errored_ids(config.retry_errors_of)) if config.retry_errors_of else len(ids)
            total = cases * len(config.models) * config.samples
        if config.rubric:
            _check_rubric(config.rubric)
        models = set(config.judge_models) if config.judge else set()
        if not (config.outputs or config.regrade_of):
            models.update(config.models)
        for model in sorted(models):
            if not (config.api_key_block and model != "local"):  # with a Secret block, the flow loads the key
                get_backend(model, config.base_url)
            if config.max_cost_usd is not None and price(model) is None:
                raise ValueError(f"no price is known for model {model!r}, so --max-cost cannot be enforced")
        cache = CallCache(config.cache_dir, url=config.cache_url)
        ensure_sandbox_works(shared_sandbox(), cache)  # never a report full of silent false FAILs
        _prove_references(config)  # last: the only check that may take seconds (minutes, cold, for a big dataset)
    except SandboxBroken as exc:
        _fail(str(exc))
    except DatasetError as exc:
        _fail("invalid input: " + "\n".join(exc.problems))
    except (ConfigError, CacheError, OSError, ValueError) as exc:
        _fail(str(exc))
    return total


def _prove_references(config: RunConfig) -> None:
    """Each reference must pass its own tests before a model is paid to attempt the case (cached)."""
    from codegen_eval.grading.proof import prove_references

    import logging

    # A stop leaves the remaining proofs to the next run, without a warning for each reference not proven.
    logging.getLogger("codegen_eval.grading.proof").addFilter(lambda record: not stopping.requested())
    with _proof_progress("prove") as advance:
        prove_references(config.dataset, StoppingSandbox(shared_sandbox()), CallCache(config.cache_dir, url=config.cache_url), advance)  # type: ignore[arg-type]


@contextmanager
def _proof_progress(name: str) -> Iterator[Callable[[], None]]:
    """A bar while cases are proven; it goes away once done (a cached proof is over in a blink)."""
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(name, total=None)
        yield lambda: bar.advance(task)


def _print_proof_table(proof) -> None:
    from rich.table import Table

    table = Table(title=f"{len(proof.problems)} problem(s) · {proof.sandbox_runs} run in the sandbox, {proof.from_cache} from the cache",
                  title_justify="left")
    for column in ("format", "cases", "references pass", "tests not trivial", "broken variants fail"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for fmt, tally in sorted(proof.tallies.items()):
        broken = f"{tally.broken_failing}/{tally.broken}" if tally.broken else "-"
        table.add_row(fmt, str(tally.cases), f"{tally.proven}/{tally.cases}", f"{tally.non_trivial}/{tally.with_tests}", broken)
    err.print(table)


def _check_rubric(path: str) -> None:
    import jinja2

    from codegen_eval.grading.judge import load_rubric

    try:
        load_rubric(path).render(task="t", output="o", expected="e", criteria="c", format="python")
    except (jinja2.TemplateError, OSError) as exc:
        raise ValueError(f"rubric {path}: {exc}") from exc


def _run_flow(config: RunConfig, total: int) -> tuple[str, bool]:
    """The flow run, with its progress shown; returns the run directory, and whether the run was stopped."""
    # A busy 2-core machine needs more than Prefect's default 20 s to start its ephemeral server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    import logging

    from flows.evaluate import run_evaluation

    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_no_traceback_for_cache_errors)
    # What the imports made lives as long as the run: frozen, the collector's full passes (seven in a
    # 400-case run) no longer walk those ~150k objects each time (~10 % of an uncached run's CPU).
    gc.freeze()
    # A run allocates short-lived objects by the million (requests, replies, results) on up to 40
    # threads. At the default (700, 10, 10) the collector ran ~900 times in a 400-case run, ~7 of them
    # full passes of ~0.1 s each with every thread stopped: 1.3 ms of CPU per case. At 10,000 young
    # objects, 0.2 ms; the garbage it lets wait is a few MB at most.
    gc.set_threshold(10_000, 10, 10)

    generating = not (config.outputs or config.regrade_of)
    labels = {"generate": f"generate {config.label}", "check": "check",
              "judge": f"judge {', '.join(config.judge_models)}" if config.judge else "judge (none)"}
    totals: dict[str, int | None] = {stage: total for stage in ("generate", "check", "judge") if generating or stage != "generate"}
    with progress.shown(err, labels, totals):
        with _without_heartbeats():
            state = run_evaluation(config, return_state=True)
    # Raises what the flow raised; a Cancelled state (a stopped run) holds the run directory.
    return state.result(raise_on_failure=not state.is_cancelled()), state.is_cancelled()


def _without_heartbeats():
    """Prefect's flow-run heartbeats (they let an automation mark a vanished run Crashed) end with a
    join on a thread that sleeps in 1 s steps: 0.5 s on average, a sixth of a cached re-run. A run
    started here reports its own end to the terminal and to Prefect, so it goes without, unless
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set; deployments (`serve`, workers) keep them."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"} & set(os.environ):
        return nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _no_traceback_for_cache_errors(record) -> bool:
    """A full or read-only cache is the user's to fix, and the CLI says so once: Prefect's run logs
    keep their line but drop the traceback."""
    if record.exc_info and isinstance(record.exc_info[1], CacheError):
        record.exc_info, record.exc_text = None, None
    return True


def _fail(message: str) -> None:
    # Plain text (a message may hold "[...]"), never wrapped: scripts grep these lines.
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True, highlight=False)
    raise typer.Exit(2)


if __name__ == "__main__":
    sys.exit(app())
