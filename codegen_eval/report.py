"""Writing a run to disk: results.jsonl, summary.json and a self-contained report.html."""

from __future__ import annotations

import csv
import json
import secrets
from xml.etree import ElementTree
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


def score_histogram(results: list[CaseResult]) -> list[int]:
    """Cases per score bin [0,1), [1,2), ..., [9,10]."""
    bins = [0] * 10
    for r in results:
        if r.score is not None:
            bins[min(int(r.score), 9)] += 1
    return bins


def render_report(summary: Summary, results: list[CaseResult]) -> str:
    return _env.get_template("report.html.j2").render(summary=summary, results=results, histogram=score_histogram(results))


def write_report(run_dir: Path, summary: Summary, results: list[CaseResult]) -> Path:
    path = run_dir / "report.html"
    path.write_text(render_report(summary, results), encoding="utf-8")
    return path


CSV_COLUMNS = ["id", "cid", "format", "difficulty", "verdict", "status", "score", "judge_score", "strategy", "cost_usd"]


def write_csv(run_dir: Path, results: list[CaseResult]) -> Path:
    path = run_dir / "results.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in results:
            judge_score = r.judge.verdict.score if r.judge.verdict else None
            costs = [c for c in r.cost_usd.values() if c is not None]
            writer.writerow([r.id, r.cid or "", r.format, r.difficulty, r.verdict.value, r.status, r.score, judge_score,
                             r.generation.strategy or "recorded", round(sum(costs), 6) if costs else ""])
    return path


def write_junit(run_dir: Path, summary: Summary, results: list[CaseResult]) -> Path:
    """JUnit XML for CI dashboards: PASS passes, FAIL and PARTIAL fail, ERROR errors."""
    suite = ElementTree.Element("testsuite", name=f"codegen-eval {summary.dataset}", tests=str(len(results)),
                                failures=str(summary.verdicts["FAIL"] + summary.verdicts["PARTIAL"]), errors=str(summary.verdicts["ERROR"]))
    for r in results:
        case = ElementTree.SubElement(suite, "testcase", classname=f"{r.format}.{r.difficulty}", name=r.id + (f"#{r.cid}" if r.cid else ""))
        if r.verdict.value in ("FAIL", "PARTIAL"):
            failed = next((c for c in r.checks if c.gate and not c.passed), None)
            detail = f"{failed.name}: {failed.message}" if failed else f"score {r.score}"
            ElementTree.SubElement(case, "failure", message=f"{r.verdict.value} ({r.status})").text = detail
        elif r.verdict.value == "ERROR":
            ElementTree.SubElement(case, "error", message=r.status).text = r.generation.error or r.judge.error or r.status
    path = run_dir / "junit.xml"
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path


def write_run(run_dir: Path, summary: Summary, results: list[CaseResult]) -> Path:
    """All of a run's files; returns the report's path."""
    write_results(run_dir, results)
    write_summary(run_dir, summary)
    write_csv(run_dir, results)
    write_junit(run_dir, summary, results)
    return write_report(run_dir, summary, results)


def latest_run(out: str | Path, dataset: str, model: str | None = None, before: str | None = None) -> Path | None:
    """The latest finished run in `out` of `dataset` (and `model`, if given) whose id sorts before
    `before` (run ids sort by time)."""
    runs = []
    for run_dir in Path(out).iterdir() if Path(out).is_dir() else []:
        if (before is not None and run_dir.name >= before) or not (run_dir / "summary.json").is_file():
            continue
        try:
            settings = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if settings.get("dataset") == dataset and model in (None, settings.get("model")):
            runs.append(run_dir)
    return max(runs, default=None)


def previous_generations(run_dir: str | Path, cases: list) -> list[tuple]:
    """An earlier run's outputs, paired with today's cases, as generations that cost no call now."""
    by_id = {case.id: case for case in cases}
    pairs = []
    for result in load_results(Path(run_dir)):
        if result.id not in by_id:
            raise ValueError(f"{run_dir}: case {result.id!r} is not in the dataset any more")
        pairs.append((by_id[result.id], result.generation.reused()))
    return pairs


def errored_ids(run_dir: str | Path) -> set[str]:
    return {r.id for r in load_results(Path(run_dir)) if r.verdict.value == "ERROR"}


def carry_over(run_dir: str | Path, fresh: list[CaseResult]) -> list[CaseResult]:
    """An earlier run's results with `fresh` ones in place of theirs; carried cases cost no call now."""
    by_key = {(r.id, r.cid): r for r in fresh}
    merged = []
    for old in load_results(Path(run_dir)):
        new = by_key.get((old.id, old.cid))
        if new is None:
            judge = old.judge.model_copy(update={"calls": 0, "cached_calls": 0, "batch": False})
            new = old.model_copy(update={"generation": old.generation.reused(), "judge": judge, "cost_usd": {"generation": 0.0, "judge": 0.0}})
        merged.append(new)
    return merged


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
