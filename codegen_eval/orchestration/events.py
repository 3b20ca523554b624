"""Prefect events for every finished run, and the regression check behind `codegen-eval.run.regressed`.

Prefect's automation triggers match an event's name and resource labels, never its payload, so the
decision "worse than last time" is made here and published as an event of its own; an automation
(`codegen-eval alerts create`) only has to wait for that name. Emitted inside a flow or task run,
each event also gets the flow run, flow, deployment, work pool and tags as related resources from
Prefect's run context, so automations can match on those too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from codegen_eval.reporting.compare import Comparison, compare_runs
from codegen_eval.reporting.results import Summary
from codegen_eval.reporting.statistics import wilson_interval

RUN_COMPLETED = "codegen-eval.run.completed"
RUN_REGRESSED = "codegen-eval.run.regressed"
SIGNIFICANCE = 0.05  # McNemar's exact test on the shared cases
MAX_LISTED_CASES = 100  # ids carried in one event; Prefect caps an event's size


class Regression(BaseModel):
    """A run worse than the previous run of the same dataset and model."""

    previous_run: str
    shared_cases: int
    pass_rate_before: float  # on the shared cases
    pass_rate_after: float
    p_value: float  # McNemar, two-sided
    regressed: list[str]  # case ids PASS before and not now
    improved: int
    reasons: list[str]  # "mcnemar" (p < 0.05, more regressions than improvements), "drop" (beyond --alert-drop)


def find_regression(previous: Path, current: Path, alert_drop: float | None = None) -> Regression | None:
    """`current` compared with `previous` on their shared cases; None unless it is worse."""
    return regression_in(compare_runs(previous, current), previous.name, alert_drop)


def regression_in(comparison: Comparison, previous_run: str, alert_drop: float | None = None) -> Regression | None:
    """The regression a comparison of a run with `previous_run` shows; None unless it is worse."""
    if not comparison.shared:
        return None
    before, after, _ = comparison.pass_rates["all"]["all cases"]
    reasons = []
    if comparison.mcnemar_p < SIGNIFICANCE and comparison.regressions > comparison.improvements:
        reasons.append("mcnemar")
    if alert_drop is not None and before - after > alert_drop + 1e-9:  # rates are rounded to 4 places
        reasons.append("drop")
    if not reasons:
        return None
    return Regression(
        previous_run=previous_run, shared_cases=comparison.shared, pass_rate_before=before, pass_rate_after=after,
        p_value=comparison.mcnemar_p, regressed=[d.id for d in comparison.deltas if d.change == "regression"],
        improved=comparison.improvements, reasons=reasons,
    )


def run_resource(summary: Summary) -> dict[str, str]:
    """The run as a Prefect resource; its labels are what automations can match on."""
    return {
        "prefect.resource.id": f"codegen-eval.run.{summary.run_id}",
        "prefect.resource.name": f"{Path(summary.dataset).stem} · {summary.model}",
        "codegen-eval.dataset": Path(summary.dataset).stem,
        "codegen-eval.model": summary.model,
        "codegen-eval.judge": summary.judge_model,
    }


def pass_rate_ci95(summary: Summary) -> tuple[float, float]:
    """The run's pass rate interval: its one model's (cases as the unit, samples folded in), else over results."""
    if len(summary.models) == 1:
        return next(iter(summary.models.values())).pass_rate_ci95
    return wilson_interval(summary.verdicts.get("PASS", 0), summary.cases)


def completed_payload(summary: Summary, run_dir: Path) -> dict[str, Any]:
    low, high = pass_rate_ci95(summary)
    return {
        "run_id": summary.run_id, "run_dir": str(run_dir.resolve()), "report": str((run_dir / "report.html").resolve()),
        "dataset": summary.dataset, "model": summary.model, "judge_model": summary.judge_model,
        "cases": summary.cases, "verdicts": summary.verdicts, "pass_rate": summary.pass_rate,
        "pass_rate_ci95": [round(low, 4), round(high, 4)], "cost_usd": summary.cost_usd,
        "previous_run": summary.previous_run, "parent": summary.parent,
    }


def regressed_payload(summary: Summary, run_dir: Path, regression: Regression, comparison_page: Path) -> dict[str, Any]:
    return {
        "run_id": summary.run_id, "dataset": summary.dataset, "model": summary.model, "judge_model": summary.judge_model,
        **regression.model_dump(exclude={"regressed"}),
        "regressed_cases": regression.regressed[:MAX_LISTED_CASES], "regressed_count": len(regression.regressed),
        "comparison": comparison_page.resolve().as_uri(), "report": str((run_dir / "report.html").resolve()),
        "run_dir": str(run_dir.resolve()),
    }


def publish_run_events(
    run_dir: Path, summary: Summary, previous: Path | None, comparison: Comparison | None, comparison_page: Path | None,
    alert_drop: float | None = None,
) -> Regression | None:
    """Emit `codegen-eval.run.completed`, and `codegen-eval.run.regressed` when the run is worse than
    `previous` (the last run of the same dataset and model; `comparison` is the two compared, computed
    once for the page and for this). Returns the regression, if any."""
    from prefect.events import emit_event

    resource = run_resource(summary)
    completed = emit_event(RUN_COMPLETED, resource=resource, payload=completed_payload(summary, run_dir))
    if previous is None or comparison is None or comparison_page is None:
        return None
    regression = regression_in(comparison, previous.name, alert_drop)
    if regression is not None:
        related = [{"prefect.resource.id": f"codegen-eval.run.{previous.name}", "prefect.resource.role": "previous-run"}]
        emit_event(RUN_REGRESSED, resource=resource, related=related, follows=completed,
                   payload=regressed_payload(summary, run_dir, regression, comparison_page))
    return regression
