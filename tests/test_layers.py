"""The house keeps its layers (pyproject.toml, [tool.importlinter]): no import cycle between layers and no
import from a lower layer up to a higher one, with no exception listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_import_runs_down_the_layers():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout
    assert "ignore_imports" not in (ROOT / "pyproject.toml").read_text()
