#!/usr/bin/env bash
# Set up everything streamsonic needs on Debian/Ubuntu, idempotently:
#   1. system packages through apt-get (sudo when not root), only those that are missing;
#   2. a virtual environment at .venv;
#   3. torch (pinned: a CPU wheel where one is on disk), then the project with its test extras.
# A second run is fast: apt is skipped when every package is installed, pip when the stamp
# in .venv matches pyproject.toml (and this script's pins and the checkout's path).
#
# Environment: PYTHON (default python3, must be >= 3.11); STREAMSONIC_FORCE_SETUP=1
# reinstalls the Python packages even when the stamp matches; STREAMSONIC_SETUP_CHECK_ONLY=1
# installs nothing and exits 3 if anything would be installed (0 if all is current).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(libfluidsynth3 timgm6mb-soundfont libportaudio2 mosquitto mosquitto-clients
              jackd2 fluidsynth openssl)
TORCH_VERSION=2.13.0
VENV=.venv
STAMP=$VENV/.streamsonic-setup

CHECK_ONLY=${STREAMSONIC_SETUP_CHECK_ONLY:-0}

say() { printf 'setup: %s\n' "$*"; }
would() {  # would WHAT: in check-only mode, say what would be done and stop
    if [ "$CHECK_ONLY" = 1 ]; then say "would $*"; exit 3; fi
}
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

installed() {  # installed PACKAGE: true when dpkg has it fully installed
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to install system packages: run as root, or install sudo"
    fi
}

new_enough() {  # new_enough PYTHON: true for Python 3.11 or newer
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# The interpreter for the venv: $PYTHON, else the first Python >= 3.11 on PATH.
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 && new_enough "$candidate"; then
            PYTHON=$candidate
            break
        fi
    done
fi

# -- 1. system packages -------------------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 || die "this script needs Debian or Ubuntu (dpkg and apt-get)"
wanted=("${APT_PACKAGES[@]}")
# A Python with venv (Debian splits ensurepip out into python3-venv, python3.11-venv ...).
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    [ "$PYTHON" = python3 ] || die "PYTHON=$PYTHON not found"
    wanted+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    wanted+=("$(basename "$PYTHON")-venv")
fi
missing=()
for pkg in "${wanted[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "system packages already installed"
else
    would "install system packages: ${missing[*]}"
    say "installing system packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
fi

new_enough "$PYTHON" || die "$PYTHON is $("$PYTHON" -V 2>&1); streamsonic needs Python 3.11 or \
newer: install one (Ubuntu 22.04: apt-get install python3.11 python3.11-venv) or set PYTHON=..."

# -- 2. virtual environment -----------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    would "create $VENV"
    say "creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

# -- 3. Python packages -------------------------------------------------------------------
stamp_of() {
    {
        sha256sum pyproject.toml
        echo "torch==$TORCH_VERSION"
        "$VENV/bin/python" -V
        pwd
    } | sha256sum | cut -d' ' -f1
}
want=$(stamp_of)
if [ "${STREAMSONIC_FORCE_SETUP:-0}" != 1 ] && [ -x "$VENV/bin/streamsonic" ] \
        && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    say "Python packages up to date ($VENV)"
else
    would "install the Python packages into $VENV"
    rm -f "$STAMP"
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
    say "installing torch==$TORCH_VERSION"
    "${pip[@]}" install -q "torch==$TORCH_VERSION"
    say "installing streamsonic and its test tools (pip install -e '.[test]')"
    "${pip[@]}" install -q -e '.[test]'
    echo "$want" > "$STAMP"
fi
say "ready: $VENV/bin/streamsonic"
