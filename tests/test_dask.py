"""The scale-out seam: the same flow on a Dask cluster (a LocalCluster of worker processes here)."""

from __future__ import annotations

import json
from pathlib import Path

from codegen_eval.reporting.runs import load_results
from tests.conftest import CLAUDE, SEED


def test_dask_task_runner_grades_like_the_thread_runner(prefect_api, api, tmp_path):
    from codegen_eval.config import RunConfig
    from flows.evaluate import run_evaluation

    settings = {"dataset": str(SEED), "model": CLAUDE, "out": str(tmp_path / "runs"), "batch_size": 2}
    threads = Path(run_evaluation(RunConfig(**settings, cache_dir=str(tmp_path / "cache-threads"))))
    requests_by_threads = api.count()
    api.reset()
    dask = Path(run_evaluation(RunConfig(**settings, cache_dir=str(tmp_path / "cache-dask"), task_runner="dask")))

    assert api.count() == requests_by_threads == 8  # the workers made every call, over HTTP, once
    key = lambda r: (r.id, r.verdict.value, r.score, r.status, r.output)  # noqa: E731
    assert [key(r) for r in load_results(dask)] == [key(r) for r in load_results(threads)]
    summary = json.loads((dask / "summary.json").read_text())
    assert summary["verdicts"]["PASS"] == 4 and summary["generation"]["calls_made"] == 4
    # Progress lives in the run directory, so batches graded in worker processes all count.
    assert (dask / "progress.graded").stat().st_size == 4
