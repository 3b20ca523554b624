"""A run's settings: plain JSON, so they can be Prefect flow parameters and saved in run.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from codegen_eval.models.backends import default_model, is_openai_model
from codegen_eval.models.backends.openai import check_base_url
from codegen_eval.grading.scoring import ScoringConfig

DEFAULT_DATASET = "datasets/aws_codegen.jsonl"
DEFAULT_OUT = "artifacts/runs"


class RunConfig(BaseModel):
    dataset: str = DEFAULT_DATASET
    # The models that write code, each graded on every case; Claude with a key, the embedded model
    # without. A single `model` (run.json files, deployments written before) is read as [model].
    models: list[str] = Field(default_factory=lambda: [default_model()], min_length=1)
    samples: int = Field(1, ge=1, le=100)  # answers per case and model (pass@k)
    temperature: float | None = Field(None, ge=0, le=2)  # None: each backend's default (the local model: greedy)
    # Models that grade; several: each grades each case, the case's judge score is their median.
    # Empty: the first of models. The single `judge_model` of older run.json files and deployments is accepted.
    judge_models: list[str] = Field(default_factory=list)
    # Judge model -> the score at which it passes a case, from `codegen-eval calibrate` (--calibration).
    # Used where the judge is measured against the tests (judge_agreement), not in scoring.
    judge_thresholds: dict[str, float] = Field(default_factory=dict)
    calibrations: list[str] = Field(default_factory=list)  # the calibration files they came from
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

    @model_validator(mode="before")
    @classmethod
    def _single_models(cls, data: Any) -> Any:
        """Older run.json files and deployments name one `model` and one `judge_model`."""
        if isinstance(data, dict) and ("model" in data or "judge_model" in data):
            data = dict(data)
            if "model" in data:
                model = data.pop("model")
                if "models" in data and data["models"] != [model]:
                    raise ValueError(f"both model ({model!r}) and models ({data['models']!r}) given: use models")
                data["models"] = [model]
            single = data.pop("judge_model", None)
            if single and not data.get("judge_models"):
                data["judge_models"] = [single]
        return data

    @model_validator(mode="after")
    def _judge_defaults_to_model(self) -> RunConfig:
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"a model is named twice in models: {self.models}")
        if not self.judge_models:
            self.judge_models = [self.models[0]]
        if len(set(self.judge_models)) != len(self.judge_models):
            raise ValueError(f"judge models named twice: {', '.join(self.judge_models)}")
        if self.base_url and not any(is_openai_model(m) for m in [*self.models, *self.judge_models]):
            raise ValueError("base_url (--base-url) applies to openai:<name> models only")
        return self

    @property
    def judge_model(self) -> str:
        """The first (or only) judge."""
        return self.judge_models[0]

    @property
    def label(self) -> str:
        """The models as one name: artifact keys, messages."""
        return "+".join(self.models)


def regrade_config(
    run_dir: str | Path,
    rubric: str | None = None,
    judge_model: str | list[str] | None = None,
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
    if judge_model:  # new judges: thresholds calibrated for the old ones are kept only for those still judging
        update["judge_models"] = [judge_model] if isinstance(judge_model, str) else list(judge_model)
    return parent.model_copy(update=update)
