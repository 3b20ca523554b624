#!/usr/bin/env bash
# The test suite on a fresh machine: make a venv, install everything the tests use, run pytest.
# Extra arguments go to pytest. Exits with pytest's code.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
install_project "[local,dev]"
exec .venv/bin/python -m pytest "$@"
