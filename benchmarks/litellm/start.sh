#!/usr/bin/env bash
# Start LiteLLM's proxy for the benchmark: one worker, no database, nothing fetched from the
# internet (each LITELLM_LOCAL_* keeps one download local).
# Usage: benchmarks/litellm/start.sh LITELLM_EXECUTABLE PORT UPSTREAM_BASE_URL
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export BENCH_UPSTREAM_URL="$3"
export LITELLM_LOG=ERROR
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True
export LITELLM_LOCAL_BLOG_POSTS=True LITELLM_LOCAL_POLICY_TEMPLATES=True
export LITELLM_LOCAL_AUTOROUTER_PRESETS=True
exec "$1" --config "$SCRIPT_DIR/config.yaml" --host 127.0.0.1 --port "$2" --num_workers 1
