"""Text from a model or a candidate, made fit to store: no unpaired surrogates.

Python strings may hold lone surrogates (a JSON `"\\ud800"` escape decodes to one, and a candidate can put
one in an exception message), but UTF-8 files, pydantic's JSON, SQLite and XML cannot: one such
character in a message would end the whole run when results.jsonl, the report or the check cache is
written. Each is replaced by U+FFFD where the text enters a record.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_DEPTH = 64  # deeper data is not from this project's own records


def clean_text(text: str) -> str:
    """`text`, each surrogate code point replaced by U+FFFD (unchanged, and not copied, when it has none)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def clean_data(value: Any, depth: int = 0) -> Any:
    """JSON-like data with every string (keys too) passed through `clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if depth >= _MAX_DEPTH:
        return "…" if isinstance(value, (dict, list, tuple)) else value
    if isinstance(value, dict):
        return {clean_data(k, depth + 1): clean_data(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean_data(v, depth + 1) for v in value)
    return value
