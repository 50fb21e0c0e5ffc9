#!/usr/bin/env bash
# Run Spool's whole test suite on a fresh machine: installs what is missing, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k stream -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
ruff check .
exec python -m pytest -q "$@"
