"""The re-grade flow: an earlier run's outputs through today's checks and judge, no generation call."""

from __future__ import annotations

from prefect import flow

from codegen_eval.config import regrade_config
from codegen_eval.orchestration.naming import regrade_run_name
from flows.evaluate import evaluate


@flow(name="codegen-eval-regrade", flow_run_name=regrade_run_name)
def regrade(run_dir: str, rubric: str | None = None, judge_model: str | None = None, out: str | None = None) -> str:
    """Check and judge an earlier run's outputs again: 0 generation calls. Returns the new run directory.

    Args:
        run_dir: The earlier run directory whose outputs are graded again.
        rubric: A Jinja2 judge template; empty: the earlier run's rubric.
        judge_model: The grading model; empty: the earlier run's judge.
        out: Where the new run directory goes; empty: next to the earlier run.
    """
    return evaluate(regrade_config(run_dir, rubric, judge_model, out))
