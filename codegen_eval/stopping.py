"""Stopping a run: the first Ctrl-C (or SIGTERM) asks it to stop, a second one ends it at once.

Once a stop is asked for, no model call or sandbox job starts (the tasks, the call limiter, the local
model and the sandbox wrapper below check `requested()`; the local model also stops between tokens);
what is in flight gets `GRACE_S` to finish and is abandoned then. Every answer and check already stored
stays in the caches, so the same command resumes the run. If the process is still alive `HARD_EXIT_S`
after the signal (a call that does not return, a server that does not stop), a watchdog ends it: the
cleanups registered here (sandbox zygotes, a temporary Prefect server) run and the process exits 130.

Signal handlers are installed only by the CLI (`handle_signals`): a deployment's process keeps Prefect's
own SIGTERM handling, which its worker relies on to cancel runs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


GRACE_S = 3.5  # after the first signal, work in flight has this long to finish
# And the process is gone by then, whatever still runs (a call that does not return): under 10 s from
# the signal with room for a busy machine's scheduling and the process's own teardown.
HARD_EXIT_S = 8.0
CLEANUP_S = 0.8  # what ending at once may spend killing the run's processes
EXIT_CODE = 130  # 128 + SIGINT, as shells report a run ended by Ctrl-C

_event = threading.Event()
_asked_at: float | None = None
_cleanups: list[Callable[[], Any]] = []
_handling: dict[str, Any] = {}  # "resume": the line said on the way out
_outcome: dict[str, str] = {}  # "message" and "run_dir" of the stopped run, once the flow has written its partial report
_said = threading.Lock()  # the farewell is said once


def requested() -> bool:
    return _event.is_set()


def request() -> None:
    """Ask the run to stop (what the first signal does; tests and callers may do it too)."""
    global _asked_at
    if not _event.is_set():
        _asked_at = time.monotonic()
        _event.set()


def past_grace() -> bool:
    """Whether work still in flight is now to be abandoned."""
    return _asked_at is not None and time.monotonic() - _asked_at >= GRACE_S


def reset() -> None:
    """Forget a stop (a process that runs several flows, e.g. tests)."""
    global _asked_at
    _event.clear()
    _asked_at = None


def on_exit(cleanup: Callable[[], Any]) -> Callable[[], None]:
    """Run `cleanup` if the process has to be ended early (second signal, watchdog); returns the undo."""
    _cleanups.append(cleanup)
    return lambda: _cleanups.remove(cleanup) if cleanup in _cleanups else None


def handle_signals(resume: str) -> Callable[[], None]:
    """SIGINT and SIGTERM stop the run as above; `resume` is said on the way out. Returns the undo.
    Main thread only (Python's rule for signal handlers).

    Python runs a signal handler in the main thread, between bytecodes: while that thread is in a long
    C call (llama.cpp evaluating a prompt), the handler waits. So the signals are acted on by a thread
    of their own, woken through `signal.set_wakeup_fd` as soon as one arrives; the Python-level
    handler only keeps the default one (KeyboardInterrupt, or death by SIGTERM) from running."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = {sig: signal.signal(sig, _in_main_thread) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    _handling.update(resume=resume)
    threading.Thread(target=_watch, args=(read_end,), name="stop-signals", daemon=True).start()

    def restore() -> None:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _handling.clear()
        os.close(write_end)  # the watching thread reads the end of the pipe and returns

    return restore


def reinstall() -> None:
    """Put the handlers back where something replaced them (Prefect's flow engine turns SIGTERM into a
    crash of the flow run while it runs): a no-op unless `handle_signals` is in force."""
    if _handling and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _in_main_thread)


def say(line: str) -> None:
    """A line on stderr, written with one system call: safe from a signal handler or any thread."""
    try:
        os.write(2, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def stopped(message: str, run_dir: str) -> None:
    """The flow has written the stopped run's partial report: what to say on the way out."""
    _outcome.update(message=message, run_dir=run_dir)


def farewell() -> None:
    """Once: what was kept (stderr), the run directory (stdout, as a finished run prints it) and how to
    resume. From the CLI when the flow ended, or from `end_now` when it could not wait for that."""
    if not _said.acquire(blocking=False):
        return
    if run_dir := _outcome.get("run_dir"):
        say(f"{_outcome.get('message', 'stopped')}; partial report: {os.path.join(run_dir, 'report.html')}")
        try:
            sys.stdout.flush()
            os.write(1, (run_dir + "\n").encode())
        except (OSError, ValueError):
            pass
    if resume := _handling.get("resume"):
        say(resume)


def _in_main_thread(signum: int, frame: Any) -> None:
    """Nothing: `_watch` has acted on the signal already."""


def _watch(read_end: int) -> None:
    """The first signal asks the run to stop and arms the watchdog; the next one ends the process."""
    while data := os.read(read_end, 64):
        for signum in data:
            if signum not in (signal.SIGINT, signal.SIGTERM):
                continue
            if _event.is_set():
                say(f"{signal.Signals(signum).name} again: stopping now")
                end_now()
            request()
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            say(f"{name}: stopping: no new model calls or sandbox jobs; work in flight gets {GRACE_S:.0f} s "
                "(Ctrl-C again to quit at once)")
            threading.Thread(target=_watchdog, name="stop-watchdog", daemon=True).start()
    os.close(read_end)


def _watchdog() -> None:
    time.sleep(HARD_EXIT_S)
    say("still running: abandoning what is left")
    end_now()


def end_now() -> None:
    """The cleanups, the resume line, exit 130: nothing waits for threads still in a call."""
    def clean() -> None:
        for cleanup in reversed(list(_cleanups)):
            try:
                cleanup()
            except Exception:  # noqa: BLE001 (ending anyway: one cleanup must not keep the others from running)
                pass

    # In a thread of its own, bounded: from a signal handler, the interrupted main thread may hold a
    # lock a cleanup needs.
    cleaning = threading.Thread(target=clean, name="stop-cleanup", daemon=True)
    cleaning.start()
    cleaning.join(timeout=CLEANUP_S)
    farewell()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(EXIT_CODE)
