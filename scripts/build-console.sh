#!/usr/bin/env bash
# Build the web console (console/) into src/inferd/api/console_assets/, which `inferd serve`
# serves at /console (src/inferd/api/console.py).
#
# Front-end packages come from the npm registry, pinned by console/package-lock.json; none is
# copied into the repository. `npm ci` runs only when package.json or package-lock.json changed
# since the last install (a stamp in console/node_modules, git-ignored), so a rebuild is just the
# esbuild bundle (well under a second).
#
# Usage:   scripts/build-console.sh         (make console)
# Needs:   Node.js >= 18 and npm
set -euo pipefail

readonly REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly CONSOLE="$REPO_ROOT/console"
readonly OUT="$REPO_ROOT/src/inferd/api/console_assets"
readonly STAMP="$CONSOLE/node_modules/.inferd-install-stamp"

log() { printf '[build-console] %s\n' "$*" >&2; }

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "$tool is not installed: the console needs Node.js (>= 18) and npm to build"
        exit 1
    fi
done

cd "$CONSOLE"
wanted="$(cat package.json package-lock.json | sha256sum | cut -c1-64) node-$(node --version)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$wanted" ]]; then
    log "installing the console's npm packages (package-lock.json changed or first build)"
    npm ci --no-audit --no-fund --loglevel=error
    printf '%s\n' "$wanted" > "$STAMP"
fi
node build.mjs "$OUT"
log "built into ${OUT#"$REPO_ROOT"/}"
