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
