"""Benchmark: per-case cost of the sandbox (a warm zygote forks the job; a python job is two processes,
the trusted check and the candidate, with moto served in the job's own network namespace) against a
fresh interpreter running candidate and check in one process under mock_aws.

Runs the same checks N times each, one at a time, on one slot, and prints medians; appends them to
bench/RESULTS.md with the machine and date.

    .venv/bin/python bench/sandbox.py [--n 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import heading, machine, publish  # noqa: E402
from codegen_eval.dataset import load_dataset  # noqa: E402
from codegen_eval.grading.sandbox import Sandbox  # noqa: E402

FRESH = """
import os, sys, json
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
from moto import mock_aws
job = json.loads(sys.stdin.read())
with mock_aws():
    ns = {}
    exec(job["code"], ns)
    exec(job["check"], ns)
    ns["check"](ns[job["entry_point"]])
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    case = next(c for c in load_dataset(ROOT / "datasets" / "aws_codegen.jsonl") if c.tests and c.tests.get("entry_point") == "list_s3_buckets")
    aws_job = {"kind": "python", "code": case.expected, **case.tests}
    plain_job = {"kind": "python", "code": "def add(a, b):\n    return a + b\n", "entry_point": "add",
                 "check": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "aws": False}
    box = Sandbox(slots=1)
    box.run(plain_job)  # start the zygote, and warm its AWS stack, outside the measurement
    box.run(aws_job)
    timings: dict[str, list[float]] = {"sandbox, moto case": [], "sandbox, plain case": [], "fresh interpreter, moto case": []}
    for _ in range(args.n):
        for name, job in (("sandbox, moto case", aws_job), ("sandbox, plain case", plain_job)):
            start = time.perf_counter()
            assert box.run(job).status == "PASS"
            timings[name].append((time.perf_counter() - start) * 1000)
    for _ in range(max(5, args.n // 3)):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", FRESH], input=json.dumps(aws_job), text=True, check=True, capture_output=True)
        timings["fresh interpreter, moto case"].append((time.perf_counter() - start) * 1000)
    box.close()
    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratio = medians["fresh interpreter, moto case"] / medians["sandbox, moto case"]
    publish([
        heading("Sandbox per-case overhead"),
        "",
        f"{machine()}; one slot, jobs one at a time; "
        f"{args.n} runs per sandbox row. The moto case is `s3-list-buckets` (reference solution and its check).",
        "",
        "| path | median ms | min | max |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {medians[name]:.1f} | {min(v):.1f} | {max(v):.1f} |" for name, v in timings.items()),
        "",
        f"A fresh interpreter per case costs {ratio:.1f}x the warm-zygote fork for the moto case.",
        "",
    ])


if __name__ == "__main__":
    main()
