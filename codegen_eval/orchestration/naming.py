"""Names and tags a person can read in the Prefect UI: `aws_codegen · claude-haiku-4-5 · 2026-12-02 03:00`
instead of `sarcastic-whale`, tags per dataset, model, judge and kind of run, task runs that say stage,
model and batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from codegen_eval.config import RunConfig


def run_name(config: RunConfig, when: datetime) -> str:
    """`<dataset> · <model(s)> · <UTC date and minute>`, plus `· regrade` for a re-grade."""
    name = f"{Path(config.dataset).stem} · {', '.join(_models(config))} · {when.astimezone(timezone.utc):%Y-%m-%d %H:%M}"
    return name + (" · regrade" if config.regrade_of else "")


def run_tags(config: RunConfig) -> list[str]:
    """Tags to filter the flow-runs list by; a deployment adds its own (`nightly`, `regrade`)."""
    tags = [f"dataset:{Path(config.dataset).stem}", *(f"model:{m}" for m in _models(config))]
    if config.judge:
        tags.append(f"judge:{config.judge_model}")
    if config.regrade_of:
        tags.append("regrade")
    return tags


def task_name(stage: str, parameters: Mapping[str, Any], flow_config: RunConfig | None = None) -> str:
    """`generate · claude-haiku-4-5 · batch 3`: the model a batch's stage is about, when it has one."""
    config = _config(parameters.get("config")) or flow_config
    model = parameters.get("model")
    if model is None and config is not None:
        model = config.judge_model if stage == "judge" else config.label
    batch = parameters.get("batch_index")
    return " · ".join(str(part) for part in (stage, model, None if batch is None else f"batch {batch}") if part is not None)


# Prefect hooks: `@flow(flow_run_name=flow_run_name)`, `@task(task_run_name=task_run_name("generate"))`.

def flow_run_name() -> str:
    """The running evaluation's name, from its `config` parameter and its (scheduled) start time."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    config = _config(context.parameters.get("config")) if context else None
    if config is None:
        return "codegen-eval"
    return run_name(config, context.flow_run.expected_start_time or datetime.now(timezone.utc))


def regrade_run_name() -> str:
    """The re-grade flow's name, from the settings of the run it re-grades."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run_dir = context.parameters.get("run_dir", "") if context else ""
    try:
        parent = RunConfig.model_validate(json.loads((Path(run_dir) / "run.json").read_text()))
    except (OSError, ValueError):
        return f"regrade · {Path(run_dir).name}"
    when = context.flow_run.expected_start_time or datetime.now(timezone.utc)
    return run_name(parent.model_copy(update={"regrade_of": run_dir}), when)


def task_run_name(stage: str) -> Callable[..., str]:
    def name(parameters: dict[str, Any]) -> str:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        return task_name(stage, parameters, _config(context.parameters.get("config")) if context else None)

    return name


def tag_flow_run(config: RunConfig) -> None:
    """Add `run_tags(config)` to the running flow run (whatever created it: the CLI, a deployment, a parent flow)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    tags = sorted(set(context.flow_run.tags) | set(run_tags(config)))
    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, tags=tags)
    context.flow_run.tags = tags  # so the run's later state events carry them too


def _config(value: Any) -> RunConfig | None:
    value = value.unwrap() if hasattr(value, "unwrap") else value  # Prefect's opaque()/quote() wrappers
    if isinstance(value, RunConfig):
        return value
    try:
        return RunConfig.model_validate(value) if isinstance(value, Mapping) else None
    except ValueError:
        return None


def _models(config: RunConfig) -> list[str]:
    return list(config.models)
