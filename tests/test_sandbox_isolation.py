"""What a candidate can see and keep: graded through the real sandbox, as a hostile model's code would be.

Each test is a route that worked before (issue 27): other processes' command lines, the dataset on
disk, System V memory left for the next job, a full capability bounding set, code of earlier jobs and
the check in the forked heap, uids shared between runs, zygotes outliving their run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codegen_eval.grading import uids, zygote
from codegen_eval.grading.sandbox import Limits, Sandbox

ROOT = Path(__file__).resolve().parent.parent
SHM_KEY = 0x5EED27


def returns(expected_name: str = "RESULT") -> str:
    """A check that hands back what the candidate returned, as the failure message (json)."""
    return f"import json\n\ndef check(candidate):\n    raise AssertionError('{expected_name}=' + json.dumps(candidate()))\n"


def answer(sandbox: Sandbox, code: str, **extra: object) -> object:
    result = sandbox.run({"kind": "python", "code": code, "entry_point": "f", "check": returns(), "aws": False, **extra})  # type: ignore[dict-item]
    assert "RESULT=" in result.message, result
    return json.loads(result.message.split("RESULT=", 1)[1].rsplit(" at check line", 1)[0])


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(slots=1, limits=Limits(wall_s=8, cpu_s=8))
    yield box
    box.close()


def test_the_candidate_sees_only_its_own_processes(sandbox):
    host = {n: os.readlink(f"/proc/self/ns/{n}") for n in ("pid", "ipc", "uts", "net", "mnt")}
    code = ("import os\n\ndef f(host):\n    lines = []\n    for pid in os.listdir('/proc'):\n        if pid.isdigit():\n"
            "            try:\n                lines.append(open(f'/proc/{pid}/cmdline', 'rb').read().decode(errors='replace'))\n"
            "            except OSError:\n                pass\n"
            "    leaks = [l[:80] for l in lines if 'pytest' in l or 'datasets' in l or 'tests/' in l]\n"
            "    return {'processes': len(lines), 'leaks': leaks, 'shared': [n for n, link in host.items() if os.readlink(f'/proc/self/ns/{n}') == link]}\n")
    seen = answer(sandbox, code, check=returns().replace("candidate()", f"candidate({host!r})"))
    assert seen == {"processes": 2, "leaks": [], "shared": []}  # the check (pid 1) and the candidate


def test_system_v_memory_does_not_outlive_a_job(sandbox):
    code = ("import ctypes\n\ndef f(create):\n    libc = ctypes.CDLL(None)\n"
            f"    return libc.shmget({SHM_KEY}, 1 << 20, 0o1600 if create else 0)\n")
    job = {"kind": "python", "code": code, "entry_point": "f", "aws": False,
           "check": "def check(candidate):\n    assert candidate(True) >= 0\n"}
    try:
        assert sandbox.run(job).status == "PASS"
        job["check"] = "def check(candidate):\n    assert candidate(False) == -1, 'the segment is still there'\n"
        assert sandbox.run(job).status == "PASS"
    finally:
        subprocess.run(["ipcrm", "-M", str(SHM_KEY)], capture_output=True)  # what the old sandbox left on the host


def test_no_privileges_can_come_back(sandbox):
    code = ("def f():\n    status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
            "    return {k: status[k].strip() for k in ('NoNewPrivs', 'CapBnd', 'CapEff', 'CapPrm', 'CapAmb')}\n")
    zero = "0000000000000000"
    assert answer(sandbox, code) == {"NoNewPrivs": "1", "CapBnd": zero, "CapEff": zero, "CapPrm": zero, "CapAmb": zero}


def test_the_project_dataset_home_and_shared_writable_places_are_out_of_reach(sandbox):
    dataset = ROOT / "datasets" / "aws_codegen.jsonl"
    assert dataset.exists()
    code = ("import os, stat\n\ndef f(paths):\n"
            "    readable = []\n    for p in paths:\n        try:\n            open(p, 'rb').read(1)\n            readable.append(p)\n"
            "        except OSError:\n            pass\n"
            "    read_only = {line.split()[4] for line in open('/proc/self/mountinfo') if line.split()[5].startswith('ro')}\n"
            "    writable = []\n"
            "    for top, dirs, _ in os.walk('/'):\n"  # every directory outside read-only mounts
            "        dirs[:] = [d for d in dirs if os.path.join(top, d) not in read_only | {'/proc'}]\n"
            "        if os.access(top, os.W_OK) and top != os.getcwd():\n            writable.append(top)\n"
            "    homes = [p for p in ('/root', '/home') if os.path.isdir(p) and set(os.listdir(p)) - {'.pyenv'}]\n"
            "    writable = [w[:60] for w in writable][:3]\n"
            "    return {'readable': readable, 'writable': writable, 'homes': homes}\n")
    check = (f"import json\n\ndef check(candidate):\n    raise AssertionError('RESULT=' + json.dumps(candidate({[str(dataset), str(ROOT / 'README.md'), '/etc/shadow']!r})))\n")
    result = sandbox.run({"kind": "python", "code": code, "entry_point": "f", "check": check, "aws": False})
    seen = json.loads(result.message.split("RESULT=", 1)[1].rsplit(" at check line", 1)[0])
    assert seen == {"readable": [], "writable": [], "homes": []}


MARKER_EARLIER, MARKER_CHECK = "EARLIER-JOB-" + "c0ffee17", "THE-CHECK-" + "c0ffee42"
SCAN_OWN_MEMORY = """import ctypes

def f():
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: its own /proc/self/mem is then readable
    wanted = [(b"EARLIER-JOB-", b"c0ffee17"), (b"THE-CHECK-", b"c0ffee42")]  # never whole in this process
    found, scanned = set(), 0
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps.read().splitlines():
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if "r" not in perms or line.endswith("[vvar]") or line.endswith("[vsyscall]"):
                continue
            for offset in range(start, end, 1 << 22):
                try:
                    mem.seek(offset)
                    data = mem.read(min((1 << 22) + 64, end - offset))
                except (OSError, ValueError, OverflowError):
                    break
                scanned += len(data)
                for head, tail in wanted:
                    i = data.find(head)
                    while i >= 0:
                        if data[i + len(head):i + len(head) + len(tail)] == tail:
                            found.add(head.decode())
                        i = data.find(head, i + 1)
    return {"found": sorted(found), "scanned": scanned}
"""


def test_a_candidates_heap_holds_neither_an_earlier_jobs_code_nor_the_check(sandbox):
    earlier = f"SECRET = {MARKER_EARLIER!r}\n\ndef f():\n    return SECRET\n"
    assert sandbox.run({"kind": "python", "code": earlier, "entry_point": "f", "aws": False,
                        "check": "def check(candidate):\n    assert candidate()\n"}).status == "PASS"
    check = f"import json\n# {MARKER_CHECK}\n\ndef check(candidate):\n    raise AssertionError('RESULT=' + json.dumps(candidate()))\n"
    result = sandbox.run({"kind": "python", "code": SCAN_OWN_MEMORY, "entry_point": "f", "check": check, "aws": False})
    seen = json.loads(result.message.split("RESULT=", 1)[1].rsplit(" at check line", 1)[0])
    assert seen["scanned"] > 10 << 20  # it did read its heap
    assert seen["found"] == []


def test_two_sandboxes_never_share_a_uid():
    first, second = Sandbox(slots=1), Sandbox(slots=1)
    try:
        code = "import os\n\ndef f():\n    return os.getuid()\n"
        assert answer(first, code) != answer(second, code)
    finally:
        first.close()
        second.close()


def test_uid_slots_avoid_delegated_ranges_and_are_leased_once():
    bases = uids.slot_bases(8, [(200_004, 200_012)])
    assert bases[0] == 200_000 and not [b for b in bases if 200_004 <= b + 3 and b < 200_012]
    (one, lock_one), (two, lock_two) = uids.lease(), uids.lease()
    try:
        assert {one.candidate, one.check, one.endpoint}.isdisjoint({two.candidate, two.check, two.endpoint})
    finally:
        os.close(lock_one)
        os.close(lock_two)


def test_a_real_time_signal_is_named():
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGRTMIN + 3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert zygote.describe_exit(status) == "killed by SIGRTMIN+3"


ORPHAN = """
import sys, threading
from codegen_eval.grading.sandbox import Limits, Sandbox
box = Sandbox(slots=1, limits=Limits(wall_s=60, cpu_s=60))
box.run({"kind": "python", "code": "def f():\\n    return 1\\n", "entry_point": "f", "check": "def check(c):\\n    c()\\n", "aws": False})
print(box._all[0].process.pid, flush=True)
box.run({"kind": "python", "code": "import time\\ndef f():\\n    time.sleep(60)\\n", "entry_point": "f", "check": "def check(c):\\n    c()\\n", "aws": False})
"""


def test_zygotes_and_their_jobs_die_with_the_run(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout
    zygote_pid = int(parent.stdout.readline())
    time.sleep(1.5)  # the sleeping job is running
    descendants = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children = {int(p) for p, pp in zip(descendants[::2], descendants[1::2]) if int(pp) == zygote_pid}
    assert children
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in (zygote_pid, *children)):
        time.sleep(0.1)
    assert not [p for p in (zygote_pid, *children) if os.path.exists(f"/proc/{p}")]


def test_a_job_cannot_leave_its_slots_cpu_share(sandbox):
    """A fork bomb of setsid() children competes as one slot (issue 27: it slowed every other job ~5x):
    every process of the job is in the slot's cgroup, where the host lets us make one (as here)."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    offered = os.access("/sys/fs/cgroup/cpu", os.W_OK) or (v2.exists() and "cpu" in v2.read_text().split())
    code = ("import os\n\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n        os._exit(0 if 'codegen-eval-' in open('/proc/self/cgroup').read() else 1)\n"
            "    return os.waitstatus_to_exitcode(os.wait()[1])\n")
    assert answer(sandbox, code) == (0 if offered else 1)
    assert offered  # this machine (root, writable cgroup v1 cpu and pids) must give the share


def test_a_job_is_held_to_its_slots_share_of_memory(sandbox):
    """rlimits bound each process (1 GiB), not the 32 a candidate may run: the slot's memory cgroup bounds
    them together (a red team held 8 x 400 MB from one candidate)."""
    from codegen_eval.grading.cgroups import V1_MEMORY, slot_memory_bytes

    code = "def f():\n    return [line.split(':', 2)[2].strip() for line in open('/proc/self/cgroup') if line.split(':')[1] == 'memory']\n"
    (path,) = answer(sandbox, code)
    assert "codegen-eval-" in path
    assert int(Path(f"{V1_MEMORY}{path}/memory.limit_in_bytes").read_text()) == slot_memory_bytes()


KEYRING = """import ctypes
def f(mode):
    libc = ctypes.CDLL(None, use_errno=True)
    if mode == "add":  # add_key("user", "note", "secret", 6, @u)
        return libc.syscall(248, b"user", b"codegen-eval-note", b"secret", 6, -4) > 0
    return libc.syscall(250, 10, -4, b"user", b"codegen-eval-note", 0) > 0  # keyctl(KEYCTL_SEARCH, @u, ...)
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the syscall numbers written here are x86_64's")
def test_a_key_left_in_the_uids_keyring_is_gone_for_the_next_job(sandbox):
    """Kernel keyrings belong to the uid and outlive its processes: one job's note must not reach the next."""
    check = "def check(candidate):\n    raise AssertionError('RESULT=' + str(candidate({mode!r})).lower())\n"
    found = []
    for mode in ("add", "search"):
        result = sandbox.run({"kind": "python", "code": KEYRING, "entry_point": "f", "check": check.format(mode=mode), "aws": False})
        found.append(result.message.split("RESULT=", 1)[1].split(" ")[0])
    assert found == ["true", "false"]
