from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from codegen_eval import stopping
from codegen_eval.dataset import Case
from codegen_eval.generation import Generation
from codegen_eval.grading.check_cache import Checked, cached_checks, is_checked, settled
from codegen_eval.grading.checks import needs_sandbox
from codegen_eval.grading.sandbox import StoppingSandbox, shared_sandbox
from codegen_eval.grading.selftest import ensure_sandbox_works
from codegen_eval.models.calls import run_cached_first
from codegen_eval.orchestration.naming import task_run_name
from codegen_eval.reporting import progress
from tasks import completed_or_cached, open_cache


@task(name="sandbox-self-test", task_run_name="sandbox-self-test", cache_policy=NO_CACHE)
def sandbox_self_test(cache_dir: str | None = None, cache_url: str | None = None) -> None:
    """Known-good and known-bad snippets graded before any model call: a sandbox that cannot read its
    own libraries fails the run here, not every case later (a pass is remembered per installation)."""
    ensure_sandbox_works(shared_sandbox(), open_cache(cache_dir, cache_url))


@task(name="check", task_run_name=task_run_name("check"), cache_policy=NO_CACHE)
def check_batch(
    cases: list[Case], generations: list[Generation | None], batch_index: int = 0, model: str = "", cache_dir: str | None = None,
    cache_url: str | None = None,
) -> list[Checked | None]:
    """Each output's checks, from the check cache when the same output, case and checker were seen before;
    None where the output is pending, or its checks were cut short by a stop."""
    sandbox, cache = StoppingSandbox(shared_sandbox()), open_cache(cache_dir, cache_url)

    def check_one(pair: tuple[Case, Generation | None]) -> Checked | None:
        case, generation = pair
        if generation is None:
            return None
        checked = cached_checks(case, generation.code, sandbox, cache)  # type: ignore[arg-type]  (it only calls .run)
        if stopping.requested() and not settled(checked.checks):
            return None
        progress.advance("check")
        return checked

    # One thread per sandbox slot for the checks that run jobs in the sandbox's processes. The others
    # (stored ones, and those with no sandbox job) are CPU work in this process, done in this thread.
    pairs = list(zip(cases, generations, strict=True))
    in_this_thread = [generation is None or not needs_sandbox(case) or is_checked(case, generation.code, cache) for case, generation in pairs]
    results = run_cached_first(check_one, pairs, in_this_thread, sandbox.slots, pool_name="sandbox")
    return completed_or_cached(results, all(checked is not None and checked.cached for checked in results))
