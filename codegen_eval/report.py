"""Writing a run to disk: results.jsonl, summary.json and a self-contained report.html."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from codegen_eval.results import CaseResult, Summary

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("codegen_eval", "templates"),
    autoescape=True,  # model output is untrusted: a <script> in it must render as text
    undefined=jinja2.StrictUndefined,
)


def write_results(run_dir: Path, results: list[CaseResult]) -> Path:
    path = run_dir / "results.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for result in results:
            f.write(result.model_dump_json() + "\n")
    return path


def write_summary(run_dir: Path, summary: Summary) -> Path:
    path = run_dir / "summary.json"
    path.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def render_report(summary: Summary, results: list[CaseResult]) -> str:
    return _env.get_template("report.html.j2").render(summary=summary, results=results)


def write_report(run_dir: Path, summary: Summary, results: list[CaseResult]) -> Path:
    path = run_dir / "report.html"
    path.write_text(render_report(summary, results), encoding="utf-8")
    return path


def write_run(run_dir: Path, summary: Summary, results: list[CaseResult]) -> Path:
    """All of a run's files; returns the report's path."""
    write_results(run_dir, results)
    write_summary(run_dir, summary)
    return write_report(run_dir, summary, results)


def load_results(run_dir: Path) -> list[CaseResult]:
    with (Path(run_dir) / "results.jsonl").open(encoding="utf-8") as f:
        return [CaseResult.model_validate(json.loads(line)) for line in f if line.strip()]


def create_run_dir(out: str | Path, settings: dict) -> Path:
    """A new `<out>/<run-id>/` holding run.json (the settings), and nothing else yet."""
    run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    run_dir = Path(out) / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, **settings}, indent=2) + "\n", encoding="utf-8")
    return run_dir
