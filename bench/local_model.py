"""Benchmark: generation speed of the local backend against raw llama_cpp.Llama, same process.

Both run the same rendered prompt (a seed case, prefilled fence, stop at the closing fence) with the
same settings, alternating, several rounds; prints median tokens/s of each and the ratio, and appends
the figures to bench/RESULTS.md with the machine and date. Target ratio: >= 0.95.

    .venv/bin/python bench/local_model.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import heading, machine, publish  # noqa: E402
from codegen_eval.dataset import load_dataset  # noqa: E402
from codegen_eval.generation import generation_request  # noqa: E402
from codegen_eval.models.backends.local import N_CTX, SAMPLING, LocalBackend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from llama_cpp import Llama

    backend = LocalBackend()
    request = generation_request(load_dataset(ROOT / "datasets" / "aws_codegen.jsonl")[0], "local")
    prompt = backend.render_prompt(request)  # loads the backend's model
    threads = backend._n_threads
    raw = Llama(model_path=str(backend._path), n_ctx=N_CTX, n_threads=threads, seed=SAMPLING["seed"], verbose=False)

    def run_backend() -> tuple[int, float]:
        start = time.perf_counter()
        response = backend.complete(request)
        return response.usage.output_tokens, time.perf_counter() - start

    def run_raw() -> tuple[int, float]:
        start = time.perf_counter()
        out = raw.create_completion(
            prompt, max_tokens=request.max_tokens, stop=list(request.stop_sequences),
            temperature=SAMPLING["temperature"], repeat_penalty=SAMPLING["repeat_penalty"], seed=SAMPLING["seed"],
        )
        return out["usage"]["completion_tokens"], time.perf_counter() - start

    run_backend(), run_raw()  # warm-up: first calls pay for allocations
    rates: dict[str, list[float]] = {"backend": [], "raw": []}
    tokens = 0
    for _ in range(args.rounds):
        for name, fn in (("backend", run_backend), ("raw", run_raw)):
            tokens, seconds = fn()
            rates[name].append(tokens / seconds)
    backend_rate, raw_rate = statistics.median(rates["backend"]), statistics.median(rates["raw"])
    ratio = backend_rate / raw_rate
    publish([
        heading("Local model generation speed"),
        "",
        f"{machine()}; llama.cpp threads {threads}; {tokens} output tokens per call (prompt + prefill + stop), {args.rounds} rounds, medians.",
        "",
        "| path | tokens/s (median) | all rounds |",
        "| --- | --- | --- |",
        f"| codegen-eval LocalBackend.complete | {backend_rate:.1f} | {', '.join(f'{r:.1f}' for r in rates['backend'])} |",
        f"| raw llama_cpp.Llama.create_completion | {raw_rate:.1f} | {', '.join(f'{r:.1f}' for r in rates['raw'])} |",
        "",
        f"Ratio backend / raw: **{ratio:.3f}** (target >= 0.95).",
        "",
    ])


if __name__ == "__main__":
    main()
