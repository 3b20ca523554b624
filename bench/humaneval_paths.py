"""Benchmark: HumanEval on the embedded model through two paths, greedy.

1. `local`: the in-process llama.cpp backend (prefill "```python\\n" + stop at the closing fence);
2. `openai:qwen`: the OpenAI-compatible backend against llama-cpp-python's own server
   (`python -m llama_cpp.server`) serving the same GGUF. That server refuses a JSON-schema
   `response_format` and ignores a continued assistant message, so this path runs the fenced strategy.

Both use the project's prompt and checks (the `tests` check in the sandbox). Prints pass@1 of each and
the number of problems whose extracted code differs, and appends them to bench/RESULTS.md with the
machine and date. Problems alternate between the paths, so a prefix (`--limit N`) is a paired sample.
Each answer is cached (`--cache-dir`), so a run stopped half-way resumes where it stopped.

By default the server is sent llama.cpp's `repeat_penalty: 1.0`, the local backend's value (its own
default is 1.1), so that the paths differ in strategy only; `--server-defaults` leaves it out.

    .venv/bin/python bench/humaneval_paths.py [--limit N] [--max-minutes M] [--cache-dir DIR] [--server-defaults] [--parallel]

On a busy machine set CODEGEN_EVAL_THREADS=1: llama.cpp's threads wait for each other at every token,
which costs far more than it gains when the cores are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import heading, machine, publish  # noqa: E402
from codegen_eval.dataset import load_dataset  # noqa: E402
from codegen_eval.generation import Generation, generate  # noqa: E402
from codegen_eval.grading.checks import run_checks  # noqa: E402
from codegen_eval.grading.sandbox import Sandbox  # noqa: E402
from codegen_eval.models.backends.openai import EXTRA_BODY_ENV  # noqa: E402
from codegen_eval.models.cache import CallCache  # noqa: E402
from codegen_eval.models.calls import CallPolicy  # noqa: E402
from tests.llama_server import llama_server  # noqa: E402

HUMANEVAL = ROOT / "tests" / "data" / "HumanEval.jsonl.gz"
SERVED = "openai:qwen"  # llama_cpp.server answers whatever model name it is sent


def passed(case, generation: Generation, sandbox: Sandbox) -> bool:
    if generation.error or not generation.code.strip():
        return False
    return any(c.name == "tests" and c.passed for c in run_checks(case, generation.code, sandbox))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--cache-dir", default=str(ROOT / "artifacts" / "bench-humaneval-cache"))
    parser.add_argument("--server-defaults", action="store_true", help="leave llama.cpp's default repeat_penalty (1.1)")
    parser.add_argument("--max-minutes", type=float, default=None, help="start no problem after this; report those done")
    parser.add_argument("--log", default=None, help="per-problem JSONL (default: beside the cache)")
    parser.add_argument("--parallel", action="store_true", help="run the two paths at once, a thread each")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `kill` stops the server too
    if not args.server_defaults:
        os.environ[EXTRA_BODY_ENV] = json.dumps({"repeat_penalty": 1.0})
    cases = load_dataset(HUMANEVAL)[: args.limit]
    cache = CallCache(args.cache_dir)
    log = Path(args.log or Path(args.cache_dir) / "problems.jsonl")
    sandbox = Sandbox(slots=2)
    # The same threads for both paths: CODEGEN_EVAL_THREADS (the local backend reads it too), else all cores.
    threads = int(os.environ.get("CODEGEN_EVAL_THREADS", 0)) or os.cpu_count() or 1
    start = time.perf_counter()
    outcomes: dict[str, dict[str, dict]] = {"local": {}, SERVED: {}}
    seconds = {"local": 0.0, SERVED: 0.0}

    def answer(model: str, policy: CallPolicy, index: int, case) -> None:
        t0 = time.perf_counter()
        generation = generate(case, model, cache, policy)
        seconds[model] += time.perf_counter() - t0
        ok = passed(case, generation, sandbox)
        outcomes[model][case.id] = {"passed": ok, "code": generation.code, "strategy": generation.strategy,
                                    "cached": generation.cached, "error": generation.error}
        print(f"{index}/{len(cases)} {case.id} {model}: {'pass' if ok else 'fail'}", flush=True)

    def in_time() -> bool:
        return not args.max_minutes or time.perf_counter() - start <= args.max_minutes * 60

    def one_path(model: str, policy: CallPolicy) -> None:
        for index, case in enumerate(cases, start=1):
            if not in_time():
                return
            answer(model, policy, index, case)

    with llama_server(threads=threads) as url:
        policies = {"local": CallPolicy(), SERVED: CallPolicy(base_url=url, timeout_s=900)}
        if args.parallel:  # each path on its own thread (a core each when CODEGEN_EVAL_THREADS=1)
            with ThreadPoolExecutor(max_workers=2) as pool:
                for future in [pool.submit(one_path, model, policy) for model, policy in policies.items()]:
                    future.result()
        else:  # problems alternate between the paths, so a prefix cut by --max-minutes stays paired
            for index, case in enumerate(cases, start=1):
                if not in_time():
                    break
                for model, policy in policies.items():
                    answer(model, policy, index, case)
    sandbox.close()
    # The problems both paths answered (all of them, unless --max-minutes cut the run short).
    rows = [{"id": case.id, "same": outcomes["local"][case.id]["code"] == outcomes[SERVED][case.id]["code"],
             **{model: outcomes[model][case.id] for model in outcomes}}
            for case in cases if all(case.id in outcomes[model] for model in outcomes)]
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    total = len(rows)
    wins = {model: sum(row[model]["passed"] for row in rows) for model in outcomes}
    differ = sum(not row["same"] for row in rows)
    reused = sum(row[model]["cached"] for model in outcomes for row in rows)
    strategies = {f"{model}: {row[model]['strategy']}" for model in outcomes for row in rows}
    wall = time.perf_counter() - start
    sampling = "llama.cpp defaults (repeat_penalty 1.1)" if args.server_defaults else "repeat_penalty 1.0 sent, as the local backend uses"
    publish([
        "",
        heading("HumanEval through the local and the OpenAI-compatible paths"),
        "",
        f"{machine()}; load average at the end {os.getloadavg()[0]:.1f}; llama_cpp.server with {threads} threads, "
        f"n_ctx 4096 (local backend: the same threads, n_ctx 8192); greedy (temperature 0, seed 0); server sampling: {sampling}.",
        ("Problems: all 164. " if total == 164 else f"Problems: the first {total} of 164 (a prefix: the machine was too busy for all 164). ")
        + f"Strategies: {', '.join(sorted(strategies))}. Wall {wall / 60:.1f} min{' (the paths at once)' if args.parallel else ''} "
        f"(generation: local {seconds['local'] / 60:.1f} min, server {seconds[SERVED] / 60:.1f} min; "
        f"{reused} of the {2 * total} answers came from the cache of an earlier, interrupted run).",
        "",
        "| path | pass@1 |",
        "| --- | --- |",
        f"| local backend (prefill + stop) | {wins['local']}/{total} = {wins['local'] / total:.1%} |",
        f"| OpenAI-compatible backend -> llama_cpp.server (fenced) | {wins[SERVED]}/{total} = {wins[SERVED] / total:.1%} |",
        "",
        f"Problems whose extracted code differs between the paths: **{differ}/{total}**. "
        "Reference (a minimal harness, same GGUF, prefill + stop, greedy, all 164): 92/164 = 56.1 %.",
        "",
        f"Reproduce: `CODEGEN_EVAL_THREADS={threads} .venv/bin/python bench/humaneval_paths.py{'' if total == 164 else f' --limit {total}'}"
        f"{' --parallel' if args.parallel else ''}`.",
    ])


if __name__ == "__main__":
    main()
