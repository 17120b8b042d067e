#!/usr/bin/env bash
# The test command: set up (etcd-server, .venv), lint, type-check, run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -k ring`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest -q -p no:cacheprovider --durations=20 "$@"
