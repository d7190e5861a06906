"""Configuration: ``config.toml`` -> validated, frozen dataclasses.

Precedence, lowest first: built-in defaults (the dataclass defaults below, which the
commented ``config.toml`` at the top of the repository mirrors key for key), then one
config file (``--config PATH``; else ``$STREAMSONIC_CONFIG``; else the first of
``$XDG_CONFIG_HOME/streamsonic/config.toml`` and ``/etc/streamsonic/config.toml`` that
exists), then command-line overrides. Unknown keys and wrong types are errors that name
the key and the file (exit status 78), never silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from streamsonic.errors import ConfigError

SCALE_NAMES = (
    "chromatic",
    "major",
    "minor",
    "pentatonic",
    "minor-pentatonic",
    "blues",
    "dorian",
    "phrygian",
    "lydian",
    "mixolydian",
    "harmonic-minor",
    "whole-tone",
)


class _Invalid(ValueError):
    """Raised inside ``__post_init__``; the loader adds the file name."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.detail = message


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise _Invalid(key, message)


@dataclass(frozen=True)
class InputConfig:
    """How stdin lines are parsed (see README, "Input formats")."""

    format: Literal["auto", "number", "delimited", "pairs", "prometheus", "json"] = "auto"
    delimiter: str = "auto"
    header: Literal["auto", "yes", "no"] = "auto"
    timestamp: Literal["auto", "none"] = "auto"
    stream: str = "value"
    max_line_bytes: int = 65536

    def __post_init__(self) -> None:
        _check(
            self.delimiter in ("auto", ",", ";", "\t", " ", "|"),
            "input.delimiter",
            'use "auto" or one of "," ";" "\\t" " " "|"',
        )
        _check(bool(self.stream.strip()), "input.stream", "must be a non-empty name")
        _check(self.max_line_bytes >= 16, "input.max_line_bytes", "must be at least 16")


@dataclass(frozen=True)
class NormalizeConfig:
    """Rolling normalization of each stream into 0..1."""

    mode: Literal["robust", "minmax", "zscore", "rank"] = "rank"
    window: int = 200
    window_seconds: float = 0.0
    low_percentile: float = 5.0
    high_percentile: float = 95.0
    zscore_clip: float = 2.5
    render_scope: Literal["global", "rolling"] = "global"
    render_mode: Literal["robust", "minmax", "zscore", "rank"] = "rank"

    def __post_init__(self) -> None:
        _check(self.window >= 2, "normalize.window", "must be at least 2 samples")
        _check(self.window_seconds >= 0, "normalize.window_seconds", "must be >= 0 (0: off)")
        _check(
            0 <= self.low_percentile < self.high_percentile <= 100,
            "normalize.low_percentile",
            "need 0 <= low_percentile < high_percentile <= 100",
        )
        _check(self.zscore_clip > 0, "normalize.zscore_clip", "must be > 0")


@dataclass(frozen=True)
class ModelConfig:
    """The LSTM and how the data influences it."""

    weights: str = ""
    temporal_weights: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    influence: float = 0.8
    temperature: float = 0.0
    kernel_width: float = 1.5
    seed: int = 0
    rhythm: Literal["clock", "model"] = "clock"

    def __post_init__(self) -> None:
        _check(0.0 <= self.influence <= 1.0, "model.influence", "must be in 0..1")
        _check(self.temperature >= 0.0, "model.temperature", "must be >= 0 (0: greedy)")
        _check(self.kernel_width > 0.0, "model.kernel_width", "must be > 0 semitones")
        _check(self.seed >= 0, "model.seed", "must be >= 0")


@dataclass(frozen=True)
class MusicConfig:
    """Scale, range, loudness and note length."""

    scale: str = "major"
    key: str = "C"
    low: int = 50
    high: int = 89
    velocity_min: int = 56
    velocity_max: int = 120
    velocity_z: float = 3.0
    tempo: float = 120.0
    note_length: float = 0.5
    program: int = 0
    overflow: Literal["share", "drop"] = "share"

    def __post_init__(self) -> None:
        from streamsonic.music import parse_key  # noqa: PLC0415 - avoid a cycle

        _check(self.scale in SCALE_NAMES, "music.scale", f"choose one of {', '.join(SCALE_NAMES)}")
        try:
            parse_key(self.key)
        except ValueError as err:
            raise _Invalid("music.key", str(err)) from None
        _check(0 <= self.low < self.high <= 127, "music.low", "need 0 <= low < high <= 127")
        _check(self.high - self.low >= 12, "music.high", "the range must span an octave or more")
        _check(
            1 <= self.velocity_min <= self.velocity_max <= 127,
            "music.velocity_min",
            "need 1 <= velocity_min <= velocity_max <= 127",
        )
        _check(self.velocity_z > 0, "music.velocity_z", "must be > 0")
        _check(10.0 <= self.tempo <= 1000.0, "music.tempo", "must be 10..1000 beats per minute")
        _check(0.01 <= self.note_length <= 16.0, "music.note_length", "must be 0.01..16 beats")
        _check(0 <= self.program <= 127, "music.program", "General MIDI programs are 0..127")


@dataclass(frozen=True)
class ClockConfig:
    """When notes happen."""

    mode: Literal["event", "tick"] = "event"
    max_rate: float = 8.0
    aggregate: Literal["last", "mean", "min", "max"] = "last"
    backlog: int = 16
    step: float = 0.5

    def __post_init__(self) -> None:
        _check(0.1 <= self.max_rate <= 1000.0, "clock.max_rate", "must be 0.1..1000 notes/s")
        _check(0.01 <= self.step <= 16.0, "clock.step", "must be 0.01..16 beats")
        _check(0 <= self.backlog <= 100_000, "clock.backlog", "must be 0..100000 samples")


@dataclass(frozen=True)
class VoiceRule:
    """Per-stream sound, matched by stream name (fnmatch glob), first match wins."""

    match: str = "*"
    program: int = -1
    channel: int = -1
    mute: bool = False

    def __post_init__(self) -> None:
        _check(-1 <= self.program <= 127, "voices.program", "0..127, or -1 for music.program")
        _check(self.channel == -1 or 1 <= self.channel <= 16, "voices.channel",
               "1..16 (10 is General MIDI percussion), or -1 for automatic")


@dataclass(frozen=True)
class OutputConfig:
    """Where notes go when no --output is given."""

    targets: tuple[str, ...] = ("audio",)

    def __post_init__(self) -> None:
        _check(len(self.targets) > 0, "output.targets", "name at least one output")


@dataclass(frozen=True)
class AudioConfig:
    """FluidSynth audio through sounddevice, and offline WAV rendering."""

    device: str = ""
    soundfont: str = ""
    sample_rate: int = 48000
    block_size: int = 256
    gain: float = 0.5
    latency: float = 0.0

    def __post_init__(self) -> None:
        _check(8000 <= self.sample_rate <= 192000, "audio.sample_rate", "must be 8000..192000")
        _check(16 <= self.block_size <= 8192, "audio.block_size", "must be 16..8192 frames")
        _check(0.0 <= self.gain <= 10.0, "audio.gain", "must be 0..10")
        _check(self.latency >= 0.0, "audio.latency", "must be >= 0 seconds (0: device default)")


@dataclass(frozen=True)
class MidiConfig:
    """MIDI ports through mido and python-rtmidi."""

    api: Literal["auto", "alsa", "jack"] = "auto"
    reconnect_interval: float = 1.0

    def __post_init__(self) -> None:
        _check(self.reconnect_interval > 0, "midi.reconnect_interval", "must be > 0 seconds")


@dataclass(frozen=True)
class MqttConfig:
    """The MQTT source (and the mqtt: output)."""

    url: str = ""
    topics: tuple[str, ...] = ()
    qos: int = 1
    client_id: str = ""
    protocol: Literal["5", "3.1.1"] = "5"
    username: str = ""
    password: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive: int = 30
    clean_start: bool = True
    session_expiry: int = 3600
    retained: bool = False
    payload: Literal["auto", "number", "json", "line"] = "auto"
    json_field: str = ""
    timestamp_field: str = ""
    stream_name: str = "{topic}"
    queue_size: int = 10000
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0

    def __post_init__(self) -> None:
        _check(self.qos in (0, 1, 2), "mqtt.qos", "must be 0, 1 or 2")
        _check(self.keepalive >= 5, "mqtt.keepalive", "must be >= 5 seconds")
        _check(self.session_expiry >= 0, "mqtt.session_expiry", "must be >= 0 seconds")
        _check(self.queue_size >= 1, "mqtt.queue_size", "must be >= 1")
        _check(
            0 < self.reconnect_min <= self.reconnect_max,
            "mqtt.reconnect_min",
            "need 0 < reconnect_min <= reconnect_max",
        )


@dataclass(frozen=True)
class DaemonConfig:
    """Logging and housekeeping."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval: float = 60.0
    warn_interval: float = 10.0

    def __post_init__(self) -> None:
        _check(self.stats_interval >= 0, "daemon.stats_interval", "must be >= 0 (0: off)")
        _check(self.warn_interval > 0, "daemon.warn_interval", "must be > 0 seconds")


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    input: InputConfig = field(default_factory=InputConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    music: MusicConfig = field(default_factory=MusicConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    midi: MidiConfig = field(default_factory=MidiConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    voices: tuple[VoiceRule, ...] = ()


# -- loading ------------------------------------------------------------------------------

def default_paths() -> list[Path]:
    """Config files looked for when neither --config nor $STREAMSONIC_CONFIG is given."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path(xdg) / "streamsonic" / "config.toml", Path("/etc/streamsonic/config.toml")]


def find_config_file(explicit: str | None) -> Path | None:
    """The config file to load, or None to run on defaults."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("STREAMSONIC_CONFIG")
    if env:
        return Path(env)
    return next((p for p in default_paths() if p.is_file()), None)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load ``path`` (None: defaults only) and apply dotted-key ``overrides``."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            with Path(path).open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(
                f"config file {origin} does not exist; pass an existing file to --config"
            ) from None
        except OSError as err:
            raise ConfigError(f"config file {origin} cannot be read: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {origin} is not valid TOML: {err}") from None
    config = _build(Config, data, "", origin)
    if overrides:
        config = apply_overrides(config, overrides)
    return config


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return ``config`` with dotted keys (``"music.scale"``) replaced, validated."""
    data = to_dict(config)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in data or not isinstance(data[section], dict) or key not in data[section]:
            raise ConfigError(f"unknown setting {dotted!r} on the command line; see config.toml")
        data[section][key] = value
    return _build(Config, data, "", "the command line")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set section.key=value``; the value is TOML, or else a plain string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(f"--set {text!r}: write --set section.key=value, e.g. music.scale=minor")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain dicts/lists (what ``load_config`` accepts back)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def _build(cls: type, data: Any, prefix: str, origin: str) -> Any:
    where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {where} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown key '{prefix}{unknown[0]}' in {where}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{prefix}{name}", origin)
    try:
        return cls(**kwargs)
    except _Invalid as err:
        raise ConfigError(f"{origin}: {err.key} = {_show(kwargs, err.key)} {err.detail}") from None


def _show(kwargs: dict[str, Any], dotted: str) -> str:
    value = kwargs.get(dotted.rsplit(".", 1)[-1], "(default)")
    return f"{value!r}:" if value != "(default)" else "(default):"


def _convert(tp: Any, value: Any, key: str, origin: str) -> Any:
    origin_tp = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.", origin)
    if origin_tp is Literal:
        choices = get_args(tp)
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{origin}: {key} = {value!r} is not allowed; choose one of {shown}")
        return value
    if origin_tp is tuple:
        item_tp = get_args(tp)[0]
        if isinstance(value, str) and item_tp is str:
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{origin}: {key} must be a list, got {type(value).__name__}")
        return tuple(_convert(item_tp, v, f"{key}", origin) for v in value)
    if origin_tp in (types.UnionType, typing.Union):
        raise ConfigError(f"{origin}: {key}: unsupported type")  # pragma: no cover
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{origin}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{origin}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: {key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{origin}: {key}: unsupported type {tp}")  # pragma: no cover
