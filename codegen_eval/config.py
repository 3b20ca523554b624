"""A run's settings: plain JSON, so they can be Prefect flow parameters and saved in run.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from codegen_eval.models.backends import default_model
from codegen_eval.grading.scoring import ScoringConfig

DEFAULT_DATASET = "datasets/aws_codegen.jsonl"
DEFAULT_OUT = "artifacts/runs"


class RunConfig(BaseModel):
    """What to evaluate and how. Every field is a named, described field of the Prefect UI's run form."""

    dataset: str = Field(DEFAULT_DATASET, description="Cases file: .jsonl, .json or HumanEval .jsonl(.gz), relative to the project root.")
    model: str = Field(default_factory=default_model, description="Model that writes the code: a Claude model id, or 'local' for the embedded model.")
    judge_model: str | None = Field(None, description="Model that grades; empty: the same as model.")
    rubric: str | None = Field(None, description="A Jinja2 judge template replacing the shipped one; empty: the shipped rubric.")
    judge: bool = Field(True, description="Ask the LLM judge; off: verdicts from the checks alone (--no-judge).")
    max_cost_usd: float | None = Field(None, gt=0, description="Make no call that could take the run's spending past this many USD.")
    use_batch: bool = Field(False, description="Send uncached calls as Message Batches: half price, slower (--batch).")
    regrade_of: str | None = Field(None, description="An earlier run directory whose outputs are graded again (no generation).")
    retry_errors_of: str | None = Field(None, description="An earlier run: only its ERROR cases run again, the rest carry over.")
    outputs: str | None = Field(None, description='Recorded outputs ({"id", "output", "cid"?} per line) graded instead of generating.')
    out: str = Field(DEFAULT_OUT, description="Directory the run directory is written into.")
    cache_dir: str | None = Field(None, description="Model-call cache; empty: CODEGEN_EVAL_CACHE_DIR or artifacts/cache.")
    concurrency: int = Field(8, ge=1, le=512, description="Model calls in flight at most, generation and judging together.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds one model call may take before it is retried.")
    max_attempts: int = Field(6, ge=1, description="Tries per call on 429, 529, 5xx and timeouts.")
    task_runner: Literal["thread", "dask"] = Field("thread", description="thread, or dask to fan batches out to a Dask cluster.")
    dask_address: str | None = Field(None, description="A running Dask scheduler (tcp://host:8786); empty: a LocalCluster.")
    # Cases per Prefect task: one task per case per stage would swamp a Prefect server (~25 task runs/s).
    batch_size: int = Field(100, ge=1, description="Cases per Prefect task run.")
    scoring: ScoringConfig = Field(ScoringConfig(), description="Score weights and verdict thresholds.")
    alert_drop: float | None = Field(
        None, ge=0, le=1,
        description="Also report a regression when the pass rate on shared cases drops by more than this (0-1) "
                    "since the previous run of this dataset and model; McNemar p < 0.05 always counts.",
    )
    # The block's name only: the key itself never enters the settings, run.json or the flow's parameters.
    api_key_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding ANTHROPIC_API_KEY, read by the flow at run time.",
    )

    @model_validator(mode="after")
    def _judge_defaults_to_model(self) -> RunConfig:
        if self.judge_model is None:
            self.judge_model = self.model
        return self


def regrade_config(
    run_dir: str | Path,
    rubric: str | None = None,
    judge_model: str | None = None,
    out: str | None = None,
    judge: bool = True,
) -> RunConfig:
    """The settings of an earlier run, set to grade its outputs again (no generation).

    By default the new run is written next to the earlier one (`out` None), wherever this is started."""
    parent = RunConfig.model_validate(json.loads((Path(run_dir) / "run.json").read_text()))
    update = {
        "regrade_of": str(run_dir), "outputs": None, "use_batch": False, "max_cost_usd": None, "out": out or str(Path(run_dir).parent), "judge": judge,
        "cache_dir": os.environ.get("CODEGEN_EVAL_CACHE_DIR") or parent.cache_dir,
    }
    if rubric:
        update["rubric"] = rubric
    if judge_model:
        update["judge_model"] = judge_model
    return parent.model_copy(update=update)
