"""Benchmark: codegen-eval against a peer (promptfoo) on the same cases and the same stand-in API, in one run.

Both tools evaluate the same synthetic cases (tests/messages_api.py: a small Python function each) with
the same two calls per case, generation then an LLM judge, against one loopback Messages-API stand-in in
its own process with a set latency (default 100 ms), at the same concurrency (default 32):

- codegen-eval: `python -m codegen_eval.cli run` (this checkout), with a running Prefect server on
  loopback, as scale.py runs it;
- promptfoo: `promptfoo eval` (npm, a pinned version installed into a temporary prefix), its Anthropic
  provider pointed at the stand-in (`apiBaseUrl`), an `llm-rubric` assertion graded by the same model
  there; telemetry, update checks, sharing and remote generation off;
- anthropic-sdk (the floor): codegen-eval's own two requests per case sent with the anthropic SDK alone,
  from `concurrency` threads, and nothing else (no cache, checks, Prefect or report): what any Python
  tool built on the SDK pays on this machine. Uncached only.

"Uncached" is a fresh call cache (codegen-eval: CODEGEN_EVAL_CACHE_DIR; promptfoo: PROMPTFOO_CACHE_PATH,
its on-disk cache, on by default); "cached" is the same command again on that cache. Each tool writes
its results as usual (codegen-eval: run directory and HTML report; promptfoo: its SQLite store and a
JSON output file). Every run is checked: the stand-in counts the calls it served (2 per case uncached,
0 cached) and every case must pass.

Sizes run alternately (small, large; the tool order flips each repeat) and each figure is the median of
the repeats (default 3). The marginal cost per case is the slope between the sizes,
(median wall at the large size - at the small) / (difference in cases), so start-up cancels; the ideal
is 2 calls x latency / concurrency (6.25 ms at 100 ms and 32).

    .venv/bin/python bench/peers.py [--sizes 100 400] [--concurrency 32] [--promptfoo-prefix DIR]
    .venv/bin/python bench/peers.py --tools codegen-eval --concurrency 128 --sizes 100 2000 --repeats 1
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import heading, load, machine, publish  # noqa: E402
from bench.scale import Background  # noqa: E402
from tests.loopback import free_port, wait_healthy  # noqa: E402
from tests.messages_api import MessagesAPI, synthetic_cases, synthetic_responder  # noqa: E402

BIN = Path(sys.executable).parent
MODEL = "claude-haiku-4-5"
# The newest promptfoo whose `engines` accepts this machine's Node 20.20 (0.122 and later want Node >= 22.22).
PROMPTFOO_VERSION = "0.121.20"
TOOLS = ("codegen-eval", "promptfoo", "anthropic-sdk")
# codegen-eval's generation prompt, word for word, so both tools send the same request.
PROMPT = "Write AWS {format} code for the following task. Return ONLY the code — no explanation.\n\nTask:\n{task}"
RUBRIC = "Task: {{task}}\nExpected: {{expected}}\nCriteria: {{criteria}}\nThe output meets the criteria."
PROMPTFOO_ENV = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PROMPTFOO_DISABLE_UPDATE": "1",
    "PROMPTFOO_DISABLE_SHARING": "1",
    "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
    "PROMPTFOO_DISABLE_REDTEAM_REMOTE_GENERATION": "1",
    "PROMPTFOO_SELF_HOSTED": "1",  # no account or cloud look-ups
    "PROMPTFOO_CACHE_ENABLED": "true",
    "PROMPTFOO_CACHE_TYPE": "disk",
    "NO_COLOR": "1",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[100, 400], metavar=("SMALL", "LARGE"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--sdk-only", type=Path, help=argparse.SUPPRESS)  # the anthropic-sdk tool's own process, on this dataset
    parser.add_argument("--promptfoo-version", default=PROMPTFOO_VERSION)
    parser.add_argument("--promptfoo-prefix", type=Path, help="reuse an npm prefix that holds that promptfoo version")
    parser.add_argument("--no-publish", action="store_true", help="print the section, do not append it to RESULTS.md")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the stand-in's own process
    args = parser.parse_args()
    if args.serve:
        return serve(args.latency_ms)
    if args.sdk_only:
        return sdk_only(args.sdk_only, args.concurrency)
    # Bytecode for this checkout, as an installed package has (pip compiles it): with
    # PYTHONDONTWRITEBYTECODE set, a module edited since its last .pyc would be compiled on every run.
    for package in ("codegen_eval", "flows", "tasks"):
        compileall.compile_dir(ROOT / package, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="codegen-eval-peers-"))
    load_before = load()
    promptfoo = install_promptfoo(args.promptfoo_version, args.promptfoo_prefix or work / "npm") if "promptfoo" in args.tools else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ANTHROPIC_", "CODEGEN_EVAL_", "PROMPTFOO_"))}
    env.update({"PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ANTHROPIC_API_KEY": "sk-bench"})
    with Background([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(free_port())], env) as server:
        env["PREFECT_API_URL"] = api_url = server.wait_for_url(r"http://127\.0\.0\.1:\d+", suffix="/api")
        if not wait_healthy(api_url + "/health"):
            raise RuntimeError("the Prefect server did not become healthy in 180 s")
        with Background([sys.executable, str(Path(__file__).resolve()), "--serve", "--latency-ms", str(args.latency_ms)], env, cwd=ROOT) as api:
            standin = StandIn(api)
            runner = Runner(args, env, work, standin, promptfoo, [server.process.pid, api.process.pid])
            runs = runner.measure()
    load_after = load()
    publish(section(args, runs, load_before, load_after, promptfoo) + [""], write=not args.no_publish)


class StandIn:
    """The stand-in API's process; `served()` asks it (SIGUSR1) how many requests it has answered."""

    def __init__(self, background: Background):
        self.background = background
        self.url = background.wait_for_url(r"http://127\.0\.0\.1:\d+")
        self.process = psutil.Process(background.process.pid)

    def cpu_s(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def served(self) -> int:
        seen = len(self.background._lines)
        os.kill(self.background.process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in self.background._lines[seen:]:
                if line.startswith("served "):
                    return int(line.split()[1])
            time.sleep(0.05)
        raise RuntimeError("the stand-in API did not report its count")


@dataclass
class Run:
    wall: float  # seconds, the whole command
    cpu: float  # user + system seconds of the command's process tree (its waited-for processes)
    standin_cpu: float  # user + system seconds the stand-in API spent meanwhile
    call_ms: float | None  # median generation call as the tool timed it (the stand-in answers in --latency-ms); None: cached


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Runner:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], work: Path, standin: StandIn, promptfoo: Path | None,
                 servers: list[int]):
        self.args, self.env, self.work, self.standin, self.promptfoo = args, env, work, standin, promptfoo
        self.servers = [psutil.Process(pid) for pid in servers]
        self.inputs = {n: self._inputs(n) for n in args.sizes}
        self.warm = self._warm_cache() if "codegen-eval" in args.tools else None

    def _warm_cache(self) -> Path:
        """A cache holding the sandbox self-test's pass (once per installation, ~5-10 s of a first run,
        varying by seconds) and one warm-up case unlike the measured ones: each uncached run starts from
        a copy, so it makes every model call and proves every reference, and the slope is not noise."""
        warm, dataset = self.work / "caches" / "warm", self.work / "warm-up.jsonl"
        case = synthetic_cases(1)[0] | {"id": "warm-up", "task": "Write a function `value_99999()` that takes no arguments and returns the integer 99999."}
        dataset.write_text(json.dumps(case | {"expected": "def value_99999():\n    return 99999\n"}) + "\n", encoding="utf-8")
        command, env, _ = self._codegen_eval(1, warm, dataset)
        subprocess.run(command, env=env, cwd=self.work, check=True, capture_output=True)
        return warm

    def quiesce(self, timeout_s: float = 60.0) -> None:
        """Wait until the Prefect server and the stand-in are idle (under 3 % of a core over 0.5 s): the
        server persists a run's events after the run ends, which would land in the next run's figures."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            processes = [p for server in self.servers for p in (server, *server.children(recursive=True))]
            before = sum(sum(p.cpu_times()[:2]) for p in processes)
            time.sleep(0.5)
            if sum(sum(p.cpu_times()[:2]) for p in processes) - before < 0.015:
                return

    def measure(self) -> dict[tuple[str, int, str], list[Run]]:
        """Runs by (tool, size, "uncached" | "cached"), in the order run."""
        walls: dict[tuple[str, int, str], list[Run]] = {}
        for repeat in range(self.args.repeats):
            for size in self.args.sizes:
                tools = self.args.tools if repeat % 2 == 0 else self.args.tools[::-1]
                for tool in tools:
                    cache = self.work / "caches" / f"{tool}-{size}-{repeat}"
                    if tool == "codegen-eval":
                        shutil.copytree(self.warm, cache)
                    for mode in ("uncached", "cached") if tool != "anthropic-sdk" else ("uncached",):
                        run = self.run(tool, size, cache, expect_calls=2 * size if mode == "uncached" else 0)
                        walls.setdefault((tool, size, mode), []).append(run)
                        print(f"repeat {repeat + 1}: {tool} {size} cases {mode}: {run.wall:.2f} s wall, {run.cpu:.2f} s CPU, "
                              f"stand-in {run.standin_cpu:.2f} s CPU", file=sys.stderr, flush=True)
        return walls

    def run(self, tool: str, size: int, cache: Path, expect_calls: int) -> Run:
        self.quiesce()
        before = self.standin.served()
        command, env, check = {"codegen-eval": self._codegen_eval, "promptfoo": self._promptfoo, "anthropic-sdk": self._sdk}[tool](size, cache)
        cpu, standin_cpu = _children_cpu_s(), self.standin.cpu_s()
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=self.work, capture_output=True, text=True)
        wall = time.perf_counter() - started
        cpu, standin_cpu = _children_cpu_s() - cpu, self.standin.cpu_s() - standin_cpu
        if done.returncode:
            raise RuntimeError(f"{tool} exited {done.returncode}: {(done.stderr or done.stdout)[-3000:]}")
        calls = self.standin.served() - before
        if calls != expect_calls:
            raise RuntimeError(f"{tool}, {size} cases: the stand-in served {calls} calls, {expect_calls} expected")
        return Run(wall, cpu, standin_cpu, check(done.stdout))

    def _codegen_eval(self, size: int, cache: Path, dataset: Path | None = None) -> tuple[list[str], dict[str, str], Any]:
        command = [sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(dataset or self.inputs[size]["dataset"]), "--model", MODEL,
                   "--concurrency", str(self.args.concurrency), "--out", str(self.work / "runs")]
        env = {**self.env, "PYTHONPATH": str(ROOT), "CODEGEN_EVAL_CACHE_DIR": str(cache), "ANTHROPIC_BASE_URL": self.standin.url}

        def check(stdout: str) -> float | None:
            run_dir = Path(stdout.strip().splitlines()[-1])
            summary = json.loads((run_dir / "summary.json").read_text())
            if summary["verdicts"].get("PASS") != size:
                raise RuntimeError(f"codegen-eval, {size} cases: verdicts {summary['verdicts']}")
            rows = (json.loads(line)["generation"] for line in (run_dir / "results.jsonl").read_text().splitlines())
            return _median_or_none([row["latency_s"] * 1000 for row in rows if not row["cached"]])

        return command, env, check

    def _promptfoo(self, size: int, cache: Path) -> tuple[list[str], dict[str, str], Any]:
        output = self.work / "promptfoo-results.json"
        command = [str(self.promptfoo), "eval", "--config", str(self.inputs[size]["promptfoo"]), "--max-concurrency", str(self.args.concurrency),
                   "--no-table", "--no-progress-bar", "--output", str(output)]
        env = {**self.env, **PROMPTFOO_ENV, "PROMPTFOO_CONFIG_DIR": str(self.work / "promptfoo-home"), "PROMPTFOO_CACHE_PATH": str(cache),
               "ANTHROPIC_BASE_URL": self.standin.url}

        def check(_: str) -> float | None:
            results = json.loads(output.read_text())["results"]
            if results["stats"]["successes"] != size:
                raise RuntimeError(f"promptfoo, {size} cases: {results['stats']}")
            return _median_or_none([r["latencyMs"] for r in results["results"] if not r["response"].get("cached")])

        return command, env, check

    def _sdk(self, size: int, cache: Path) -> tuple[list[str], dict[str, str], Any]:
        command = [sys.executable, str(Path(__file__).resolve()), "--sdk-only", str(self.inputs[size]["dataset"]), "--concurrency", str(self.args.concurrency)]
        env = {**self.env, "PYTHONPATH": str(ROOT), "ANTHROPIC_BASE_URL": self.standin.url}

        def check(stdout: str) -> float:
            words = stdout.split()
            if words[:2] != ["answered", str(2 * size)]:
                raise RuntimeError(f"anthropic-sdk, {size} cases: {stdout!r}")
            return float(words[-1])

        return command, env, check

    def _inputs(self, n: int) -> dict[str, Path]:
        cases = synthetic_cases(n)
        dataset = self.work / f"synthetic-{n}.jsonl"
        dataset.write_text("".join(json.dumps(case) + "\n" for case in cases), encoding="utf-8")
        provider = {"id": f"anthropic:messages:{MODEL}", "config": {"apiBaseUrl": self.standin.url, "max_tokens": 1024}}
        config = {
            "description": f"codegen-eval peers bench, {n} synthetic cases",
            "prompts": [PROMPT.format(format="{{format}}", task="{{task}}")],
            "providers": [provider],
            "defaultTest": {"options": {"provider": provider}, "assert": [{"type": "llm-rubric", "value": RUBRIC}]},
            "tests": [{"description": case["id"], "vars": {key: case[key] for key in ("task", "format", "expected")} | {"criteria": case["solution_criteria"]}}
                      for case in cases],
        }
        promptfoo = self.work / f"promptfoo-{n}.yaml"
        promptfoo.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
        return {"dataset": dataset, "promptfoo": promptfoo}


def install_promptfoo(version: str, prefix: Path) -> Path:
    """promptfoo@version under the npm prefix `prefix` (installed unless it is there already); its executable."""
    package = prefix / "node_modules" / "promptfoo" / "package.json"
    if not (package.exists() and json.loads(package.read_text())["version"] == version):
        print(f"installing promptfoo@{version} into {prefix} (a few minutes)", file=sys.stderr, flush=True)
        subprocess.run(["npm", "install", "--prefix", str(prefix), f"promptfoo@{version}", "--no-audit", "--no-fund", "--loglevel=error"],
                       check=True, env={**os.environ, **PROMPTFOO_ENV})
    return prefix / "node_modules" / ".bin" / "promptfoo"


def sdk_only(dataset: Path, concurrency: int) -> None:
    """Per case, codegen-eval's generation request then its judge request on that answer, each sent
    with `messages.create` as codegen-eval sends it; `concurrency` cases at a time, one thread each."""
    from concurrent.futures import ThreadPoolExecutor

    import anthropic

    from codegen_eval.dataset import load_dataset
    from codegen_eval.generation import extract_code, generation_request
    from codegen_eval.grading.judge import judge_request
    from codegen_eval.models.backends.anthropic import AnthropicBackend
    from codegen_eval.models.strategies import Strategy, known_strategy

    client, params = anthropic.Anthropic(max_retries=0), AnthropicBackend().params
    strategy = known_strategy(MODEL) or Strategy.PREFILL  # what codegen-eval uses for it with an empty cache

    timed: list[float] = []

    def one(case: Any) -> int:
        started = time.perf_counter()
        answer = client.messages.create(**params(generation_request(case, MODEL, strategy)))
        timed.append((time.perf_counter() - started) * 1000)
        code = extract_code("".join(block.text for block in answer.content if block.type == "text"), strategy)
        client.messages.create(**params(judge_request(case, code, MODEL, None, strategy)))
        return 2

    with ThreadPoolExecutor(concurrency) as pool:
        answered = sum(pool.map(one, load_dataset(dataset)))
    print("answered", answered, "median-generation-ms", f"{median(timed):.1f}")


def serve(latency_ms: float) -> None:
    """The stand-in: tests/messages_api.py's synthetic responder, which also reads content given as text
    blocks (promptfoo sends those); prints its count of requests served on SIGUSR1."""
    responder = synthetic_responder()

    def respond(body: dict[str, Any]) -> Any:
        return responder({**body, "messages": [{**m, "content": _text(m["content"])} for m in body["messages"]]})

    server = MessagesAPI(respond, latency_s=latency_ms / 1000)
    server.keep_requests = False
    signal.signal(signal.SIGUSR1, lambda *_: print(f"served {server.served}", flush=True))
    print(server.url, flush=True)
    server._server.serve_forever()


def _text(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(block.get("text", "") for block in content)


def section(args: argparse.Namespace, runs: dict[tuple[str, int, str], list[Run]], load_before: str, load_after: str,
            promptfoo: Path | None) -> list[str]:
    small, large = args.sizes
    ideal_ms = 2 * args.latency_ms / args.concurrency

    def med(tool: str, size: int, mode: str, figure: str = "wall") -> float:
        return median(getattr(run, figure) for run in runs[tool, size, mode])

    def slope_ms(tool: str, mode: str, figure: str = "wall") -> float:
        return (med(tool, large, mode, figure) - med(tool, small, mode, figure)) * 1000 / (large - small)

    peer = f"promptfoo {args.promptfoo_version} (Node {_node_version()})" if promptfoo else "no peer"
    lines = [heading(f"Peers: {', '.join(args.tools)}, concurrency {args.concurrency}"), "",
             machine() + f"; load average (1, 5, 15 min) {load_before} before, {load_after} after: 2 cores shared with other work, "
             "so these walls are context, not targets.",
             f"{peer}; one loopback Messages-API stand-in at {args.latency_ms:.0f} ms; generation + LLM judge per case; "
             f"{small} and {large} synthetic cases, alternating, medians of {args.repeats}; codegen-eval with a running Prefect server. "
             "Marginal = slope between the sizes; CPU = user + system of the tool's process tree; stand-in = the API process's CPU; "
             f"generation call = the median generation call as the tool itself timed it, {large} cases uncached (the stand-in answers in "
             f"{args.latency_ms:.0f} ms: the rest is the client's own wait, e.g. for the GIL).", "",
             f"| tool | uncached wall {small} / {large} s | marginal ms per case | x ideal {ideal_ms:.2f} ms | CPU ms per case (marginal) "
             f"| stand-in CPU ms per case | generation call ms | cached wall {small} / {large} s | cached marginal ms per case | cached CPU {small} s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for tool in args.tools:
        slope = slope_ms(tool, "uncached")
        cached = (f"{med(tool, small, 'cached'):.2f} / {med(tool, large, 'cached'):.2f} | {slope_ms(tool, 'cached'):.2f} | "
                  f"{med(tool, small, 'cached', 'cpu'):.2f}") if (tool, small, "cached") in runs else "n/a (no cache) | | "
        lines.append(f"| {tool} | {med(tool, small, 'uncached'):.2f} / {med(tool, large, 'uncached'):.2f} | {slope:.2f} | **{slope / ideal_ms:.2f}** | "
                     f"{slope_ms(tool, 'uncached', 'cpu'):.2f} | {med(tool, large, 'uncached', 'standin_cpu') * 1000 / large:.2f} | "
                     f"{med(tool, large, 'uncached', 'call_ms'):.1f} | {cached} |")
    lines += ["", "All runs (wall s / CPU s, whole command, in run order): " + "; ".join(
        f"{tool} {size} {mode}: {', '.join(f'{r.wall:.2f}/{r.cpu:.2f}' for r in values)}" for (tool, size, mode), values in runs.items()) + "."]
    return lines


def _median_or_none(values: list[float]) -> float | None:
    return median(values) if values else None


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")


if __name__ == "__main__":
    main()
