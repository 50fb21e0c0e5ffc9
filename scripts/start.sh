#!/usr/bin/env bash
# One command for a fresh machine: install everything, start Spool on its embedded
# defaults (local Redis, local-directory storage, one worker per core), render a sample.
# Stops everything on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate

port="${SPOOL_PORT:-8000}"
export SPOOL_URL="http://127.0.0.1:${port}"
spool serve --port "$port" &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM

# Wait for the API to answer before submitting (spool serve also starts the workers).
for _ in $(seq 600); do
  if python - "$SPOOL_URL/healthz" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
  kill -0 $server 2>/dev/null || { echo "spool serve exited" >&2; exit 1; }
  sleep 0.5
done

spool submit "Welcome to Spool. This sample was rendered by a Celery worker running Kokoro, \
queued through Redis, and stored by the job service." --voice af_heart --wait -o sample.wav
echo "Rendered sample.wav. Spool keeps running on $SPOOL_URL (player page at $SPOOL_URL/); Ctrl-C stops it."
wait $server
