"""Benchmark: the pipeline at scale against a loopback Messages API, each figure beside its target.

Starts a real Prefect server and the loopback API (tests/messages_api.py, its own process, with a set
latency), generates synthetic cases (small Python functions: cheap checks, so the figures measure the
pipeline and its calls), and runs `codegen-eval run` as a user would:

1. throughput: N=1,000 (2,000 calls), 100 ms latency, --concurrency 32; wall / ideal (calls x latency
   / concurrency), target <= 1.3;
2. cached re-run: calls made (target 0) and wall minus an empty Prefect flow's wall, run the same way
   (target <= 5 s); with a test per case, its wall over the untested one's (target <= 1.2: checks come
   from the check cache); then a rubric change: generation calls (target exactly 0), sandbox jobs (0);
3. memory: N=20,000 at 0 ms latency, peak RSS of the run's whole process tree (target <= 300 MB);
4. Prefect: task runs recorded per 1,000 cases, and how long after the run the server had them all.

Rows marked "c" repeat 1-3 with an executable test per case, so every case also runs in the sandbox
(zygote processes, a fork per case) on the same two cores: context beside the targets, not a target.

    .venv/bin/python bench/scale.py [--n 1000] [--memory-n 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import heading, machine, publish  # noqa: E402
from codegen_eval.config import RunConfig  # noqa: E402
from tests.loopback import free_port, wait_healthy  # noqa: E402
from tests.messages_api import synthetic_cases  # noqa: E402

BIN = Path(sys.executable).parent
MODEL = "claude-haiku-4-5"
EMPTY_FLOW = "from prefect import flow\nflow(name='empty')(lambda: None)()\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--memory-n", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=RunConfig.model_fields["batch_size"].default, help="cases per Prefect task")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--only", choices=["throughput", "memory"], help="measure one part (for tuning; RESULTS.md wants both)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="codegen-eval-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ANTHROPIC_", "CODEGEN_EVAL_"))}
    env.update({"PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ANTHROPIC_API_KEY": "sk-bench"})
    with Background([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(free_port())], env) as server:
        env["PREFECT_API_URL"] = api_url = server.wait_for_url(r"http://127\.0\.0\.1:\d+", suffix="/api")
        if not wait_healthy(api_url + "/health"):
            raise RuntimeError("the Prefect server did not become healthy in 180 s")
        lines = [heading("Scale: throughput, cache, memory, Prefect"), "", machine() + f"; {args.n} synthetic cases; "
                 f"loopback Messages API in its own process; a running Prefect server on loopback (SQLite).", ""]
        if args.only != "memory":
            lines += throughput_and_cache(args, env, work)
        if args.only != "throughput":
            lines += memory(args, env, work)
    publish(lines + [""])


def throughput_and_cache(args: argparse.Namespace, env: dict[str, str], work: Path) -> list[str]:
    dataset = _dataset(work / f"synthetic-{args.n}.jsonl", args.n)
    tested = _dataset(work / f"synthetic-{args.n}-tested.jsonl", args.n, executable=True)
    cache, out = work / "cache", work / "runs"
    with Background([sys.executable, "-m", "tests.messages_api", "--latency-ms", str(args.latency_ms)], env, cwd=ROOT) as api:
        run_env = {**env, "ANTHROPIC_BASE_URL": api.wait_for_url(r"http://127\.0\.0\.1:\d+")}
        run = _command(args, dataset, out / "plain")
        empty = [_timed([sys.executable, "-c", EMPTY_FLOW], run_env)[0] for _ in range(3)]
        firsts = []  # three uncached runs, each on a fresh cache: this box is shared and noisy
        for attempt in range(3):
            firsts.append(_run(run, {**run_env, "CODEGEN_EVAL_CACHE_DIR": str(cache / f"plain-{attempt}")}))
            if attempt == 0:
                lag, task_runs = _ingest(env["PREFECT_API_URL"], time.time())
        first_wall, first, _ = sorted(firsts, key=lambda f: f[1]["wall_seconds"])[1]
        run_env["CODEGEN_EVAL_CACHE_DIR"] = str(cache / "plain-0")
        # The same with an executable test per case: each also goes through the sandbox, on these 2 cores.
        tested_env = {**run_env, "CODEGEN_EVAL_CACHE_DIR": str(cache / "tested")}
        tested_run = _command(args, tested, out / "tested")
        _, tested_first, _ = _run(tested_run, tested_env)
        cached_walls, tested_cached_walls = [], []
        for _ in range(3):  # alternating, so both see the same machine
            wall, cached, _ = _run(run, run_env)
            cached_walls.append(wall)
            wall, tested_cached, _ = _run(tested_run, tested_env)
            tested_cached_walls.append(wall)
        rubric = work / "rubric.j2"
        rubric.write_text("Grade strictly.\nTask: {{ task }}\nOutput: {{ output }}\nExpected: {{ expected }}\nCriteria: {{ criteria }}\n")
        _, regraded, _ = _run([*run, "--rubric", str(rubric)], run_env)
        _, tested_regraded, _ = _run([*tested_run, "--rubric", str(rubric)], tested_env)
    calls = first["generation"]["calls_made"] + first["judging"]["calls_made"]
    ideal = calls * args.latency_ms / 1000 / args.concurrency
    empty_wall, cached_wall, tested_cached_wall = _median(empty), _median(cached_walls), _median(tested_cached_walls)
    cached_calls = cached["generation"]["calls_made"] + cached["judging"]["calls_made"]
    return [
        "| figure | measured | target |", "| --- | --- | --- |",
        f"| 1. throughput: {calls} calls, {args.latency_ms:.0f} ms latency, concurrency {args.concurrency}: flow wall / ideal, median of 3 "
        f"({first['wall_seconds']:.2f} s / {ideal:.2f} s; all: {', '.join(str(f[1]['wall_seconds']) for f in firsts)} s) "
        f"| **{first['wall_seconds'] / ideal:.2f}** | <= 1.3 |",
        f"| 1b. same, whole command (Python start, imports, Prefect flow run) / ideal ({first_wall:.2f} s) | {first_wall / ideal:.2f} | (context) |",
        f"| 1c. same with an executable test per case (sandbox), flow wall / ideal ({tested_first['wall_seconds']:.2f} s, one run) "
        f"| {tested_first['wall_seconds'] / ideal:.2f} | (context) |",
        f"| 2. cached re-run: calls made | **{cached_calls}** | 0 |",
        f"| 2. cached re-run wall {cached_wall:.2f} s minus empty flow wall {empty_wall:.2f} s (medians of 3) | **{cached_wall - empty_wall:.2f} s** | <= 5 s |",
        f"| 2c. same with an executable test per case (check cache), whole command: tested / untested, medians of 3, alternating "
        f"({tested_cached_wall:.2f} s / {cached_wall:.2f} s; sandbox jobs {tested_cached['checking']['sandbox_jobs']}, "
        f"checks from the cache {tested_cached['checking']['cases_cached']}) | **{tested_cached_wall / cached_wall:.2f}** | <= 1.2 |",
        f"| 2. rubric change: generation calls made / judge calls made | **{regraded['generation']['calls_made']}** / "
        f"{regraded['judging']['calls_made']} | 0 / {args.n} |",
        f"| 2c. rubric change with an executable test per case: sandbox jobs | **{tested_regraded['checking']['sandbox_jobs']}** | 0 |",
        f"| 4. Prefect task runs recorded for {args.n} cases, in a final state | **{task_runs}** "
        f"({task_runs * 1000 / args.n:.0f} per 1,000 cases) | all recorded |",
        f"| 4. server ingest lag: last task run visible after the command ended | **{lag:.1f} s** | (reported) |",
        "",
        f"Every case graded: {first['verdicts']} on the first run; retries {first['generation']['retries'] + first['judging']['retries']}. "
        f"Empty flow walls {', '.join(f'{w:.2f}' for w in empty)} s; cached walls {', '.join(f'{w:.2f}' for w in cached_walls)} s; "
        f"with tests {', '.join(f'{w:.2f}' for w in tested_cached_walls)} s.",
        "",
    ]


def memory(args: argparse.Namespace, env: dict[str, str], work: Path) -> list[str]:
    lines = ["| figure | measured | target |", "| --- | --- | --- |"]
    with Background([sys.executable, "-m", "tests.messages_api", "--latency-ms", "0"], env, cwd=ROOT) as api:
        for executable in (False, True):
            name = "tested" if executable else "plain"
            dataset = _dataset(work / f"synthetic-{args.memory_n}-{name}.jsonl", args.memory_n, executable)
            run_env = {**env, "ANTHROPIC_BASE_URL": api.wait_for_url(r"http://127\.0\.0\.1:\d+"),
                       "CODEGEN_EVAL_CACHE_DIR": str(work / f"cache-memory-{name}")}
            wall, summary, peak = _run(_command(args, dataset, work / f"runs-memory-{name}"), run_env, sample_memory=True)
            run_dir = work / f"runs-memory-{name}" / summary["run_id"]
            pages = list(run_dir.glob("report*.html"))
            calls = summary["generation"]["calls_made"] + summary["judging"]["calls_made"]
            if executable:
                label, figure, bold, target = "3c", "3c. the same with an executable test per case (sandbox zygotes and their children in the tree)", "", "(context)"
            else:
                label, figure, bold, target = "3", f"3. memory: {args.memory_n} cases at 0 ms latency", "**", "<= 300 MB"
            lines += [
                f"| {figure}: peak RSS of the run's process tree (sum of RSS) | {bold}{peak['rss'] / 2**20:.0f} MB{bold} | {target} |",
                f"| {label}: main process / its children at that peak; peak PSS of the tree (a page shared by a zygote and "
                f"its forked child counted once) | {peak['main'] / 2**20:.0f} MB / {(peak['rss'] - peak['main']) / 2**20:.0f} MB; "
                f"{peak['pss'] / 2**20:.0f} MB | (context) |",
                f"| {label}: wall (command) / calls made; report pages, largest | {wall:.1f} s / {calls}; {len(pages)} pages of <= 500 "
                f"cases, {max(p.stat().st_size for p in pages) / 1e6:.1f} MB | usable |",
            ]
    return lines + [
        "",
        f"Verdicts of each {args.memory_n}-case run: {summary['verdicts']}. Cases are read batch by batch and results.jsonl "
        f"grows batch by batch during the run (one append per batch of {args.batch_size}); the report, CSV and JUnit are "
        "written from it as streams.",
        "",
    ]


def _command(args: argparse.Namespace, dataset: Path, out: Path) -> list[str]:
    return [str(BIN / "codegen-eval"), "run", "--dataset", str(dataset), "--model", MODEL, "--concurrency", str(args.concurrency),
            "--batch-size", str(args.batch_size), "--out", str(out)]


class Background:
    """A server process for the length of a `with` block, its first output line read for its URL."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path | None = None):
        self.process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self._lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self._lines.append(line)

    def wait_for_url(self, pattern: str, suffix: str = "", timeout_s: float = 180) -> str:
        import re

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self._lines):
                if found := re.search(pattern, line):
                    return found.group(0) + suffix
            time.sleep(0.2)
        raise RuntimeError(f"{self.process.args[:3]} printed no URL in {timeout_s} s: {''.join(self._lines)[-2000:]}")

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, 9)
        self.process.wait()


def _run(command: list[str], env: dict[str, str], sample_memory: bool = False) -> tuple[float, dict, dict]:
    wall, stdout, peak = _timed(command, env, sample_memory)
    run_dir = Path(stdout.strip().splitlines()[-1])
    return wall, json.loads((run_dir / "summary.json").read_text()), peak


def _timed(command: list[str], env: dict[str, str], sample_memory: bool = False) -> tuple[float, str, dict]:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"rss": 0, "main": 0, "pss": 0}
    if sample_memory:
        threading.Thread(target=_sample, args=(process.pid, peak), daemon=True).start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{command[:3]} exited {process.returncode}: {stderr[-3000:]}")
    return wall, stdout, peak


def _sample(pid: int, peak: dict) -> None:
    """Peaks of a process tree's memory, sampled every 50 ms: the sum of RSS (counts a page shared by a
    sandbox zygote and its forked child twice), the main process's share of it, and the sum of PSS
    (each shared page split between its sharers: what the tree really occupies)."""
    try:
        root = psutil.Process(pid)
        while root.is_running():
            rss, pss = [], []
            for p in [root, *root.children(recursive=True)]:
                try:
                    info = p.memory_full_info()
                except psutil.Error:  # a sandbox child that ended meanwhile
                    info = None
                rss.append(info.rss if info else 0)
                pss.append(info.pss if info else 0)
            if sum(rss) > peak["rss"]:
                peak["rss"], peak["main"] = sum(rss), rss[0]
            peak["pss"] = max(peak["pss"], sum(pss))
            time.sleep(0.05)
    except psutil.Error:
        return


def _ingest(api_url: str, ended: float) -> tuple[float, int]:
    """(seconds after `ended` until the server held every task run of the latest codegen-eval flow run in a
    final state, how many). Polled every 0.5 s; settled once unchanged for 5 s."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["codegen-eval"])),
                                         sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        seen, settled_at = (-1, -1), time.time()
        while time.time() - settled_at < 5 and time.time() - ended < 600:
            runs, offset = [], 0
            while page := client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])), limit=200, offset=offset):
                runs, offset = runs + page, offset + len(page)
            now = (len(runs), sum(1 for t in runs if t.state and t.state.is_final()))
            if now != seen:
                seen, settled_at = now, time.time()
            time.sleep(0.5)
    return max(0.0, settled_at - ended), seen[1]


def _dataset(path: Path, n: int, executable: bool = False) -> Path:
    path.write_text("".join(json.dumps(case) + "\n" for case in synthetic_cases(n, executable)), encoding="utf-8")
    return path


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


if __name__ == "__main__":
    main()
