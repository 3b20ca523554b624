"""Benchmark: the PostgreSQL cache beside diskcache, cold and cached, in one run.

The same `codegen-eval run` (synthetic cases, generation and an LLM judge per case) against the
loopback stand-in in its own process (bench/peers.py's, default 100 ms latency) at concurrency 32,
with a running Prefect server on loopback, as bench/peers.py runs it; the cache is either a diskcache
directory or a PostgreSQL database (a server started here from the machine's PostgreSQL, as the tests
start it: initdb in a temporary directory, default settings, so every answer is committed and flushed).

"Cold" is a cache holding only the sandbox self-test's pass and one warm-up case (a copy per run: a
directory, or a schema), so every model call is made and every reference proven; "cached" is the same
command again. Every run is checked: the stand-in serves 2 calls per case cold, 0 cached, and every
case passes. Stores alternate, sizes alternate; each figure is the median of the repeats.

    .venv/bin/python bench/cache_pg.py [--sizes 100 400] [--concurrency 32] [--repeats 3] [--no-publish]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import heading, load, machine, publish  # noqa: E402
from bench.peers import MODEL, StandIn  # noqa: E402
from bench.scale import Background  # noqa: E402
from tests.loopback import free_port, wait_healthy  # noqa: E402
from tests.messages_api import synthetic_cases  # noqa: E402
from tests.pg import DATABASE, Postgres  # noqa: E402

BIN = Path(sys.executable).parent
STORES = ("diskcache", "postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-publish", action="store_true", help="print the section, do not append it to RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="codegen-eval-cache-pg-"))
    load_before = load()
    postgres = Postgres()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ANTHROPIC_", "CODEGEN_EVAL_"))}
    env.update({"PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ANTHROPIC_API_KEY": "sk-bench",
                "PYTHONPATH": str(ROOT)})
    try:
        postgres.start()
        postgres.execute(f"CREATE DATABASE {DATABASE}", "postgres")
        with Background([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(free_port())], env) as server:
            env["PREFECT_API_URL"] = api_url = server.wait_for_url(r"http://127\.0\.0\.1:\d+", suffix="/api")
            if not wait_healthy(api_url + "/health"):
                raise RuntimeError("the Prefect server did not become healthy in 180 s")
            peers = [sys.executable, str(ROOT / "bench" / "peers.py"), "--serve", "--latency-ms", str(args.latency_ms)]
            with Background(peers, env, cwd=ROOT) as api:
                env["ANTHROPIC_BASE_URL"] = (standin := StandIn(api)).url
                runs = Bench(args, env, work, standin, postgres).measure()
    finally:
        postgres.close()
    publish(section(args, runs, load_before, load()) + [""], write=not args.no_publish)


class Bench:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], work: Path, standin: StandIn, postgres: Postgres):
        self.args, self.env, self.work, self.standin, self.postgres = args, env, work, standin, postgres
        self.datasets = {n: self._dataset(f"cases-{n}.jsonl", synthetic_cases(n)) for n in args.sizes}
        warm_up = synthetic_cases(1)[0] | {"id": "warm-up", "task": "Write a function `value_99999()` that takes no arguments and returns the integer 99999.",
                                           "expected": "def value_99999():\n    return 99999\n"}
        warm_dataset = self._dataset("warm-up.jsonl", [warm_up])
        self._run(warm_dataset, "diskcache", str(work / "caches" / "warm"), 2)  # the self-test's pass and one case, once per store
        self.postgres.execute("CREATE SCHEMA warm")
        self._run(warm_dataset, "postgres", postgres.url(schema="warm"), 2)

    def _dataset(self, name: str, cases: list[dict]) -> Path:
        path = self.work / name
        path.write_text("".join(json.dumps(case) + "\n" for case in cases), encoding="utf-8")
        return path

    def cold_cache(self, store: str, name: str) -> str:
        """A copy of the warm cache: a directory, or a schema holding a copy of the warm table."""
        if store == "diskcache":
            shutil.copytree(self.work / "caches" / "warm", self.work / "caches" / name)
            return str(self.work / "caches" / name)
        self.postgres.execute(f"CREATE SCHEMA {name}; CREATE TABLE {name}.codegen_eval_cache (LIKE warm.codegen_eval_cache INCLUDING ALL); "
                              f"INSERT INTO {name}.codegen_eval_cache SELECT * FROM warm.codegen_eval_cache")
        return self.postgres.url(schema=name)

    def server_cpu_s(self) -> float:
        """CPU of the PostgreSQL server: the postmaster's own and that of its ended children (a run's
        backends end with its connections, and the postmaster waits for them)."""
        pid = int((self.postgres.data / "postmaster.pid").read_text().split()[0])
        times = psutil.Process(pid).cpu_times()
        alive = sum(sum(p.cpu_times()[:2]) for p in psutil.Process(pid).children())
        return times.user + times.system + times.children_user + times.children_system + alive

    def measure(self) -> dict[tuple[str, int, str], list[tuple[float, float, float]]]:
        walls: dict[tuple[str, int, str], list[tuple[float, float, float]]] = {}
        for repeat in range(self.args.repeats):
            for size in self.args.sizes:
                for store in STORES if repeat % 2 == 0 else STORES[::-1]:
                    cache = self.cold_cache(store, f"{store}_{size}_{repeat}")
                    for mode, calls in (("cold", 2 * size), ("cached", 0)):
                        cpu, server = _children_cpu_s(), self.server_cpu_s()
                        wall = self._run(self.datasets[size], store, cache, calls, size)
                        cpu, server = _children_cpu_s() - cpu, self.server_cpu_s() - server
                        walls.setdefault((store, size, mode), []).append((wall, cpu, server))
                        print(f"repeat {repeat + 1}: {store} {size} cases {mode}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                              f"PostgreSQL {server:.2f} s CPU", file=sys.stderr, flush=True)
        return walls

    def _run(self, dataset: Path, store: str, cache: str, calls: int, size: int | None = None) -> float:
        command = [sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(dataset), "--model", MODEL,
                   "--concurrency", str(self.args.concurrency), "--out", str(self.work / "runs")]
        env = {**self.env, "CODEGEN_EVAL_CACHE_DIR" if store == "diskcache" else "CODEGEN_EVAL_CACHE_URL": cache}
        before = self.standin.served()
        time.sleep(1.0)  # the Prefect server persists the previous run's events after it ends
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=self.work, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"{store} exited {done.returncode}: {done.stderr[-3000:]}")
        served = self.standin.served() - before
        if served != calls:
            raise RuntimeError(f"{store}: the stand-in served {served} calls, {calls} expected")
        summary = json.loads((Path(done.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
        if size is not None and summary["verdicts"].get("PASS") != size:
            raise RuntimeError(f"{store}, {size} cases: verdicts {summary['verdicts']}")
        return wall


def section(args: argparse.Namespace, runs: dict[tuple[str, int, str], list[tuple[float, float, float]]], load_before: str,
            load_after: str) -> list[str]:
    def med(store: str, size: int, mode: str, figure: int) -> float:
        return median(run[figure] for run in runs[store, size, mode])

    lines = [heading("The cache in PostgreSQL beside diskcache (bench/cache_pg.py)"), "",
             f"{machine()}; {_postgres_version()} on loopback (TCP, default settings: fsync on); "
             f"stand-in latency {args.latency_ms:g} ms, concurrency {args.concurrency}, median of {args.repeats}; "
             f"load average {load_before} before, {load_after} after. CPU: user + system of the command's process tree; "
             "postgres CPU adds the PostgreSQL server's.", "",
             "| cases | mode | diskcache wall s | postgres wall s | wall ratio | diskcache CPU s | postgres CPU s (client + server) | CPU ratio |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in args.sizes:
        for mode in ("cold", "cached"):
            disk, pg = med("diskcache", size, mode, 0), med("postgres", size, mode, 0)
            disk_cpu, pg_cpu = med("diskcache", size, mode, 1), med("postgres", size, mode, 1) + med("postgres", size, mode, 2)
            lines.append(f"| {size} | {mode} | {disk:.2f} | {pg:.2f} | {pg / disk:.2f} x | {disk_cpu:.2f} | {pg_cpu:.2f} "
                         f"({med('postgres', size, mode, 1):.2f} + {med('postgres', size, mode, 2):.2f}) | {pg_cpu / disk_cpu:.2f} x |")
    lines += ["", "Every run (wall / CPU / server CPU s): " + "; ".join(
        f"{store} {size} {mode} " + ", ".join(f"{w:.2f}/{c:.2f}/{v:.2f}" for w, c, v in each) for (store, size, mode), each in runs.items())]
    return lines


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _postgres_version() -> str:
    from tests.pg import pg_bin

    return subprocess.run([str(pg_bin() / "postgres"), "-V"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
