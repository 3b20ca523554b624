"""Check results are cached by output, case and checker; load-dependent outcomes never are."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen_eval.dataset import load_dataset
from codegen_eval.grading import check_cache
from codegen_eval.grading.check_cache import cached_checks
from codegen_eval.grading.sandbox import Limits, Sandbox
from tests.conftest import DATASET


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(slots=1, limits=Limits(wall_s=3, cpu_s=3))
    yield box
    box.close()


@pytest.fixture
def cases():
    return {c.id: c for c in load_dataset(DATASET)}


def test_a_second_grading_runs_nothing_in_the_sandbox(sandbox, cases, make_cache):
    cache = make_cache()
    case = cases["regex-aws-region"]
    first = cached_checks(case, case.expected, sandbox, cache)
    second = cached_checks(case, case.expected, sandbox, make_cache())  # another handle, as another worker's
    assert (first.cached, first.sandbox_jobs) == (False, 3)  # strings, attack strings, equivalence
    assert (second.cached, second.sandbox_jobs) == (True, 0)
    assert [c.model_dump() for c in second.checks] == [c.model_dump() for c in first.checks]


def test_a_changed_test_or_checker_reruns_exactly_what_it_affects(sandbox, cases, make_cache, monkeypatch):
    cache = make_cache()
    region, account = cases["regex-aws-region"], cases["regex-account-id"]
    for case in (region, account):
        cached_checks(case, case.expected, sandbox, cache)
    changed = region.model_copy(update={"tests": {**region.tests, "no_match": [*region.tests["no_match"], "us-east-99x"]}})
    assert cached_checks(changed, region.expected, sandbox, cache).cached is False
    assert cached_checks(account, account.expected, sandbox, cache).cached is True
    monkeypatch.setattr(check_cache, "checker_fingerprint", lambda: "a different checker")
    assert cached_checks(account, account.expected, sandbox, cache).cached is False


def test_a_timeout_is_tried_again_next_time(sandbox, cases, make_cache):
    cache = make_cache()
    case = cases["s3-list-all-keys"]
    looping = 'def list_all_keys(bucket_name, prefix="", page_size=1000):\n    while True:\n        pass\n'
    first = cached_checks(case, looping, sandbox, cache)
    assert any(c.status.value == "TIMEOUT" for c in first.checks)
    again = cached_checks(case, looping, sandbox, cache)
    assert again.cached is False and again.sandbox_jobs == 1


def test_a_cached_rerun_and_a_rubric_change_run_nothing_in_the_sandbox(run, tmp_path):
    """End to end: the second run of the seed and a regrade with a new rubric make 0 sandbox jobs."""
    import json

    from codegen_eval.config import regrade_config
    from flows.evaluate import evaluate

    first = json.loads((run() / "summary.json").read_text())
    assert first["checking"]["sandbox_jobs"] >= 2 and first["checking"]["cases_cached"] == 0
    second_dir = run()
    second = json.loads((second_dir / "summary.json").read_text())
    assert second["checking"] == {"sandbox_jobs": 0, "cases_checked": 0, "cases_cached": 4}
    rubric = tmp_path / "rubric.j2"
    rubric.write_text("Grade this {{ format }} answer.\nTask: {{ task }}\nAnswer:\n{{ output }}\nReference: {{ expected }}\nCriteria: {{ criteria }}\n"
                      'Reply with JSON {"score": 1-10, "reasoning": "", "strengths": [], "weaknesses": []}.\n')
    regraded = json.loads((Path(evaluate(regrade_config(second_dir, rubric=str(rubric)))) / "summary.json").read_text())
    assert regraded["checking"]["sandbox_jobs"] == 0 and regraded["generation"]["calls_made"] == 0


def test_needs_sandbox_says_which_checks_run_jobs_there(sandbox, cases):
    """The check task and the proof run checks with no sandbox job in their own thread, not on the
    sandbox's pool: `needs_sandbox` must say exactly which cases' checks run jobs there."""
    from codegen_eval.dataset import Case
    from codegen_eval.grading.checks import needs_sandbox, run_checks
    from tests.messages_api import synthetic_cases

    without_tests = Case.model_validate(synthetic_cases(1)[0])
    for case in (cases["regex-aws-region"], cases["iam-read-only-my-data-bucket"], cases["s3-list-buckets"], without_tests):
        counting = check_cache._Counting(sandbox)
        run_checks(case, case.expected, counting)  # type: ignore[arg-type]  (it only calls .run)
        assert needs_sandbox(case) == (counting.jobs > 0), case.id
