#!/usr/bin/env bash
# Run a command inside a new private network namespace where only loopback exists (and is up).
# Used by the Ray tests: every Ray node binds 127.0.0.x there, so no traffic can leave the machine.
#   bash scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_ray_runtime.py -m ray
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
if ! command -v unshare >/dev/null 2>&1; then
    echo "in-netns.sh: 'unshare' (util-linux) is not installed" >&2
    exit 3
fi
if ! unshare -n true 2>/dev/null; then
    echo "in-netns.sh: cannot create a network namespace here (unshare -n needs root or CAP_SYS_ADMIN;" \
         "inside a container it may be blocked by seccomp/AppArmor)" >&2
    exit 3
fi
exec unshare -n -- bash -c 'ip link set lo up && exec "$@"' _ "$@"
