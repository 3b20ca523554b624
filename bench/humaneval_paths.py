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

    .venv/bin/python bench/humaneval_paths.py [--limit N] [--max-minutes M] [--cache-dir DIR] [--server-defaults]

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
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `kill` stops the server too
    if not args.server_defaults:
        os.environ[EXTRA_BODY_ENV] = json.dumps({"repeat_penalty": 1.0})
    cases = load_dataset(HUMANEVAL)[: args.limit]
    cache = CallCache(args.cache_dir)
    log = Path(args.log or Path(args.cache_dir) / "problems.jsonl")
    sandbox = Sandbox(slots=1)
    wins = {"local": 0, SERVED: 0}
    differ, done, reused, strategies, seconds = 0, 0, 0, set(), {"local": 0.0, SERVED: 0.0}
    # The same threads for both paths: CODEGEN_EVAL_THREADS (the local backend reads it too), else all cores.
    threads = int(os.environ.get("CODEGEN_EVAL_THREADS", 0)) or os.cpu_count() or 1
    start = time.perf_counter()
    with llama_server(threads=threads) as url, log.open("w") as sink:
        policy = {"local": CallPolicy(), SERVED: CallPolicy(base_url=url, timeout_s=900)}
        for index, case in enumerate(cases, start=1):
            if args.max_minutes and time.perf_counter() - start > args.max_minutes * 60:
                break
            outcome = {}
            for model in ("local", SERVED):
                t0 = time.perf_counter()
                generation = generate(case, model, cache, policy[model])
                seconds[model] += time.perf_counter() - t0
                ok = passed(case, generation, sandbox)
                wins[model] += ok
                reused += generation.cached
                strategies.add(f"{model}: {generation.strategy}")
                outcome[model] = {"passed": ok, "code": generation.code, "strategy": generation.strategy,
                                  "cached": generation.cached, "error": generation.error}
            same = outcome["local"]["code"] == outcome[SERVED]["code"]
            differ += not same
            done = index
            sink.write(json.dumps({"id": case.id, "same": same, **outcome}) + "\n")
            sink.flush()
            print(f"{index}/{len(cases)} {case.id}: local {outcome['local']['passed']}, server {outcome[SERVED]['passed']}, "
                  f"{'same' if same else 'differ'}", flush=True)
    sandbox.close()
    total = done
    wall = time.perf_counter() - start
    sampling = "llama.cpp defaults (repeat_penalty 1.1)" if args.server_defaults else "repeat_penalty 1.0 sent, as the local backend uses"
    publish([
        "",
        heading("HumanEval through the local and the OpenAI-compatible paths"),
        "",
        f"{machine()}; load average at the end {os.getloadavg()[0]:.1f}; llama_cpp.server with {threads} threads, "
        f"n_ctx 4096 (local backend: the same threads, n_ctx 8192); greedy (temperature 0, seed 0); server sampling: {sampling}.",
        f"Problems: the first {total} of 164{' (a prefix: the machine was too busy for all 164)' if total < 164 else ''}. "
        f"Strategies: {', '.join(sorted(strategies))}. Wall {wall / 60:.1f} min "
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
        f"Reproduce: `CODEGEN_EVAL_THREADS={threads} .venv/bin/python bench/humaneval_paths.py --limit {total}`.",
    ])


if __name__ == "__main__":
    main()
