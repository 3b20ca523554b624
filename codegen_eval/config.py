"""A run's settings: plain JSON, so they can be Prefect flow parameters and saved in run.json."""

from __future__ import annotations

from pydantic import BaseModel, Field

from codegen_eval.scoring import ScoringConfig

DEFAULT_DATASET = "datasets/aws_codegen.jsonl"
DEFAULT_OUT = "artifacts/runs"


class RunConfig(BaseModel):
    dataset: str = DEFAULT_DATASET
    model: str
    judge_model: str
    rubric: str | None = None  # a Jinja2 judge template; None is the shipped one
    out: str = DEFAULT_OUT
    cache_dir: str | None = None  # None: CODEGEN_EVAL_CACHE_DIR or artifacts/cache
    concurrency: int = Field(8, ge=1, le=512)
    # Cases per Prefect task: one task per case per stage would swamp a Prefect server (~25 task runs/s).
    batch_size: int = Field(50, ge=1)
    scoring: ScoringConfig = ScoringConfig()
