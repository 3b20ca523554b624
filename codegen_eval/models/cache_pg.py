"""The call cache in PostgreSQL: one store for every host and worker of a team.

Same keys and values as the diskcache store, in one table. A row whose `value` is NULL is a lease: a
worker is making that call now, until `expires`. Another worker that wants the same answer waits for
the value instead of paying for the call again; a lease whose holder died (its process killed, its
host gone) is not renewed, expires after CODEGEN_EVAL_CACHE_LEASE_S seconds and is taken over.

Every statement is committed on its own (autocommit): an answer is durable as soon as `put` returns.
The password never leaves the connection string: messages, run.json and Prefect parameters get the
URL without it (`public_url`); it comes from CODEGEN_EVAL_CACHE_URL, PGPASSWORD or ~/.pgpass.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from codegen_eval.models.backends import ModelRequest, ModelResponse
from codegen_eval.models.cache import URL_VARIABLE, CacheError, CallCache, answer_entry

TABLE = "codegen_eval_cache"
SCHEMES = ("postgresql", "postgres")
LEASE_S = float(os.environ.get("CODEGEN_EVAL_CACHE_LEASE_S") or 15)
TIMEOUT_S = float(os.environ.get("CODEGEN_EVAL_CACHE_TIMEOUT_S") or 10)  # to get a connection, before failing
POOL_SIZE = int(os.environ.get("CODEGEN_EVAL_CACHE_POOL_SIZE") or 16)

SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    key text PRIMARY KEY,
    value text,            -- NULL: a lease, `holder` is making this call until `expires`
    holder text,
    expires timestamptz
)"""
GET = f"SELECT value FROM {TABLE} WHERE key = %s"
PUT = (f"INSERT INTO {TABLE} (key, value) VALUES (%s, %s) "
       "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, holder = NULL, expires = NULL")
DELETE = f"DELETE FROM {TABLE} WHERE key = %s"
COUNT = f"SELECT count(*) FROM {TABLE} WHERE value IS NOT NULL"
# Take the lease unless the answer is stored or another holder's lease is alive; say which, in one trip.
CLAIM = f"""WITH claimed AS (
    INSERT INTO {TABLE} AS c (key, holder, expires) VALUES (%(key)s, %(holder)s, now() + make_interval(secs => %(ttl)s))
    ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
    WHERE c.value IS NULL AND c.expires < now()
    RETURNING 1)
SELECT EXISTS (SELECT 1 FROM claimed), (SELECT value FROM {TABLE} WHERE key = %(key)s)"""
RELEASE = f"DELETE FROM {TABLE} WHERE key = %s AND holder = %s AND value IS NULL"
RENEW = f"UPDATE {TABLE} SET expires = now() + make_interval(secs => %s) WHERE holder = %s AND value IS NULL"
# Callers ask `has(key)` and then `get(key)` (a batch's cached items first, then each item): the value
# read by `has` is kept a few seconds for the `get` that follows, one trip to the server instead of two.
# Only what a key fully determines is kept (answers, check results, proofs, the self-test's pass); a
# miss kept this way is harmless: `claim` reads again before a call is made.
MEMO_S, MEMO_SIZE = 5.0, 4096
IMMUTABLE_NOTES = ("note:checks:", "note:proof:", "note:selftest:")


class DatabaseUnavailable(CacheError):
    remedy = "once the database answers again, run the same command again"


def is_database_url(url: str) -> bool:
    return urlsplit(url).scheme.split("+")[0] in SCHEMES


def public_url(url: str) -> str:
    """The URL without its password (in the authority or a `password=` parameter): safe to print and store."""
    parts = urlsplit(_plain_scheme(url))
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def connection_url(url: str) -> str:
    """`url` with its password: the one in CODEGEN_EVAL_CACHE_URL when that names the same database."""
    configured = os.environ.get(URL_VARIABLE)
    if configured and public_url(configured) == public_url(url):
        return _plain_scheme(configured)
    return _plain_scheme(url)


def _plain_scheme(url: str) -> str:
    """postgresql+asyncpg://... (Prefect's, SQLAlchemy's form) as libpq's postgresql://..."""
    scheme, sep, rest = url.partition("://")
    if scheme.split("+")[0] not in SCHEMES or not sep:
        raise CacheError(f"not a PostgreSQL URL (postgresql://user@host:5432/db): {public_url_or_scheme(url)}")
    return "postgresql://" + rest


def public_url_or_scheme(url: str) -> str:
    return url.partition("://")[0] + "://..." if "://" in url else "(not a URL)"


class _Database:
    """One connection pool per database per process, and the leases this process holds in it."""

    def __init__(self, conninfo: str, public: str):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
        from psycopg_pool import ConnectionPool

        self.public, self._secret = public, _password_of(conninfo)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held: set[str] = set()
        self.memo: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self.pool = ConnectionPool(conninfo, min_size=1, max_size=POOL_SIZE, timeout=TIMEOUT_S, open=False,
                                   kwargs={"autocommit": True, "connect_timeout": max(1, int(TIMEOUT_S))},
                                   name="codegen-eval-cache")
        # Check results, proofs and the self-test's pass cost no model call to make again: they are
        # committed without waiting for the server's disk (synchronous_commit off: lost only if the
        # server itself crashes within ~0.6 s, never by a client's death), as diskcache commits.
        # Answers, strategies and batch ids are paid for: those wait for the flush.
        options = " ".join([conninfo_to_dict(conninfo).get("options") or "", "-c synchronous_commit=off"]).strip()  # the URL's own kept
        self.relaxed = ConnectionPool(make_conninfo(conninfo, options=options), min_size=1, max_size=4, timeout=TIMEOUT_S, open=False,
                                      kwargs={"autocommit": True, "connect_timeout": max(1, int(TIMEOUT_S))}, name="codegen-eval-cache-notes")
        try:  # one plain connection first: an unreachable database is said at once, in libpq's words
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=max(2, int(TIMEOUT_S))) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))  # two first runs at once
                conn.execute(SCHEMA)
            self.pool.open(wait=True, timeout=TIMEOUT_S)
            self.relaxed.open(wait=True, timeout=TIMEOUT_S)
        except Exception as exc:
            self.pool.close(timeout=0)
            self.relaxed.close(timeout=0)
            raise self.error(exc) from None

    def error(self, exc: BaseException) -> DatabaseUnavailable:
        """One line naming the database, never its password."""
        reason = " ".join(str(exc).split()) or type(exc).__name__
        for secret in {self._secret, unquote(self._secret)} - {""}:
            reason = reason.replace(secret, "***")
        return DatabaseUnavailable(f"cannot use the cache database {self.public}: {reason}")

    def remember(self, key: str, value: str | None) -> None:
        if key.startswith("note:") and not key.startswith(IMMUTABLE_NOTES):
            return
        with self._lock:
            self.memo[key] = (time.monotonic(), value)
            if len(self.memo) > MEMO_SIZE:
                self.memo.popitem(last=False)

    def recall(self, key: str) -> tuple[bool, str | None]:
        """(found, value): what `remember` kept for `key` in the last MEMO_S seconds, used once."""
        with self._lock:
            kept = self.memo.pop(key, None)
        if kept is None or time.monotonic() - kept[0] > MEMO_S:
            return False, None
        return True, kept[1]

    def forget(self, key: str) -> None:
        with self._lock:
            self.memo.pop(key, None)

    def hold(self, key: str) -> None:
        with self._lock:
            self.held.add(key)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew, name="cache-lease", daemon=True)
                self._renewer.start()

    def let_go(self, key: str) -> bool:
        """Forget the lease on `key`; whether it was still held (not ended by a stored answer)."""
        with self._lock:
            if key in self.held:
                self.held.discard(key)
                return True
            return False

    def _renew(self) -> None:
        """While this process is alive, its leases are: renewed every third of their length."""
        while True:
            time.sleep(LEASE_S / 3)
            if self.held:
                try:
                    with self.pool.connection() as conn:
                        conn.execute(RENEW, (LEASE_S, self.holder))
                except Exception:  # noqa: BLE001 (the calls' own statements report an unreachable database)
                    pass


_databases: dict[tuple[int, str], _Database] = {}
_databases_guard = threading.Lock()


def _database(conninfo: str, public: str) -> _Database:
    with _databases_guard:  # per process: a forked child opens its own pool
        key = (os.getpid(), conninfo)
        if key not in _databases:
            _databases[key] = _Database(conninfo, public)
        return _databases[key]


def _password_of(conninfo: str) -> str:
    parts = urlsplit(conninfo)
    return parts.password or dict(parse_qsl(parts.query)).get("password", "")


class PostgresCache(CallCache):
    """The cache in a PostgreSQL database (`url`, else CODEGEN_EVAL_CACHE_URL); `directory` is unused."""

    def __init__(self, directory: str | Path | None = None, *, url: str | None = None):
        raw = url or os.environ.get(URL_VARIABLE) or ""
        self.location = public_url(raw)
        self._db = _database(connection_url(raw), self.location)

    def get(self, key: str) -> ModelResponse | None:
        value = self._value(key)
        return _response(value) if value is not None else None

    def put(self, key: str, request: ModelRequest, identity: dict[str, Any], response: ModelResponse) -> None:
        self._set(key, json.dumps(answer_entry(request, identity, response), ensure_ascii=False))
        self._db.let_go(key)  # the stored answer ended the lease

    def has(self, key: str) -> bool:
        row = self._fetch(GET, (key,))
        value = row[0] if row else None
        self._db.remember(key, value)
        return value is not None

    def get_note(self, name: str) -> str | None:
        return self._value(f"note:{name}")

    def has_note(self, name: str) -> bool:
        return self.has(f"note:{name}")

    def set_note(self, name: str, value: str) -> None:
        self._set(f"note:{name}", value)

    def delete_note(self, name: str) -> None:
        self._db.forget(f"note:{name}")
        self._execute(DELETE, (f"note:{name}",))

    def _value(self, key: str) -> str | None:
        found, value = self._db.recall(key)
        if not found:
            row = self._fetch(GET, (key,))
            value = row[0] if row else None
        return value

    def _set(self, key: str, value: str) -> None:
        self._db.forget(key)
        self._run(PUT, (key, value), fetch=False, relaxed=key.startswith(IMMUTABLE_NOTES))

    @contextmanager
    def claim(self, key: str) -> Iterator[ModelResponse | None]:
        delay = 0.02
        while True:
            claimed, value = self._fetch(CLAIM, {"key": key, "holder": self._db.holder, "ttl": LEASE_S})  # type: ignore[misc]
            if claimed:
                break
            if value is not None:  # another worker made this call meanwhile
                yield _response(value)
                return
            time.sleep(delay)  # its holder is making it now
            delay = min(delay * 1.5, 0.5)
        self._db.hold(key)
        try:
            yield None
        finally:
            if self._db.let_go(key):  # no answer stored (an error, an unusable answer): free it for others now
                try:
                    self._execute(RELEASE, (key, self._db.holder))
                except CacheError:
                    pass  # it expires on its own

    def __len__(self) -> int:
        row = self._fetch(COUNT, ())
        return int(row[0]) if row else 0

    def _fetch(self, sql: str, params: Any) -> tuple | None:
        return self._run(sql, params, fetch=True)

    def _execute(self, sql: str, params: Any) -> None:
        self._run(sql, params, fetch=False)

    def _run(self, sql: str, params: Any, fetch: bool, relaxed: bool = False) -> tuple | None:
        """One statement, committed. A connection the server dropped (a restart) is replaced once."""
        import psycopg
        from psycopg_pool import PoolTimeout

        pool = self._db.relaxed if relaxed else self._db.pool
        for attempt in (1, 2):
            try:
                with pool.connection() as conn:
                    cursor = conn.execute(sql, params)
                    return cursor.fetchone() if fetch else None
            except PoolTimeout as exc:
                raise self._db.error(exc) from None
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    raise self._db.error(exc) from None
                pool.check()  # drop every connection the server closed
            except psycopg.Error as exc:
                raise self._db.error(exc) from None
        return None


def _response(value: str) -> ModelResponse:
    return ModelResponse.model_validate(json.loads(value)["response"])
