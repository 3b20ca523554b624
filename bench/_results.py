"""Where benchmark figures go: bench/RESULTS.md, each section with its machine and date."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def heading(title: str) -> str:
    return f"## {title} ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)"


def machine() -> str:
    return f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"


def load() -> str:
    """The 1, 5 and 15 minute load averages: how busy the (shared) machine was around a measurement."""
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def publish(lines: list[str], write: bool = True) -> None:
    """Print a section and (unless `write` is false) append it to RESULTS.md."""
    text = "\n".join(lines)
    print(text)
    if write:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
