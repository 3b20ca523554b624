"""Grading works wherever the project is installed, and a sandbox that cannot read its own libraries
stops a run before any model call instead of failing every case.

A real install, as most container images have it: a venv inside a directory of mode 700 (root's home
is such a directory), used as root. The sandbox's unprivileged uid cannot enter it; the sandbox must
bring the files it needs back into view for its jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SEED
from tests.messages_api import MessagesAPI, seed_responder

ROOT = Path(__file__).resolve().parent.parent
GRADE_REFERENCES = """
import json, sys
from codegen_eval.dataset import load_dataset
from codegen_eval.grading.checks import run_checks
from codegen_eval.grading.sandbox import Sandbox
box = Sandbox()
verdicts = {}
for case in load_dataset(sys.argv[1]):
    failed = [f"{c.name}: {c.message[:200]}" for c in run_checks(case, case.expected, box) if c.gate and not c.passed]
    verdicts[case.id] = failed
box.close()
print(json.dumps(verdicts))
"""


@pytest.fixture(scope="module")
def private_venv(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    home.chmod(0o700)
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # A regular (not editable) install: the package itself lands inside the closed directory too.
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
                   check=True, cwd=home, timeout=1200)
    return venv


def test_every_reference_passes_from_a_venv_in_a_mode_700_home(private_venv, tmp_path):
    assert os.geteuid() == 0  # as root, the default in container images
    done = subprocess.run([str(private_venv / "bin" / "python"), "-c", GRADE_REFERENCES, str(ROOT / "datasets" / "aws_codegen.jsonl")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    failures = {case: problems for case, problems in json.loads(done.stdout.splitlines()[-1]).items() if problems}
    assert failures == {}


def test_a_sandbox_that_cannot_read_its_libraries_stops_the_run(private_venv, tmp_path):
    site = next((private_venv / "lib").glob("python3*/site-packages"))
    data = site / "botocore" / "data"
    data.chmod(0o700)
    server = MessagesAPI(seed_responder()).start()
    try:
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-test", "CODEGEN_EVAL_CACHE_DIR": str(tmp_path / "cache")}
        done = subprocess.run([str(private_venv / "bin" / "codegen-eval"), "run", "--dataset", str(SEED), "--model", "claude-haiku-4-5",
                               "--out", str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        data.chmod(0o755)
        server.stop()
    assert done.returncode == 2
    assert "sandbox self-test failed" in done.stderr and "cannot read" in done.stderr and "botocore/data" in done.stderr
    assert server.requests == [] and not (tmp_path / "runs").exists()
