"""The sandbox's zygote: a warm process per slot that forks one OS-isolated job per request.

Runs as `python -P -m codegen_eval.grading.zygote CANDIDATE_UID CHECK_UID ENDPOINT_UID GROUP PARENT_PID`,
reading one request frame at a time on stdin and writing one reply frame per request on stdout (see
frames.py; sandbox.py for why each measure is there). Kept free of pydantic and of
the rest of the package, so a zygote and each of its children stay small.

The zygote lives in a file system of its own (jail.py: what Python needs, read-only). A job runs in a
process of its own, pid 1 of a fresh PID namespace, with new mount, network, IPC and UTS namespaces and
its own session. A python job forks once more: the candidate's code runs in a child as CANDIDATE_UID
holding one socket and nothing else; the check runs as CHECK_UID in the job process, which alone holds
the pipe its result goes out on.

Heap hygiene: candidates fork from the zygote, so the zygote never holds a case's code as a string.
A request's code sections (every text field of the job but its kind and entry point) are read straight
from the pipe into bytearrays, zeroed as soon as the job is forked; a job's result is relayed as bytes,
never parsed here, and its buffer zeroed too.
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
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

from codegen_eval.grading import cgroups, jail
from codegen_eval.grading.frames import read_request, write_frame

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PR_SET_CHILD_SUBREAPER = 36
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
    """A slot's users, unique on the host while the slot lives (sandbox.py leases them): the candidate's,
    the check's and the AWS endpoint's uids differ, so none can signal, trace or read another's process;
    candidate and check share a group, so both can use the job's working directory."""

    candidate: int
    check: int
    endpoint: int
    group: int


_libc = ctypes.CDLL(None, use_errno=True)
_missing_here: list[str] = []  # what the zygote itself could not set up (a read-only root), added to every job
_cgroups: list[int] = []  # the slot's cgroup.procs files (cgroups.py), joined by each job
CGROUP_TASKS = 1024  # the check's 512 (moto's threads count) and the candidate's 32, with room


# --- code sections (see frames.py) -----------------------------------------------------------------------------


def scrub(job: dict[str, Any]) -> None:
    """Zero every code section of `job` in place: a process that forks later (the candidate from the
    check's process) then holds none of it."""
    for value in job.values():
        if isinstance(value, bytearray):
            ctypes.memset((ctypes.c_char * len(value)).from_buffer(value), 0, len(value)) if value else None


def text(section: bytearray | str) -> str:
    return section if isinstance(section, str) else section.decode("utf-8", "surrogatepass")


def texts(job: dict[str, Any]) -> dict[str, Any]:
    """The job with its sections as strings, for code that reads them as text (in the job's process only)."""
    return {k: text(v) if isinstance(v, bytearray) else v for k, v in job.items()}


# --- isolation ------------------------------------------------------------------------------------------


def _namespaces(workdir: str, group: int, loopback: bool) -> list[str]:
    """As root, in the fresh job process (pid 1 of its PID namespace): its own mount, network, IPC and
    UTS namespaces, /proc and working directory. Returns what failed."""
    if os.geteuid() != 0:
        return ["namespaces (not root)"]
    try:
        jail.enter_job(workdir, group)
    except OSError as exc:
        try:  # a plain directory then (mkdtemp's, mode 700): both sides must still write there
            os.chown(workdir, 0, group)
            os.chmod(workdir, 0o2770)
        except OSError:
            pass
        return [f"namespaces ({exc.strerror})"]
    if loopback and not _loopback_up():
        return ["a loopback interface for moto"]
    return []


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
    """Limits, no_new_privs and no capabilities, then the unprivileged uid (as root), in the working
    directory. Returns what failed."""
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
    missing = []
    os.setgroups([group])
    os.setgid(group)
    try:
        jail.drop_privileges()
    except OSError as exc:  # a root without CAP_SETPCAP (some containers): the uid change still drops the rest
        missing.append(f"an empty capability bounding set ({exc})")
    os.setuid(uid)
    jail.clear_keyrings()
    jail.die_with_parent()  # the uid change cleared it
    return missing


def _fresh_environment(workdir: str, extra: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": workdir, **extra})
    tempfile.tempdir = None  # the zygote's choice (/tmp, read-only here) is cached: look again


# --- one job ----------------------------------------------------------------------------------------------


def _job(job: dict[str, Any], who: Identity, limits: Limits, result_fd: int, workdir: str) -> None:
    """The forked job process (root until it drops), pid 1 of its PID namespace: never returns. Its code
    sections are bytearrays (`text`, `texts`, `scrub`)."""
    from codegen_eval.grading import harness

    result: dict[str, Any]
    try:
        jail.die_with_parent()
        cgroups.join(_cgroups)
        os.setsid()
        python = job["kind"] == "python"
        aws = harness.needs_aws(job)
        missing = _missing_here + _namespaces(workdir, who.group, loopback=aws)
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
            job = texts(job)
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

    environment: dict[str, str] = {}
    control = None
    if aws:
        listener = harness.bind_aws_endpoint()  # before the candidate exists: it cannot take the port
        environment = harness.aws_environment(listener.getsockname()[1])
        control, theirs = socket.socketpair()
        if os.fork() == 0:
            try:
                scrub(job)  # the endpoint holds neither the candidate's code nor the check
                sink = os.open(os.devnull, os.O_WRONLY)
                _keep_only([fds[0], sink, sink, listener.fileno(), theirs.fileno()])
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
            code = text(job["code"])
            scrub(job)  # the candidate never holds the check
            _fresh_environment(workdir, environment)
            harness.serve_candidate(socket.socket(fileno=3), code)
        finally:
            os._exit(0)
    theirs.close()
    os.dup2(fds[0], 0)
    os.dup2(fds[1], 1)
    os.dup2(fds[1], 2)
    missing += _become(who.check, who.group, replace(limits, memory_mb=limits.memory_mb * 2, processes=128), workdir)
    _fresh_environment(workdir, environment)
    from codegen_eval.grading.aws_view import Aws

    return harness.run_check(texts(job), harness.Channel(ours, pid), Aws(control) if control else None)


def _tail(path: str, size: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class _Zygote:
    """The zygote's state: its identity, PID namespaces for its children, and one result buffer."""

    def __init__(self, who: Identity):
        self.who = who
        self.pids = jail.PidNamespaces() if os.geteuid() == 0 else None
        self.result = bytearray(MAX_RESULT_BYTES + 1)  # results pass through here, never as str
        self.jailed = not _missing_here  # in its own root, where each job mounts a tmpfs on jail.WORKDIR

    def run_one(self, request: dict[str, Any], out: int) -> None:
        job, limits = request["job"], Limits(**request["limits"])
        started = time.perf_counter()
        workdir = jail.WORKDIR if self.jailed else tempfile.mkdtemp(prefix="codegen-eval-case-")
        read_fd, write_fd = os.pipe()
        fresh_pid_namespace = self.pids is not None and self.pids.next_child_in_new()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _job(job, self.who, limits, write_fd, workdir)
        if fresh_pid_namespace:
            self.pids.restore()  # type: ignore[union-attr]
        scrub(job)  # the job has its copy; no later job forks from a heap that holds this one's code
        os.close(write_fd)
        size, timed_out, view = 0, False, memoryview(self.result)
        deadline = started + limits.wall_s
        while size < len(view):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if ready:
                n = os.readv(read_fd, [view[size:]])
                size += n
                if n == 0 or view[size - 1] == ord("\n"):
                    break
        os.close(read_fd)
        if timed_out:
            _kill(pid)  # pid 1 of the job's PID namespace: every process in it dies with it
        _, wait_status = os.waitpid(pid, 0)
        if not fresh_pid_namespace:  # else the kernel ended them all: none can leave a PID namespace
            for uid in (self.who.candidate, self.who.check, self.who.endpoint):
                _reap_uid(uid)
        header = {"id": request["id"], "elapsed_ms": (time.perf_counter() - started) * 1000, "timed_out": timed_out,
                  "exit": describe_exit(wait_status)}
        try:
            write_frame(out, header, view[:size] if not timed_out else b"")
        finally:
            view[:size] = bytes(size)
            if not self.jailed:
                shutil.rmtree(workdir, ignore_errors=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.killpg(pid, signal.SIGKILL)  # without a PID namespace (not root), its session's group
    except ProcessLookupError:
        pass


def _reap_uid(uid: int) -> None:
    """Kill every process left running as `uid` (one that forked and left its group too), and
    collect them: the zygote is a child subreaper, so orphans of the job become its children.
    (With PID namespaces there are none: the kernel ends them with the job. Kept for hosts without.)"""
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


def signal_name(number: int) -> str:
    """SIGKILL, SIGRTMIN+3 (real-time signals have no name of their own in `signal.Signals`), signal 99."""
    try:
        return signal.Signals(number).name
    except ValueError:
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return f"signal {number}"


def describe_exit(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by {signal_name(os.WTERMSIG(wait_status))}"
    return f"exit status {os.waitstatus_to_exitcode(wait_status)}"


def serve(who: Identity, parent: int) -> None:
    """The zygote's loop: one request frame in, one reply frame (with the request's id) out."""
    from codegen_eval.grading import harness

    jail.die_with_parent()
    if os.getppid() != parent:  # the run ended before this line: never outlive it
        os._exit(1)
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    harness.warm_up()  # before the root is built: a Python under a closed home reads its stdlib here
    if os.geteuid() == 0:
        _cgroups[:] = cgroups.slot_cgroups(str(who.candidate), CGROUP_TASKS)[1]
        try:
            jail.build_root(jail.root_sources(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        except OSError as exc:
            _missing_here.append(f"a file system of its own ({exc})")
    else:
        _missing_here.append("a file system of its own (not root)")
    zygote = _Zygote(who)
    aws_warm = False
    replies = os.dup(1)
    os.dup2(2, 1)  # nothing printed by accident can corrupt the protocol
    while (request := read_request(0)) is not None:
        if not aws_warm and harness.needs_aws(request["job"]):
            harness.warm_up_aws()
            aws_warm = True
        zygote.run_one(request, replies)


if __name__ == "__main__":
    *uids, parent_pid = (int(arg) for arg in sys.argv[1:6])
    serve(Identity(*uids), parent_pid)
