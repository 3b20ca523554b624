"""Run untrusted generated code in OS-isolated children.

Isolation comes from the kernel, not from monkeypatching Python:

- a new network namespace (no interfaces, loopback down) and a new mount namespace in which the
  world-writable places (/tmp, /var/tmp, /dev/shm) are read-only and the job's working directory is
  a fresh private tmpfs (read-only rather than hidden: the project or its venv may live under /tmp);
- resource limits: CPU seconds, address space, file size, open files, processes;
- an unprivileged uid of its own per slot (so RLIMIT_NPROC binds, the parent cannot be signalled, and
  every leftover process of the slot can be killed after the job, even one that escaped its group);
- a fresh temporary working directory, its own session, SIGKILL of the group on a wall-clock timeout;
- an environment with nothing of the parent's: no API keys, fake AWS credentials only.

Fast path: a "zygote" process per slot (zygote.py, which applies all of the above to each child)
imports what jobs need once, then forks the job's processes (~tens of ms instead of ~1 s for a fresh
interpreter): for a python case the trusted check and, from it, the candidate, which it calls through
a plain-data proxy (harness.py, wire.py), so nothing the candidate does reaches the verdict. Zygotes are
single-threaded, so forking them is safe; slots give parallelism by processes, as moto is not
thread-safe. AWS jobs and the rest have zygotes of their own: one that has imported boto3 and moto is
~4x slower to fork and tear down, which a HumanEval or regex job should not pay. Where namespaces or
uid changes are unavailable (not root), the child says so in `isolation` and the runner logs a loud
warning.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from codegen_eval.grading.harness import needs_aws
from codegen_eval.grading.zygote import Identity, Limits

__all__ = ["Limits", "Sandbox", "SandboxResult", "shared_sandbox"]

log = logging.getLogger(__name__)

# Per-slot uids from a range no real account uses; derived from the pid so two runs do not share one.
UID_BASE = 200_000
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class SandboxResult(BaseModel):
    status: str  # PASS, TEST_FAIL, TIMEOUT, SANDBOX_ERROR
    message: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    isolation: list[str] = Field(default_factory=list)  # what could NOT be applied
    output: str = ""  # the tail of what the code printed
    elapsed_ms: float = 0.0


class _Zygote:
    def __init__(self, who: Identity):
        self.who = who
        self._ids = itertools.count()
        # The zygote imports this very copy of the package, wherever it is installed or checked out.
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": PACKAGE_ROOT}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "codegen_eval.grading.zygote", str(who.candidate), str(who.check), str(who.group), str(who.endpoint)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
        )

    def run(self, job: dict[str, Any], limits: Limits) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        request_id = next(self._ids)
        self.process.stdin.write(json.dumps({"id": request_id, "job": job, "limits": asdict(limits)}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"sandbox zygote exited ({self.process.poll()})")
        result = json.loads(line)
        # Only the zygote writes this pipe (no job holds it); the id makes a mix-up loud, never silent.
        if result.pop("id", None) != request_id:
            raise RuntimeError("sandbox zygote answered out of turn")
        return result

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


class Sandbox:
    """Two pools of zygotes (AWS jobs, everything else), one job at a time each; safe to call from many threads."""

    def __init__(self, slots: int | None = None, limits: Limits | None = None):
        self.slots = slots or os.cpu_count() or 1
        self.limits = limits or Limits()
        self._idle: dict[bool, queue.Queue[_Zygote | None]] = {True: queue.Queue(), False: queue.Queue()}
        base = UID_BASE + (os.getpid() % 100_000) * 64
        for lane in self._idle.values():
            for _ in range(self.slots):
                lane.put(None)  # started on first use
        self._identities = itertools.cycle([Identity(candidate=uid, check=uid + 1, group=uid, endpoint=uid + 2) for uid in range(base, base + 63, 3)])
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
        with self._lock:
            zygote = _Zygote(next(self._identities))
            self._all.append(zygote)
            return zygote

    def close(self) -> None:
        with self._lock:
            for zygote in self._all:
                zygote.close()
            self._all.clear()


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

