"""Benchmark: what recording the candidate's AWS requests costs an AWS case.

The endpoint does two things per request that it did not do before the record existed: it finds the
uid owning the client's socket (one sock_diag lookup) and, for the candidate's requests,
decodes the request with botocore's models. This script grades a paging case through the real sandbox
(median job time) and, in the same run, times those two steps on the very requests the job sends
(decode replayed in this process from botocore's own serialization; the socket table read here, in the
a network namespace of its own with a job's worth of loopback connections). Prints the share of the job.

    .venv/bin/python bench/aws_record.py [--n 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import heading, load, machine, publish  # noqa: E402
from codegen_eval.dataset import Case  # noqa: E402
from codegen_eval.grading import aws_answers, aws_wire  # noqa: E402
from codegen_eval.grading.checks import run_checks  # noqa: E402
from codegen_eval.grading.sandbox import Sandbox  # noqa: E402
from tests.test_aws_record import PAGER, PAGING_CHECK  # noqa: E402

# The job's requests: the check's 11 (not decoded) and the candidate's 3 ListObjectsV2 pages (decoded).
CHECK_REQUESTS = 11
CANDIDATE_REQUESTS = [("ListObjectsV2", {"Bucket": "bkt"}), ("ListObjectsV2", {"Bucket": "bkt", "ContinuationToken": "x" * 40}),
                      ("ListObjectsV2", {"Bucket": "bkt", "ContinuationToken": "y" * 40})]


def as_received(operation: str, params: dict) -> aws_wire.Request:
    sent = aws_answers.serialize("s3", operation, params)
    path, _, query = sent["url_path"].partition("?")
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    headers["authorization"] = "AWS4-HMAC-SHA256 Credential=testing/20261204/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
    return aws_wire.Request(sent["method"], path, "&".join(q for q in (query, sent["query_string"]) if q), headers, sent["body"])


# Timed in a network namespace of its own holding a job's worth of loopback connections, as the endpoint's is.
OWNER = """
import socket, statistics, time, fcntl, struct
from codegen_eval.grading.aws_endpoint import socket_owner
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, struct.pack("16sh22x", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 1))
server = socket.create_server(("127.0.0.1", 0))
clients = [socket.create_connection(server.getsockname()) for _ in range(16)]
port = clients[-1].getsockname()[1]
samples = []
for _ in range(5):
    start = time.perf_counter()
    for _ in range(500):
        assert socket_owner(port, server.getsockname()[1]) == 0
    samples.append((time.perf_counter() - start) * 1000 / 500)
print(statistics.median(samples))
"""


def per_call_ms(fn, repeats: int = 2000) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        samples.append((time.perf_counter() - start) * 1000 / repeats)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    case = Case(id="paging", task="t", format="python", expected=PAGER, solution_criteria="c", difficulty="easy",
                tests={"entry_point": "keys", "check": PAGING_CHECK})
    box = Sandbox(slots=1)
    run_checks(case, PAGER, box)  # start and warm the zygote outside the measurement
    jobs = []
    for _ in range(args.n):
        start = time.perf_counter()
        assert run_checks(case, PAGER, box)[-1].status == "OK"
        jobs.append((time.perf_counter() - start) * 1000)
    box.close()
    requests = [as_received(op, params) for op, params in CANDIDATE_REQUESTS]
    decode_ms = statistics.mean(per_call_ms(lambda r=r: aws_wire.decode("s3", r)) for r in requests)

    owner_ms = float(subprocess.run(["unshare", "-n", sys.executable, "-c", OWNER], capture_output=True, text=True, check=True,
                                    cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout)
    job_ms = statistics.median(jobs)
    recording_ms = len(requests) * decode_ms + (len(requests) + CHECK_REQUESTS) * owner_ms
    publish([
        heading("Recording the candidate's AWS requests"),
        "",
        f"{machine()}; load {load()}; {args.n} jobs of a paging case (tests/test_aws_record.py: 11 requests by the check, "
        "3 ListObjectsV2 pages by the candidate) on one slot.",
        "",
        "| what | ms |",
        "| --- | --- |",
        f"| sandbox job, median (min {min(jobs):.1f}, max {max(jobs):.1f}) | {job_ms:.1f} |",
        f"| decode one request with botocore's model | {decode_ms:.3f} |",
        f"| find the client's uid (sock_diag, 16 connections) | {owner_ms:.3f} |",
        f"| recording per job ({len(requests)} decodes, {len(requests) + CHECK_REQUESTS} uid look-ups) | {recording_ms:.2f} |",
        "",
        f"Recording is {100 * recording_ms / job_ms:.1f} % of the job's time (target: at most 5 %).",
        "",
    ])


if __name__ == "__main__":
    main()
