"""Progress, reported by tasks without knowing who displays it, and the two ways the CLI displays it.

Tasks call `advance(stage)` per item done, the flow `batch_done()` when a batch is recorded and
`say(line)` for a line the user should read (the run's expected duration). A display subscribes:

- `Bars` in a terminal: rich progress bars with the rate's estimate of the time left;
- `Lines` anywhere else (a log file, CI, `nohup`): a plain line per stage at most every `every_s` and at
  each batch's end (`generate local 84/184, 5.6/min, ETA 18 min`), never a redrawn bar.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO


class Display(Protocol):
    def advance(self, stage: str, n: int, total: int | None) -> None: ...

    def batch_done(self) -> None: ...

    def say(self, line: str) -> None: ...


_displays: list[Display] = []


def subscribe(display: Display) -> None:
    _displays.append(display)


def unsubscribe(display: Display) -> None:
    if display in _displays:
        _displays.remove(display)


def advance(stage: str, n: int = 1, total: int | None = None) -> None:
    """`n` more items of `stage` done; `total` when the stage's size is only known now."""
    for display in list(_displays):
        display.advance(stage, n, total)


def batch_done() -> None:
    """A batch's results are recorded."""
    for display in list(_displays):
        display.batch_done()


def say(line: str) -> None:
    """A line for the user, above the bars or among the progress lines."""
    for display in list(_displays):
        display.say(line)


def rate_and_eta(done: int, total: int | None, elapsed_s: float) -> str:
    """`5.6/min, ETA 18 min` (or `done`), from the rate since the stage started."""
    if done <= 0 or elapsed_s <= 0:
        return ""
    per_min = done / elapsed_s * 60
    rate = f"{per_min:.1f}/min" if per_min < 100 else f"{per_min:,.0f}/min"
    if total is None:
        return rate
    if done >= total:
        return f"{rate}, done"
    return f"{rate}, ETA {duration((total - done) / per_min * 60)}"


def duration(seconds: float) -> str:
    """A duration as people say it: `40 s`, `18 min`, `1 h 20 min`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class _Stage:
    label: str
    total: int | None
    done: int = 0
    # The rate is measured from the stage's first item on: before it, the run was setting up or
    # waiting for an earlier stage, which says nothing about this stage's pace.
    first_at: float | None = None
    first_done: int = 0
    printed_at: float = float("-inf")
    printed_done: int = 0

    def add(self, n: int) -> None:
        self.done += n
        if self.first_at is None and n:
            self.first_at, self.first_done = time.monotonic(), self.done

    def rate(self) -> str:
        if self.first_at is None:
            return ""
        done = self.done - self.first_done
        return rate_and_eta(done, None if self.total is None else self.total - self.first_done, time.monotonic() - self.first_at)


class Lines:
    """Plain progress lines on `stream`: per stage at most every `every_s` seconds (only when it moved),
    and at each batch's end for every stage that moved since its last line."""

    def __init__(self, stream: TextIO, labels: dict[str, str], totals: dict[str, int | None], every_s: float = 30.0):
        self._stream, self._labels, self._every_s = stream, labels, every_s
        self._stages = {name: _Stage(labels.get(name, name), totals.get(name)) for name in totals}
        self._lock = threading.Lock()

    def advance(self, stage: str, n: int, total: int | None) -> None:
        with self._lock:
            state = self._stages.get(stage)
            if state is None:
                state = self._stages[stage] = _Stage(self._labels.get(stage, stage), total)
            elif total is not None:
                state.total = total
            state.add(n)
            if time.monotonic() - state.printed_at >= self._every_s:
                self._print(state)

    def batch_done(self) -> None:
        with self._lock:
            for state in self._stages.values():
                if state.done != state.printed_done:
                    self._print(state)

    def say(self, line: str) -> None:
        with self._lock:
            self._write(line)

    def _print(self, state: _Stage) -> None:
        count = f"{state.done}/{state.total}" if state.total is not None else str(state.done)
        rate = state.rate()
        self._write(f"{state.label} {count}" + (f", {rate}" if rate else ""))
        state.printed_at, state.printed_done = time.monotonic(), state.done

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


class Bars:
    """Rich progress bars (a terminal), with the time left at the current rate."""

    def __init__(self, bar, labels: dict[str, str], totals: dict[str, int | None]):
        self._bar, self._labels = bar, labels
        self._tasks = {name: bar.add_task(labels.get(name, name), total=total) for name, total in totals.items()}

    def advance(self, stage: str, n: int, total: int | None) -> None:
        if stage not in self._tasks:  # e.g. a Message Batch being polled
            self._tasks[stage] = self._bar.add_task(self._labels.get(stage, stage), total=total)
        elif total is not None:
            self._bar.update(self._tasks[stage], total=total)
        self._bar.advance(self._tasks[stage], n)

    def batch_done(self) -> None:
        pass

    def say(self, line: str) -> None:
        self._bar.console.print(line, highlight=False, soft_wrap=True)


@contextmanager
def shown(console, labels: dict[str, str], totals: dict[str, int | None], every_s: float = 30.0) -> Iterator[Display]:
    """Progress on `console` (a rich Console on stderr) while the block runs: bars in a terminal, lines elsewhere."""
    display: Display
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        width = max([10, *(len(label) for label in labels.values())])
        columns = (TextColumn(f"{{task.description:<{width}}}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as bar:
            display = Bars(bar, labels, totals)
            subscribe(display)
            try:
                yield display
            finally:
                unsubscribe(display)
        return
    display = Lines(console.file, labels, totals, every_s)
    subscribe(display)
    try:
        yield display
    finally:
        unsubscribe(display)


def batch_reporter(stage: str) -> Callable[[int, int], None]:
    """An `on_progress(done, total)` for a Message Batch of `stage`: its own bar, advanced as it is polled."""
    bar, reported = f"batch {stage}", [0, False]

    def report(done: int, total: int) -> None:
        if not reported[1]:
            advance(bar, 0, total=total)
            reported[1] = True
        advance(bar, done - reported[0])
        reported[0] = done

    return report
