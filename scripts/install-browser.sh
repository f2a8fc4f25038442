#!/usr/bin/env bash
# Debian's Chromium for the console's browser tests (driven by Playwright, which is told to use
# this binary: no browser is downloaded). Installed once per machine; needs root for apt-get.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: /usr/bin/chromium is missing; install it with: sudo apt-get install chromium" >&2
    echo "install-browser: (the console's browser tests are skipped without it, outside CI)" >&2
    exit 0
fi
echo "install-browser: installing Debian's chromium (once per machine)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version >&2
