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
import math
import os
import select
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
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

#: General MIDI programs given to new streams in turn (``music.program = -1``): no
#: percussion, timbres that stay distinct at low volume, the most different ones first.
#: Piano, flute, trumpet, vibraphone, violin, nylon guitar, clarinet, church organ,
#: marimba, oboe, harp, French horn, choir, cello, square lead.
DEFAULT_PALETTE: tuple[int, ...] = (0, 73, 56, 11, 40, 24, 71, 19, 12, 68, 46, 60, 52, 42, 80)

#: The longest input line ``input.max_line_bytes`` may allow (16 MiB).
MAX_LINE_BYTES = 16 * 1024 * 1024


#: Keys whose values are secrets: never taken from the command line (``--set``), never
#: shown in a message.
SECRET_KEYS = frozenset({"mqtt.password", "nats.password"})


class _Invalid(ValueError):
    """Raised inside ``__post_init__``; the loader adds the file name. ``shown``: how the
    value is shown in the message, where not its ``repr`` (a URL's credentials redacted;
    "": the message names the key and its value itself)."""

    def __init__(self, key: str, message: str, shown: str | None = None) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.detail = message
        self.shown = shown


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise _Invalid(key, message)


def _within(value: float, low: float, high: float, key: str, unit: str = "") -> None:
    """``low <= value <= high`` (NaN never is), else an error naming the allowed range."""
    _check(low <= value <= high, key, f"must be {_num(low)}..{_num(high)}{unit}")


def _num(x: float) -> str:
    return f"{x:_}" if isinstance(x, int) and abs(x) >= 10_000 else f"{x:g}"


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
        _check(bool(self.stream.strip()) and "\0" not in self.stream, "input.stream",
               "must be a non-empty name without NUL characters")
        _within(self.max_line_bytes, 16, MAX_LINE_BYTES, "input.max_line_bytes", " bytes")


@dataclass(frozen=True)
class NormalizeConfig:
    """Rolling normalization of each stream into 0..1."""

    mode: Literal["auto", "rank", "robust", "minmax", "zscore"] = "auto"
    window: int = 200
    window_seconds: float = 0.0
    low_percentile: float = 5.0
    high_percentile: float = 95.0
    zscore_clip: float = 2.5
    exit_after: int = 4
    render_scope: Literal["global", "rolling"] = "global"
    render_mode: Literal["auto", "rank", "robust", "minmax", "zscore"] = "auto"

    def __post_init__(self) -> None:
        _within(self.window, 2, 100_000, "normalize.window", " samples")
        _within(self.window_seconds, 0.0, 604_800.0, "normalize.window_seconds",
                " seconds (0: off)")
        _check(
            0 <= self.low_percentile < self.high_percentile <= 100,
            "normalize.low_percentile",
            "need 0 <= low_percentile < high_percentile <= 100",
        )
        _check(0 < self.zscore_clip <= 100, "normalize.zscore_clip",
               "must be > 0 and at most 100 standard deviations")
        _within(self.exit_after, 1, 1000, "normalize.exit_after", " samples")


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
    rhythm_temperature: float = 1.5
    passing_notes: int = 5

    def __post_init__(self) -> None:
        _within(self.influence, 0.0, 1.0, "model.influence")
        _within(self.passing_notes, 0, 16, "model.passing_notes", " notes (0: none)")
        _within(self.temperature, 0.0, 100.0, "model.temperature", " (0: greedy)")
        _within(self.rhythm_temperature, 0.0, 10.0, "model.rhythm_temperature",
                " (0: always the most likely timing)")
        _check(0.0 < self.kernel_width <= 128.0, "model.kernel_width",
               "must be > 0 and at most 128 semitones")
        _within(self.seed, 0, 2**32 - 1, "model.seed")


@dataclass(frozen=True)
class MusicConfig:
    """Scale, range, loudness and note length."""

    scale: str = "major"
    key: str = "C"
    low: int = 50
    high: int = 89
    velocity_min: int = 56
    velocity_max: int = 100
    headroom: int = 12
    tempo: float = 120.0
    note_length: float = 0.5
    program: int = -1
    palette: tuple[int, ...] = DEFAULT_PALETTE
    pan_spread: float = 0.8
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
        _check(self.headroom >= 0 and self.low - self.headroom >= 0
               and self.high + self.headroom <= 127,
               "music.headroom", "must be >= 0 and keep low - headroom and high + headroom "
               "within MIDI's 0..127")
        _check(bool(self.palette) and all(0 <= p <= 127 for p in self.palette),
               "music.palette", "must list General MIDI programs 0..127")
        _within(self.pan_spread, 0.0, 1.0, "music.pan_spread")
        _check(10.0 <= self.tempo <= 1000.0, "music.tempo", "must be 10..1000 beats per minute")
        _check(0.01 <= self.note_length <= 16.0, "music.note_length", "must be 0.01..16 beats")
        _check(-1 <= self.program <= 127, "music.program",
               "General MIDI programs are 0..127 (-1: each stream its own, from the palette)")


@dataclass(frozen=True)
class ClockConfig:
    """When notes happen."""

    mode: Literal["event", "tick"] = "event"
    max_rate: float = 16.0
    aggregate: Literal["anomalous", "last", "mean", "min", "max"] = "anomalous"
    backlog: int = 16
    step: float = 0.5
    batch_window: float = 0.005

    def __post_init__(self) -> None:
        _check(0.1 <= self.max_rate <= 1000.0, "clock.max_rate", "must be 0.1..1000 notes/s")
        _within(self.batch_window, 0.0, 0.1, "clock.batch_window", " seconds (0: no batching)")
        _check(0.01 <= self.step <= 16.0, "clock.step", "must be 0.01..16 beats")
        _check(0 <= self.backlog <= 100_000, "clock.backlog", "must be 0..100000 samples")


@dataclass(frozen=True)
class AccentConfig:
    """Anomalies: how they are scored and how an accented note sounds."""

    enabled: bool = True
    threshold: float = 0.5
    refractory: int = 4
    schedule: int = 0
    season: bool = True
    velocity: int = 127
    earcon: bool = True
    earcon_channel: int = 10
    earcon_program: int = 0
    earcon_note_up: int = 81
    earcon_note_down: int = 76
    earcon_velocity: int = 110
    earcon_delay: float = 0.06
    earcon_length: float = 0.3
    earcon_gap: float = 0.3
    earcon_max_lag: float = 1.2

    def __post_init__(self) -> None:
        _check(0.0 < self.threshold <= 1.0, "accent.threshold", "must be > 0 and at most 1")
        _within(self.refractory, 0, 10_000, "accent.refractory", " samples")
        _within(self.schedule, 0, 64, "accent.schedule", " onsets")
        _within(self.velocity, 1, 127, "accent.velocity")
        _within(self.earcon_channel, 1, 16, "accent.earcon_channel")
        _within(self.earcon_program, 0, 127, "accent.earcon_program")
        _within(self.earcon_note_up, 0, 127, "accent.earcon_note_up")
        _within(self.earcon_note_down, 0, 127, "accent.earcon_note_down")
        _within(self.earcon_velocity, 1, 127, "accent.earcon_velocity")
        _within(self.earcon_delay, 0.0, 2.0, "accent.earcon_delay", " seconds")
        _within(self.earcon_length, 0.01, 4.0, "accent.earcon_length", " seconds")
        _within(self.earcon_gap, 0.0, 2.0, "accent.earcon_gap", " seconds")
        _within(self.earcon_max_lag, 0.0, 10.0, "accent.earcon_max_lag", " seconds")


@dataclass(frozen=True)
class VoiceRule:
    """Per-stream sound, matched by stream name (fnmatch glob), first match wins."""

    match: str = "*"
    program: int = -1
    channel: int = -1
    mute: bool = False

    def __post_init__(self) -> None:
        _check(self.match != "", "voices.match",
               "an empty glob matches no stream; give stream names as a glob ('cpu*'), or "
               "'*' (or no match key) for every stream")
        _check(-1 <= self.program <= 127, "voices.program", "0..127, or -1 for music.program")
        _check(self.channel == -1 or 1 <= self.channel <= 16, "voices.channel",
               "1..16 (10 is General MIDI percussion), or -1 for automatic")


@dataclass(frozen=True)
class OutputConfig:
    """Where notes go when no --output is given, and how ``run`` writes file outputs."""

    targets: tuple[str, ...] = ("audio",)
    on_device_loss: Literal["reconnect", "exit"] = "reconnect"
    flush_interval: float = 2.0
    rotate_seconds: float = 0.0
    rotate_bytes: int = 0

    def __post_init__(self) -> None:
        _check(len(self.targets) > 0, "output.targets", "name at least one output")
        from streamsonic.errors import UsageError  # noqa: PLC0415
        from streamsonic.mqtt.urls import redact  # noqa: PLC0415 - no paho
        from streamsonic.outputs import (  # noqa: PLC0415 - avoid a cycle
            check_distinct_files,
            parse_output,
        )

        try:  # what the daemon would refuse at start
            check_distinct_files([parse_output(target) for target in self.targets])
        except UsageError as err:
            raise _Invalid("output.targets", redact(str(err)),
                           shown=_shown([redact(t) for t in self.targets])) from None
        _within(self.flush_interval, 0.1, 3600.0, "output.flush_interval", " seconds")
        _check(self.rotate_seconds == 0 or 1.0 <= self.rotate_seconds <= 31_622_400.0,
               "output.rotate_seconds", "must be 0 (off) or 1..31622400 seconds (a year)")
        _check(self.rotate_bytes == 0 or 65_536 <= self.rotate_bytes <= 4_000_000_000,
               "output.rotate_bytes", "must be 0 (off) or 65536..4000000000 bytes")


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
        _within(self.latency, 0.0, 10.0, "audio.latency", " seconds (0: device default)")


@dataclass(frozen=True)
class MidiConfig:
    """MIDI ports through mido and python-rtmidi."""

    api: Literal["auto", "alsa", "jack"] = "auto"
    reconnect_interval: float = 1.0

    def __post_init__(self) -> None:
        _check(0 < self.reconnect_interval <= 3600, "midi.reconnect_interval",
               "must be > 0 and at most 3600 seconds")


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
    on_takeover: Literal["retry", "exit"] = "retry"
    takeover_retry: float = 60.0
    connect_timeout: float = 0.0

    def __post_init__(self) -> None:
        from streamsonic.mqtt.naming import check_filter, template_problem  # noqa: PLC0415
        from streamsonic.mqtt.urls import redact_url, split_url  # noqa: PLC0415 - no paho

        if self.url:
            try:
                split_url(self.url)
            except ValueError as err:
                raise _Invalid("mqtt.url", str(err), shown=_shown(redact_url(self.url))) \
                    from None
        for topic_filter in self.topics:
            try:
                check_filter(topic_filter)
            except ConfigError as err:
                raise _Invalid("mqtt.topics", str(err)) from None
        problem = template_problem(self.stream_name)
        if problem is not None:
            raise _Invalid("mqtt.stream_name", problem)
        _check(self.qos in (0, 1, 2), "mqtt.qos", "must be 0, 1 or 2")
        _within(self.connect_timeout, 0.0, 86_400.0, "mqtt.connect_timeout",
                " seconds (0: keep trying)")
        _check(1.0 <= self.takeover_retry <= 86_400.0, "mqtt.takeover_retry",
               "must be 1..86400 seconds")
        _within(self.keepalive, 5, 65535, "mqtt.keepalive", " seconds")
        _within(self.session_expiry, 0, 2**32 - 1, "mqtt.session_expiry", " seconds")
        _within(self.queue_size, 1, 1_000_000, "mqtt.queue_size", " messages")
        _check(
            0 < self.reconnect_min <= self.reconnect_max <= 3600,
            "mqtt.reconnect_min",
            "need 0 < reconnect_min <= reconnect_max <= 3600 seconds",
        )


@dataclass(frozen=True)
class NatsConfig:
    """The NATS source: subjects, optionally split into partitions by the server's subject
    mapping, so that several daemons each play their own share of the streams."""

    url: str = ""
    username: str = ""
    password: str = ""
    password_file: str = ""
    subjects: tuple[str, ...] = ()
    partitions: tuple[int, ...] = ()
    payload: Literal["auto", "number", "json", "line"] = "auto"
    json_field: str = ""
    timestamp_field: str = ""
    stream_name: str = "{subject}"
    queue_size: int = 10000
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 0.0

    def __post_init__(self) -> None:
        _within(self.connect_timeout, 0.0, 86_400.0, "nats.connect_timeout",
                " seconds (0: keep trying)")
        if self.url:
            from streamsonic.sources.nats_url import parse_url  # noqa: PLC0415 - no nats-py

            try:
                parse_url(self.url)
            except ConfigError as err:
                raise _Invalid("nats.url", str(err), shown="") from None
        from streamsonic.mqtt.naming import template_problem  # noqa: PLC0415

        problem = template_problem(self.stream_name, "subject")
        if problem is not None:
            raise _Invalid("nats.stream_name", problem)
        _check(all(0 <= p <= 65_535 for p in self.partitions)
               and len(set(self.partitions)) == len(self.partitions), "nats.partitions",
               "must list distinct partition numbers 0..65535 (those of this instance)")
        _within(self.queue_size, 1, 1_000_000, "nats.queue_size", " messages")
        _check(
            0 < self.reconnect_min <= self.reconnect_max <= 3600,
            "nats.reconnect_min",
            "need 0 < reconnect_min <= reconnect_max <= 3600 seconds",
        )


@dataclass(frozen=True)
class StreamsConfig:
    """How many streams are remembered, and when one is forgotten (see README,
    "Reliability")."""

    max_streams: int = 10_000
    idle_evict: float = 300.0
    when_full: Literal["evict", "drop"] = "evict"

    def __post_init__(self) -> None:
        _within(self.max_streams, 1, 1_000_000, "streams.max_streams", " streams")
        _within(self.idle_evict, 0.0, 604_800.0, "streams.idle_evict", " seconds (0: off)")


@dataclass(frozen=True)
class DaemonConfig:
    """Logging and housekeeping."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval: float = 60.0
    warn_interval: float = 10.0
    workers: int = 1

    def __post_init__(self) -> None:
        _within(self.stats_interval, 0.0, 86_400.0, "daemon.stats_interval", " seconds (0: off)")
        _within(self.workers, 1, 64, "daemon.workers", " processes")
        _check(0 < self.warn_interval <= 86_400, "daemon.warn_interval",
               "must be > 0 and at most 86400 seconds")


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (see README, "Health")."""

    listen: str = ""

    def __post_init__(self) -> None:
        if self.listen:
            try:
                parse_listen(self.listen)
            except ValueError as err:
                raise _Invalid("metrics.listen", str(err)) from None


def parse_listen(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) -> ``(host, port)``; ValueError saying
    what is wrong. Port 0 picks a free port (the daemon logs which)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError('write HOST:PORT, e.g. "127.0.0.1:9464" ("" turns the endpoint off)')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "[]/" for c in host):
        raise ValueError(f"{host!r} is not a host name or address; write HOST:PORT")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} must be a number 0..65535 (0: any free port)")
    return host, int(port_text)


#: General MIDI's percussion channel (1-based, as the config counts channels).
PERCUSSION_MIDI_CHANNEL = 10


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    input: InputConfig = field(default_factory=InputConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    music: MusicConfig = field(default_factory=MusicConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    accent: AccentConfig = field(default_factory=AccentConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    midi: MidiConfig = field(default_factory=MidiConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
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


#: A config file larger than this is refused unread (config.toml is about 27 kB).
MAX_CONFIG_BYTES = 1024 * 1024


class _Origin:
    """Where the values being checked came from, as error messages name it."""

    def __init__(self, name: str, given: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.given = given or {}

    def of(self, key: str) -> str:
        """The origin of ``key``: the file, or the option that set it."""
        option = self.given.get(key)
        return f"{self.name} ({option})" if option else self.name


#: Seconds a config file that is a FIFO may take to be written to (a process substitution,
#: ``--config <(...)``, writes at once; a FIFO nobody writes to hung the command for good).
FIFO_WAIT = 10.0


def _read_head(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``; a FIFO is opened without waiting for a writer
    and given up (ConfigError) when none writes within FIFO_WAIT."""
    if not stat.S_ISFIFO(path.stat().st_mode):
        with path.open("rb") as fh:
            return fh.read(limit)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poll = select.poll()
        poll.register(fd, select.POLLIN | select.POLLHUP)
        if not poll.poll(FIFO_WAIT * 1000):
            raise ConfigError(f"config file {path} is a FIFO that no process wrote to in "
                              f"{FIFO_WAIT:g} s; give the config file itself")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TOML tables of ``path``; every way it can be unusable is a ``ConfigError``."""
    origin = str(path)
    try:
        raw = _read_head(Path(path), MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        # (a stale $STREAMSONIC_CONFIG is easily forgotten: say where the name came from)
        named = (" (named by $STREAMSONIC_CONFIG)"
                 if os.environ.get("STREAMSONIC_CONFIG") == origin else "")
        raise ConfigError(
            f"config file {origin}{named} does not exist; name an existing one ('streamsonic "
            "info --default-config > FILE' writes the commented defaults)"
        ) from None
    except OSError as err:
        raise ConfigError(f"config file {origin} cannot be read: {err.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {origin} is larger than {MAX_CONFIG_BYTES} bytes; "
                          "is it the right file?")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # (a BOM, as editors may write)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"config file {origin} is not UTF-8 text (byte {raw[err.start]:#04x} "
                          f"on line {line}); save it as UTF-8") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ConfigError(f"config file {origin} holds a NUL byte (on line {line}): it is no "
                          "text file; is it the right file?")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {origin} is not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"config file {origin} nests arrays or tables too deeply to be a "
                          "streamsonic config; see config.toml for its shape") from None


def earcon_problem(config: Config) -> str | None:
    """Why the earcon would not sound like nothing else (README, "What you hear"), or
    None. Two QA finds (2026-12-06): a [[voices]] rule's stream on the earcon's channel
    played its notes as the earcon's drums (the earcon's program change took the rule's
    program away), and an earcon moved to a melodic channel kept program 0, a stream's
    piano. Checked on the whole configuration (the file and the command line together)."""
    accent = config.accent
    if not (accent.enabled and accent.earcon):
        return None
    channel = accent.earcon_channel
    for rule in config.voices:
        if rule.channel == channel and not rule.mute:
            return (f"the [[voices]] rule for {rule.match!r} plays on channel {channel}, the "
                    "accent earcon's (accent.earcon_channel): the stream would sound like the "
                    "earcon; give it another channel, or move the earcon "
                    "(accent.earcon_channel) or turn it off (accent.earcon = false)")
    program = accent.earcon_program
    if channel != PERCUSSION_MIDI_CHANNEL and (program in config.music.palette
                                               or program == config.music.program):
        return (f"accent.earcon_program = {program} on channel {channel} "
                f"(accent.earcon_channel, not the percussion channel {PERCUSSION_MIDI_CHANNEL}) "
                "is a timbre streams play too (music.palette, music.program): the earcon would "
                "sound like a stream; pick a program no stream uses (e.g. 115, Woodblock)")
    return None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                given: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (None: defaults only) and apply dotted-key ``overrides``.

    ``given`` names the option that set each override (``{"music.tempo": "--tempo"}``) for
    error messages; an override it does not name came from ``--set``.
    """
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        data = read_config_file(path)
    config = _build(Config, data, "", _Origin(origin))
    if overrides:
        config = apply_overrides(config, overrides, given)
    problem = earcon_problem(config)
    if problem is not None:
        raise ConfigError(f"{origin if path is not None else 'the command line'}: {problem}")
    return config


def apply_overrides(config: Config, overrides: dict[str, Any],
                    given: Mapping[str, str] | None = None) -> Config:
    """Return ``config`` with dotted keys (``"music.scale"``) replaced, validated."""
    data = to_dict(config)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in data or not isinstance(data[section], dict) or key not in data[section]:
            raise ConfigError(f"unknown setting {dotted!r} on the command line; see config.toml")
        data[section][key] = value
    options = {k: (given or {}).get(k, "--set") for k in overrides}
    return _build(Config, data, "", _Origin("the command line", options))


def source_problem(config: Config) -> str | None:
    """What makes ``config`` unable to run as a daemon reading its configured source, which
    no single section can see (``replay`` may use ``mqtt.url`` as an ``mqtt:`` output's
    broker alone, so ``load_config`` does not refuse it): an MQTT source (``mqtt.url``
    set, no ``nats.url``) with no topics. ``check-config`` and the MQTT source refuse it
    (exit 78)."""
    mqtt = config.mqtt
    if mqtt.url and not config.nats.url and not mqtt.topics:
        return ("mqtt.topics is empty, but mqtt.url is set (MQTT is the source): name the "
                "topics to subscribe to in mqtt.topics (or pass --topic FILTER, repeatable)")
    return None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set section.key=value``; the value is TOML, or else a plain string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if key in SECRET_KEYS:
        section = key.partition(".")[0]
        places = ("the config file's mqtt.password, mqtt.password_file, "
                  "$STREAMSONIC_MQTT_PASSWORD or the systemd credential 'mqtt-password'"
                  if section == "mqtt" else
                  "the config file's nats.password, nats.password_file or "
                  "$STREAMSONIC_NATS_PASSWORD")
        raise ConfigError(
            f"--set {key}: a password never comes from the command line (ps and the shell's "
            f"history would show it); put it in {places}")
    if not sep or "." not in key:
        raise ConfigError(f"--set {text!r}: write --set section.key=value, e.g. music.scale=minor")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError:
        raise ConfigError(f"--set {key}: the value nests too deeply") from None
    if not isinstance(value, str) and _takes_text(key):
        value = raw.strip()  # mqtt.protocol=5 means "5", as written, not the number 5
    return key, value


def _takes_text(dotted: str) -> bool:
    """Whether the setting ``section.key`` takes text and no number (a ``str``, a choice
    of strings, or either of them or None)."""
    section, _, key = dotted.partition(".")
    cls = typing.get_type_hints(Config).get(section)
    if cls is None or not dataclasses.is_dataclass(cls):
        return False
    hint = typing.get_type_hints(cls).get(key)
    if hint is None:
        return False
    kinds = get_args(hint) if get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    texts = [k is str or (get_origin(k) is Literal and all(isinstance(a, str)
                                                            for a in get_args(k)))
             for k in kinds if k is not type(None)]
    return bool(texts) and all(texts)


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain dicts/lists (what ``load_config`` accepts back)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def _build(cls: type, data: Any, prefix: str, origin: _Origin) -> Any:
    where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{origin.of(prefix.rstrip('.'))}: {where} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{origin.of(prefix + unknown[0])}: unknown key '{prefix}{unknown[0]}' in {where}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{prefix}{name}", origin)
    try:
        built = cls(**kwargs)
    except _Invalid as err:
        if err.shown == "":  # the detail names the key and its value itself
            raise ConfigError(f"{origin.of(err.key)}: {err.detail}") from None
        shown = _show(kwargs, err.key) if err.shown is None else f"{err.shown}:"
        raise ConfigError(f"{origin.of(err.key)}: {err.key} = {shown} {err.detail}") from None
    for name, value in kwargs.items():  # a safety net: every number key has its own range
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{origin.of(prefix + name)}: {prefix}{name} = {value!r}: "
                              "must be a finite number")
    return built


def _show(kwargs: dict[str, Any], dotted: str) -> str:
    value = kwargs.get(dotted.rsplit(".", 1)[-1], "(default)")
    return f"{_shown(value)}:" if value != "(default)" else "(default):"


def _shown(value: object) -> str:
    """``repr(value)`` (a tuple as the TOML list it was written as), cut short: an error
    message stays one readable line."""
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _convert(tp: Any, value: Any, key: str, origin: _Origin) -> Any:
    origin_tp = get_origin(tp)
    at = origin.of(key)
    if key in SECRET_KEYS and not isinstance(value, str):
        raise ConfigError(f"{at}: {key} must be a string (its value is not shown)")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.", origin)
    if origin_tp is Literal:
        choices = get_args(tp)
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices)
            raise ConfigError(
                f"{at}: {key} = {_shown(value)} is not allowed; choose one of {shown}"
            )
        return value
    if origin_tp is tuple:
        item_tp = get_args(tp)[0]
        if isinstance(value, str) and item_tp is str:
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{at}: {key} must be a list, got {type(value).__name__}")
        return tuple(_convert(item_tp, v, f"{key}", origin) for v in value)
    if origin_tp in (types.UnionType, typing.Union):
        raise ConfigError(f"{at}: {key}: unsupported type")  # pragma: no cover
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: {key} must be true or false, got {_shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{at}: {key} must be an integer, got {_shown(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{at}: {key} must be a number, got {_shown(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range; _build rejects the inf
            return math.inf
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{at}: {key} must be a string, got {_shown(value)}")
        return value
    raise ConfigError(f"{at}: {key}: unsupported type {tp}")  # pragma: no cover
