"""The re-grade flow: an earlier run's outputs through today's checks and judge, no generation call."""

from __future__ import annotations

from prefect import flow

from codegen_eval.config import DEFAULT_OUT, regrade_config
from flows.evaluate import evaluate


@flow(name="codegen-eval-regrade")
def regrade(run_dir: str, rubric: str | None = None, judge_model: str | None = None, out: str = DEFAULT_OUT) -> str:
    return evaluate(regrade_config(run_dir, rubric, judge_model, out))
