"""A run's settings: plain JSON, so they can be Prefect flow parameters and saved in run.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from codegen_eval.models.backends import default_model, is_openai_model
from codegen_eval.models.backends.openai import check_base_url
from codegen_eval.grading.scoring import ScoringConfig

DEFAULT_DATASET = "datasets/aws_codegen.jsonl"
DEFAULT_OUT = "artifacts/runs"


class RunConfig(BaseModel):
    dataset: str = DEFAULT_DATASET
    model: str = Field(default_factory=default_model)  # Claude with a key, the embedded model without
    judge_model: str | None = None  # None: the same as model
    # Where openai:<name> models are served (e.g. http://127.0.0.1:8000/v1); None: OPENAI_BASE_URL or OpenAI.
    # The key never goes here (nor in run.json): it comes from OPENAI_API_KEY only.
    base_url: str | None = None
    rubric: str | None = None  # a Jinja2 judge template; None is the shipped one
    judge: bool = True  # False (--no-judge): verdicts from the checks alone
    max_cost_usd: float | None = Field(None, gt=0)  # stop making calls once this would be exceeded
    use_batch: bool = False  # --batch: uncached calls go through Message Batches
    regrade_of: str | None = None  # an earlier run directory whose outputs are graded again
    retry_errors_of: str | None = None  # an earlier run: only its ERROR cases run again, the rest carry over
    outputs: str | None = None  # grade these recorded outputs ({"id", "output", "cid"?} per line) instead of generating
    out: str = DEFAULT_OUT
    cache_dir: str | None = None  # None: CODEGEN_EVAL_CACHE_DIR or artifacts/cache
    concurrency: int = Field(8, ge=1, le=512)  # model calls in flight, generation and judging together
    timeout_s: float = Field(120.0, gt=0)  # per model call
    max_attempts: int = Field(6, ge=1)  # tries per call on 429, 529, 5xx and timeouts
    task_runner: Literal["thread", "dask"] = "thread"  # dask: fan batches out to a Dask cluster
    dask_address: str | None = None  # a running Dask scheduler; None starts a LocalCluster
    # Cases per Prefect task: one task per case per stage would swamp a Prefect server (~25 task runs/s).
    batch_size: int = Field(100, ge=1)
    scoring: ScoringConfig = ScoringConfig()

    @field_validator("base_url")
    @classmethod
    def _plain_base_url(cls, url: str | None) -> str | None:
        return check_base_url(url) if url else None

    @model_validator(mode="after")
    def _judge_defaults_to_model(self) -> RunConfig:
        if self.judge_model is None:
            self.judge_model = self.model
        if self.base_url and not (is_openai_model(self.model) or is_openai_model(self.judge_model)):
            raise ValueError("base_url (--base-url) applies to openai:<name> models only")
        return self


def regrade_config(
    run_dir: str | Path,
    rubric: str | None = None,
    judge_model: str | None = None,
    out: str = DEFAULT_OUT,
    judge: bool = True,
) -> RunConfig:
    """The settings of an earlier run, set to grade its outputs again (no generation)."""
    parent = RunConfig.model_validate(json.loads((Path(run_dir) / "run.json").read_text()))
    update = {
        "regrade_of": str(run_dir), "outputs": None, "use_batch": False, "max_cost_usd": None, "out": out, "judge": judge,
        "cache_dir": os.environ.get("CODEGEN_EVAL_CACHE_DIR") or parent.cache_dir,
    }
    if rubric:
        update["rubric"] = rubric
    if judge_model:
        update["judge_model"] = judge_model
    return parent.model_copy(update=update)
