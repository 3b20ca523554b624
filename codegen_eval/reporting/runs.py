"""A run's record on disk: results.jsonl (streamed as batches finish, put in order at the end), run.json,
and finding runs and their results again (the latest run of a dataset, an earlier run's outputs, its errors).
The files written from the record (summary, report pages, CSV, JUnit) are report.py's."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pydantic_core import PydanticSerializationError

from codegen_eval.grading.text import clean_data
from codegen_eval.reporting.results import CaseResult

RESULTS = "results.jsonl"
PAGE_SIZE = 500  # cases per report page: 20,000 cases make 40 pages a browser opens at once


def append_results(run_dir: Path, results: list[CaseResult]) -> None:
    """Add finished cases to results.jsonl now, not at the end: memory stays flat and a crash keeps them.

    One write per batch under an exclusive lock, so tasks in other threads or processes (a Dask
    worker) never interleave their lines.
    """
    data = "".join(_json_line(result) for result in results).encode()
    with (Path(run_dir) / RESULTS).open("ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(data)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _json_line(result: CaseResult) -> str:
    try:
        return result.model_dump_json() + "\n"
    except PydanticSerializationError:  # a lone surrogate from the model or its code (UTF-8 cannot hold it)
        return CaseResult.model_validate(clean_data(result.model_dump())).model_dump_json() + "\n"


def iter_results(run_dir: Path) -> Iterator[CaseResult]:
    """A run's results; rows written before runs had several models get their run's one model."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return
    default_model = None
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                result = CaseResult.model_validate_json(line)
                if result.model is None:
                    default_model = default_model or run_models(run_dir)[0]
                    result.model = result.generation.model = default_model
                yield result


def run_models(run_dir: str | Path) -> list[str]:
    """The models a run directory's run.json names (`models`, or an older run's single `model`)."""
    try:
        settings = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [""]
    return list(settings.get("models") or [settings.get("model", "")])


def load_results(run_dir: Path) -> list[CaseResult]:
    return list(iter_results(run_dir))


ResultKey = tuple[str, str | None, str | None, int]


def result_key(result: CaseResult | dict) -> ResultKey:
    """A result's identity in a run: the case, the candidate when several recorded outputs grade one
    case, the model and the sample."""
    if isinstance(result, CaseResult):
        return (result.id, result.cid, result.model, result.sample)
    return (result["id"], result.get("cid"), result.get("model"), result.get("sample", 0))


def order_results(run_dir: Path, order: list[ResultKey]) -> None:
    """Rewrite results.jsonl in `order` (batches append in the order they finish).

    Only offsets are held in memory; a key written twice (a retried task) keeps its last line, and
    lines whose key is not in `order` keep their place after the ordered ones.
    """
    path = Path(run_dir) / RESULTS
    offsets: dict[ResultKey, tuple[int, int]] = {}
    with path.open("rb") as f:
        position = 0
        for line in f:
            if line.strip():
                offsets[result_key(json.loads(line))] = (position, len(line))
            position += len(line)
        ranked = {key: rank for rank, key in enumerate(order)}
        keys = sorted(offsets, key=lambda k: ranked.get(k, len(ranked)))
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for key in keys:
                start, length = offsets[key]
                f.seek(start)
                out.write(f.read(length))
    os.replace(tmp, path)


def latest_run(out: str | Path, dataset: str, models: list[str] | None = None, before: str | None = None) -> Path | None:
    """The latest finished run in `out` of `dataset` (and exactly `models`, if given) whose id sorts
    before `before` (run ids sort by time)."""
    runs = []
    for run_dir in Path(out).iterdir() if Path(out).is_dir() else []:
        if (before is not None and run_dir.name >= before) or not (run_dir / "summary.json").is_file():
            continue
        try:
            settings = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            continue
        ran = list(settings.get("models") or [settings.get("model")])
        if settings.get("dataset") == dataset and models in (None, ran):
            runs.append(run_dir)
    return max(runs, default=None)


def previous_generations(run_dir: str | Path, cases: list) -> list[tuple]:
    """An earlier run's outputs, paired with today's cases, as generations that cost no call now (each
    keeps its model and sample)."""
    by_id = {case.id: case for case in cases}
    pairs = []
    for result in iter_results(Path(run_dir)):
        if result.id not in by_id:
            raise ValueError(f"{run_dir}: case {result.id!r} is not in the dataset any more")
        pairs.append((by_id[result.id], result.generation.reused()))
    return pairs


def errored_ids(run_dir: str | Path) -> set[str]:
    """The cases with an ERROR for any model or sample: --retry-errors runs them again whole (the
    answers that were fine come from the cache)."""
    return {r.id for r in iter_results(Path(run_dir)) if r.verdict.value == "ERROR"}


def carry_over(earlier: str | Path, run_dir: Path) -> list[ResultKey]:
    """Append the earlier run's results that this run did not redo; they cost no call now.

    Returns the earlier run's order of cases, which the merged run keeps."""
    fresh = {result_key(r) for r in iter_results(run_dir)}
    order, carried = [], []
    for old in iter_results(Path(earlier)):
        order.append(result_key(old))
        if result_key(old) not in fresh:
            unpaid = {"calls": 0, "cached_calls": 0, "batch": False, "retries": 0}
            judge = old.judge.model_copy(update=unpaid)
            judges = {model: part.model_copy(update=unpaid) for model, part in old.judges.items()}
            carried.append(old.model_copy(update={"generation": old.generation.reused(), "judge": judge, "judges": judges, "cost_usd": {"generation": 0.0, "judge": 0.0}, "sandbox_jobs": 0}))
        if len(carried) >= PAGE_SIZE:
            append_results(run_dir, carried)
            carried = []
    append_results(run_dir, carried)
    return order


def create_run_dir(out: str | Path, settings: dict) -> Path:
    """A new `<out>/<run-id>/` holding run.json (the settings), and nothing else yet."""
    run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    run_dir = Path(out) / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, **settings}, indent=2) + "\n", encoding="utf-8")
    return run_dir
