"""The sandbox's zygote: a warm process per slot that forks one OS-isolated child per job.

Runs as `python -m codegen_eval.grading.zygote UID`, reading one JSON job per stdin line and writing one JSON
result per stdout line (see sandbox.py for the isolation it applies and why). Kept free of pydantic
and of the rest of the package, so a zygote and each of its children stay small (~20 MB).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x2, 0x4, 0x20, 0x1000, 0x4000, 0x40000
PR_SET_CHILD_SUBREAPER = 36
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
MAX_RESULT_BYTES = 1 << 20


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_mb: int = 16
    processes: int = 32
    open_files: int = 256



_libc = ctypes.CDLL(None, use_errno=True)


def _isolate(uid: int, limits: Limits, workdir: str) -> list[str]:
    """Runs as root in the fresh child; `workdir` is an empty directory. Returns what could not be applied."""
    missing: list[str] = []
    if _libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
        missing.append(f"namespaces (unshare: {os.strerror(ctypes.get_errno())})")
    elif not _private_filesystem(workdir):
        missing.append("read-only /tmp and a private working directory")
    as_root = os.geteuid() == 0
    if as_root:
        os.chown(workdir, uid, uid)
    for name, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.memory_mb << 20),
        (resource.RLIMIT_FSIZE, limits.file_mb << 20),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(name, (value, value))
    os.chdir(workdir)
    if as_root:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    else:
        missing.append("unprivileged uid (not root: process limit and signal protection are weaker)")
    return missing


def _private_filesystem(workdir: str) -> bool:
    """In the child's own mount namespace: world-writable places read-only, a tmpfs as working dir."""
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    for path in WORLD_WRITABLE:
        if os.path.isdir(path):
            target = path.encode()
            if _libc.mount(target, target, None, MS_BIND | MS_REC, None) != 0:
                return False
            if _libc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None) != 0:
                return False
    return _libc.mount(b"tmpfs", workdir.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m,mode=0700") == 0


def _child(job: dict[str, Any], uid: int, limits: Limits, result_fd: int, workdir: str) -> None:
    """Never returns: the forked child runs the job and exits."""
    result: dict[str, Any]
    try:
        os.setsid()
        missing = _isolate(uid, limits, workdir)
        out = os.open(os.path.join(workdir, ".output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": workdir})
        from codegen_eval.grading import harness

        result = harness.run_job(job)
        sys.stdout.flush()
        sys.stderr.flush()
        result["isolation"] = missing
        result["output"] = _tail(os.path.join(workdir, ".output"))
    except BaseException as exc:  # noqa: BLE001 (the child must always answer)
        result = {"status": "SANDBOX_ERROR", "message": f"{type(exc).__name__}: {exc}"}
    try:
        data = json.dumps(result, default=str).encode()
        if len(data) > MAX_RESULT_BYTES:
            data = json.dumps({"status": "SANDBOX_ERROR", "message": "result too large"}).encode()
        os.write(result_fd, data + b"\n")
    finally:
        os._exit(0)


def _tail(path: str, size: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# --- the zygote ---------------------------------------------------------------------------------------


def _run_one(job: dict[str, Any], uid: int, limits: Limits) -> dict[str, Any]:
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="codegen-eval-case-")  # the child mounts its own tmpfs here
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(job, uid, limits, write_fd, workdir)
    os.close(write_fd)
    chunks, timed_out, deadline = [], False, started + limits.wall_s
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if ready:
            chunk = os.read(read_fd, 65536)
            chunks.append(chunk)
            # A result ends with a newline; a process the job left behind may hold the pipe open.
            if not chunk or chunk.endswith(b"\n"):
                break
    os.close(read_fd)
    if timed_out:
        _kill_group(pid)
    _, wait_status = os.waitpid(pid, 0)
    _reap_uid(uid)
    shutil.rmtree(workdir, ignore_errors=True)  # empty unless the child could not mount its tmpfs
    elapsed = (time.perf_counter() - started) * 1000
    if timed_out:
        return {"status": "TIMEOUT", "message": f"no result within {limits.wall_s:g} s (killed)", "elapsed_ms": elapsed}
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        how = _describe_exit(wait_status)
        status = "TIMEOUT" if "SIGXCPU" in how else "SANDBOX_ERROR"
        return {"status": status, "message": f"the child gave no result ({how})", "elapsed_ms": elapsed}
    result["elapsed_ms"] = elapsed
    return result


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap_uid(uid: int) -> None:
    """Kill every process left running as `uid` (one that forked and left its group too), and
    collect them: the zygote is a child subreaper, so orphans of the job become its children."""
    deadline = time.monotonic() + 2.0
    while _pids_of(uid) and time.monotonic() < deadline:
        if os.geteuid() == 0:
            pid = os.fork()
            if pid == 0:
                try:
                    os.setuid(uid)
                    os.kill(-1, signal.SIGKILL)  # every process this uid may signal: the slot's own
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        _collect_children()
        time.sleep(0.002)


def _pids_of(uid: int) -> list[int]:
    """Processes owned by `uid`, read from /proc (kill(-1) cannot tell: it may report success on none)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except FileNotFoundError:
                pass
    return pids


def _collect_children() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _describe_exit(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by {signal.Signals(os.WTERMSIG(wait_status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(wait_status)}"


def serve(uid: int) -> None:
    """The zygote's loop: one JSON job per stdin line, one JSON result per stdout line."""
    from codegen_eval.grading import harness

    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    harness.warm_up()
    aws_warm = False
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # nothing printed by accident can corrupt the protocol
    for line in sys.stdin:
        request = json.loads(line)
        if not aws_warm and harness.needs_aws(request["job"]):
            harness.warm_up_aws()
            aws_warm = True
        result = _run_one(request["job"], uid, Limits(**request["limits"]))
        replies.write(json.dumps(result) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
