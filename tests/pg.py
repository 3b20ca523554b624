"""A real PostgreSQL server for the tests, started from the machine's own binaries (Debian's `postgresql`
package; scripts/test.sh installs it when missing) in a temporary directory on a free loopback port.

`postgres` is one server for the whole session; `cache_url` gives each test a schema of its own in it
(a URL whose `options` set the search_path), which costs milliseconds where a database costs a second.
`make_cache` runs a cache test once on a diskcache directory and once on PostgreSQL.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from codegen_eval.models.cache import CallCache
from tests.loopback import free_port

USER, DATABASE = "tester", "codegen_eval"
_schemas = itertools.count(1)


def pg_bin() -> Path:
    """The newest PostgreSQL's bin directory (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    pytest.fail("PostgreSQL is not installed: apt-get install postgresql (scripts/test.sh does it when missing)")


class Postgres:
    """One server: `initdb` in a temporary directory, `pg_ctl` to start and stop it, trust auth on loopback."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="codegen-eval-pg-"))
        self.data = self.root / "data"
        # initdb refuses to run as root: as root, the server runs as the `postgres` user.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-instructions")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = DATABASE, password: str | None = None, schema: str | None = None) -> str:
        auth = f"{USER}:{quote(password, safe='')}" if password else USER
        options = f"?options=-csearch_path%3D{schema}" if schema else ""
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}{options}"

    def execute(self, sql: str, database: str = DATABASE) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    server.execute(f"CREATE DATABASE {DATABASE}", "postgres")
    yield server
    server.close()


@pytest.fixture
def cache_url(postgres: Postgres) -> str:
    """A URL to a schema of this test's own in the session's server."""
    schema = f"test_{os.getpid()}_{next(_schemas)}"
    postgres.execute(f"CREATE SCHEMA {schema}")
    return postgres.url(schema=schema)


@pytest.fixture(params=["diskcache", "postgres"])
def make_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., CallCache]:
    """Opens this test's cache (several calls: several handles on one store), on each implementation in turn."""
    if request.param == "diskcache":
        return lambda: CallCache(tmp_path / "cache")
    url = request.getfixturevalue("cache_url")
    return lambda: CallCache(url=url)


@pytest.fixture(scope="session")
def prefect_on_postgres(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `prefect server start` whose database is the session's PostgreSQL (as a team runs it): its API URL.

    The one setting it needs is PREFECT_API_DATABASE_CONNECTION_URL (postgresql+asyncpg://...)."""
    import subprocess
    import sys

    from tests.loopback import wait_healthy

    postgres.execute("CREATE DATABASE prefect", "postgres")
    home, port = tmp_path_factory.mktemp("prefect-on-postgres"), free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url("prefect").replace("postgresql://", "postgresql+asyncpg://", 1)}
    log = (home / "server.log").open("wb")
    process = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if not wait_healthy(url + "/health"):
        os.killpg(process.pid, 9)
        pytest.fail(f"the Prefect server on PostgreSQL did not start within 180 s; see {home / 'server.log'}")
    yield url
    os.killpg(process.pid, 9)
    process.wait()
    log.close()
