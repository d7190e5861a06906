"""`streamsonic devices`: list audio output devices and MIDI output ports."""

from __future__ import annotations

import argparse
import json
from typing import Any

from streamsonic.errors import StreamsonicError

DESCRIPTION = """\
List the audio output devices (for --output audio:NAME) and the MIDI output ports per
backend (for --output midi:NAME with --midi-api). Works with none present; a backend that
cannot start is listed with the reason.

examples:
  streamsonic devices
  streamsonic devices --json"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the devices options."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def audio_devices() -> dict[str, Any]:
    """``{"devices": [...], "default": name|None}`` or ``{"error": text}``."""
    from streamsonic.sinks.fluid import _import_sounddevice  # noqa: PLC0415 - lazy backend

    try:
        sd = _import_sounddevice()
    except StreamsonicError as err:
        return {"error": str(err)}
    apis = sd.query_hostapis()
    devices = []
    for dev in sd.query_devices():
        if dev["max_output_channels"] > 0:
            devices.append({
                "index": dev["index"],
                "name": dev["name"],
                "api": apis[dev["hostapi"]]["name"],
                "channels": dev["max_output_channels"],
                "sample_rate": dev["default_samplerate"],
            })
    try:
        default = sd.query_devices(kind="output")["name"]
    except (ValueError, sd.PortAudioError):
        default = None
    return {"devices": devices, "default": default}


def midi_ports() -> dict[str, Any]:
    """``{api: {"ports": [...]}}`` or ``{api: {"error": text}}`` for each compiled API."""
    from streamsonic.sinks import midiport  # noqa: PLC0415 - lazy backend

    result: dict[str, Any] = {}
    try:
        apis = midiport.api_ids("auto")
    except StreamsonicError as err:
        return {"rtmidi": {"error": str(err)}}
    for label, api in apis:
        try:
            out = midiport._new_out(api, "streamsonic-devices")
        except Exception as err:  # the backend cannot start here
            result[label] = {"error": str(err)}
            continue
        try:
            result[label] = {"ports": list(out.get_ports())}
        finally:
            out.delete()
    return result


def main(args: argparse.Namespace) -> int:
    """Print the listing (a failed write to stdout: one line, exit 74)."""
    from streamsonic.commands.printing import write_stdout  # noqa: PLC0415

    audio = audio_devices()
    midi = midi_ports()
    if args.json:
        write_stdout(json.dumps({"audio": audio, "midi": midi}, indent=2) + "\n")
        return 0
    lines = ["audio output devices (--output audio:NAME):"]
    if "error" in audio:
        lines.append(f"  unavailable: {audio['error']}")
    elif not audio["devices"]:
        lines.append("  none")
    for dev in audio.get("devices", []):
        mark = "*" if dev["name"] == audio["default"] else " "
        lines.append(f" {mark}{dev['index']:3d}  {dev['name']}  ({dev['api']}, "
                     f"{dev['channels']} ch, {dev['sample_rate']:.0f} Hz)")
    lines.append("MIDI output ports (--output midi:NAME --midi-api API):")
    for label, info in midi.items():
        if "error" in info:
            lines.append(f"  {label}: unavailable: {info['error']}")
        elif not info["ports"]:
            lines.append(f"  {label}: none")
        else:
            lines.extend(f"  {label}: {port}" for port in info["ports"])
    write_stdout("".join(line + "\n" for line in lines))
    return 0
