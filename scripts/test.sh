#!/usr/bin/env bash
# Command two: install what the tests need (Redis and Chromium included), start services, run the whole suite.
# Extra arguments go to pytest; a test path among them narrows the run to it.
#
# --quick: the quick loop. ruff, then every test that needs no Ray, no image build and no browser
# (tests/unit, tests/engine, tests/deploy but the image), against a private Redis as below. It
# installs only what those tests use, and sets up .venv only when it lacks the test tools: after a
# change of dependencies run the whole command (or EXTRAS=test scripts/setup.sh) once.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# OS packages the tests drive: Redis, nginx (configs/nginx.conf), openssl (test certificates) and
# Compose (docker-compose.yml is parsed, no engine needed). The lock timeout waits out other apt runs.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ "$quick" = 1 ] || command -v chromium >/dev/null || missing+=(chromium)  # the chat page's browser test (headless)
command -v nginx >/dev/null || missing+=(nginx)
command -v openssl >/dev/null || missing+=(openssl)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  missing+=(docker-compose)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi
# promtool (checks configs/prometheus-alerts.yml): only that binary, taken from Debian's
# prometheus package without installing it (which would bring a Prometheus server and its service).
if ! command -v promtool >/dev/null && [ ! -x .tools/bin/promtool ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get -o DPkg::Lock::Timeout=600 download prometheus >/dev/null 2>&1 \
     || { as_root apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get download prometheus >/dev/null; })
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p .tools/bin && cp "$tmp/x/usr/bin/promtool" .tools/bin/
  rm -rf "$tmp"
fi
export PATH="$PWD/.tools/bin:$PATH"
if [ "$quick" = 0 ] || [ ! -x .venv/bin/ruff ] || [ ! -x .venv/bin/lint-imports ] || ! .venv/bin/python -c 'import pytest, httpx, core' 2>/dev/null; then
  EXTRAS=test scripts/setup.sh
fi

# A private Redis on a free loopback port for the tests that need one; stopped on exit.
REDIS_PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize no >/tmp/aicore-test-redis.log 2>&1 &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null || true' EXIT
export AICORE_TEST_REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0

.venv/bin/ruff check .  # seconds: an unused import or undefined name fails before the long suites
.venv/bin/lint-imports --no-cache  # seconds: the import layers ([tool.importlinter] in pyproject.toml)
# A test path among the arguments narrows the run to it; otherwise the whole selection runs.
narrowed=0
for arg in "$@"; do
  if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then narrowed=1; fi
done
if [ "$quick" = 1 ]; then
  selection=(tests/unit tests/engine tests/deploy --ignore=tests/deploy/test_image.py)
  [ "$narrowed" = 0 ] || selection=()
  .venv/bin/python -m pytest "${selection[@]}" "$@"
  exit 0  # (not exec: the EXIT trap stops Redis)
fi
selection=(tests)
[ "$narrowed" = 0 ] || selection=()
.venv/bin/python -m pytest "${selection[@]}" --durations=30 "$@"  # the slowest steps listed: where the run's time goes

# The API suites again with INGRESS_MODE=haproxy (Ray Serve's HAProxy in front of the ingress
# replicas, applied where each test starts its server), so that both ingress modes stay tested.
# Left out: the backend and engine suites (below the ingress), deploys, clusters, nginx, the fuzz
# run, and test_network.py (proxy mode's socket table; test_haproxy_mode.py checks HAProxy's).
# Only for the whole suite: a run narrowed by arguments runs what they say.
if [ "$#" -eq 0 ]; then
  haproxy_suite=(test_api_v1.py test_auth_and_errors.py test_openai_client.py test_streaming_and_ops.py
    test_websocket_and_cors.py test_cache_sessions.py test_chat_page_browser.py test_email_and_batch.py
    test_batch_jobs.py test_embeddings.py test_lifecycle.py clients
    security/test_access.py security/test_batch_jobs_access.py security/test_channels.py
    security/test_input.py security/test_keys_admin.py security/test_limits.py
    security/test_logging.py security/test_store_down.py)
  INGRESS_MODE=haproxy .venv/bin/python -m pytest "${haproxy_suite[@]/#/tests/integration/}"
fi
