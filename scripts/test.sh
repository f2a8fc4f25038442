#!/usr/bin/env bash
# The whole test suite, as `make test` runs it:
#   1. everything but the Ray tests, on this machine's network (PostgreSQL on 127.0.0.1:5432);
#   2. the Ray tests (marker `ray`: real multi-node Ray clusters, inferd on the Ray runtime)
#      inside a private network namespace, so Ray, which binds every interface, is reachable
#      on loopback only and no test traffic can leave the machine.
# Arguments are passed to both pytest runs; a run that selects no test (exit 5) is fine.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

"$PYTHON" -m pytest -m "not ray" "$@"
first=$?
if [ "$first" -eq 5 ]; then first=0; fi

if bash scripts/in-netns.sh true 2>/dev/null; then
    bash scripts/in-netns.sh "$PYTHON" -m pytest -m ray "$@"
    second=$?
else
    echo "test.sh: cannot create a network namespace here (needs root or user namespaces): Ray tests not run" >&2
    second=1
    if [ -z "${CI:-}" ] && [ -n "${INFERD_SKIP_RAY_TESTS:-}" ]; then second=0; fi
fi
if [ "$second" -eq 5 ]; then second=0; fi

if [ "$first" -ne 0 ] || [ "$second" -ne 0 ]; then
    echo "test.sh: failed (without Ray: exit $first; Ray tests: exit $second)" >&2
    exit 1
fi
