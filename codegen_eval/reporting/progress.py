"""A tiny publish/subscribe hook so tasks can report progress without knowing who displays it."""

from __future__ import annotations

from collections.abc import Callable

Listener = Callable[[str, int, int | None], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def advance(stage: str, n: int = 1, total: int | None = None) -> None:
    """`n` more items of `stage` done; `total` when the stage's size is only known now."""
    for listener in list(_listeners):
        listener(stage, n, total)
