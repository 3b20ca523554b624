"""Fault tolerance at scale: a faulty API, kill -9, two runs on one cache, a full or read-only disk.

All against the loopback Messages API over real HTTP with the real SDK; runs through the real flow
(in-process) or the real CLI (subprocess) with the session's Prefect server.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import diskcache
import pytest

from codegen_eval.reporting.runs import load_results
from tests.conftest import CLAUDE, stored_calls
from tests.messages_api import Faults, MessagesAPI, synthetic_cases, synthetic_responder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def synthetic(tmp_path):
    def write(n: int) -> Path:
        path = tmp_path / f"synthetic-{n}.jsonl"
        path.write_text("".join(json.dumps(case) + "\n" for case in synthetic_cases(n)))
        return path

    return write


def outcome(run_dir: Path) -> list[tuple]:
    """What must not depend on how a run got there: per case, its code, checks, verdicts and score."""
    return [(r.id, r.output, [(c.name, c.status) for c in r.checks], r.judge.status.value,
             r.judge.verdict.score if r.judge.verdict else None, r.score, r.verdict.value, r.status)
            for r in load_results(run_dir)]


def cli(dataset: Path, out: Path, cache: Path, prefect_api: str, *extra: str) -> tuple[list[str], dict[str, str]]:
    command = [sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(dataset), "--model", CLAUDE, "--out", str(out), *extra]
    return command, {**os.environ, "PREFECT_API_URL": prefect_api, "CODEGEN_EVAL_CACHE_DIR": str(cache)}


def test_ten_percent_faults_on_1000_cases_grade_every_case(prefect_api, api, synthetic, tmp_path):
    """429 (with retry-after), 529, 500 and hangs past the timeout on 10 % of requests: every case is
    graded, every fault is retried once, and the run reports how many retries it took."""
    from codegen_eval.config import RunConfig
    from codegen_eval.models.ratelimit import limiter_for
    from flows.evaluate import evaluate

    faults = Faults(synthetic_responder(), rate=0.10, hang_s=1.5)
    api.responder, api.keep_requests = faults, False
    config = RunConfig(dataset=str(synthetic(1000)), model=CLAUDE, out=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
                       concurrency=32, timeout_s=0.75)
    shrinks_before = limiter_for(32).shrinks
    run_dir = Path(evaluate(config))

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["cases"] == 1000 and summary["verdicts"]["PASS"] == 1000, summary["verdicts"]
    retries = summary["generation"]["retries"] + summary["judging"]["retries"]
    assert min(faults.counts[kind] for kind in Faults.KINDS) > 10, faults.counts  # each kind of fault was met
    # Every fault was retried and nothing was given up. A few more retries than faults can happen: on
    # 2 busy cores a healthy answer may itself take longer than the 0.75 s timeout.
    assert faults.failures > 150 and faults.failures <= retries <= faults.failures + 20, (retries, faults.counts)
    assert faults.counts["ok"] >= 2000  # every call answered, in the end
    assert limiter_for(32).shrinks > shrinks_before  # the 429s shrank the concurrency
    assert f"<td>{summary['generation']['retries']}</td>" in (run_dir / "report.html").read_text()
    print(f"faults {dict(faults.counts)}, retries {retries}, wall {summary['wall_seconds']} s")


def test_kill_9_at_a_random_point_then_rerun_gives_identical_results(prefect_api, synthetic, tmp_path):
    """Killed anywhere, the same command finishes the run: no call whose answer was stored is made
    again, and the results equal those of a run that was never interrupted."""

    seed = int(os.environ.get("KILL_SEED", random.randrange(1_000_000)))
    kill_after = random.Random(seed).randrange(20, 560)  # requests served before the kill, of 600
    print(f"KILL_SEED={seed}: kill -9 after {kill_after} requests")
    dataset = synthetic(300)
    server = MessagesAPI(synthetic_responder(), latency_s=0.02).start()
    try:
        reference, env = cli(dataset, tmp_path / "reference", tmp_path / "reference-cache", prefect_api)
        env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_API_KEY"] = server.url, "sk-test"
        done = subprocess.run(reference, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        expected = outcome(Path(done.stdout.strip().splitlines()[-1]))

        command, env2 = cli(dataset, tmp_path / "runs", tmp_path / "cache", prefect_api)
        env2.update({"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-test"})
        server.reset()
        start = server.served
        first = subprocess.Popen(command, cwd=ROOT, env=env2, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while server.served - start < kill_after and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the run finished before the kill"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        stored = stored_calls(tmp_path / "cache")
        server.reset()
        second = subprocess.run(command, cwd=ROOT, env=env2, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        assert server.count() == 600 - stored  # nothing whose answer had been stored was asked again
        assert outcome(Path(second.stdout.strip().splitlines()[-1])) == expected
    finally:
        server.stop()


def test_two_runs_at_once_share_one_cache(prefect_api, synthetic, tmp_path):
    """Two processes on one cache directory (diskcache is SQLite with WAL): both finish, agree, and
    the cache holds each answer once and passes diskcache's own consistency check."""
    dataset = synthetic(200)
    server = MessagesAPI(synthetic_responder(), latency_s=0.01).start()
    try:
        processes = []
        for name in ("a", "b"):
            command, env = cli(dataset, tmp_path / name, tmp_path / "cache", prefect_api, "--concurrency", "16")
            env.update({"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-test"})
            processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=600) for p in processes]
        for process, (_, stderr) in zip(processes, outputs):
            assert process.returncode == 0, stderr[-3000:]
        runs = [Path(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
        assert outcome(runs[0]) == outcome(runs[1])
        assert all(r.verdict.value == "PASS" for r in load_results(runs[0])) and len(load_results(runs[0])) == 200
        assert 400 <= server.count() <= 800  # each call made by one run or both, never more
        assert stored_calls(tmp_path / "cache") == 400
        with diskcache.Cache(str(tmp_path / "cache")) as cache:
            assert cache.check() == []  # no warnings: database and files agree
    finally:
        server.stop()


@pytest.mark.parametrize("trouble", ["read-only", "disk-full"])
def test_unusable_cache_directory_gives_a_clear_error(prefect_api, api, synthetic, tmp_path, trouble):
    """A read-only cache directory is refused before any call; a disk that fills up mid-run stops the
    run with one clear line and keeps what was stored. No traceback either way."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs in a private mount namespace: it needs root and unshare")
    cache = tmp_path / "cache"
    cache.mkdir()
    # 4.6 MB: room for the reference proofs' commits (SQLite's write-ahead log reaches ~4 MB before its
    # first checkpoint), not for every answer of 300 cases
    mount = "mount -t tmpfs -o ro,size=1m tmpfs" if trouble == "read-only" else "mount -t tmpfs -o size=4600k tmpfs"
    command, env = cli(synthetic(300), tmp_path / "runs", cache, prefect_api)
    env.update({"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-test"})
    script = f'{mount} "$1" && shift && exec "$@"'
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(cache), *command],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot") and str(cache) in last, last
    if trouble == "read-only":
        assert api.count() == 0  # refused before any model call
    else:
        assert "free space and run the same command again" in done.stderr
        assert api.count() > 0, done.stderr[-2000:]


def test_many_threads_storing_answers_at_once_lose_none(make_cache):
    """Call threads store answers through one writer lock per cache directory (two cache objects on
    one directory share it), or one connection pool per database; every answer and note is there afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from codegen_eval.models.backends import Message, ModelRequest, ModelResponse, Usage
    caches = [make_cache(), make_cache()]
    response = ModelResponse(text="def f():\n    return 1\n", stop_reason="end_turn", usage=Usage(input_tokens=1, output_tokens=1))

    def store(i: int) -> None:
        request = ModelRequest(model=CLAUDE, max_tokens=10, messages=[Message(role="user", content=f"case {i}")])
        caches[i % 2].put(f"key-{i}", request, {"backend": "test"}, response)
        caches[(i + 1) % 2].set_note(f"note-{i}", str(i))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(store, range(640)))
    reader = make_cache()
    assert all(reader.get(f"key-{i}") == response and reader.get_note(f"note-{i}") == str(i) for i in range(640))
    assert len(reader) == 1280
    shared = "_writing" if hasattr(reader, "_writing") else "_db"  # the directory's writer lock; the database's pool
    assert getattr(caches[0], shared) is getattr(caches[1], shared)


def test_work_marked_here_runs_in_the_calling_thread_while_the_pool_runs_the_rest():
    """Stored answers and CPU-only work run in the task's thread; the rest goes to the pool first, so
    it overlaps them. Results keep the items' order."""
    import threading

    from codegen_eval.models.calls import run_cached_first

    caller, pool_started = threading.get_ident(), threading.Event()

    def work(item: int) -> tuple[int, int]:
        if item % 2:
            pool_started.set()
        else:  # an item run here: the pool's items were handed over before it, so one has started
            assert pool_started.wait(5), "the pool's items did not start before the work done here"
        return item, threading.get_ident()

    results = run_cached_first(work, list(range(10)), [item % 2 == 0 for item in range(10)], 4, pool_name="test-here")
    assert [item for item, _ in results] == list(range(10))
    assert [thread == caller for _, thread in results] == [item % 2 == 0 for item in range(10)]


def test_an_error_in_the_work_done_here_stops_what_the_pool_has_not_started():
    """A failing batch spends no more calls than those already in flight."""
    import threading

    from codegen_eval.models import calls

    release, ran = threading.Event(), []

    def work(item: str) -> str:
        if item == "boom":
            raise RuntimeError("boom")
        release.wait(5)
        ran.append(item)
        return item

    with pytest.raises(RuntimeError, match="boom"):
        calls.run_cached_first(work, ["a", "b", "c", "boom"], [False, False, False, True], 1, pool_name="test-cancel")
    release.set()
    calls._pool("test-cancel", 1).submit(lambda: None).result(5)  # the pool's one thread is done with "a"
    assert ran == ["a"]  # in flight when the error came; "b" and "c" never started


def test_no_task_hashes_its_inputs_for_prefects_own_cache():
    """Prefect's default cache policy hashes each task run's inputs (a batch's cases, outputs and verdicts)
    into a key that never hits, as it includes the flow run's id; the call and check caches are ours."""
    from prefect import Task
    from prefect.cache_policies import NO_CACHE

    import tasks.check
    import tasks.dataset
    import tasks.generate
    import tasks.judge
    import tasks.report

    found = {obj.name: obj.cache_policy for module in (tasks.check, tasks.dataset, tasks.generate, tasks.judge, tasks.report)
             for obj in vars(module).values() if isinstance(obj, Task)}
    assert len(found) == 11 and all(policy is NO_CACHE for policy in found.values()), found
