"""Hostile candidates are contained, recorded as a status, and the run goes on."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from codegen_eval.grading.sandbox import Limits, Sandbox

CALL = "def check(candidate):\n    candidate()\n"


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(slots=2, limits=Limits(wall_s=4, cpu_s=4))
    yield box
    box.close()


def run(sandbox, body: str, **extra):
    code = "import os, socket, signal\n\ndef f():\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return sandbox.run({"kind": "python", "code": code, "entry_point": "f", "check": CALL, "aws": False, **extra})


def slot_processes(sandbox) -> int:
    """Processes left with the uids of this sandbox's slots (other runs on the host have slots of their own)."""
    ours = {uid for z in sandbox._all for uid in (z.who.candidate, z.who.check, z.who.endpoint)}
    out = subprocess.run(["ps", "-eo", "uid="], capture_output=True, text=True).stdout.split()
    return sum(1 for uid in out if int(uid) in ours)


def test_infinite_loop_times_out(sandbox):
    started = time.monotonic()
    result = run(sandbox, "while True:\n    pass")
    assert result.status == "TIMEOUT" and time.monotonic() - started < 8


def test_fork_bomb_is_contained_and_cleaned_up(sandbox):
    result = run(sandbox, "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    assert result.status == "TIMEOUT"
    assert slot_processes(sandbox) == 0  # every process of the slot's uid was killed, escaped ones too


def test_escaped_background_process_is_killed(sandbox):
    result = run(sandbox, "if os.fork() == 0:\n    os.setsid()\n    while True:\n        pass")
    assert result.status == "PASS"
    assert slot_processes(sandbox) == 0


def test_memory_bomb_is_a_test_failure(sandbox):
    result = run(sandbox, "x = bytearray(4 << 30)")
    assert result.status == "TEST_FAIL" and "MemoryError" in result.message


@pytest.mark.parametrize("address", [("1.1.1.1", 80), ("127.0.0.1", 22)])
def test_no_network_not_even_loopback(sandbox, address):
    result = run(sandbox, f"socket.create_connection({address!r}, timeout=2)")
    assert result.status == "TEST_FAIL" and "Network is unreachable" in result.message


def test_secrets_are_not_in_the_environment(sandbox, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-should-not-leak")
    box = Sandbox(slots=1)  # zygotes started now, with the key in this process's environment
    try:
        result = run(box, "print(sorted(os.environ))\nassert 'ANTHROPIC_API_KEY' not in os.environ\nassert not any('sk-should' in v for v in os.environ.values())")
    finally:
        box.close()
    assert result.status == "PASS" and "ANTHROPIC" not in result.output and "PATH" in result.output


def test_aws_jobs_get_fake_credentials_only(sandbox):
    # moto's mock_aws() swaps in its own fake keys; either way no real credential is there.
    result = run(sandbox, "assert os.environ['AWS_ACCESS_KEY_ID'] in ('testing', 'FOOBARKEY')", aws=True)
    assert result.status == "PASS"


def test_the_candidate_cannot_reach_motos_control_plane(sandbox):
    # /moto-api/reset would wipe what the check set up; other /moto-api routes seed state or canned results.
    code = ("import os, urllib.error, urllib.request\n\ndef f(path):\n"
            "    try:\n"
            "        urllib.request.urlopen(urllib.request.Request(os.environ['AWS_ENDPOINT_URL'] + path, method='POST'), timeout=5)\n"
            "    except urllib.error.HTTPError as exc:\n"
            "        return exc.code\n"
            "    return 200\n")
    check = ("import boto3\n\ndef check(candidate):\n"
             "    s3 = boto3.client('s3')\n"
             "    s3.create_bucket(Bucket='kept')\n"
             "    assert candidate('/moto-api/reset') == 403\n"
             "    assert candidate('/moto-api/data.json') == 403\n"
             "    assert [b['Name'] for b in s3.list_buckets()['Buckets']] == ['kept']\n")
    result = sandbox.run({"kind": "python", "code": code, "entry_point": "f", "check": check, "aws": True})
    assert result.status == "PASS", result


@pytest.mark.parametrize("target", [Path(__file__).resolve().parent / "pwned.txt", Path("/tmp/codegen-eval-pwned.txt"), Path("/dev/shm/pwned")])
def test_writes_outside_the_temp_dir_are_refused(sandbox, target):
    result = run(sandbox, f"open({str(target)!r}, 'w').write('x')")
    assert result.status == "TEST_FAIL" and not target.exists()
    assert any(why in result.message for why in ("Permission denied", "Read-only file system", "No such file or directory"))


def test_the_working_directory_is_writable_and_private(sandbox):
    result = run(sandbox, "open('scratch.txt', 'w').write('x')\nprint(os.getcwd())")
    assert result.status == "PASS"
    workdir = result.output.strip()
    assert not os.path.exists(workdir)  # removed after the job


def test_cannot_kill_the_parent_or_init(sandbox):
    for target in ("os.getppid()", "1"):
        result = run(sandbox, f"os.kill({target}, signal.SIGKILL)")
        assert result.status == "TEST_FAIL" and "Operation not permitted" in result.message
    assert run(sandbox, "pass").status == "PASS"  # the sandbox still works


def test_a_failing_check_names_the_assertion(sandbox):
    job = {"kind": "python", "code": "def add(a, b):\n    return a - b\n", "entry_point": "add",
           "check": "def check(candidate):\n    assert candidate(1, 1) == 0\n    assert candidate(2, 3) == 5\n", "aws": False}
    result = sandbox.run(job)
    assert result.status == "TEST_FAIL" and "check line 3: assert candidate(2, 3) == 5" in result.message


def test_isolation_is_complete_here(sandbox):
    # This machine runs the tests as root with namespaces available: nothing may be missing.
    assert os.geteuid() == 0
    assert run(sandbox, "pass").isolation == []


def test_stdlib_imports_work_and_aws_is_warmed_only_when_needed():
    """Children run as an unprivileged uid that may not read the interpreter's files, so the zygote
    imports the standard library a candidate may use; boto3 and moto (~75 MB) only for AWS jobs, in a
    zygote of their own: a plain job after an AWS one still forks from a lean process."""
    box = Sandbox(slots=1)
    check = "def check(candidate):\n    assert candidate() == {expected}\n"
    try:
        stdlib = "def f():\n    import math, hashlib, itertools, collections, random, decimal, datetime, statistics, string\n    return 'ok'\n"
        assert box.run({"kind": "python", "code": stdlib, "entry_point": "f", "check": check.format(expected="'ok'"), "aws": False}).status == "PASS"
        loaded = "import sys\n\ndef f():\n    return 'boto3' in sys.modules\n"
        assert box.run({"kind": "python", "code": loaded, "entry_point": "f", "check": check.format(expected=False), "aws": False}).status == "PASS"
        assert box.run({"kind": "python", "code": loaded, "entry_point": "f", "check": check.format(expected=True), "aws": True}).status == "PASS"
        assert box.run({"kind": "python", "code": loaded, "entry_point": "f", "check": check.format(expected=False), "aws": False}).status == "PASS"
    finally:
        box.close()
