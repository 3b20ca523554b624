"""Prefect for one CLI run, without Prefect's noise in the user's terminal.

- Analytics off (`PREFECT_SERVER_ANALYTICS_ENABLED=false`, `DO_NOT_TRACK=1`): the tool runs offline, and
  the server's telemetry service was what printed a `database is locked` traceback and `Failed to send
  telemetry` on a first run.
- With no Prefect server configured, a temporary one is started here, as Prefect itself would, but with
  its output going to a log file; events and logs are flushed to it before it stops, so the run's
  history is complete (`~/.prefect/prefect.db`, or `$PREFECT_HOME`).
- Prefect's INFO lines (flow and task runs starting and finishing) go to the same file and to the server,
  not to the terminal; warnings and errors still show. The file ends up as `<run dir>/prefect.log`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F")

LOG_NAME = "prefect.log"
OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


class PrefectServerError(RuntimeError):
    """The temporary Prefect server did not start."""


class QuietRun:
    """Set `run_dir` once it is known, and the log is moved into it at the end."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.run_dir: Path | None = None
        self.server: TemporaryServer | None = None  # the temporary server, if one was started (a stopping run kills it)


def turn_analytics_off() -> None:
    """Before Prefect is imported: no analytics from this process or the servers it starts."""
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)


@contextmanager
def quiet_prefect(out: str | Path) -> Iterator[QuietRun]:
    turn_analytics_off()
    from prefect.settings import get_current_settings

    Path(out).mkdir(parents=True, exist_ok=True)
    run = QuietRun(Path(out) / f".prefect-{os.getpid()}.log")
    server = None
    if get_current_settings().api.url is None:  # no server configured: Prefect would start one that talks to the terminal
        server = run.server = TemporaryServer(run.log_path).start()
        _use_api(server.api_url)
    restore_logs = _route_logs(run.log_path)
    try:
        yield run
    finally:
        _flush()
        restore_logs()
        if server is not None:
            server.stop()
            _use_api(None)
        if run.run_dir is not None and run.log_path.exists():
            run.log_path.replace(run.run_dir / LOG_NAME)


def parameters_by_pydantic(flow: F) -> F:
    """`flow`, storing its runs' parameters as pydantic serializes them to JSON instead of through
    FastAPI's `jsonable_encoder`: the same JSON for pydantic models and plain values (what these flows
    take), without importing FastAPI into the CLI (~0.1 s, a twentieth of a cached run)."""
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    def serialize(parameters: dict[str, Any]) -> dict[str, Any]:
        stored = {}
        for name, value in parameters.items():
            try:
                stored[name] = to_jsonable_python(value, by_alias=True)
            except PydanticSerializationError:  # as Prefect stores what it cannot encode
                stored[name] = f"<{type(value).__name__}>"
        return stored

    flow.serialize_parameters = serialize
    return flow


class TemporaryServer:
    """A Prefect API server on a free loopback port for one run: Prefect's own ephemeral-server command,
    with its output in `log_path` instead of the terminal."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> TemporaryServer:
        timeout_s = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
        for _ in range(3):  # another process may take the free port first
            self.port = _free_port()
            self.process = self._launch()
            if self._wait_healthy(timeout_s):
                return self
            if self.process.poll() is None:
                break
        self.stop()
        raise PrefectServerError(f"the temporary Prefect server did not start within {timeout_s:.0f} s; its log: {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _launch(self) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        # As Prefect's own temporary server: no UI, and only the services an ephemeral server runs
        # (events, automations), not the scheduler or telemetry.
        env.update(OFFLINE, PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1")
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _wait_healthy(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                urllib.request.urlopen(self.api_url + "/health", timeout=2)
                return True
            except OSError:
                time.sleep(0.2)
        return False


def _use_api(url: str | None) -> None:
    """Point this process (and the Dask workers it starts) at `url`; Prefect reads it from the environment."""
    from prefect.context import refresh_global_settings_context

    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


def _route_logs(log_path: Path):
    """Prefect's INFO lines to `log_path`; its console handler keeps warnings and errors. Returns the undo."""
    # Prefect configures logging when `prefect.main` is first imported (by `from prefect import flow`),
    # and again there if it was set up before: import it now, so that is the one set-up (~0.1 s each)
    # and nothing configures logging after this.
    import prefect.main  # noqa: F401
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(PrefectFormatter(
        format="%(asctime)s | %(levelname)-7s | %(name)s - %(message)s",
        flow_run_fmt="%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
        task_run_fmt="%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s",
    ))
    handler.setLevel(logging.INFO)
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(handler)
    consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    levels = [h.level for h in consoles]
    for console in consoles:
        console.setLevel(logging.WARNING)

    def restore() -> None:
        prefect_logger.removeHandler(handler)
        handler.close()
        for console, level in zip(consoles, levels):
            console.setLevel(level)

    return restore


def _flush() -> None:
    """Send the run's queued events and logs now, while the server is still up."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        try:
            worker.drain_all(timeout=30)
        except Exception:  # noqa: BLE001 (a flush that fails must not hide the run's own outcome)
            logging.getLogger("prefect").warning("could not flush Prefect %s", worker.__name__, exc_info=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
