"""The files written from a run's record (runs.py): summary.json, results.csv, junit.xml and a
self-contained report.html (paged beyond PAGE_SIZE cases)."""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import jinja2
from pydantic import BaseModel

from codegen_eval.reporting.results import CaseResult, Grid, Summary, SummaryBuilder, case_key
from codegen_eval.reporting.runs import PAGE_SIZE, iter_results


def _compiled_templates() -> jinja2.BytecodeCache | None:
    """Compiling the report template costs ~0.1 s, most of a cached re-run's report, so the compiled code
    is kept in the user's cache directory: not under /tmp, where another uid (a candidate's) could plant
    a directory first. jinja2 recompiles when a template or jinja2 itself changes."""
    directory = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "codegen-eval" / "jinja2"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:  # e.g. a read-only home: compile each time
        return None
    if not os.access(directory, os.W_OK | os.X_OK):  # another user's: jinja2 would fail writing to it
        return None
    return jinja2.FileSystemBytecodeCache(str(directory))


PAGES = jinja2.Environment(
    loader=jinja2.PackageLoader("codegen_eval", "templates"),
    autoescape=True,  # model output is untrusted: a <script> in it must render as text
    undefined=jinja2.StrictUndefined,
    bytecode_cache=_compiled_templates(),
)


def write_summary(run_dir: Path, summary: Summary) -> Path:
    path = run_dir / "summary.json"
    path.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def summarize_run(
    run_dir: Path, *, run_id: str, dataset: str, model: str, judge_model: str | list[str], rubric: str, table_rows: int = 0,
    judge_thresholds: dict[str, float] | None = None, pass_at: float = 8.0,
    models: list[str] | None = None, samples: int = 1, temperature: float | None = None,
) -> tuple[Summary, list[CaseResult], Grid]:
    """One pass over results.jsonl: the run's summary, its first `table_rows` results and the case x
    model grid; results.csv and the JUnit test cases are written on the way (each pass parses every
    case: keep them few). `judge_thresholds` (calibrated, per judge) and `pass_at` set where a judge
    passes a case when it is measured against the tests."""
    builder, first = SummaryBuilder(model, judge_model, judge_thresholds, pass_at, models, samples, temperature), []
    several = len(models or [model]) > 1
    with (run_dir / "results.csv").open("w", encoding="utf-8", newline="") as f, (run_dir / _JUNIT_CASES).open("w", encoding="utf-8") as cases:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in iter_results(run_dir):
            builder.add(r)
            writer.writerow(_csv_row(r))
            cases.write(ElementTree.tostring(_testcase(r, several), encoding="unicode") + "\n")
            if len(first) < table_rows:
                first.append(r)
    return builder.build(run_id=run_id, dataset=dataset, rubric=rubric), first, builder.grid


CSV_COLUMNS = ["id", "cid", "model", "sample", "format", "difficulty", "verdict", "status", "score", "judge_score", "strategy", "cost_usd", "retries"]


def _csv_row(r: CaseResult) -> list:
    judge_score = r.judge.verdict.score if r.judge.verdict else None
    costs = [c for c in r.cost_usd.values() if c is not None]
    return [r.id, r.cid or "", r.model or "", r.sample, r.format, r.difficulty, r.verdict.value, r.status, r.score, judge_score,
            r.generation.strategy or "recorded", round(sum(costs), 6) if costs else "", r.generation.retries + r.judge.retries]


class Page(BaseModel):
    number: int  # 1-based
    count: int
    first: int  # 0-based index of its first case in the run

    @staticmethod
    def filename(number: int) -> str:
        return "report.html" if number == 1 else f"report-p{number}.html"


def render_report(summary: Summary, results: list[CaseResult], page: Page | None = None, grid: Grid | None = None) -> str:
    """One report page. The case x model grid shows this page's cases (when the run has several models
    or samples), so a paged run's grid is paged with its cases."""
    page = page or Page(number=1, count=1, first=0)
    rows: Grid = {}
    if grid and (len(summary.models) > 1 or summary.samples > 1):
        rows = {key: grid[key] for key in dict.fromkeys(case_key(r) for r in results) if key in grid}
    return PAGES.get_template("report.html.j2").render(
        summary=summary, results=results, page=page, page_file=Page.filename, page_size=PAGE_SIZE, grid=rows, case_key=case_key,
        ks=sorted({k for stats in summary.models.values() for k in stats.pass_at_k}, key=int),
    )


def write_report(run_dir: Path, summary: Summary, grid: Grid | None = None) -> Path:
    """report.html, plus report-p2.html ... when the run has more than PAGE_SIZE cases."""
    count = max(1, -(-summary.cases // PAGE_SIZE))
    number, chunk = 1, []
    for result in iter_results(run_dir):
        chunk.append(result)
        if len(chunk) == PAGE_SIZE:
            _write_page(run_dir, summary, chunk, Page(number=number, count=count, first=(number - 1) * PAGE_SIZE), grid)
            number, chunk = number + 1, []
    if chunk or number == 1:
        _write_page(run_dir, summary, chunk, Page(number=number, count=count, first=(number - 1) * PAGE_SIZE), grid)
    return run_dir / Page.filename(1)


def _write_page(run_dir: Path, summary: Summary, results: list[CaseResult], page: Page, grid: Grid | None) -> None:
    (run_dir / Page.filename(page.number)).write_text(render_report(summary, results, page, grid), encoding="utf-8")


_JUNIT_CASES = "junit.cases.tmp"


def write_junit(run_dir: Path, summary: Summary) -> Path:
    """JUnit XML for CI dashboards: PASS passes, FAIL and PARTIAL fail, ERROR errors. The test cases
    were written by `summarize_run`; the suite's counts are known only now."""
    suite = ElementTree.Element("testsuite", name=f"codegen-eval {summary.dataset}", tests=str(summary.cases),
                                failures=str(summary.verdicts["FAIL"] + summary.verdicts["PARTIAL"]), errors=str(summary.verdicts["ERROR"]))
    opening = ElementTree.tostring(suite, encoding="unicode").replace(" />", ">")
    path, cases = run_dir / "junit.xml", run_dir / _JUNIT_CASES
    with path.open("w", encoding="utf-8") as f, cases.open(encoding="utf-8") as body:
        f.write("<?xml version='1.0' encoding='utf-8'?>\n" + opening + "\n")
        shutil.copyfileobj(body, f)
        f.write("</testsuite>\n")
    cases.unlink()
    return path


def _testcase(r: CaseResult, with_model: bool = False) -> ElementTree.Element:
    """A JUnit test case, named by case (a single-model run's names are as they always were)."""
    name = r.id + (f"#{r.cid}" if r.cid else "") + (f" [{r.model}]" if with_model else "") + (f" sample {r.sample}" if r.sample else "")
    case = ElementTree.Element("testcase", classname=_xml_text(f"{r.format}.{r.difficulty}"), name=_xml_text(name))
    if r.verdict.value in ("FAIL", "PARTIAL"):
        failed = next((c for c in r.checks if c.gate and not c.passed), None)
        detail = f"{failed.name}: {failed.message}" if failed else f"score {r.score}"
        ElementTree.SubElement(case, "failure", message=_xml_text(f"{r.verdict.value} ({r.status})")).text = _xml_text(detail)
    elif r.verdict.value == "ERROR":
        detail = r.generation.error or r.judge.error or r.status
        ElementTree.SubElement(case, "error", message=_xml_text(r.status)).text = _xml_text(detail)
    return case


# What XML 1.0 cannot hold even escaped (most C0 controls, lone surrogates, U+FFFE/U+FFFF). ElementTree
# writes them as they are, and the file is then not XML: a candidate's exception message can carry them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def write_run(run_dir: Path, summary: Summary, grid: Grid | None = None) -> Path:
    """summary.json, junit.xml and the report pages beside results.jsonl; returns the report's path."""
    write_summary(run_dir, summary)
    write_junit(run_dir, summary)
    return write_report(run_dir, summary, grid)


