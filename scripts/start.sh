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
# spool serve stops in order on SIGTERM or SIGINT (web, then workers, then Redis) and exits 0.
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM

# Wait until a worker has its engine loaded (readiness, not just a web answer), so the sample's
# first audio does not wait for a model load.
if ! spool ready --timeout 600; then
  kill -0 $server 2>/dev/null || echo "spool serve exited" >&2
  exit 1
fi

spool submit "Welcome to Spool. This sample was rendered by a Celery worker running Kokoro, \
queued through Redis, and stored by the job service." --voice af_heart --wait -o sample.wav
echo "Rendered sample.wav. Spool keeps running on $SPOOL_URL (player page at $SPOOL_URL/); Ctrl-C stops it."
wait $server
