"""``--output`` specs -> sinks. Each backend module is imported only when used.

Specs: ``events``, ``file:PATH`` (Standard MIDI File), ``audio[:DEVICE]`` (FluidSynth through
sounddevice), ``midi:NAME`` (existing MIDI port by name or substring),
``midi-virtual:NAME`` (a new virtual port), ``wav:PATH`` (offline audio through FluidSynth),
``mqtt:PREFIX`` (notes as JSON on an MQTT topic prefix).
"""

from __future__ import annotations

import importlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from streamsonic.config import Config
from streamsonic.errors import UsageError
from streamsonic.extras import missing_extra
from streamsonic.mqtt.urls import PASSWORD_PLACES, redact, split_url
from streamsonic.sinks.base import Sink

#: spec kind -> (module, factory function, whether the part after ':' is required)
BACKENDS: dict[str, tuple[str, str, bool]] = {
    "events": ("streamsonic.sinks.events", "open_sink", False),
    "file": ("streamsonic.sinks.midifile", "open_sink", True),
    "audio": ("streamsonic.sinks.fluid", "open_sink", False),
    "midi": ("streamsonic.sinks.midiport", "open_sink", True),
    "midi-virtual": ("streamsonic.sinks.midiport", "open_virtual_sink", True),
    "wav": ("streamsonic.sinks.wav", "open_sink", True),
    "mqtt": ("streamsonic.sinks.mqtt", "open_sink", True),
}

#: Outputs that render offline (no real-time clock needed); ``render`` accepts only these.
OFFLINE_KINDS = frozenset({"events", "file", "wav"})

#: Outputs that ``run`` opens with another factory of their module: files written as they go,
#: flushed, rotated and never overwriting an earlier run's file (``render`` writes them whole).
LIVE_FACTORIES: dict[str, str] = {"file": "open_live_sink", "wav": "open_live_sink"}


@dataclass(frozen=True)
class OutputSpec:
    """One parsed ``--output`` value."""

    kind: str
    arg: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


#: What ``render`` can write, as its errors name it.
OFFLINE_CHOICES = "OUT.mid, OUT.wav, file:PATH, wav:PATH or events"


def parse_output(text: str, offline: bool = False) -> OutputSpec:
    """Parse ``kind[:arg]``; a bare path ending in .mid/.midi/.wav is accepted too.
    ``offline`` (``render``): an unknown output's error names only what render can write.

    An ``mqtt:`` output is checked here (its own broker URL, its topic prefix), so that a
    bad one is refused before anything starts; no message shows a URL's credentials."""
    raw = text.strip()
    kind, sep, arg = raw.partition(":")
    if kind not in BACKENDS:
        lower = raw.lower()
        if lower.endswith((".mid", ".midi")):
            return OutputSpec("file", raw)
        if lower.endswith(".wav"):
            return OutputSpec("wav", raw)
        if offline:
            raise UsageError(f"unknown output {redact(text)!r}; render writes files: use "
                             f"{OFFLINE_CHOICES}")
        raise UsageError(
            f"unknown output {redact(text)!r}; use one of: events, file:PATH, audio[:DEVICE], "
            "midi:NAME, midi-virtual:NAME, wav:PATH, mqtt:PREFIX"
        )
    if BACKENDS[kind][2] and not arg:
        raise UsageError(f"output {kind!r} needs a value: write {kind}:VALUE")
    if kind == "mqtt":
        check_mqtt_output(arg)
    return OutputSpec(kind, arg if sep else "")


def shown(specs: Iterable[object]) -> str:
    """Output specs (``OutputSpec`` or their text) as a log or status line shows them:
    joined with ", ", each redacted (no URL's user name). Only for display: a spec itself
    (passed on to a worker process, parsed again) keeps its text."""
    return ", ".join(redact(str(spec)) for spec in specs)


def written_file(spec: OutputSpec) -> str | None:
    """The file an output writes (its real path), or None (an output that writes none)."""
    return os.path.realpath(spec.arg) if spec.kind in ("file", "wav") and spec.arg else None


#: What each placeholder of a ``run`` file output's name can become (see
#: :class:`~streamsonic.sinks.outfile.FileSeries`), and a value it takes.
_PLACEHOLDER_PATTERNS = {"{n}": (r"[1-9][0-9]*", "1"),
                         "{start}": (r"[0-9]{8}T[0-9]{6}Z", "20250314T093000Z")}


def _name_pattern(path: str) -> re.Pattern[str]:
    """A regular expression for every name a ``run`` output's ``path`` can write."""
    parts = re.split(r"(\{n\}|\{start\})", path)
    return re.compile("".join(_PLACEHOLDER_PATTERNS[p][0] if p in _PLACEHOLDER_PATTERNS
                              else re.escape(p) for p in parts))


def _some_names(path: str) -> list[str]:
    """Names ``path`` writes: its placeholders filled with examples (``{n}`` 1 to 12)."""
    stamp = _PLACEHOLDER_PATTERNS["{start}"][1]
    return [path.replace("{start}", stamp).replace("{n}", str(n)) for n in range(1, 13)]


def _shared_name(first: str, second: str) -> str | None:
    """A file that two ``run`` outputs' paths (real paths, with placeholders) can both
    write, or None. A name of one that the other's pattern matches is found; two patterns
    that meet only at names neither example gives are not (``{n}`` 1 to 12 covers the
    templates that differ by a digit or two)."""
    if first == second:
        return first
    for name in _some_names(second):
        if _name_pattern(first).fullmatch(name):
            return name
    for name in _some_names(first):
        if _name_pattern(second).fullmatch(name):
            return name
    return None


def check_distinct_files(specs: Iterable[OutputSpec], templates: bool = True) -> None:
    """UsageError when two outputs write one file (``-o file:d.mid -o d.mid``): the second
    set the first one's open file aside as ``d-1.mid`` while the first went on calling it
    ``d.mid`` (its "wrote" line named the wrong file), where one output does the job; and
    when an output that plays on a device or port or publishes (``audio``, ``midi:X``,
    ``midi-virtual:X``, ``mqtt:X``) or ``events`` is given twice. ``templates`` (``run``):
    a path's ``{n}`` and ``{start}`` are the names it rotates through, so ``file:a{n}.mid``
    and ``file:a1.mid`` write one file too; ``render`` writes such a name as it is."""
    seen: list[tuple[str, OutputSpec]] = []
    devices: set[tuple[str, str]] = set()
    events = 0
    for spec in specs:
        events += spec.kind == "events"
        if events > 1:
            raise UsageError("the events output is given twice: each note's line would be "
                             "written twice to stdout; give it once")
        path = written_file(spec)
        if path is None:
            device = (spec.kind, spec.arg.strip())
            if spec.kind != "events" and device in devices:
                twice = ("published twice" if spec.kind == "mqtt" else
                         "played twice (two clients on one device or port)")
                raise UsageError(f"the output {redact(str(spec))} is given twice: every note "
                                 f"would be {twice} and counted twice in the metrics; give "
                                 "it once")
            devices.add(device)
            continue
        for earlier, first in seen:
            shared = _shared_name(earlier, path) if templates else \
                earlier if earlier == path else None
            if shared is None:
                continue
            if shared == path == earlier:
                raise UsageError(f"the outputs {first} and {spec} write the same file; "
                                 "give it once")
            raise UsageError(f"the outputs {first} and {spec} can write the same file "
                             f"({shared}, as a file is named in turn); give names that no "
                             "other output's can become")
        seen.append((path, spec))


def _identity(st: os.stat_result) -> tuple[int, int] | None:
    """What a file is (device, inode), or None for the null device (any number of writers
    may share it)."""
    if stat.S_ISCHR(st.st_mode):
        try:
            if st.st_rdev == Path(os.devnull).stat().st_rdev:
                return None
        except OSError:
            pass
    return st.st_dev, st.st_ino


def _input_identity(path: str) -> tuple[int, int] | None:
    """What an input file is (``-``: standard input), or None (none, or the null device)."""
    try:
        return _identity(os.fstat(0) if path == "-" else Path(path).stat())
    except (OSError, ValueError):
        return None


def _same_as_input(written: str, real: str, identity: tuple[int, int] | None,
                   templates: bool) -> tuple[str, str] | None:
    """How an output that writes ``written`` (a real path; ``templates``: with
    ``{n}``/``{start}`` standing for the names it rotates through) writes the input whose
    real path is ``real`` and whose (device, inode) is ``identity`` (the words for an
    error message: a verb, a note), or None where it does not."""
    if written == real:
        return "would write over", ""
    if templates and _name_pattern(written).fullmatch(real):
        return "can write over", " (as its file is named in turn)"
    if identity is None or (templates and any(p in written for p in _PLACEHOLDER_PATTERNS)):
        return None
    try:
        same = _identity(Path(written).stat()) == identity
    except (OSError, ValueError):  # it does not exist yet: another file
        return None
    return ("would write over", " (the same file under another name)") if same else None


def check_not_input(inputs: Iterable[str], specs: Iterable[OutputSpec],
                    others: Iterable[tuple[str, str]] = (), templates: bool = True) -> None:
    """UsageError when an output writes a file that is read as input (``render in.csv -o
    file:in.csv``: the MIDI file replaced the data; ``replay REC -o file:REC``: the
    recording was set aside as ``REC-1`` before it was read): the same real path, or the
    same file (device and inode: a hard link; ``-``: what standard input is). ``others``:
    more files written, as (what the message calls it, its path): ``--plot``,
    ``--record``. ``templates`` (``run``, ``replay``): an output's ``{n}`` and ``{start}``
    are the names it rotates through, so ``file:rec-{start}.jsonl`` can become the input
    ``rec-20250314T093000Z.jsonl``."""
    inputs = list(inputs)
    written = [(f"the output {spec}", path) for spec in specs
               if (path := written_file(spec)) is not None]
    written += [(name, os.path.realpath(path)) for name, path in others]
    for source in inputs:
        real = "" if source == "-" else os.path.realpath(source)
        identity = _input_identity(source)
        for name, path in written:
            how = _same_as_input(path, real, identity, templates)
            if how is not None:
                what = "standard input" if source == "-" else f"the input file {source}"
                raise UsageError(f"{name} {how[0]} {what}{how[1]}; give it another name")


def writes_stdout(path: str) -> bool:
    """Whether writing ``path`` would write the file, pipe or terminal that standard output
    is now (``/dev/stdout``, ``/proc/self/fd/1``, or its own name), the null device aside."""
    try:
        out = _identity(os.fstat(1))
        target = _identity(Path(path).stat())
    except (OSError, ValueError):  # no stdout, or the path does not exist yet
        return False
    return out is not None and out == target


def writer_of(path: str, specs: Iterable[OutputSpec]) -> OutputSpec | None:
    """The output of ``specs`` that writes the file at ``path`` (the same real path, or
    standard output where the events output writes), or None: what ``--record`` and
    ``--plot`` must not write too."""
    real = os.path.realpath(path)
    for spec in specs:
        if written_file(spec) == real or (spec.kind == "events" and writes_stdout(path)):
            return spec
    return None


def check_stdout_shared(specs: Iterable[OutputSpec]) -> None:
    """UsageError when a file output writes what the events output writes, standard output
    (``-o events -o file:/dev/stdout``): their bytes would land in the middle of each
    other's."""
    specs = list(specs)
    if not any(spec.kind == "events" for spec in specs):
        return
    for spec in specs:
        # (the name as given: the real path of /proc/self/fd/1 names no file, "pipe:[N]")
        if written_file(spec) is not None and writes_stdout(spec.arg):
            raise UsageError(f"the output {spec} writes standard output, where the events "
                             "output writes its lines; give it another path")


def check_mqtt_output(arg: str) -> None:
    """UsageError unless ``arg`` (of ``mqtt:ARG``) is a topic prefix, or a broker URL with
    one (``mqtt[s]://[user@]host[:port]/PREFIX``) and no password; the prefix must not hold
    the wildcards '+' or '#' (a URL would cut the topic at '#' without a word)."""
    shown = redact(f"mqtt:{arg}")
    prefix = arg
    if arg.startswith(("mqtt://", "mqtts://")):
        try:
            prefix = split_url(arg).path
        except ValueError as err:
            if "contains a password" in str(err):
                raise UsageError(
                    f"output {shown}: the URL contains a password; passwords never go into "
                    f"a URL or on the command line: put it in {PASSWORD_PLACES} (the user "
                    "name may stay in the URL)") from None
            raise UsageError(f"output {shown}: {err}") from None
        if any(c in arg.partition("://")[2] for c in "+#"):
            raise UsageError(f"output {shown}: the topic prefix must not contain '+' or '#' "
                             "(MQTT wildcards); e.g. mqtt:mqtt://host/notes")
    elif any(c in arg for c in "+#"):
        raise UsageError(f"output {shown}: the topic prefix must not contain '+' or '#' "
                         "(MQTT wildcards); e.g. mqtt:notes")
    if not prefix.strip("/"):
        raise UsageError(f"output {shown}: give a topic prefix, e.g. mqtt:notes or "
                         "mqtt:mqtt://HOST[:PORT]/notes")


def open_output(spec: OutputSpec, config: Config, live: bool = False,
                defer: bool = False) -> Sink:
    """Open the sink for ``spec`` (``live``: for ``run``, else for ``render``); errors are
    OutputError subclasses with a fix in the text. ``defer`` (a reload): an output that
    writes files checks its path but creates, renames or writes nothing until its
    ``start()``."""
    module_name, factory, _ = BACKENDS[spec.kind]
    deferrable = live and spec.kind in LIVE_FACTORIES
    if live:
        factory = LIVE_FACTORIES.get(spec.kind, factory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:  # a backend from a pip extra that is not installed
        error = missing_extra(err, f"output {redact(str(spec))}")
        if error is None:
            raise
        raise error from None
    if deferrable and defer:
        sink: Sink = getattr(module, factory)(spec.arg, config, defer=True)
    else:
        sink = getattr(module, factory)(spec.arg, config)
    return sink
