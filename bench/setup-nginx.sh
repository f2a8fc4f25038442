#!/usr/bin/env bash
# Debian's nginx for bench/gateway_bench.py (the "nginx proxy_pass" path). Idempotent: does nothing
# when an nginx binary is already there. The package's service is never started: the bench runs its
# own nginx with a generated config in a temporary directory and stops it at the end.
# Prints the binary's path on its last line.
set -euo pipefail

find_nginx() {
    command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

existing="$(find_nginx)"
if [ -n "$existing" ]; then
    echo "$existing"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup-nginx: not root and no sudo; install nginx-light yourself" >&2; exit 1; }
    SUDO="sudo"
fi

# Keep the package's postinst from starting the service (it would take port 80): a policy-rc.d
# that refuses every start, ours only if there is none already, removed again afterwards.
POLICY=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
install() { $SUDO apt-get install -y -q --no-install-recommends "$@" >&2; }
if ! install nginx-light && ! install nginx; then
    $SUDO apt-get update -q >&2
    install nginx-light || install nginx
fi

installed="$(find_nginx)"
[ -n "$installed" ] || { echo "setup-nginx: installed, but no nginx binary found" >&2; exit 1; }
echo "$installed"
