#!/usr/bin/env bash
# Set everything up, then run every check: ruff, mypy, then the whole pytest suite.
# The test fixtures start mosquitto, nats-server and a JACK dummy server themselves.
# Extra arguments go to pytest (e.g. ./scripts/test.sh -m 'not slow' -x).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/setup.sh || exit
echo "test: ruff check ."
.venv/bin/ruff check . || exit
echo "test: mypy"
.venv/bin/python -m mypy || exit
echo "test: pytest"
.venv/bin/python -m pytest "$@" </dev/null
status=$?
if [ "$status" -eq 5 ]; then
    echo "test: error: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
