"""``streamsonic render``: CSV columns -> notes, offline, deterministic.

One data note per row in file order (per column: several columns play as several streams, a
row's notes together; each column in runs of ``RUN`` rows, the model stepping in a second
thread; the model's added notes, ``model.passing_notes``, come between), spaced
``clock.step`` beats apart at ``music.tempo`` (or as the temporal model decides, with
``rhythm = "model"``); faster than real time (a :class:`VirtualClock` drives the same
scheduler and sinks the daemon uses). Values are normalized over the whole
file (``normalize.render_mode``, default ``auto``: quantiles, outliers beyond the range) or,
with ``--normalize rolling``, exactly as the daemon would. Without ``--column``, the column
with the most numbers plays; a column named as a time column (``time``, ``timestamp``,
``ts``, ``date``, ``datetime``, ``epoch``), which ``run`` reads as the sample time, plays
only when named.
"""

from __future__ import annotations

import csv
import gc
import io
import itertools
import logging
import re
import sys
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamsonic.config import Config
from streamsonic.errors import InputDataError, NoInputError, UsageError
from streamsonic.events import NoteEvent, Sample, clean_name
from streamsonic.mqtt.urls import redact
from streamsonic.music import seconds_per_beat
from streamsonic.outputs import (
    OFFLINE_CHOICES,
    OFFLINE_KINDS,
    OutputSpec,
    check_distinct_files,
    check_not_input,
    check_stdout_shared,
    parse_output,
    writer_of,
)
from streamsonic.parse import (
    TIME_COLUMNS,
    LineParser,
    decimal_comma,
    keyed,
    parse_number,
)

if TYPE_CHECKING:  # the runtime import is deferred (the model's modules)
    from streamsonic.conductor import Conductor, Run, Stepper
    from streamsonic.scheduler import Scheduler, VirtualClock
    from streamsonic.sinks.base import Sink
    from streamsonic.sinks.outfile import OutputFile

log = logging.getLogger(__name__)


@dataclass
class Series:
    """One column of a file: its name, the values, and the 1-based line of each value."""

    name: str
    values: np.ndarray
    lines: list[int]
    skipped: dict[str, int]


def _number(text: str) -> float | None:
    value = parse_number(text)
    return None if isinstance(value, str) else value


def read_series(text: str, column: str | None, source: str) -> Series:
    """Parse CSV ``text`` and pick ``column`` (header name or 0-based index).

    Fields are numbers as ``run`` reads them (:func:`streamsonic.parse.parse_number`); a
    field that is not one is skipped and counted by the same reasons (``invalid_utf8`` for
    one that held bytes that are not UTF-8, decoded as U+FFFD), the other rows kept.
    """
    return read_table(text, [column] if column is not None else None, source)[0]


def read_table(text: str, columns: list[str] | None, source: str,
               every: bool = False) -> list[Series]:
    """Parse CSV ``text`` and pick ``columns`` (header names or 0-based indexes; None: the
    column with the most numbers; ``every``: every column with numbers; a time column only
    by name), each as a :class:`Series` read as :func:`read_series` reads one. A file of
    JSON objects or ``name=value`` pairs (as ``run`` reads them) is read as a table whose
    columns are the names, one row per line (:func:`_read_keyed`). A UTF-8 byte order mark
    before the first line is no part of it, as for ``run``."""
    text = text.removeprefix("\ufeff")
    first = next((line for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")), "")
    if keyed(first):
        return _read_keyed(text, columns, source, every)
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    delimiter = _run_delimiter(sample, dialect.delimiter)
    if delimiter != dialect.delimiter:
        dialect = _with_delimiter(dialect, delimiter)
    # (strict: a quote left open is an error naming its line, where it took the rest of
    # the file into one field, its rows lost)
    reader = csv.reader(io.StringIO(text), dialect, strict=True)
    rows: list[list[str]] = []
    start = 1  # the line the next row starts on
    try:
        for row in reader:
            if any(f.strip() for f in row):
                rows.append(row)
            start = reader.line_num + 1
    except csv.Error as err:
        raise InputDataError(f"{source} line {start}: cannot be read as CSV ({err}); "
                             "check the quoting on that line") from None
    if not rows:
        raise InputDataError(f"{source} has no rows")
    header: list[str] | None = None
    first_line = 1
    if delimiter in ";\t":  # as run reads such a file: 1,5 is 1.5
        rows = [[f.replace(",", ".") if "," in f and decimal_comma(f) else f for f in r]
                for r in rows]
    if _is_header(rows[0]) and len(rows) > 1:
        header = [clean_name(f.strip()) for f in rows[0]]  # as run names its streams
        rows = rows[1:]
        first_line = 2
    width = max(len(r) for r in rows)
    names = _distinct(header) if header else (
        [f"col{i}" for i in range(width)] if width > 1 else ["value"])
    if every:
        indexes = [i for i in range(len(names))
                   if not _is_time(names, i, header is not None)
                   and _numeric_count(rows, i) > 0]
        if not indexes:
            raise InputDataError(f"{source} has no numeric column"
                                 + _besides_time(names, header is not None)
                                 + _decimal_comma_hint(rows))
    elif columns:
        indexes = [_pick_column(rows, names, c, source, given=header) for c in columns]
        if len(set(indexes)) < len(indexes):
            raise UsageError(f"{source}: a column is named twice in --column")
    else:
        indexes = [_pick_column(rows, names, None, source, header is not None)]
    for index in indexes:
        if header is not None and names[index] != header[index]:
            log.warning("%s: column %d is named %r as column %d is; it plays as %r", source,
                        index, header[index], header.index(header[index]), names[index])
    return [_series(rows, names, index, first_line, source) for index in indexes]


def _distinct(header: list[str]) -> list[str]:
    """The header's names, a later column of a name already taken named ``NAME#2``
    (``#3``...: a name no column has), so that each column plays as a stream of its own
    (two of one name would share a channel and program, their notes merged)."""
    names: list[str] = []
    taken = set(header)
    for name in header:
        if name in names:
            k = 2
            while clean_name(f"{name}#{k}") in taken:
                k += 1
            name = clean_name(f"{name}#{k}")  # noqa: PLW2901
            taken.add(name)
        names.append(name)
    return names


def _read_keyed(text: str, columns: list[str] | None, source: str,
                every: bool) -> list[Series]:
    """JSON lines or ``name=value`` lines as a table: a column per name (in the order the
    names first come), a row per line, parsed as ``run`` parses them (a ``time`` key is the
    sample's time there, not a column; nested keys are ``a.b``); fields that are not
    numbers are skipped and counted by the same reasons."""
    from streamsonic.config import InputConfig  # noqa: PLC0415

    parser = LineParser(InputConfig())
    values: dict[str, list[float]] = {}
    lines: dict[str, list[int]] = {}
    skipped: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        parsed = parser.parse_line(line, 0.0)
        for reason in parsed.bad:
            if reason != "empty":  # (blank lines, as in a CSV file)
                skipped[reason] = skipped.get(reason, 0) + 1
        for sample in parsed.samples:
            row = lines.setdefault(sample.stream, [])
            if row and row[-1] == n:  # a name twice on one line: its first value
                continue
            row.append(n)
            values.setdefault(sample.stream, []).append(sample.value)
    if skipped:
        log.warning("%s: skipped %d field(s) (%s)", source, sum(skipped.values()),
                    ", ".join(f"{k}: {v}" for k, v in skipped.items()))
    names = list(values)
    if not names:
        raise InputDataError(f"{source} has no numeric values")
    if every:
        picked = names
    elif columns:
        picked = []
        for column in columns:
            if column in values:
                picked.append(column)
            elif column.isdigit() and int(column) < len(names):
                picked.append(names[int(column)])
            else:
                raise UsageError(f"{source} has no column {column!r}; its lines name: "
                                 + ", ".join(f"{i}={n!r}" for i, n in enumerate(names)))
        if len(set(picked)) < len(picked):
            raise UsageError(f"{source}: a column is named twice in --column")
    else:
        picked = [max(names, key=lambda name: len(values[name]))]
    return [Series(name, np.asarray(values[name], dtype=np.float64), lines[name], skipped)
            for name in picked]


def _series(rows: list[list[str]], names: list[str], index: int, first_line: int,
            source: str) -> Series:
    values: list[float] = []
    lines: list[int] = []
    skipped: dict[str, int] = {}
    for n, row in enumerate(rows, start=first_line):
        parsed = parse_number(row[index] if index < len(row) else "")
        if isinstance(parsed, str):
            skipped[parsed] = skipped.get(parsed, 0) + 1
            continue
        value = parsed
        values.append(value)
        lines.append(n)
    if not values:
        raise InputDataError(f"{source}: column {names[index]!r} has no numeric values"
                             + _decimal_comma_hint(rows, index))
    if skipped:
        log.warning("%s: skipped %s row(s) of column %r (%s)", source, sum(skipped.values()),
                    names[index], ", ".join(f"{k}: {v}" for k, v in skipped.items()))
    return Series(names[index], np.asarray(values, dtype=np.float64), lines, skipped)


def _is_header(row: list[str]) -> bool:
    """Whether a first row names the columns: a field of it is text. A row of numbers,
    ``nan``, ``inf``, ones too large for a float (``1e309``) and empty or ``NA`` fields is
    data, its fields skipped and counted as ``run`` counts them."""
    return any(parse_number(f) in ("not_numeric", "invalid_utf8") for f in row)


def _run_delimiter(sample: str, sniffed: str) -> str:
    """The delimiter of a CSV file: the sniffed one, except that a file whose every line
    holds a tab or ';' (outside quotes) is delimited by it, as ``run`` reads a line (the
    sniffer takes ``1,5;2,25`` for three fields by ',')."""
    lines = [re.sub(r'"[^"]*"', "", line) for line in sample.splitlines()[:-1] or
             sample.splitlines()]
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for delimiter in ("\t", ";"):
        if lines and sniffed not in ("\t", ";") and all(delimiter in line for line in lines):
            return delimiter
    return sniffed


def _with_delimiter(dialect: type[csv.Dialect] | csv.Dialect,
                    delimiter: str) -> type[csv.Dialect]:
    """``dialect`` with another delimiter."""
    return type("Dialect", (csv.excel,), {"delimiter": delimiter,
                                          "quotechar": dialect.quotechar or '"',
                                          "skipinitialspace": dialect.skipinitialspace})


def _decimal_comma_hint(rows: list[list[str]], index: int | None = None) -> str:
    """A hint for a "no numbers" error where fields (of column ``index``, else any) look
    like numbers with decimal commas (``"1,5"`` in a file delimited by ','), which are not
    read as numbers there."""
    for row in rows[:200]:
        fields = row if index is None else row[index:index + 1]
        example = next((f.strip() for f in fields if decimal_comma(f)), None)
        if example is not None:
            return (f"; fields such as {example!r} have a decimal comma, a number only in a "
                    "file delimited by ';' or tabs: convert them to decimal points ("
                    f"{example.strip().replace(',', '.')})")
    return ""


def _numeric_count(rows: list[list[str]], i: int) -> int:
    return sum(1 for r in rows[:200] if i < len(r) and _number(r[i]) is not None)


def _is_time(names: list[str], index: int, headed: bool) -> bool:
    """Whether the column is named as a time column (``time``, ``timestamp``, ``ts``,
    ``date``, ``datetime``, ``epoch``): ``run`` reads it as the sample time, not a stream,
    and a render plays it only when asked to by name."""
    return headed and names[index].strip().lower() in TIME_COLUMNS


def _besides_time(names: list[str], headed: bool) -> str:
    """" besides its time column" where the file has one (for a "no numeric column" error)."""
    timed = any(_is_time(names, i, headed) for i in range(len(names)))
    return " besides its time column" if timed else ""


def _pick_column(rows: list[list[str]], names: list[str], column: str | None, source: str,
                 headed: bool = False, given: list[str] | None = None) -> int:
    """The index of ``column`` (a name of ``names``, or an index; None: the column with the
    most numbers). UsageError where ``given`` (the header as written) names more than one
    column so."""
    if column is not None:
        if given is not None and given.count(column) > 1:
            same = [i for i, name in enumerate(given) if name == column]
            raise UsageError(
                f"{source}: columns {', '.join(map(str, same[:-1]))} and {same[-1]} are "
                f"named {column!r}; "
                f"pick one by its index (--column {same[0]}) or by the name it plays as ("
                + ", ".join(f"{i}={names[i]!r}" for i in same) + ")")
        if column in names:
            return names.index(column)
        if column.lstrip("-").isdigit():
            idx = int(column)
            if 0 <= idx < len(names):
                return idx
        raise UsageError(
            f"{source} has no column {column!r}; columns are: "
            + ", ".join(f"{i}={n!r}" for i, n in enumerate(names))
        )
    best, best_count = 0, -1
    for i in range(len(names)):
        if _is_time(names, i, headed):
            continue  # the sample time (as run reads it), not a series to play
        count = _numeric_count(rows, i)
        if count > best_count:
            best, best_count = i, count
    if best_count <= 0:
        raise InputDataError(f"{source} has no numeric column"
                             + _besides_time(names, headed)
                             + "; pick one with --column" + _decimal_comma_hint(rows))
    return best


def _outputs(outputs: list[str]) -> list[OutputSpec]:
    specs = [parse_output(o, offline=True) for o in outputs]
    check_distinct_files(specs, templates=False)  # render names a file as it is given
    check_stdout_shared(specs)
    for spec in specs:
        if spec.kind not in OFFLINE_KINDS:
            raise UsageError(
                f"render writes files: output {redact(str(spec))!r} is live-only; use "
                f"{OFFLINE_CHOICES}"
            )
    return specs


def _open_plot(plot: str, specs: list[OutputSpec]) -> OutputFile:
    """``--plot``'s file, opened now (a bad name fails before the rendering), unless an
    output writes it too."""
    from streamsonic.plot import open_plot  # noqa: PLC0415 - matplotlib import

    spec = writer_of(plot, specs)
    if spec is not None:
        raise UsageError(f"--plot {plot} and the output {spec} are the same file: both "
                         "would write it; give the plot another name")
    return open_plot(plot)


def _check_wav_length(rows: int, step: float, sample_rate: int) -> None:
    """UsageError, before anything is rendered, when ``rows`` rows ``step`` seconds apart
    make more audio than a WAV file holds (4 GiB: about 6.2 hours at 48 kHz); the sink
    itself finds it only once it has got that far."""
    from streamsonic.sinks.wav import FRAME_BYTES, MAX_DATA_BYTES, TAIL_MAX  # noqa: PLC0415

    seconds = rows * step + TAIL_MAX
    most = MAX_DATA_BYTES / FRAME_BYTES / sample_rate
    if seconds > most:
        raise UsageError(f"{rows} rows {step:g} s apart make {seconds / 3600:.1f} hours of "
                         f"audio, more than a WAV file holds (4 GiB: {most / 3600:.1f} hours "
                         f"at {sample_rate} Hz); render fewer rows, a shorter --step or a "
                         "faster --tempo, or leave the WAV output out (MIDI holds it)")


def render_notes(config: Config, series: Series | Sequence[Series],
                 specs: list[OutputSpec], notes_wanted: bool = True) -> list[NoteEvent]:
    """Play ``series`` (one column, or several: each its own stream, its notes those it
    plays alone, a row's notes together in time) through the conductor into the sinks of
    ``specs``; return the notes. Without ``notes_wanted`` (no plot), a render whose only
    output is ``events`` ends when stdout's reader goes away (:class:`ReaderGone`)."""
    from streamsonic.conductor import Conductor, Cue  # noqa: PLC0415
    from streamsonic.daemon import open_outputs  # noqa: PLC0415
    from streamsonic.model.loader import load_pitch_model  # noqa: PLC0415
    from streamsonic.normalize import normalize_global  # noqa: PLC0415
    from streamsonic.scheduler import Scheduler, VirtualClock  # noqa: PLC0415

    columns = [series] if isinstance(series, Series) else list(series)
    rhythm = config.model.rhythm == "model"
    if rhythm and len(columns) > 1:
        raise UsageError("rhythm = \"model\" renders one column (the model decides when its "
                         "next note starts); render the columns one at a time")
    if len(columns) > config.streams.max_streams:
        raise UsageError(f"render plays each column as a stream: {len(columns)} columns are "
                         f"more than streams.max_streams ({config.streams.max_streams}); "
                         f"raise it (--set streams.max_streams={len(columns)}) or name fewer "
                         "columns")
    stepper: Stepper
    if rhythm:
        from streamsonic.rhythm import load_temporal_model  # noqa: PLC0415

        stepper, encoding = load_temporal_model(config)
    else:
        stepper, encoding, _ = load_pitch_model(config.model)
    conductor = Conductor(config, stepper, encoding)
    step = config.clock.step * seconds_per_beat(config.music.tempo)
    rolling = config.normalize.render_scope == "rolling"
    normalized = [
        None if rolling else normalize_global(s.values, config.normalize.render_mode,
                                              config.normalize)
        for s in columns
    ]
    # Row by row: which columns have a value on each line (their index into the values).
    if len(columns) == 1:
        rows: list[list[tuple[int, int]]] = [[(0, i)] for i in range(len(columns[0].values))]
    else:
        by_line: dict[int, list[tuple[int, int]]] = {}
        for c, s in enumerate(columns):
            for i, line in enumerate(s.lines):
                by_line.setdefault(line, []).append((c, i))
        rows = [by_line[line] for line in sorted(by_line)]
    if not rhythm and any(spec.kind == "wav" for spec in specs):
        _check_wav_length(len(rows), step, config.audio.sample_rate)
    clock = VirtualClock()
    sinks = open_outputs(specs, config)
    _when_reader_gone(sinks, halt=not notes_wanted)
    scheduler = Scheduler(clock, sinks, earcon=conductor.earcon)
    notes: list[NoteEvent] = []
    start = 0.0
    # What exists now (the model, numba's and NumPy's modules: about 100,000 objects) lives
    # as long as the render; the collector's full passes over it cost about 5% of a render.
    gc.freeze()
    finished = False
    try:
        if rhythm:  # one column, row by row: each row's delay comes from its step
            column, norm = columns[0], normalized[0]
            for n, value in enumerate(column.values.tolist()):
                clock.run_until(start)
                sample = Sample(column.name, float(n), value)
                cue = Cue(sample, start, None if norm is None else float(norm[n]),
                          reading=conductor.observe(sample), span=step)
                played = conductor.play([cue])
                for note in played.notes:
                    scheduler.play(note)
                    notes.append(note)
                # The temporal model says when the next note starts.
                start += played.timings[0].delay if played.timings else step
        else:
            _play_runs(conductor, scheduler, clock, columns, normalized, rows, step, notes)
        clock.run_all()
        finished = True
    finally:
        gc.unfreeze()
        # Interrupted (Ctrl-C, SIGTERM) or failed: no file is written, none replaced.
        scheduler.close(abandon=not finished)
    scheduler.check_written()
    return notes


def _when_reader_gone(sinks: list[Sink], halt: bool) -> None:
    """stdout's reader going away (``render ... -o events | head -1``) stops no render as
    SIGTERM does (no file written, exit 143): the other outputs go on and are written;
    with none (``halt``: and no plot), the render ends there. Exit 0 either way."""
    from streamsonic.sinks.events import EventsSink  # noqa: PLC0415

    for sink in sinks:
        if isinstance(sink, EventsSink):
            sink.when_gone = "halt" if halt and len(sinks) == 1 else "go_on"


#: The most columns ``--plot`` draws (:data:`streamsonic.plot.MAX_COLUMNS`; matplotlib is
#: not imported to check it).
PLOT_COLUMNS = 8
#: Rows of a column stepped in one call (:meth:`Conductor.start_run`).
RUN = 1024


def _play_runs(conductor: Conductor, scheduler: Scheduler, clock: VirtualClock,
               columns: list[Series], normalized: list[np.ndarray | None],
               rows: list[list[tuple[int, int]]], step: float,
               notes: list[NoteEvent]) -> None:
    """Play the columns (the pitch model: a row's notes start ``step`` after the last
    row's) in blocks of ``RUN`` rows: each column's values in the block read
    (:meth:`Conductor.observe`, which the model does not touch) and started as one run
    (:meth:`Conductor.start_run`), the runs stepped (:meth:`Run.step`) in a second thread
    while this one reads the next block and schedules the last block's notes, row by row
    at their times. The notes, and the clock's order of events, that stepping the rows
    one by one gives (the model's compiled step releases the GIL: two cores render about
    1.5 times as fast as one): a column's notes are those it plays alone (each stream's
    steps have their own bits in a batch too; tests/test_fast_paths.py), its voice
    claimed where its first value is read (:meth:`Conductor.observe`, row by row)."""
    from streamsonic.conductor import Cue  # noqa: PLC0415

    names = [s.name for s in columns]
    values = [s.values.tolist() for s in columns]
    norms = [None if n is None else n.tolist() for n in normalized]
    starts = list(itertools.accumulate([step] * (len(rows) - 1), initial=0.0))
    pending: deque[tuple[int, list[Run | None], Future[None]]] = deque()
    previous: list[Run | None] = [None] * len(columns)

    def schedule_oldest() -> None:
        first, runs, future = pending.popleft()
        future.result()
        results = [iter(run.results()) if run is not None else iter(()) for run in runs]
        for n in range(first, min(first + RUN, len(rows))):
            clock.run_until(starts[n])
            for c, _ in rows[n]:
                for note in next(results[c]).notes:
                    scheduler.play(note)
                    notes.append(note)

    def step_all(runs: list[Run | None]) -> None:
        for run in runs:
            if run is not None:
                run.step()

    with ThreadPoolExecutor(1, thread_name_prefix="render-step") as pool:
        for first in range(0, len(rows), RUN):
            cues: list[list[Cue]] = [[] for _ in columns]
            for n in range(first, min(first + RUN, len(rows))):
                for c, i in rows[n]:
                    sample = Sample(names[c], float(n), values[c][i])
                    norm = norms[c]
                    # placed over the whole file (norm), the reading plays that place
                    reading = conductor.observe(sample, None if norm is None else norm[i])
                    # span: the rows' spacing, which the model's added notes may fill
                    cues[c].append(Cue(sample, starts[n], reading=reading, span=step))
            runs: list[Run | None] = []
            for c, column_cues in enumerate(cues):
                if column_cues:
                    previous[c] = conductor.start_run(column_cues, after=previous[c])
                    runs.append(previous[c])
                else:
                    runs.append(None)
            pending.append((first, runs, pool.submit(step_all, runs)))
            if len(pending) > 1:  # (the runs just started step meanwhile)
                schedule_oldest()
            # The notes made so far live as long as the render, as what render_notes froze
            # before it does: frozen too, no full pass of the collector goes over them
            # (1 or 2 a render of 20,000 rows, 20-50 ms each). The render makes no cyclic
            # garbage a block (gc.unfreeze at its end gives the collector all of it back).
            gc.freeze()
        while pending:
            schedule_oldest()


def render_file(
    config: Config,
    file: str,
    column: str | list[str] | None = None,
    outputs: list[str] | None = None,
    plot: str | None = None,
    every_column: bool = False,
) -> int:
    """The ``render`` command (``column``: one name or index, or several; ``every_column``:
    each column with numbers). Returns the exit status."""
    if not outputs and not plot:
        raise UsageError("render needs at least one output: -o OUT.mid, -o OUT.wav, "
                         "-o events or --plot OUT.png")
    specs = _outputs(outputs or [])
    # (an output on the input replaced the data with its notes)
    check_not_input([file], specs, [(f"--plot {plot}", plot)] if plot else [], templates=False)
    if file == "-":
        # As files are read: undecodable bytes become U+FFFD, universal newlines.
        wrapper = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        text = wrapper.read()
        wrapper.detach()  # leave sys.stdin open
    else:
        try:
            text = Path(file).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise NoInputError(f"input file {file} does not exist; name an existing, readable "
                               "file (or - for stdin)") from None
        except OSError as err:
            raise NoInputError(f"cannot read input file {file}: {err.strerror}") from None
    columns = [column] if isinstance(column, str) else column
    table = read_table(text, columns or None, file, every=every_column)
    if plot and len(table) > PLOT_COLUMNS:
        raise UsageError(f"--plot draws at most {PLOT_COLUMNS} columns (three panels each), "
                         f"not {len(table)}; name at most {PLOT_COLUMNS} with --column, or "
                         "leave --plot out")
    plot_file = _open_plot(plot, specs) if plot else None
    from streamsonic.sinks.events import ReaderGone  # noqa: PLC0415

    try:
        notes = render_notes(config, table, specs, notes_wanted=plot_file is not None)
        if plot_file is not None:
            from streamsonic.plot import plot_render  # noqa: PLC0415 - matplotlib import

            plot_render(table, notes, plot_file, config)
    except ReaderGone:  # (the events output was the only one: nothing more to do)
        log.info("stopped: the reader of stdout went away")
        return 0
    finally:
        if plot_file is not None:
            plot_file.discard()  # (not written: the rendering failed or was interrupted)
    written = [s.arg for s in specs if s.kind != "events"] + ([plot] if plot else [])
    names = ", ".join(repr(s.name) for s in table)
    log.info("rendered %d notes from column%s %s of %s%s", len(notes),
             "s" if len(table) > 1 else "", names, file,
             f" -> {', '.join(written)}" if written else "")
    return 0
