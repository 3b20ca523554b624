"""The model-call cache: content-addressed, durable, shared, and the run's journal.

A key is the sha256 of the canonical JSON of the complete request plus the backend's identity, so
anything that could change an answer changes the key, and nothing else does. Only accepted answers are
stored, so an API error or an invalid judge answer is asked again next time. Each answer is written as
soon as it arrives: a run killed half-way keeps every finished call.

One interface, two stores: `CallCache(directory)` is a diskcache (SQLite) directory on this host, the
default; with a PostgreSQL URL (`url=`, or CODEGEN_EVAL_CACHE_URL) it is one database shared by every
host and worker of a team (`cache_pg.py`). Both hold the same keys and values; notes (reference proofs,
check results, strategies) live beside the answers under "note:<name>".
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache

from codegen_eval.models.backends import ModelRequest, ModelResponse

# Bump when the meaning of a stored answer changes, to invalidate every key at once.
SCHEMA_VERSION = 1
URL_VARIABLE = "CODEGEN_EVAL_CACHE_URL"


class CacheError(RuntimeError):
    """The cache cannot be used (a directory read-only, full or corrupt; a database unreachable)."""

    remedy = "free space and run the same command again"  # what the CLI tells the user to do


def default_cache_dir() -> Path:
    return Path(os.environ.get("CODEGEN_EVAL_CACHE_DIR") or "artifacts/cache")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(request: ModelRequest, identity: dict[str, Any]) -> str:
    payload = {"schema": SCHEMA_VERSION, "identity": identity, "request": request.model_dump(mode="json")}
    # surrogatepass: a model's output with a lone surrogate, sent on to the judge, still has a key
    return hashlib.sha256(canonical_json(payload).encode("utf-8", "surrogatepass")).hexdigest()


def answer_entry(request: ModelRequest, identity: dict[str, Any], response: ModelResponse) -> dict[str, Any]:
    """What is stored for an answer: the request is kept beside it so an entry can be read on its own."""
    return {"identity": identity, "request": request.model_dump(mode="json"), "response": response.model_dump()}


class CallCache:
    """The interface both stores implement. `CallCache(directory)` opens the configured store: PostgreSQL
    when `url` (or CODEGEN_EVAL_CACHE_URL) is set, else the diskcache directory."""

    location: str  # where it is, for messages: a directory, or the database's URL without its password

    def __new__(cls, directory: str | Path | None = None, *, url: str | None = None) -> CallCache:
        if cls is CallCache:
            url = url or os.environ.get(URL_VARIABLE) or None
            if url:
                from codegen_eval.models.cache_pg import PostgresCache

                cls = PostgresCache
            else:
                cls = DiskCache
        return super().__new__(cls)

    def get(self, key: str) -> ModelResponse | None:
        raise NotImplementedError

    def put(self, key: str, request: ModelRequest, identity: dict[str, Any], response: ModelResponse) -> None:
        raise NotImplementedError

    def has(self, key: str) -> bool:
        raise NotImplementedError

    def get_note(self, name: str) -> str | None:
        """Small facts learned during runs (e.g. a model's output strategy), kept beside the answers."""
        raise NotImplementedError

    def has_note(self, name: str) -> bool:
        raise NotImplementedError

    def set_note(self, name: str, value: str) -> None:
        raise NotImplementedError

    def delete_note(self, name: str) -> None:
        raise NotImplementedError

    @contextmanager
    def claim(self, key: str) -> Iterator[ModelResponse | None]:
        """Make the call for `key` here, or take the answer another worker is making right now.

        Yields None when this process is to make the call (`put` its answer inside the block), or the
        answer another holder stored meanwhile. A store shared by hosts holds a lease on the key for
        the block's duration; one on a single host lets every run make its own calls."""
        yield None

    def __len__(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


# One writer at a time per cache directory within this process. SQLite allows one writer anyway, but a
# writer that finds the database locked sleeps in SQLite's busy handler (1, 2, 5 ... 100 ms), holding
# a call thread; 32 threads storing answers at once spent more time asleep there than writing.
_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(directory: Path) -> threading.Lock:
    with _write_locks_guard:
        return _write_locks.setdefault(os.path.realpath(directory), threading.Lock())


class DiskCache(CallCache):
    """The cache in a diskcache (SQLite) directory on this host: the default."""

    def __init__(self, directory: str | Path | None = None, *, url: str | None = None):
        self.directory = Path(directory) if directory else default_cache_dir()
        self.location = str(self.directory)
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
        self._set(key, answer_entry(request, identity, response))

    def has(self, key: str) -> bool:
        return key in self._store

    def get_note(self, name: str) -> str | None:
        return self._store.get(f"note:{name}")

    def has_note(self, name: str) -> bool:
        return f"note:{name}" in self._store

    def set_note(self, name: str, value: str) -> None:
        self._set(f"note:{name}", value)

    def delete_note(self, name: str) -> None:
        with self._writing:
            self._store.delete(f"note:{name}")

    def _set(self, key: str, value: Any) -> None:
        try:
            with self._writing:
                self._store.set(key, value)
        except (OSError, diskcache.core.sqlite3.Error) as exc:
            raise CacheError(f"cannot write to cache directory {self.directory}: {exc}") from exc

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        self._store.close()
