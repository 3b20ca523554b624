"""Before any model call: does the sandbox grade right here?

A project installed where the sandbox's unprivileged uid cannot read its own libraries (a venv in a
home of mode 700, say) would fail every AWS case, references included, and the report would look
normal. So a run first asks the sandbox's uid to read the files grading needs, and grades three
built-in snippets whose verdicts are known; any surprise stops the run with one line saying what.
"""

from __future__ import annotations

import os
from pathlib import Path

from codegen_eval.grading.sandbox import Sandbox
from codegen_eval.models.cache import CacheError, CallCache

_GOOD_AWS = """import boto3

def make_bucket(name):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    return sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
"""
_BAD_AWS = """def make_bucket(name):
    return [name]
"""
_AWS_CHECK = """def check(candidate):
    import boto3
    assert candidate("self-test-bucket") == ["self-test-bucket"]
    boto3.client("s3", region_name="us-east-1").head_bucket(Bucket="self-test-bucket")
"""
_PLAIN = ("def add(a, b):\n    return a + b\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n")


def _needed_paths() -> list[str]:
    """Files grading reads lazily inside the sandbox: botocore's and boto3's data, moto, this package, the
    stdlib. Found without importing them (boto3 and moto cost ~1 s to import)."""
    from importlib.util import find_spec

    def package(name: str) -> Path:
        spec = find_spec(name)
        return Path(spec.origin).parent if spec and spec.origin else Path(name)

    return [
        str(package("botocore") / "data" / "endpoints.json"),
        str(package("boto3") / "data"),
        str(package("moto") / "s3"),
        str(Path(__file__).parent),
        os.path.dirname(os.__file__),
    ]


def self_test(sandbox: Sandbox) -> list[str]:
    """What would make grading wrong here, one line each; [] when the sandbox grades as it should."""
    probe = sandbox.run({"kind": "probe", "paths": _needed_paths()})
    if probe.status != "PASS":
        return [f"the sandbox could not start a job: {probe.status} {probe.message}"]
    uid = probe.details.get("uid")
    problems = [f"the sandbox's uid {uid} cannot read {entry}" for entry in probe.details.get("unreadable", [])]
    snippets = [
        ("a known-good AWS snippet", _GOOD_AWS, _AWS_CHECK, "make_bucket", True, "PASS"),
        ("a known-bad AWS snippet", _BAD_AWS, _AWS_CHECK, "make_bucket", True, "TEST_FAIL"),
        ("a known-good plain snippet", _PLAIN[0], _PLAIN[1], "add", False, "PASS"),
    ]
    for name, code, check, entry_point, aws, wanted in snippets:
        result = sandbox.run({"kind": "python", "code": code, "entry_point": entry_point, "check": check, "aws": aws})
        if result.status != wanted:
            problems.append(f"{name} was graded {result.status}, not {wanted} (uid {uid}): {result.message[:300]}")
    return problems


class SandboxBroken(RuntimeError):
    """The sandbox would grade wrongly here; the message says why, on one line."""


_passed: set[int] = set()  # sandboxes (by id) that passed in this process: the test runs once per pool


def installation_key() -> str:
    """What the self-test's outcome depends on: the checker, the interpreter and where its libraries
    live, who runs it, and what the sandbox's file system is made of. A pass is remembered under
    it, so a cached re-run does not warm boto3 and moto only to grade the snippets again."""
    import hashlib
    import json
    import sys

    from codegen_eval.grading.fingerprint import checker_fingerprint
    from codegen_eval.grading.jail import root_sources

    import socket

    # the host too: a cache shared by a team's machines (PostgreSQL) must not spare another host its own self-test
    basis = [checker_fingerprint(), socket.gethostname(), sys.executable, sys.prefix, sys.path, os.geteuid(),
             root_sources(str(Path(__file__).parent.parent))]
    return "selftest:" + hashlib.sha256(json.dumps(basis, default=str).encode()).hexdigest()


def ensure_sandbox_works(sandbox: Sandbox, cache: CallCache | None = None) -> None:
    """Raise SandboxBroken unless the sandbox grades right here; a pass is remembered in `cache`."""
    key = installation_key() if cache is not None else ""
    if id(sandbox) in _passed or (cache is not None and cache.get_note(key)):
        return
    problems = self_test(sandbox)
    if problems:  # a failure is never remembered: the next run tests again
        raise SandboxBroken("sandbox self-test failed, nothing was graded: " + "; ".join(problems))
    _passed.add(id(sandbox))
    if cache is not None:
        try:
            cache.set_note(key, "passed")
        except CacheError:
            pass
