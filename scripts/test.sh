#!/usr/bin/env bash
# Set everything up, then run every check: ruff, mypy, then the whole pytest suite.
# The test fixtures start mosquitto, nats-server and a JACK dummy server themselves.
# Extra arguments go to pytest (e.g. ./scripts/test.sh -m 'not slow' -x).
# pytest runs in STREAMSONIC_TEST_WORKERS processes (pytest-xdist; default 2): most tests wait
# on a daemon, a broker or a JACK period rather than compute, so two workers halve the time
# even on two cores. Each worker starts its own mosquitto, nats-server and JACK server.
# STREAMSONIC_TEST_WORKERS=0 runs in this process (as -n 0 does: a later -n wins).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/setup.sh || exit
echo "test: ruff check ."
.venv/bin/ruff check . || exit
echo "test: mypy"
.venv/bin/python -m mypy || exit
echo "test: pytest"
.venv/bin/python -m pytest -n "${STREAMSONIC_TEST_WORKERS:-2}" "$@" </dev/null
status=$?
if [ "$status" -eq 5 ]; then
    echo "test: error: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
