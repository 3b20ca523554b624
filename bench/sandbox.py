"""Benchmark: per-case cost of the sandbox (a warm zygote forks the job; a python job is two processes,
the trusted check and the candidate, with moto served in the job's own network namespace) against a
fresh interpreter running candidate and check in one process under mock_aws.

Runs the same checks N times each, one at a time, on one slot, and prints medians; then an honest
CPU-bound job's median alone and beside a neighbour slot whose candidate forks 64 spinning `setsid()`
children (the starvation of issue 27). Appends them to bench/RESULTS.md with the machine and date.
`--other DIR` also runs the same rows with the sandbox of another checkout (e.g. the code before a
change, from `git worktree add` or `git archive`), in the same run, alternating, so the two columns
share the machine's load.

    .venv/bin/python bench/sandbox.py [--n 30] [--other DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import heading, load, machine, publish  # noqa: E402
from codegen_eval.dataset import load_dataset  # noqa: E402

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


# Runs in a fresh interpreter whose current directory and import path are one checkout, so one
# bench run can measure two checkouts' sandboxes (`--other`) on the same machine at the same time.
WORKER = """
import json, statistics, sys, threading, time
from codegen_eval.grading.sandbox import Limits, Sandbox
spec = json.loads(sys.stdin.read())
jobs, n, out = spec["jobs"], spec["n"], {}
def timed(box, job):
    start = time.perf_counter()
    result = box.run(job)
    assert result.status == "PASS", result
    return (time.perf_counter() - start) * 1000
box = Sandbox(slots=1)
box.run(jobs["plain"]); box.run(jobs["aws"])  # start the zygotes, and warm the AWS stack, outside the measurement
out["sandbox, moto case"], out["sandbox, plain case"] = [], []
for _ in range(n):
    out["sandbox, moto case"].append(timed(box, jobs["aws"]))
    out["sandbox, plain case"].append(timed(box, jobs["plain"]))
box.close()
box = Sandbox(slots=2, limits=Limits(wall_s=4, cpu_s=4))
timed(box, jobs["honest"]); timed(box, jobs["honest"])
out["honest CPU job, alone (2 slots)"] = [timed(box, jobs["honest"]) for _ in range(n // 2)]
stop = threading.Event()
def bomb():
    while not stop.is_set():
        box.run(jobs["bomb"])
neighbour = threading.Thread(target=bomb)
neighbour.start()
time.sleep(1.0)
out["honest CPU job, beside a fork bomb"] = [timed(box, jobs["honest"]) for _ in range(n // 2)]
stop.set(); neighbour.join(); box.close()
print(json.dumps(out))
"""
HONEST = {"kind": "python", "code": "def f():\n    return sum(i * i for i in range(300_000))\n", "entry_point": "f",
          "check": "def check(candidate):\n    assert candidate() > 0\n", "aws": False}
BOMB = {"kind": "python", "entry_point": "f", "aws": False, "check": "def check(candidate):\n    candidate()\n",
        "code": ("import os\n\ndef f():\n    for _ in range(64):\n        try:\n            if os.fork() == 0:\n"
                 "                os.setsid()\n                while True:\n                    pass\n"
                 "        except OSError:\n            break\n    while True:\n        pass\n")}


def measure(checkout: Path, jobs: dict[str, dict[str, Any]], n: int) -> dict[str, list[float]]:
    done = subprocess.run([sys.executable, "-c", WORKER], input=json.dumps({"jobs": jobs, "n": n}), text=True,
                          capture_output=True, cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)})
    if done.returncode:
        raise SystemExit(f"the sandbox of {checkout} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--other", type=Path, help="another checkout to measure beside this one (e.g. the code before a change)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations between the checkouts")
    args = parser.parse_args()
    case = next(c for c in load_dataset(ROOT / "datasets" / "aws_codegen.jsonl") if c.tests and c.tests.get("entry_point") == "list_s3_buckets")
    aws_job = {"kind": "python", "code": case.expected, **case.tests}
    plain_job = {"kind": "python", "code": "def add(a, b):\n    return a + b\n", "entry_point": "add",
                 "check": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "aws": False}
    jobs = {"aws": aws_job, "plain": plain_job, "honest": HONEST, "bomb": BOMB}
    checkouts = {"this checkout": ROOT, **({f"other ({args.other})": args.other.resolve()} if args.other else {})}
    timings: dict[str, dict[str, list[float]]] = {name: {} for name in checkouts}
    rounds = args.rounds if args.other else 1
    for _ in range(rounds):
        for name, checkout in checkouts.items():
            for row, values in measure(checkout, jobs, max(2, args.n // rounds)).items():
                timings[name].setdefault(row, []).extend(values)
    fresh = []
    for _ in range(max(5, args.n // 3)):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", FRESH], input=json.dumps(aws_job), text=True, check=True, capture_output=True)
        fresh.append((time.perf_counter() - start) * 1000)
    rows = list(timings["this checkout"])
    med = {name: {row: statistics.median(v) for row, v in rows_.items()} for name, rows_ in timings.items()}
    ratio = statistics.median(fresh) / med["this checkout"]["sandbox, moto case"]
    publish([
        heading("Sandbox per-case overhead"),
        "",
        f"{machine()}; load {load()}; jobs one at a time on one slot (the fork-bomb rows: two slots); "
        f"{args.n} runs per sandbox row{f', in {rounds} alternating rounds per checkout' if args.other else ''}. "
        "The moto case is `s3-list-buckets` (reference solution and its check). Medians, ms (min-max).",
        "",
        "| path | " + " | ".join(checkouts) + " |",
        "| --- |" + " --- |" * len(checkouts),
        *(f"| {row} | " + " | ".join(f"{med[n][row]:.1f} ({min(timings[n][row]):.0f}-{max(timings[n][row]):.0f})" for n in checkouts) + " |" for row in rows),
        f"| fresh interpreter, moto case | {statistics.median(fresh):.1f} ({min(fresh):.0f}-{max(fresh):.0f}) |" + " |" * (len(checkouts) - 1),
        "",
        f"A fresh interpreter per case costs {ratio:.1f}x the warm-zygote fork for the moto case.",
        "",
    ])


if __name__ == "__main__":
    main()
