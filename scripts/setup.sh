#!/usr/bin/env bash
# Set up what streamsonic needs on Debian/Ubuntu, idempotently:
#   1. system packages through apt-get (sudo when not root), only those that are missing;
#   2. a virtual environment at .venv;
#   3. torch (pinned: a CPU wheel where one is on disk), then the project, editable.
#
#   scripts/setup.sh          everything the tests need (test.sh): mosquitto, nats-server,
#                             JACK, the fluidsynth program, openssl; every extra and the
#                             test tools
#   scripts/setup.sh --demo   only what the demo needs (demo.sh): FluidSynth's library, a
#                             SoundFont and PortAudio; the 'plot' extra
#   scripts/setup.sh --service  only what the daemon needs to run (systemd/README.md): the
#                             libraries of the outputs (FluidSynth, a SoundFont, PortAudio,
#                             ALSA, libjack) and the extras of the daemon's sources and
#                             outputs (midi, mqtt, nats, metrics); no broker, JACK server,
#                             test tools or plotting
#
# A second run is fast: apt is skipped when every package is installed, pip when the stamp
# in .venv matches pyproject.toml (and this script's pins, the profile's extras and the
# checkout's physical path). A current test set-up also satisfies --demo and --service (it
# installs more).
#
# Environment: PYTHON (default python3, must be >= 3.11; when it is set and .venv was made
# with another interpreter, .venv is made again with PYTHON); STREAMSONIC_FORCE_SETUP=1
# reinstalls the Python packages even when the stamp matches; STREAMSONIC_SETUP_CHECK_ONLY=1
# installs nothing and exits 3 if anything would be installed (0 if all is current).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {  # the comment block at the top of this file, without its '#'
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

PROFILE=test
case "${1:-}" in
    "") ;;
    --demo) PROFILE=demo ;;
    --service) PROFILE=service ;;
    -h|--help) printf 'usage: %s [--demo | --service]\n\n' "$0"; usage; exit 0 ;;
    *) printf 'usage: %s [--demo | --service] (--help: what it does)\n' "$0" >&2; exit 64 ;;
esac
if [ $# -gt 1 ]; then
    printf 'usage: %s [--demo | --service] (--help: what it does)\n' "$0" >&2; exit 64
fi

# The demo plays through FluidSynth and PortAudio (or renders MIDI, WAV and a plot).
DEMO_APT=(libfluidsynth3 timgm6mb-soundfont libportaudio2)
# The tests add the brokers (MQTT, NATS), a JACK server, the fluidsynth program and openssl
# (TLS certs).
TEST_APT=("${DEMO_APT[@]}" mosquitto mosquitto-clients nats-server jackd2 fluidsynth openssl)
# The service (systemd/streamsonic.service) runs the daemon on a production host: the audio
# output's libraries (FluidSynth, a SoundFont, PortAudio) and the MIDI ports' (ALSA, libjack,
# which python-rtmidi and the JACK outputs load); the broker runs elsewhere or is installed
# on purpose, never as a side effect (Debian starts mosquitto when it is installed).
SERVICE_APT=("${DEMO_APT[@]}" libasound2 libjack-jackd2-0)
declare -A PIP_TARGET=([demo]='.[plot]' [service]='.[midi,mqtt,nats,metrics]' [test]='.[test]')
TORCH_VERSION=2.13.0
VENV=.venv
stamp_file() { echo "$VENV/.streamsonic-setup-$1"; }
case $PROFILE in
    demo) APT_PACKAGES=("${DEMO_APT[@]}") ;;
    service) APT_PACKAGES=("${SERVICE_APT[@]}") ;;
    *) APT_PACKAGES=("${TEST_APT[@]}") ;;
esac

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
PYTHON_GIVEN=${PYTHON:+1}
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
base_of() {  # base_of PYTHON: the real path of the interpreter (a venv's: the one it links to)
    "$1" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))'
}
venv_base() {  # the real path of the interpreter .venv was made with (pyvenv.cfg), or nothing
    local made_with
    made_with=$(sed -n 's/^executable *= *//p' "$VENV/pyvenv.cfg" 2>/dev/null | head -n 1)
    [ -z "$made_with" ] || realpath -m "$made_with"
}
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    would "create $VENV"
    say "creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
elif [ -n "$PYTHON_GIVEN" ] && [ "$(base_of "$PYTHON")" != "$(venv_base)" ]; then
    # PYTHON=/usr/bin/python3 for the service: a venv left on another Python (one under
    # /root, which ProtectHome= hides) must not pass as ready.
    made_with=$(venv_base)
    would "make $VENV again with PYTHON=$PYTHON ($(base_of "$PYTHON")); it was made with \
${made_with:-an unknown Python}"
    say "making $VENV again with PYTHON=$PYTHON (it was made with ${made_with:-an unknown Python})"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

# -- 3. Python packages -------------------------------------------------------------------
stamp_of() {  # stamp_of PROFILE: what a current install of PROFILE has in its stamp file
    {
        sha256sum pyproject.toml
        echo "torch==$TORCH_VERSION"
        echo "${PIP_TARGET[$1]}"
        "$VENV/bin/python" -V
        pwd -P  # the physical path: a symlink to the same checkout is the same set-up
    } | sha256sum | cut -d' ' -f1
}
current() {  # current PROFILE: true when PROFILE's stamp is there and up to date
    [ "$(cat "$(stamp_file "$1")" 2>/dev/null)" = "$(stamp_of "$1")" ]
}
target=${PIP_TARGET[$PROFILE]}
if [ "${STREAMSONIC_FORCE_SETUP:-0}" != 1 ] && [ -x "$VENV/bin/streamsonic" ] \
        && { current "$PROFILE" || { [ "$PROFILE" != test ] && current test; }; }; then
    say "Python packages up to date ($VENV)"
else
    would "install the Python packages into $VENV: torch==$TORCH_VERSION, -e '$target'"
    rm -f "$(stamp_file "$PROFILE")"
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
    say "installing torch==$TORCH_VERSION"
    "${pip[@]}" install -q "torch==$TORCH_VERSION"
    say "installing streamsonic (pip install -e '$target')"
    "${pip[@]}" install -q -e "$target"
    stamp_of "$PROFILE" > "$(stamp_file "$PROFILE")"
fi
say "ready: $VENV/bin/streamsonic"
