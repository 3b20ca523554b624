"""Prefect for one CLI run, without Prefect's noise in the user's terminal.

- Analytics off (`PREFECT_SERVER_ANALYTICS_ENABLED=false`, `DO_NOT_TRACK=1`): the tool runs offline, and
  the server's telemetry service was what printed a `database is locked` traceback and `Failed to send
  telemetry` on a first run.
- With no Prefect server configured, a temporary one is started here with Prefect's own
  `SubprocessASGIServer` (what Prefect starts itself in that case), after the run's logs are routed, and
  used through `temporary_settings`; logs and events are flushed to it before it stops, so the run's
  history is complete (`~/.prefect/prefect.db`, or `$PREFECT_HOME`).
- Prefect's INFO lines (flow and task runs starting and finishing) go to the same file and to the server,
  not to the terminal; warnings and errors still show. The file ends up as `<run dir>/prefect.log`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOG_NAME = "prefect.log"
OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


class PrefectServerError(RuntimeError):
    """The temporary Prefect server did not start."""


class QuietRun:
    """Set `run_dir` once it is known, and the log is moved into it at the end."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.run_dir: Path | None = None
        self.server: Any = None  # Prefect's temporary server, if one was started (a stopping run kills it)

    def kill_server(self) -> None:
        """At once, for a run that must end now: the temporary server's process (Prefect's attribute)."""
        process = getattr(self.server, "server_process", None)
        if process is not None:
            process.kill()


def turn_analytics_off() -> None:
    """Before Prefect is imported: no analytics from this process or the servers it starts."""
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)


@contextmanager
def quiet_prefect(out: str | Path) -> Iterator[QuietRun]:
    turn_analytics_off()
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    Path(out).mkdir(parents=True, exist_ok=True)
    run = QuietRun(Path(out) / f".prefect-{os.getpid()}.log")
    restore_logs = _route_logs(run.log_path)
    server = run.server = _temporary_server() if get_current_settings().api.url is None else None
    try:
        if server is None:
            yield run
        else:
            os.environ["PREFECT_API_URL"] = server.api_url  # for the Dask workers this run may start
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                yield run
    finally:
        _flush()
        if server is not None:  # before the logs are restored: its "stopping" line goes to the file too
            server.stop()
            os.environ.pop("PREFECT_API_URL", None)
        restore_logs()
        if run.run_dir is not None and run.log_path.exists():
            run.log_path.replace(run.run_dir / LOG_NAME)


def _temporary_server() -> Any:
    """Prefect's own temporary API server (no UI; events and automations run) on a free loopback port."""
    from prefect.server.api.server import SubprocessASGIServer

    timeout_s = int(float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")))
    server = SubprocessASGIServer()
    try:
        server.start(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 (Prefect raises RuntimeError or an HTTP error)
        server.stop()
        raise PrefectServerError(f"the temporary Prefect server did not start within {timeout_s} s: {exc}"[:500]) from None
    return server


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
    """Send the run's queued logs and events now, while the server is still up (as Prefect's own test
    harness does before it stops its server)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    for flush in (APILogHandler().flush, lambda: EventsWorker.drain_all(timeout=30)):
        try:
            flush()
        except Exception:  # noqa: BLE001 (a flush that fails must not hide the run's own outcome)
            logging.getLogger("prefect").warning("could not flush Prefect's logs or events", exc_info=True)
