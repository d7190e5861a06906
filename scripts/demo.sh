#!/usr/bin/env bash
# Set up what the demo needs (scripts/setup.sh --demo: no broker, JACK or test tools), then
# run the main job on the embedded demo series:
# `streamsonic demo` plays it through the audio device, or, on a machine without one
# (a server, CI), renders it to demo-output/ (MIDI, WAV, plot, events) and says how to
# play the files. Extra arguments go to `streamsonic demo` (see --help).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/setup.sh --demo
exec .venv/bin/streamsonic demo "$@"
