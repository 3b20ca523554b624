"""Progress where stderr is not a terminal (a log file, CI, nohup): plain lines, throttled, at batch ends;
and the partial report a user can open while the run goes."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from rich.console import Console

from codegen_eval.config import RunConfig
from codegen_eval.dataset import load_dataset
from codegen_eval.generation import Generation
from codegen_eval.grading.judge import Judgement, JudgeStatus
from codegen_eval.grading.scoring import ScoringConfig
from codegen_eval.reporting import progress
from codegen_eval.reporting.runs import append_results, create_run_dir, latest_run
from codegen_eval.reporting.results import case_result
from tasks.estimate import Estimate
from tests.conftest import SEED

LINE = re.compile(r"^(generate local|check|judge local) \d+/10(, [\d.,]+/min, (ETA \d+ (s|min)|done))?$")


def test_off_a_terminal_progress_is_plain_lines_throttled_and_at_each_batch_end():
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False)
    labels = {"generate": "generate local", "check": "check", "judge": "judge local"}
    with progress.shown(console, labels, {"generate": 10, "check": 10, "judge": 10}, every_s=30) as display:
        assert isinstance(display, progress.Lines)
        for _ in range(4):
            progress.advance("generate")
            time.sleep(0.01)
        assert stream.getvalue().splitlines() == ["generate local 1/10"]  # the first item, then at most every 30 s
        progress.advance("check", 2)
        progress.batch_done()  # every stage that moved since its last line
        progress.say("10 cases × local, judge local: 10 answers to get")
    lines = stream.getvalue().splitlines()
    assert lines[1].startswith("check 2/10") and re.match(r"generate local 4/10, [\d.,]+/min, ETA \d+ s$", lines[2]), lines
    assert lines[-1] == "10 cases × local, judge local: 10 answers to get"
    assert all(LINE.match(line) for line in lines[:-1]), lines
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()  # never a redrawn bar
    progress.advance("generate")  # unsubscribed at the end of the block
    assert stream.getvalue().splitlines() == lines


def test_a_line_is_printed_again_once_its_interval_has_passed():
    stream = io.StringIO()
    display = progress.Lines(stream, {"judge": "judge local"}, {"judge": 184}, every_s=0.2)
    display.advance("judge", 1, None)
    display.advance("judge", 1, None)
    time.sleep(0.25)
    display.advance("judge", 1, None)
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == ["judge local 1/184", "judge local 3/184"]
    assert re.search(r", [\d.]+/min, ETA \d+ (s|min|h \d+ min)$", stream.getvalue().splitlines()[1])


def test_durations_and_rates_read_as_people_say_them():
    assert progress.duration(40) == "40 s" and progress.duration(18 * 60) == "18 min" and progress.duration(80 * 60) == "1 h 20 min"
    assert progress.rate_and_eta(84, 184, 15 * 60) == "5.6/min, ETA 18 min"
    assert progress.rate_and_eta(184, 184, 60) == "184/min, done"


def test_the_first_lines_say_cases_models_and_the_expected_duration():
    estimate = Estimate(cases=184, models=["local"], judges=["local"], answers_to_get=184,
                        seconds_per_answer={"local": 4.0}, seconds_per_judgement={"local": 6.0}, expected_s=184 * 10.0)
    assert estimate.head() == "184 cases × local, judge local: 184 answers to get"
    assert estimate.measured() == "the first case took answer 4.0 s, judgement 6.0 s: about 31 min in all"
    cached = Estimate(cases=4, models=["local"], judges=[], answers_to_get=0)
    assert cached.head() == "4 cases × local, no judge: every answer is in the cache"


def test_a_partial_report_says_what_is_pending_and_is_no_finished_run(tmp_path):
    from tasks.report import partial_report

    config = RunConfig(dataset=str(SEED), models=["local"], out=str(tmp_path / "runs"), judge=False)
    run_dir = create_run_dir(config.out, config.model_dump(mode="json"))
    case = load_dataset(SEED)[2]  # the IAM policy: checked without the sandbox
    generation = Generation(case_id=case.id, model="local", code=case.expected)
    append_results(run_dir, [case_result(case, generation, [], Judgement(status=JudgeStatus.SKIPPED), ScoringConfig(), ("local", "local"))])

    summary = partial_report(str(run_dir), config, total=4)
    page = (run_dir / "report.html").read_text()
    assert summary.cases == 1 and summary.pending == 3 and not summary.stopped
    assert "<b>Partial report</b>: 1 of 4 results graded, 3 pending." in page and "still going" in page
    assert not (run_dir / "summary.json").exists() and latest_run(config.out, config.dataset) is None

    partial_report(str(run_dir), config, total=4, stopped=True)
    assert "The run was stopped; the same command resumes it" in (run_dir / "report.html").read_text()
    assert not Path(run_dir / "junit.cases.tmp").exists()
