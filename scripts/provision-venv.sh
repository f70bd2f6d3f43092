#!/usr/bin/env bash
# Create .venv and install the project with its dev and distributed extras (the celery,
# PostgreSQL and S3 tests run in the default suite), once per pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.installed-$(cat pyproject.toml "$0" | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  log=.venv/pip-install.log
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e ".[dev,distributed]"; } >"$log" 2>&1; then
    cat "$log" >&2; echo "provision: pip install failed (log above)" >&2; exit 1
  fi
  rm -f .venv/.installed-* && touch "$stamp"
fi
