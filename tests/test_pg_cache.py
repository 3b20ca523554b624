"""One cache for a team: the call, check and proof cache in a real PostgreSQL (tests/pg.py starts it).

Hosts are stood for by processes with their own working directory and local cache directory, sharing
only the database's URL; the model is the loopback Messages API over real HTTP with the real SDK.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from codegen_eval.models.backends import Message, ModelRequest, ModelResponse, Usage
from codegen_eval.models.cache import CacheError, CallCache
from codegen_eval.reporting.runs import load_results
from tests.conftest import CLAUDE
from tests.messages_api import MessagesAPI, synthetic_cases, synthetic_responder
from tests.pg import DATABASE, Postgres

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pg-PASSWORD-7c1e"  # trust auth ignores it; it must never be printed or stored
CASES = 40
CALLS = 2 * CASES  # a generation and a judgement per case
ANSWER = ModelResponse(text="def f():\n    return 1\n", stop_reason="end_turn", usage=Usage(input_tokens=1, output_tokens=1))


def request(i: int) -> ModelRequest:
    return ModelRequest(model=CLAUDE, max_tokens=10, messages=[Message(role="user", content=f"case {i}")])


def stored_answers(postgres, url: str) -> int:
    table = f"{url.rsplit('%3D', 1)[1]}.codegen_eval_cache" if "%3D" in url else "codegen_eval_cache"
    return postgres.execute(f"SELECT count(*) FROM {table} WHERE value IS NOT NULL AND key NOT LIKE 'note:%'")[0][0]


# --- the store on its own ------------------------------------------------------------------------------


def test_an_answer_outlives_its_writer_and_a_new_handle_reads_it(make_cache):
    writer = make_cache()
    with writer.claim("k") as stored:
        assert stored is None  # nobody made it: ours to make
        writer.put("k", request(0), {"backend": "test"}, ANSWER)
    writer.set_note("strategy:m", "structured")
    reader = make_cache()
    assert reader.get("k") == ANSWER and reader.has("k") and reader.get_note("strategy:m") == "structured"
    assert reader.get("other") is None and not reader.has("other") and len(reader) == 2
    reader.delete_note("strategy:m")
    assert reader.get_note("strategy:m") is None and not reader.has_note("strategy:m")


def test_a_call_being_made_elsewhere_is_waited_for_not_made_again(postgres, cache_url):
    """Two holders (two URLs to one database: two pools, as two hosts have): the second gets the first's answer."""
    first, second = CallCache(url=cache_url + "&application_name=a"), CallCache(url=cache_url + "&application_name=b")
    holding = threading.Event()

    def make_call() -> None:
        with first.claim("k") as stored:
            assert stored is None
            holding.set()
            time.sleep(0.6)  # the call, in flight
            first.put("k", request(0), {"backend": "test"}, ANSWER)

    maker = threading.Thread(target=make_call)
    maker.start()
    holding.wait(10)
    started = time.monotonic()
    with second.claim("k") as stored:
        waited = time.monotonic() - started
    maker.join()
    assert stored == ANSWER and waited > 0.3


def test_a_lease_whose_holder_died_expires_and_the_call_is_made_again(postgres, cache_url):
    cache = CallCache(url=cache_url)
    schema = cache_url.rsplit("%3D", 1)[1]
    postgres.execute(f"INSERT INTO {schema}.codegen_eval_cache (key, holder, expires) VALUES ('k', 'dead-host:1:x', now() + interval '1 second')")
    started = time.monotonic()
    with cache.claim("k") as stored:
        assert stored is None  # ours now
        assert time.monotonic() - started >= 0.8  # not before the dead holder's lease ran out
    # An error is not stored, and the lease is freed at once for the next worker.
    assert cache.get("k") is None and postgres.execute(f"SELECT count(*) FROM {schema}.codegen_eval_cache")[0][0] == 0


def test_an_unreachable_database_is_one_line_without_the_password(postgres):
    url = f"postgresql://tester:{PASSWORD}@127.0.0.1:{postgres.port + 1}/nowhere"
    with pytest.raises(CacheError) as caught:
        CallCache(url=url)
    message = str(caught.value)
    assert message.startswith(f"cannot use the cache database postgresql://tester@127.0.0.1:{postgres.port + 1}/nowhere: ")
    assert PASSWORD not in message and "\n" not in message


def test_the_settings_keep_the_url_without_its_password(monkeypatch, tmp_path):
    from codegen_eval.config import RunConfig, regrade_config

    url = f"postgresql+asyncpg://tester:{PASSWORD}@db:5432/cache?sslmode=require&password={PASSWORD}"
    assert RunConfig(cache_url=url).cache_url == "postgresql://tester@db:5432/cache?sslmode=require"
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        RunConfig(cache_url="mysql://tester@db/cache")
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_URL", url)  # a regrade takes the variable's URL, and not its password
    (tmp_path / "run.json").write_text(RunConfig().model_dump_json())
    assert regrade_config(tmp_path).cache_url == "postgresql://tester@db:5432/cache?sslmode=require"


# --- runs through the CLI, as hosts would make them ---------------------------------------------------


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(case) + "\n" for case in synthetic_cases(CASES)))
    return path


@pytest.fixture
def stand_in():
    server = MessagesAPI(synthetic_responder(), latency_s=0.1).start()
    yield server
    server.stop()


def host(name: str, tmp_path: Path, dataset: Path, url: str, stand_in: MessagesAPI, prefect_api: str, *extra: str):
    """A command and environment for a run on "host" `name`: its own working and cache directories."""
    home = tmp_path / name
    (home / "cache").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(dataset), "--model", CLAUDE, "--out", str(home / "runs"),
               "--concurrency", "4", "--batch-size", "10", "--cache-url", url, *extra]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "CODEGEN_EVAL_CACHE_DIR": str(home / "cache"), "PYTHONPATH": str(ROOT),
           "ANTHROPIC_BASE_URL": stand_in.url, "ANTHROPIC_API_KEY": "sk-test", "CODEGEN_EVAL_CACHE_LEASE_S": "2",
           "CODEGEN_EVAL_CACHE_TIMEOUT_S": "3"}
    return command, env, home


def with_password(url: str) -> str:
    return url.replace("tester@", f"tester:{PASSWORD}@", 1)


def finished(process: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout, stderr


def no_password_anywhere(*places: Path | str) -> None:
    for place in places:
        if isinstance(place, str):
            assert PASSWORD not in place
            continue
        for path in place.rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), path


def test_two_hosts_started_together_make_each_call_once(prefect_on_postgres, postgres, cache_url, dataset, stand_in, tmp_path):
    processes, homes = [], []
    for name in ("host-a", "host-b"):
        command, env, home = host(name, tmp_path, dataset, with_password(cache_url), stand_in, prefect_on_postgres)
        processes.append(subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        homes.append(home)
    outputs = [finished(p) for p in processes]

    bodies = Counter(json.dumps(body, sort_keys=True) for body in stand_in.requests)
    assert stand_in.count() == CALLS and max(bodies.values()) == 1  # each request received once, by either host
    runs = [Path(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    results = [[(r.id, r.output, r.verdict.value) for r in load_results(run)] for run in runs]
    assert results[0] == results[1] and len(results[0]) == CASES and {v for _, _, v in results[0]} == {"PASS"}
    made = [json.loads((run / "summary.json").read_text()) for run in runs]
    assert sum(s["generation"]["calls_made"] + s["judging"]["calls_made"] for s in made) == CALLS
    print("calls made by each host:", [s["generation"]["calls_made"] + s["judging"]["calls_made"] for s in made])
    assert stored_answers(postgres, cache_url) == CALLS
    assert all(not any((home / "cache").iterdir()) for home in homes)  # nothing went to the local caches
    no_password_anywhere(*homes, *[text for pair in outputs for text in pair])
    assert json.loads((runs[0] / "run.json").read_text())["cache_url"] == cache_url  # recorded, without the password


def test_a_worker_killed_mid_run_then_a_resumed_run_makes_only_the_unfinished_calls(prefect_on_postgres, postgres, cache_url, dataset, stand_in, tmp_path):
    import psutil

    command, env, home = host("host-a", tmp_path, dataset, cache_url, stand_in, prefect_on_postgres, "--task-runner", "dask")
    first = subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while stand_in.served < 10 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = [p for p in psutil.Process(first.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in psutil.Process(first.pid).children()]
    os.kill(workers[0].pid, 9)
    first.communicate(timeout=300)  # the cluster may finish the run on its other worker, or the run fails: either way
    stored = stored_answers(postgres, cache_url)
    bodies = Counter(json.dumps(body, sort_keys=True) for body in stand_in.requests)
    again_after_kill = sum(n - 1 for n in bodies.values())
    print(f"first run exited {first.returncode} with {stored} of {CALLS} answers stored; {again_after_kill} calls made again")
    assert 10 <= stored <= CALLS, stored
    # Made twice at most, and only what the killed worker held leases on (one per call thread: 8 at
    # --concurrency 4): those expired and the calls were made again; nothing it had stored was.
    assert max(bodies.values()) <= 2 and again_after_kill <= 8, bodies.most_common(10)
    stand_in.reset()

    # Resumed from the first host (its own threads: what matters is the shared store, not the runner).
    resume = [arg for arg in command if arg not in ("--task-runner", "dask")]
    again = subprocess.Popen(resume, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, _ = finished(again)
    assert stand_in.count() == CALLS - stored  # only the calls whose answers were never stored
    results = load_results(Path(stdout.strip().splitlines()[-1]))
    assert len(results) == CASES and {r.verdict.value for r in results} == {"PASS"}


def test_the_database_stopped_mid_run_fails_in_one_line_and_the_run_resumes(prefect_on_postgres, dataset, stand_in, tmp_path):
    own = Postgres()  # a server of its own: the session's also holds the Prefect server's database
    try:
        own.start()
        own.execute(f"CREATE DATABASE {DATABASE}", "postgres")
        cache_url = own.url()
        command, env, home = host("host-a", tmp_path, dataset, with_password(cache_url), stand_in, prefect_on_postgres)
        first = subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while stand_in.served < 20 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, "the run ended before the database was stopped"
        before = stored_answers(own, cache_url)
        own.stop("fast")
        stdout, stderr = first.communicate(timeout=120)
        assert first.returncode == 2, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: cannot use the cache database {cache_url}: "), stderr[-3000:]
        assert "once the database answers again, run the same command again" in errors[0]
        no_password_anywhere(home, stdout, stderr)

        own.start()
        stored = stored_answers(own, cache_url)
        assert stored >= before  # nothing that was stored was lost
        stand_in.reset()
        again = subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, _ = finished(again)
        assert stand_in.count() == CALLS - stored  # resumed: only what was never stored is asked
        assert {r.verdict.value for r in load_results(Path(stdout.strip().splitlines()[-1]))} == {"PASS"}
    finally:
        own.close()
