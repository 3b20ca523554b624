"""A real OpenAI-compatible server for tests and benchmarks: llama-cpp-python's own
(`python -m llama_cpp.server`, its [server] extra) serving the embedded GGUF on a loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codegen_eval.models.backends.local import weights_path
from tests.loopback import free_port, wait_healthy


@contextmanager
def llama_server(n_ctx: int = 4096, threads: int | None = None) -> Iterator[str]:
    """Start the server, wait until it answers, yield its base URL (…/v1), stop it."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(weights_path()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    if threads:
        command += ["--n_threads", str(threads)]
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        if not wait_healthy(f"{url}/models", timeout_s=180) or proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server did not start; its log: {log}\n{log.read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)
