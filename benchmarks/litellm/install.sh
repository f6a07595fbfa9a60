#!/usr/bin/env bash
# Install LiteLLM's proxy into its own virtualenv (never a dependency of this project).
# Usage: benchmarks/litellm/install.sh [VENV_DIR]   (default: benchmarks/.litellm-venv)
# Prints the path of the `litellm` executable on the last line of stdout.
set -euo pipefail

LITELLM_VERSION="1.108.7"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV_DIR="${1:-$SCRIPT_DIR/../.litellm-venv}"
case "$VENV_DIR" in
  /*) ;;
  *) VENV_DIR="$SCRIPT_DIR/$VENV_DIR" ;;
esac
PYTHON="${PYTHON:-python3}"
STAMP="$VENV_DIR/.litellm-version"
LITELLM_BIN="$VENV_DIR/bin/litellm"

if [[ -x "$LITELLM_BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$LITELLM_VERSION" ]]; then
  echo "litellm[proxy]==$LITELLM_VERSION already installed in $VENV_DIR" >&2
else
  echo "Installing litellm[proxy]==$LITELLM_VERSION into $VENV_DIR" >&2
  rm -f "$STAMP"
  "$PYTHON" -m venv "$VENV_DIR"
  "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
    "litellm[proxy]==$LITELLM_VERSION" 1>&2
  LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV_DIR/bin/python" -c "import litellm.proxy.proxy_server" >/dev/null 2>&1 || {
    echo "litellm proxy failed to import after install" >&2
    exit 1
  }
  echo "$LITELLM_VERSION" > "$STAMP"
fi

# Normalise to an absolute path without .. components.
VENV_DIR="$(cd "$VENV_DIR" && pwd)"
echo "$VENV_DIR/bin/litellm"
