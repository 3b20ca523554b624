from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from codegen_eval.models.backends import reset_backends
from tests.messages_api import MessagesAPI, seed_responder

SECRET = "sk-ant-test-SECRET-4f9c2d"  # must never reach an artifact, a log or a cache key
DATASET = Path(__file__).resolve().parent.parent / "datasets" / "aws_codegen.jsonl"
# The seed's four cases (the dataset's first four lines), for end-to-end tests of a small run.
SEED = Path(tempfile.mkdtemp(prefix="codegen-eval-seed-")) / "seed.jsonl"
SEED.write_text("".join(DATASET.read_text().splitlines(keepends=True)[:4]))
CLAUDE = "claude-haiku-4-5"

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def stored_calls(cache_dir: str | Path) -> int:
    """Model answers in a cache directory; the notes beside them (reference proofs, strategies) not counted."""
    import diskcache

    with diskcache.Cache(str(cache_dir)) as cache:
        return sum(1 for key in cache.iterkeys() if not str(key).startswith("note:"))


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server on loopback (SQLite) for the whole session, stopped at its end."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def llama_api() -> Iterator[str]:
    """A real OpenAI-compatible server (llama_cpp.server, the embedded GGUF) on loopback; its base URL."""
    from tests.llama_server import llama_server

    with llama_server() as url:
        yield url


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[MessagesAPI]:
    server = MessagesAPI(seed_responder()).start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    reset_backends()
    yield server
    server.stop()
    reset_backends()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def run(prefect_api, api, tmp_path, cache_dir):
    """Runs the evaluation flow on the seed cases against the loopback API; returns the run dir."""
    from codegen_eval.config import RunConfig
    from flows.evaluate import evaluate

    def run_once(model: str = CLAUDE, **overrides) -> Path:
        settings = {"dataset": str(SEED), "models": [model], "out": str(tmp_path / "runs"), "cache_dir": str(cache_dir)}
        return Path(evaluate(RunConfig(**{**settings, **overrides})))

    return run_once


class LivePrefect:
    """A `prefect server start` on a loopback port with its own PREFECT_HOME (and SQLite file)."""

    def __init__(self, home: Path, port: int):
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}/api"
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        # The UI asks PREFECT_UI_API_URL for its data (127.0.0.1:4200 otherwise).
        self.server_env = {**base, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                           "PREFECT_UI_API_URL": self.url}
        self.env = {**self.server_env, "PREFECT_API_URL": self.url}  # for CLI runs, workers and `prefect` commands


@pytest.fixture(scope="session")
def live_prefect(tmp_path_factory) -> Iterator[LivePrefect]:
    """One real Prefect server (UI included) shared by the alert, secret and UI tests: each start costs 15-20 s."""
    import subprocess
    import sys

    from tests.loopback import free_port, wait_healthy

    server = LivePrefect(tmp_path_factory.mktemp("live-prefect-home"), free_port())
    log = (server.home / "server.log").open("wb")
    process = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", str(server.port)],
                               env=server.server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if not wait_healthy(server.url + "/health"):
        os.killpg(process.pid, 9)
        pytest.fail(f"the Prefect server did not start within 180 s; see {server.home / 'server.log'}")
    yield server
    os.killpg(process.pid, 9)
    process.wait()
    log.close()


from tests.pg import cache_url, make_cache, postgres, prefect_on_postgres  # noqa: E402,F401  (fixtures: a real PostgreSQL, the cache on each store)
