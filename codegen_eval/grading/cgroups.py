"""A CPU share per slot that no job can escape: a cgroup per slot (its jobs run one at a time, so it is
the job's own while it runs), weighted like every other slot's, capped at one core and at a number of
tasks, and held to a share of the host's memory (rlimits bound each process, not the 32 a candidate may
run). A candidate that forks many `setsid()` children then competes with the honest jobs of other
slots as one slot, not as dozens of processes. cgroup v2 where the host offers its cpu and pids
controllers; else the v1 cpu and pids hierarchies where they are writable; else nothing here, and the
rlimits (RLIMIT_NPROC per uid) are what bound a job. Kept free of the rest of the package (zygote.py).
"""

from __future__ import annotations

import os

V2 = "/sys/fs/cgroup"
V1 = {"cpu": "/sys/fs/cgroup/cpu", "pids": "/sys/fs/cgroup/pids"}
V1_MEMORY = "/sys/fs/cgroup/memory"
PERIOD_US = 100_000


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def slot_cgroups(name: str, tasks: int) -> tuple[str, list[int]]:
    """In the zygote (root), before its root is built: the slot's cgroups, as descriptors of their
    `cgroup.procs` for its jobs to join. ("", []) where the host offers none we can write."""
    for kind, make, memory in (("cgroup v2", _v2, _memory_v2), ("cgroup v1", _v1, _memory_v1)):
        try:
            handles = make(f"codegen-eval-{name}", tasks)
        except OSError:
            continue
        try:  # a memory cap where the controller is offered; the cpu and pids share stands without it
            handles.append(memory(f"codegen-eval-{name}", slot_memory_bytes()))
        except OSError:
            pass
        return kind, handles
    return "", []


def slot_memory_bytes() -> int:
    """A slot's share of the host's memory: an AWS and a plain zygote per core, and room for the run
    itself (at least 1.5 GiB, at most 8 GiB)."""
    page = os.sysconf("SC_PAGE_SIZE")
    share = max(3 << 29, min(8 << 30, page * os.sysconf("SC_PHYS_PAGES") // (2 * (os.cpu_count() or 1) + 1)))
    return share // page * page  # the kernel keeps whole pages


def _memory_v2(name: str, limit: int) -> int:
    with open(f"{V2}/cgroup.controllers") as f:
        if "memory" not in f.read().split():
            raise OSError("cgroup v2 without the memory controller")
    _write(f"{V2}/cgroup.subtree_control", "+memory")
    path = f"{V2}/{name}"
    _write(f"{path}/memory.max", str(limit))
    try:
        _write(f"{path}/memory.swap.max", "0")
    except OSError:
        pass
    return os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)


def _memory_v1(name: str, limit: int) -> int:
    """Below the zygote's own memory cgroup, so the host's limits on the run still hold."""
    with open("/proc/self/cgroup") as f:
        own = next((line.split(":", 2)[2].strip() for line in f if line.split(":")[1] == "memory"), None)
    if own is None:
        raise OSError("no cgroup v1 memory hierarchy")
    path = f"{V1_MEMORY}{own.rstrip('/')}/{name}"
    os.makedirs(path, exist_ok=True)
    _write(f"{path}/memory.limit_in_bytes", str(limit))
    try:  # memory plus swap, where swap is accounted
        _write(f"{path}/memory.memsw.limit_in_bytes", str(limit))
    except OSError:
        pass
    return os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)


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
