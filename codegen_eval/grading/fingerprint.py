"""What a stored check result depends on besides its inputs: the checker's own code and libraries.

A check's verdict is a function of (code under test, case tests, reference) and of the code that
decides it. `checker_fingerprint()` hashes the latter, so a cached verdict is reused only by the very
checker that produced it: editing a grading module or upgrading moto invalidates every stored result.
"""

from __future__ import annotations

import hashlib
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

GRADING = Path(__file__).resolve().parent
# The judge is a model call, cached by its own request; everything else here decides a verdict.
NOT_A_CHECKER = {"judge.py"}
# dataset/schema.py reads `tests` (probes, defaults) into the models the checks use.
ALSO_DECIDES = (GRADING.parent / "dataset" / "schema.py",)
LIBRARIES = ("boto3", "botocore", "moto", "interegular", "regexploit", "parliament", "pyflakes")


def checker_sources() -> list[Path]:
    """The source files whose code decides a check's verdict (new grading modules are found by glob)."""
    found = [path for path in sorted(GRADING.glob("*.py")) if path.name not in NOT_A_CHECKER]
    return [*found, *ALSO_DECIDES]


@lru_cache(maxsize=1)
def checker_fingerprint() -> str:
    """sha256 over the checker's source files and the versions of Python and the checking libraries."""
    digest = hashlib.sha256()
    for path in checker_sources():
        digest.update(f"{path.name}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(f"python {sys.version}\0".encode())
    for name in LIBRARIES:
        digest.update(f"{name} {_version(name)}\0".encode())
    return digest.hexdigest()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"
