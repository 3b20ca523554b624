#!/usr/bin/env bash
# The test suite on a fresh machine: make a venv, install everything the tests use, run pytest.
# Extra arguments go to pytest. Exits with pytest's code.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
install_project "[local,dev]"
# The report is checked in real headless Chromium: Debian's package (a browser download is not possible).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium for the browser tests..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  else
    echo "The browser tests need /usr/bin/chromium: install Debian's chromium package (apt-get install chromium)." >&2
  fi
fi
# The shared-cache tests start their own PostgreSQL from Debian's package (initdb, pg_ctl; no service).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's postgresql for the shared-cache tests..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    echo "The shared-cache tests need PostgreSQL's initdb: install Debian's postgresql package (apt-get install postgresql)." >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
