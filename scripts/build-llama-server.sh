#!/usr/bin/env bash
# Build upstream llama.cpp `llama-server` (the CPU engine of inferd) and cache the binary.
#
# Why this script exists: no wheel ships llama-server, and the bundled `llama_cpp.server` of
# llama-cpp-python serializes requests. The llama.cpp sources vendored in the
# llama-cpp-python sdist are a pinned, PyPI-reachable copy of upstream, so we build the
# batching server from them once (~6 min on 2 cores) and reuse it from a cache that lives
# outside the repository, so fresh clones (CI, `make run`) on the same machine skip the build.
#
# Usage:   scripts/build-llama-server.sh            # prints the absolute binary path (last stdout line)
# Env:     INFERD_ENGINE_CACHE   cache root (default: $HOME/.cache/inferd)
#          INFERD_BUILD_JOBS     parallel compile jobs (default: 2)
#          LLAMA_CPP_PYTHON_SDIST  path to an already-downloaded llama_cpp_python-0.3.36.tar.gz
#          PYTHON                a Python with pip, used to download the sdist
set -euo pipefail

readonly VERSION="0.3.36"
readonly CACHE_ROOT="${INFERD_ENGINE_CACHE:-$HOME/.cache/inferd}"
readonly DEST_DIR="$CACHE_ROOT/llama-server/$VERSION"
readonly BIN="$DEST_DIR/llama-server"
readonly JOBS="${INFERD_BUILD_JOBS:-2}"
WORK=""
readonly REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[build-llama-server] %s\n' "$*" >&2; }

# A cached binary counts only if it actually runs: a truncated copy or one built for a
# different libc must trigger a rebuild rather than a confusing failure at replica start.
binary_works() {
    [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1
}

finish_cached() {
    log "using cached binary"
    echo "$BIN"
    exit 0
}

# Pick a Python that has pip: the project venv first, because Debian's python3 has none.
pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then echo "$REPO_ROOT/.venv/bin/python"; return; fi
    echo python3
}

ensure_toolchain() {
    if command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1; then return; fi
    log "cmake/g++ missing: installing with apt-get"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y cmake g++ >&2
    else
        sudo apt-get update >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y cmake g++ >&2
    fi
}

fetch_sdist() {
    local into="$1"
    if [[ -n "${LLAMA_CPP_PYTHON_SDIST:-}" ]]; then
        log "using sdist $LLAMA_CPP_PYTHON_SDIST"
        cp "$LLAMA_CPP_PYTHON_SDIST" "$into/"
    else
        log "downloading llama-cpp-python==$VERSION sdist from PyPI"
        # --no-binary for this package only: with :all:, pip would also compile the sdist's
        # build requirements (cmake, ninja...) from source just to read its metadata (>10 min).
        "$(pick_python)" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$VERSION" -d "$into" >&2
    fi
    local archive
    archive=$(find "$into" -maxdepth 1 -name "llama_cpp_python-$VERSION.tar.gz" | head -n1)
    [[ -n "$archive" ]] || { log "sdist not found after download"; exit 1; }
    log "extracting vendored llama.cpp"
    tar -xzf "$archive" -C "$into" "llama_cpp_python-$VERSION/vendor/llama.cpp"
}

# Option names checked against vendor/llama.cpp/CMakeLists.txt of 0.3.36:
#  - LLAMA_CURL is deprecated and ignored there; LLAMA_OPENSSL=OFF is what now keeps the
#    binary free of network/TLS libraries (replicas only load local files).
#  - LLAMA_USE_PREBUILT_UI=OFF / LLAMA_BUILD_UI=OFF stop cmake from trying to fetch the web UI
#    from a Hugging Face bucket (unreachable here, and not needed by an API server).
#  - GGML_NATIVE=OFF keeps the cached binary portable across CPUs at no measured speed cost.
configure_and_build() {
    local src="$1" build="$2"
    log "configuring (cmake)"
    cmake -S "$src" -B "$build" \
        -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF \
        -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        >&2
    log "compiling target llama-server with -j$JOBS (takes several minutes on 2 cores)"
    cmake --build "$build" --target llama-server -j "$JOBS" >&2
}

# Copy next to the destination and rename, so a crash never leaves a half binary under the
# final name that a concurrent reader could pick up.
install_binary() {
    local built="$1"
    local tmp="$DEST_DIR/.llama-server.tmp.$$"
    cp "$built" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$BIN"
}

main() {
    mkdir -p "$DEST_DIR"
    if binary_works; then finish_cached; fi

    exec 9>"$DEST_DIR/.build.lock"
    log "waiting for build lock $DEST_DIR/.build.lock"
    flock 9
    # Another run may have finished the build while we waited for the lock.
    if binary_works; then finish_cached; fi

    ensure_toolchain
    # Global on purpose: the EXIT trap runs after main's locals are gone.
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/inferd-llama-build.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    local work="$WORK"

    local started=$SECONDS
    fetch_sdist "$work"
    local src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
    configure_and_build "$src" "$work/build"
    install_binary "$work/build/bin/llama-server"
    local took=$((SECONDS - started))

    binary_works || { log "built binary does not run: $BIN"; exit 1; }
    printf 'version=%s\nbuild_seconds=%s\njobs=%s\nbuilt_at=%s\n' \
        "$VERSION" "$took" "$JOBS" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$DEST_DIR/build-info.txt"
    log "built in ${took}s -> $BIN"
    echo "$BIN"
}

main "$@"
