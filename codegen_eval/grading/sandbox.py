"""Run untrusted generated code in OS-isolated children.

Isolation comes from the kernel, not from monkeypatching Python (zygote.py, jail.py, cgroups.py):

- each zygote lives in a read-only root of its own holding only what Python and its libraries need
  (no project directory, dataset, run output, cache or home);
- each job is pid 1 of fresh PID, IPC, UTS, network and mount namespaces, with a /proc of its own and a
  private tmpfs as its working directory; when it ends, the kernel ends everything it started;
- resource limits (CPU seconds, address space, file size, open files, processes) and a cgroup per slot
  (a CPU share and a task limit no fork bomb escapes), `no_new_privs`, no capabilities;
- unprivileged uids per slot, leased host-wide (uids.py), so no other slot or run shares them;
- its own session, SIGKILL of the job's PID namespace on a wall-clock timeout;
- an environment with nothing of the parent's: no API keys, fake AWS credentials only.

Fast path: a "zygote" process per slot imports what jobs need once, then forks the job's processes
(~tens of ms instead of ~1 s for a fresh interpreter): for a python case the trusted check and, from
it, the candidate, which it calls through a plain-data proxy (harness.py, wire.py), so nothing the
candidate does reaches the verdict. Code crosses to the zygote as raw frame sections it never turns
into strings, so no later candidate finds it in the forked heap. Zygotes are single-threaded, so
forking them is safe; slots give parallelism by processes, as moto is not thread-safe. AWS jobs and
the rest have zygotes of their own: one that has imported boto3 and moto is ~4x slower to fork and
tear down, which a HumanEval or regex job should not pay. Where namespaces or uid changes are
unavailable (not root), the child says so in `isolation` and the runner logs a loud warning.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from codegen_eval.grading.harness import needs_aws
from codegen_eval.grading import uids
from codegen_eval.grading.frames import encode_request
from codegen_eval.grading.zygote import Identity, Limits

__all__ = ["Limits", "Sandbox", "SandboxResult", "shared_sandbox"]

log = logging.getLogger(__name__)

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class SandboxResult(BaseModel):
    status: str  # PASS, TEST_FAIL, TIMEOUT, SANDBOX_ERROR
    message: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    isolation: list[str] = Field(default_factory=list)  # what could NOT be applied
    output: str = ""  # the tail of what the code printed
    elapsed_ms: float = 0.0


class _Zygote:
    def __init__(self, who: Identity, lock: int):
        self.who = who
        self._ids = itertools.count()
        # The zygote imports this very copy of the package, wherever it is installed or checked out; -P:
        # not the current directory (which may be the project's, or a run's output).
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": PACKAGE_ROOT}
        args = [str(n) for n in (who.candidate, who.check, who.endpoint, who.group, os.getpid())]
        # It holds its uid slot's lock for as long as it lives (see uids.py).
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "codegen_eval.grading.zygote", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/", bufsize=0, pass_fds=(lock,),
        )

    def run(self, job: dict[str, Any], limits: Limits) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        request_id = next(self._ids)
        for part in encode_request(request_id, job, asdict(limits)):
            self.process.stdin.write(part)
        header = json.loads(self._read(struct.unpack(">I", self._read(4))[0]))
        payload = self._read(header["payload"])
        # Only the zygote writes this pipe (no job holds it); the id makes a mix-up loud, never silent.
        if header.get("id") != request_id:
            raise RuntimeError("sandbox zygote answered out of turn")
        return _result(header, payload, limits)

    def _read(self, size: int) -> bytes:
        assert self.process.stdout
        data = self.process.stdout.read(size) if size else b""
        while data is not None and len(data) < size:
            more = self.process.stdout.read(size - len(data))
            if not more:
                raise RuntimeError(f"sandbox zygote exited ({self.process.poll()})")
            data += more
        return data

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def _result(header: dict[str, Any], payload: bytes, limits: Limits) -> dict[str, Any]:
    """The job's result, or what the zygote saw of a job that gave none (parsed here: the zygote never parses)."""
    elapsed = header["elapsed_ms"]
    if header["timed_out"]:
        return {"status": "TIMEOUT", "message": f"no result within {limits.wall_s:g} s (killed)", "elapsed_ms": elapsed}
    try:
        result = json.loads(payload)
        if not isinstance(result, dict):
            raise ValueError
    except ValueError:
        how = str(header.get("exit", ""))
        status = "TIMEOUT" if "SIGXCPU" in how else "SANDBOX_ERROR"
        return {"status": status, "message": f"the job gave no result ({how})", "elapsed_ms": elapsed}
    result["elapsed_ms"] = elapsed
    return result


class Sandbox:
    """Two pools of zygotes (AWS jobs, everything else), one job at a time each; safe to call from many threads."""

    def __init__(self, slots: int | None = None, limits: Limits | None = None):
        self.slots = slots or os.cpu_count() or 1
        self.limits = limits or Limits()
        self._idle: dict[bool, queue.Queue[_Zygote | None]] = {True: queue.Queue(), False: queue.Queue()}
        for lane in self._idle.values():
            for _ in range(self.slots):
                lane.put(None)  # started on first use
        self._lock = threading.Lock()
        self._all: list[_Zygote] = []
        self._warned = False

    def run(self, job: dict[str, Any], limits: Limits | None = None) -> SandboxResult:
        idle = self._idle[needs_aws(job)]
        zygote = idle.get()
        try:
            if zygote is None or zygote.process.poll() is not None:
                zygote = self._start()
            try:
                raw = zygote.run(job, limits or self.limits)
            except (RuntimeError, OSError, ValueError) as exc:
                zygote.close()
                zygote = None
                return SandboxResult(status="SANDBOX_ERROR", message=str(exc))
        finally:
            idle.put(zygote)
        result = SandboxResult.model_validate(raw)
        if result.isolation and not self._warned:
            self._warned = True
            log.warning("SANDBOX DEGRADED: generated code runs without %s", "; ".join(result.isolation))
        return result

    def _start(self) -> _Zygote:
        """A zygote dies with the thread that started it (PR_SET_PDEATHSIG), and a caller's thread may end
        before the run does: one long-lived thread starts them all."""
        done: queue.Queue[_Zygote | BaseException] = queue.Queue()
        _spawner().put((self._spawn, done))
        zygote = done.get()
        if isinstance(zygote, BaseException):
            raise zygote
        return zygote

    def _spawn(self) -> _Zygote:
        who, lock = uids.lease()
        try:
            zygote = _Zygote(who, lock)
        finally:
            os.close(lock)  # the zygote holds it now
        with self._lock:
            self._all.append(zygote)
        return zygote

    def close(self) -> None:
        with self._lock:
            for zygote in self._all:
                zygote.close()
            self._all.clear()


_spawn_queue: queue.Queue[Any] | None = None


def _spawner() -> queue.Queue[Any]:
    global _spawn_queue
    with _shared_lock:
        if _spawn_queue is None:
            _spawn_queue = queue.Queue()
            threading.Thread(target=_spawn_forever, args=(_spawn_queue,), name="sandbox-spawner", daemon=True).start()
        return _spawn_queue


def _spawn_forever(requests: queue.Queue[Any]) -> None:
    while True:
        spawn, done = requests.get()
        try:
            done.put(spawn())
        except BaseException as exc:  # noqa: BLE001 (handed to the caller)
            done.put(exc)


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def shared_sandbox() -> Sandbox:
    """The process's sandbox pool, started lazily and closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            import atexit

            _shared = Sandbox()
            atexit.register(_shared.close)
        return _shared


class StoppingSandbox:
    """A sandbox that starts no job once the run is stopping: the job's result is then a SANDBOX_ERROR,
    which is never stored, so the check runs again on resume. Jobs already running finish (they have
    their own time limits) or end when the sandbox is closed."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox, self.slots, self.limits = sandbox, sandbox.slots, sandbox.limits

    def run(self, job: dict[str, Any], limits: Limits | None = None) -> SandboxResult:
        from codegen_eval import stopping

        if stopping.requested():
            return SandboxResult(status="SANDBOX_ERROR", message="not run: the run is stopping")
        return self.sandbox.run(job, limits)
