#!/usr/bin/env bash
# Command one: install (if needed) and run the server with the models in models.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m scripts.run_server "$@"
