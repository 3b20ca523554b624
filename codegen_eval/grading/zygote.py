"""The sandbox's zygote: a warm process per slot that forks one OS-isolated job per request.

Runs as `python -m codegen_eval.grading.zygote CANDIDATE_UID CHECK_UID GROUP ENDPOINT_UID`, reading one JSON request
per stdin line and writing one JSON result per stdout line, each carrying the request's id (see
sandbox.py for why each measure is there). Kept free of pydantic and of the rest of the package, so a
zygote and each of its children stay small.

A job runs in a process of its own (new network and mount namespaces, its own session). A python job
forks once more: the candidate's code runs in a child as CANDIDATE_UID holding one socket and nothing
else; the check runs as CHECK_UID in the job process, which alone holds the pipe its result goes out on.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x2, 0x4, 0x20, 0x1000, 0x4000, 0x40000
PR_SET_CHILD_SUBREAPER = 36
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
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


@dataclass(frozen=True)
class Identity:
    """A slot's users: the candidate's and the check's uids differ, so neither can signal, trace or read
    the other's process; they share a group, so both can use the job's working directory."""

    candidate: int
    check: int
    group: int
    endpoint: int  # the AWS endpoint's process (moto), apart from both


_libc = ctypes.CDLL(None, use_errno=True)
_exposure: list[tuple[str, list[str]]] = []  # set by serve(): see exposure_plan()


# --- isolation ------------------------------------------------------------------------------------------


def _namespaces(workdir: str, group: int, loopback: bool) -> list[str]:
    """As root, in the fresh job process: its own network and filesystem view. Returns what failed."""
    if _libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
        return [f"namespaces (unshare: {os.strerror(ctypes.get_errno())})"]
    missing = []
    if not _private_filesystem(workdir):
        missing.append("read-only /tmp and a private working directory")
    elif not _expose(_exposure):
        missing.append("access to the interpreter's files for the sandbox uid")
    if loopback and not _loopback_up():
        missing.append("a loopback interface for moto")
    if os.geteuid() == 0:
        os.chown(workdir, 0, group)
        os.chmod(workdir, 0o2770)  # both sides write here; files keep the shared group
    return missing


def _private_filesystem(workdir: str) -> bool:
    """World-writable places read-only, a tmpfs as the working directory."""
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    for path in WORLD_WRITABLE:
        if os.path.isdir(path):
            target = path.encode()
            if _libc.mount(target, target, None, MS_BIND | MS_REC, None) != 0:
                return False
            if _libc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None) != 0:
                return False
    return _libc.mount(b"tmpfs", workdir.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m,mode=0770") == 0


def exposure_plan(paths: list[str]) -> list[tuple[str, list[str]]]:
    """Where grading's own files sit below a directory others cannot enter (a venv in a home of mode 700,
    a Python under /root): each such directory with the paths below it that the sandbox needs."""
    roots: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}):
        if not any(path.startswith(root + os.sep) for root in roots):
            roots.append(path)
    plan: dict[str, list[str]] = {}
    for path in roots:
        parts = path.split(os.sep)
        for depth in range(2, len(parts)):
            ancestor = os.sep.join(parts[:depth])
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                plan.setdefault(ancestor, []).append(path)
                break
    return sorted(plan.items())


def _expose(plan: list[tuple[str, list[str]]]) -> bool:
    """In the job's mount namespace: a fresh tmpfs over each closed directory, with only the needed paths
    bound back at their own places (so module paths stay valid, and the rest of a home stays hidden)."""
    for closed, paths in plan:
        handles = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in paths]
        if _libc.mount(b"tmpfs", closed.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755") != 0:
            return False
        for path, handle in zip(paths, handles):
            os.makedirs(path, exist_ok=True)
            if _libc.mount(f"/proc/self/fd/{handle}".encode(), path.encode(), None, MS_BIND | MS_REC, None) != 0:
                return False
            os.close(handle)
    return True


def _loopback_up() -> bool:
    """A new network namespace has a loopback interface, down: bring it up for moto's server."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            request = struct.pack("16sh22x", b"lo", 0)
            flags = struct.unpack("16sh22x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))
        return True
    except OSError:
        return False


def _keep_only(fds: list[int]) -> None:
    """Descriptor i becomes fds[i]; every other descriptor (the zygote's protocol pipes, other jobs'
    leftovers, anything inherited) is closed, so a job can write to nothing but its own channels."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    for number, fd in enumerate(high):
        os.dup2(fd, number)
    os.closerange(len(fds), resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def _become(uid: int, group: int, limits: Limits, workdir: str) -> list[str]:
    """Limits, then the unprivileged uid (as root), in the working directory. Returns what failed."""
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
    os.umask(0o002)
    if os.geteuid() != 0:
        return ["an unprivileged uid (not root: the candidate may signal the check, process limits are weaker)"]
    os.setgroups([group])
    os.setgid(group)
    os.setuid(uid)
    return []


def _fresh_environment(workdir: str, extra: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": workdir, **extra})
    tempfile.tempdir = None  # the zygote's choice (/tmp, read-only here) is cached: look again


# --- one job ----------------------------------------------------------------------------------------------


def _job(job: dict[str, Any], who: Identity, limits: Limits, result_fd: int, workdir: str) -> None:
    """The forked job process (root until it drops): never returns."""
    from codegen_eval.grading import harness

    result: dict[str, Any]
    try:
        os.setsid()
        python = job["kind"] == "python"
        aws = harness.needs_aws(job)
        missing = _namespaces(workdir, who.group, loopback=aws)
        output_path = os.path.join(workdir, ".output")
        output = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if os.geteuid() == 0:  # only the trusted side may read what the candidate printed
            os.fchown(output, who.check if python else who.candidate, who.group)
        devnull = os.open(os.devnull, os.O_RDONLY)
        if python:
            result = _python_job(job, who, limits, workdir, [devnull, output, output, result_fd], aws, missing)
        else:
            _keep_only([devnull, output, output, result_fd])
            result_fd = 3
            missing += _become(who.candidate, who.group, limits, workdir)
            _fresh_environment(workdir, {})
            result = harness.run_job(job)
        sys.stdout.flush()
        sys.stderr.flush()
        result["isolation"] = missing
        result["output"] = _tail(output_path)
    except BaseException as exc:  # noqa: BLE001 (the job must always answer)
        result = {"status": "SANDBOX_ERROR", "message": f"{type(exc).__name__}: {exc}"}
    try:
        data = json.dumps(result, default=str).encode()
        if len(data) > MAX_RESULT_BYTES:
            data = json.dumps({"status": "SANDBOX_ERROR", "message": "result too large"}).encode()
        os.write(result_fd, data + b"\n")
    finally:
        os._exit(0)


def _python_job(
    job: dict[str, Any], who: Identity, limits: Limits, workdir: str, fds: list[int], aws: bool, missing: list[str]
) -> dict[str, Any]:
    """The candidate in a child of its own; the check here, as another uid, talking to it over a socket; for
    AWS cases, the AWS endpoint (moto) in a third process, as a third uid, holding no result channel."""
    from codegen_eval.grading import harness

    environment, control = {}, None
    if aws:
        listener = harness.bind_aws_endpoint()  # before the candidate exists: it cannot take the port
        environment = harness.aws_environment(listener.getsockname()[1])
        control, theirs = socket.socketpair()
        if os.fork() == 0:
            try:
                _keep_only([fds[0], fds[1], fds[2], listener.fileno(), theirs.fileno()])
                _become(who.endpoint, who.group, replace(limits, memory_mb=limits.memory_mb * 4, processes=512), workdir)
                _fresh_environment(workdir, environment)
                harness.serve_aws_endpoint(socket.socket(fileno=3), socket.socket(fileno=4), job, who.candidate, who.check)
            finally:
                os._exit(0)
        listener.close()
        theirs.close()
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            _keep_only([fds[0], fds[1], fds[2], theirs.fileno()])
            _become(who.candidate, who.group, limits, workdir)
            _fresh_environment(workdir, environment)
            harness.serve_candidate(socket.socket(fileno=3), job["code"])
        finally:
            os._exit(0)
    theirs.close()
    os.dup2(fds[0], 0)
    os.dup2(fds[1], 1)
    os.dup2(fds[1], 2)
    missing += _become(who.check, who.group, replace(limits, memory_mb=limits.memory_mb * 2, processes=128), workdir)
    _fresh_environment(workdir, environment)
    from codegen_eval.grading.aws_view import Aws

    return harness.run_check(job, harness.Channel(ours, pid), Aws(control) if control else None)


def _tail(path: str, size: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _run_one(job: dict[str, Any], who: Identity, limits: Limits) -> dict[str, Any]:
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="codegen-eval-case-")  # the job mounts its own tmpfs here
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _job(job, who, limits, write_fd, workdir)
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
            if not chunk or chunk.endswith(b"\n"):
                break
    os.close(read_fd)
    if timed_out:
        _kill_group(pid)
    _, wait_status = os.waitpid(pid, 0)
    for uid in (who.candidate, who.check, who.endpoint):
        _reap_uid(uid)
    shutil.rmtree(workdir, ignore_errors=True)  # empty unless the job could not mount its tmpfs
    elapsed = (time.perf_counter() - started) * 1000
    if timed_out:
        return {"status": "TIMEOUT", "message": f"no result within {limits.wall_s:g} s (killed)", "elapsed_ms": elapsed}
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        how = _describe_exit(wait_status)
        status = "TIMEOUT" if "SIGXCPU" in how else "SANDBOX_ERROR"
        return {"status": status, "message": f"the job gave no result ({how})", "elapsed_ms": elapsed}
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


def serve(who: Identity) -> None:
    """The zygote's loop: one JSON request per stdin line, one JSON result (with the request's id) per stdout line."""
    global _exposure
    from codegen_eval.grading import harness

    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _exposure = exposure_plan(sys.path)
    harness.warm_up()
    aws_warm = False
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # nothing printed by accident can corrupt the protocol
    for line in sys.stdin:
        request = json.loads(line)
        if not aws_warm and harness.needs_aws(request["job"]):
            harness.warm_up_aws()
            aws_warm = True
        result = _run_one(request["job"], who, Limits(**request["limits"]))
        replies.write(json.dumps({**result, "id": request["id"]}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve(Identity(*(int(arg) for arg in sys.argv[1:5])))
