"""A run's settings: plain JSON, so they can be Prefect flow parameters and saved in run.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from codegen_eval.grading.scoring import ScoringConfig
from codegen_eval.models.backends import default_model, is_openai_model
from codegen_eval.models.backends.openai import check_base_url

DEFAULT_DATASET = "datasets/aws_codegen.jsonl"
DEFAULT_OUT = "artifacts/runs"


class RunConfig(BaseModel):
    """What to evaluate and how. Every field is a named, described field of the Prefect UI's run form."""

    dataset: str = Field(DEFAULT_DATASET, description="Cases file: .jsonl, .json or HumanEval .jsonl(.gz), relative to the project root.")
    # A single `model` (run.json files, deployments written before) is read as [model].
    models: list[str] = Field(
        default_factory=lambda: [default_model()], min_length=1,
        description="Models that write the code, each graded on every case: Claude model ids, 'local' (the embedded model) or openai:<name>.",
    )
    samples: int = Field(1, ge=1, le=100, description="Answers per case and model (pass@k).")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature where the backend takes one; empty: each backend's default (the local model: greedy).")
    # The single `judge_model` of older run.json files and deployments is accepted.
    judge_models: list[str] = Field(
        default_factory=list,
        description="Models that grade; several: each grades each case and the case's judge score is their median. Empty: the first model.",
    )
    # Used where the judge is measured against the tests (judge_agreement), not in scoring.
    judge_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Judge model -> the score at which it passes a case, from `codegen-eval calibrate`.",
    )
    calibrations: list[str] = Field(default_factory=list, description="The calibration files the judge thresholds came from.")
    # The key never goes here (nor in run.json): it comes from OPENAI_API_KEY only.
    base_url: str | None = Field(None, description="Where openai:<name> models are served (e.g. http://127.0.0.1:8000/v1); empty: OPENAI_BASE_URL or OpenAI.")
    rubric: str | None = Field(None, description="A Jinja2 judge template replacing the shipped one; empty: the shipped rubric.")
    judge: bool = Field(True, description="Ask the LLM judge; off: verdicts from the checks alone (--no-judge).")
    max_cost_usd: float | None = Field(None, gt=0, description="Make no call that could take the run's spending past this many USD.")
    use_batch: bool = Field(False, description="Send uncached calls as Message Batches: half price, slower (--batch).")
    regrade_of: str | None = Field(None, description="An earlier run directory whose outputs are graded again (no generation).")
    retry_errors_of: str | None = Field(None, description="An earlier run: only its ERROR cases run again, the rest carry over.")
    outputs: str | None = Field(None, description='Recorded outputs ({"id", "output", "cid"?} per line) graded instead of generating.')
    out: str = Field(DEFAULT_OUT, description="Directory the run directory is written into.")
    cache_dir: str | None = Field(None, description="Model-call and check cache; empty: CODEGEN_EVAL_CACHE_DIR or artifacts/cache.")
    # Never with a password: that stays in CODEGEN_EVAL_CACHE_URL, PGPASSWORD or ~/.pgpass on each host.
    cache_url: str | None = Field(
        None, description="A PostgreSQL database shared by every host and worker (postgresql://user@host:5432/db), "
                          "holding the cache instead of cache_dir; empty: CODEGEN_EVAL_CACHE_URL or cache_dir.",
    )
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

    @field_validator("cache_url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        """Settings are saved in run.json and sent as Prefect parameters: the URL goes without its password."""
        from codegen_eval.models.cache_pg import is_database_url, public_url

        if not url:
            return None
        if not is_database_url(url):
            raise ValueError("cache_url: not a PostgreSQL URL (postgresql://user@host:5432/db)")
        return public_url(url)

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
    out: str | None = None,
    judge: bool = True,
) -> RunConfig:
    """The settings of an earlier run, set to grade its outputs again (no generation).

    By default the new run is written next to the earlier one (`out` None), wherever this is started."""
    parent = RunConfig.model_validate(json.loads((Path(run_dir) / "run.json").read_text()))
    update = {
        "regrade_of": str(run_dir), "outputs": None, "use_batch": False, "max_cost_usd": None, "out": out or str(Path(run_dir).parent), "judge": judge,
        "cache_dir": os.environ.get("CODEGEN_EVAL_CACHE_DIR") or parent.cache_dir,
        "cache_url": RunConfig._no_password(os.environ.get("CODEGEN_EVAL_CACHE_URL")) or parent.cache_url,  # (model_copy does not validate)
    }
    if rubric:
        update["rubric"] = rubric
    if judge_model:  # new judges: thresholds calibrated for the old ones are kept only for those still judging
        update["judge_models"] = [judge_model] if isinstance(judge_model, str) else list(judge_model)
    return parent.model_copy(update=update)
