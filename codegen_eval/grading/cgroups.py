"""A CPU share per slot that no job can escape: a cgroup per slot (its jobs run one at a time, so it is
the job's own while it runs), weighted like every other slot's, capped at one core and at a number of
tasks. A candidate that forks many `setsid()` children then competes with the honest jobs of other
slots as one slot, not as dozens of processes. cgroup v2 where the host offers its cpu and pids
controllers; else the v1 cpu and pids hierarchies where they are writable; else nothing here, and the
rlimits (RLIMIT_NPROC per uid) are what bound a job. Kept free of the rest of the package (zygote.py).
"""

from __future__ import annotations

import os

V2 = "/sys/fs/cgroup"
V1 = {"cpu": "/sys/fs/cgroup/cpu", "pids": "/sys/fs/cgroup/pids"}
PERIOD_US = 100_000


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def slot_cgroups(name: str, tasks: int) -> tuple[str, list[int]]:
    """In the zygote (root), before its root is built: the slot's cgroups, as descriptors of their
    `cgroup.procs` for its jobs to join. ("", []) where the host offers none we can write."""
    for kind, make in (("cgroup v2", _v2), ("cgroup v1", _v1)):
        try:
            return kind, make(f"codegen-eval-{name}", tasks)
        except OSError:
            continue
    return "", []


def _v2(name: str, tasks: int) -> list[int]:
    with open(f"{V2}/cgroup.controllers") as f:
        if not {"cpu", "pids"} <= set(f.read().split()):
            raise OSError("cgroup v2 without the cpu and pids controllers")
    _write(f"{V2}/cgroup.subtree_control", "+cpu +pids")
    path = f"{V2}/{name}"
    os.makedirs(path, exist_ok=True)
    _write(f"{path}/cpu.weight", "100")
    _write(f"{path}/cpu.max", f"{PERIOD_US} {PERIOD_US}")
    _write(f"{path}/pids.max", str(tasks))
    return [os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)]


def _v1(name: str, tasks: int) -> list[int]:
    cpu, pids = f"{V1['cpu']}/{name}", f"{V1['pids']}/{name}"
    for path in (cpu, pids):
        os.makedirs(path, exist_ok=True)
    _write(f"{cpu}/cpu.shares", "1024")
    _write(f"{cpu}/cpu.cfs_period_us", str(PERIOD_US))
    _write(f"{cpu}/cpu.cfs_quota_us", str(PERIOD_US))
    _write(f"{pids}/pids.max", str(tasks))
    return [os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for path in (cpu, pids)]


def join(handles: list[int]) -> None:
    """In the job process, as root, before anything else runs: it and all it forks stay in the slot's cgroups."""
    for handle in handles:
        os.write(handle, b"0")
