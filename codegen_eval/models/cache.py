"""The model-call cache: content-addressed, on disk, and the run's journal.

A key is the sha256 of the canonical JSON of the complete request plus the backend's identity, so
anything that could change an answer changes the key, and nothing else does. Only accepted answers are
stored, so an API error or an invalid judge answer is asked again next time. Each answer is written as
soon as it arrives: a run killed half-way keeps every finished call.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import diskcache

from codegen_eval.models.backends import ModelRequest, ModelResponse

# Bump when the meaning of a stored answer changes, to invalidate every key at once.
SCHEMA_VERSION = 1


class CacheError(RuntimeError):
    """The cache directory cannot be used (read-only, full, corrupt)."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("CODEGEN_EVAL_CACHE_DIR") or "artifacts/cache")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(request: ModelRequest, identity: dict[str, Any]) -> str:
    payload = {"schema": SCHEMA_VERSION, "identity": identity, "request": request.model_dump(mode="json")}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


# One writer at a time per cache directory within this process. SQLite allows one writer anyway, but a
# writer that finds the database locked sleeps in SQLite's busy handler (1, 2, 5 ... 100 ms), holding
# a call thread; 32 threads storing answers at once spent more time asleep there than writing.
_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(directory: Path) -> threading.Lock:
    with _write_locks_guard:
        return _write_locks.setdefault(os.path.realpath(directory), threading.Lock())


class CallCache:
    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory else default_cache_dir()
        self._writing = _write_lock(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._store = diskcache.Cache(str(self.directory), size_limit=2**40, eviction_policy="none")
        except (OSError, diskcache.core.sqlite3.Error) as exc:
            raise CacheError(f"cannot use cache directory {self.directory}: {exc}") from exc

    def get(self, key: str) -> ModelResponse | None:
        entry = self._store.get(key)
        return ModelResponse.model_validate(entry["response"]) if entry else None

    def put(self, key: str, request: ModelRequest, identity: dict[str, Any], response: ModelResponse) -> None:
        # The request is kept beside the answer so a cache entry can be read on its own.
        entry = {"identity": identity, "request": request.model_dump(mode="json"), "response": response.model_dump()}
        try:
            with self._writing:
                self._store.set(key, entry)
        except (OSError, diskcache.core.sqlite3.Error) as exc:
            raise CacheError(f"cannot write to cache directory {self.directory}: {exc}") from exc

    def has(self, key: str) -> bool:
        return key in self._store

    def get_note(self, name: str) -> str | None:
        """Small facts learned during runs (e.g. a model's output strategy), kept beside the answers."""
        return self._store.get(f"note:{name}")

    def has_note(self, name: str) -> bool:
        return f"note:{name}" in self._store

    def set_note(self, name: str, value: str) -> None:
        try:
            with self._writing:
                self._store.set(f"note:{name}", value)
        except (OSError, diskcache.core.sqlite3.Error) as exc:
            raise CacheError(f"cannot write to cache directory {self.directory}: {exc}") from exc

    def delete_note(self, name: str) -> None:
        with self._writing:
            self._store.delete(f"note:{name}")

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        self._store.close()
