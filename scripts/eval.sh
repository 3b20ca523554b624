#!/usr/bin/env bash
# The main job on a fresh machine: make a venv, install, evaluate the seed dataset, print the run dir.
# Without ANTHROPIC_API_KEY it uses the embedded model; the first install compiles llama-cpp-python.
# Extra arguments go to `codegen-eval run` (e.g. --model claude-haiku-4-5 --concurrency 16).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then extras=""; else extras="[local]"; fi
install_project "$extras"
exec .venv/bin/codegen-eval run "$@"
