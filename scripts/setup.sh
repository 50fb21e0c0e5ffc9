#!/usr/bin/env bash
# Install everything Spool needs on a fresh Debian/Ubuntu machine (idempotent):
# system packages, a virtual environment at .venv, the project, and the model assets.
#
#   scripts/setup.sh            # runtime + test + QA dependencies, model assets
#   SPOOL_SKIP_BROWSER=1 ...    # skip Chromium (only the browser test needs it)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ -z "${SPOOL_SKIP_BROWSER:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  need_apt+=(chromium)
fi
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  log "installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.spool-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing Spool and its dependencies into .venv"
  python -m pip install -q --upgrade pip
  python -m pip install -q -e '.[test,qa]'  # qa: the ASR packages automatic QA needs (CI tests it)
  touch "$stamp"
fi

# Redis: use the one on SPOOL_REDIS_URL / 127.0.0.1:6379 if it answers, else start a local one.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  # Durable by default: an append-only file (fsync every second) in var/redis, so a Redis restart
  # loses no accepted job; noeviction, so job state is never dropped to make room.
  mkdir -p var/redis
  log "starting redis-server on 127.0.0.1:6379 (AOF in var/redis)"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir "$PWD/var/redis" \
    --appendonly yes --appendfsync everysec \
    --maxmemory "${SPOOL_REDIS_MAXMEMORY:-1gb}" --maxmemory-policy noeviction \
    --logfile "$PWD/var/redis/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

log "fetching and verifying model assets (Kokoro-82M int8, 54 voices, Piper joe)"
spool models fetch
log "ready"
