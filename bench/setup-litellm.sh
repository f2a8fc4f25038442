#!/usr/bin/env bash
# LiteLLM's proxy (pinned) in a venv of its own for bench/gateway_bench.py (the "LiteLLM" path),
# under ~/.cache/inferd/bench/litellm; never into the project's .venv. Idempotent: a stamp file
# names the installed version. Prints the proxy's executable on its last line.
# Override: LITELLM_VERSION, INFERD_BENCH_CACHE, PYTHON. (1.100.5: the newest whose [proxy] extra
# installs from PyPI here; 1.110's needs a litellm-proxy package that the index does not have.)
set -euo pipefail

VERSION="${LITELLM_VERSION:-1.100.5}"
CACHE="${INFERD_BENCH_CACHE:-$HOME/.cache/inferd/bench}"
ROOT="$CACHE/litellm"
VENV="$ROOT/venv-$VERSION"
STAMP="$VENV/.installed"
PYTHON="${PYTHON:-python3}"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/litellm" ]; then
    echo "$VENV/bin/litellm"
    exit 0
fi

mkdir -p "$ROOT"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$VERSION" >&2
# the proxy imports its whole feature set at start; fail here, not in the bench
LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/python" -c "import litellm.proxy.proxy_server" >&2
echo "$VERSION" > "$STAMP"
echo "$VENV/bin/litellm"
