"""`render` reads its input as `run` does: long CSV fields, undecodable bytes, skip reasons."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamsonic.config import Config, InputConfig
from streamsonic.errors import InputDataError, UsageError
from streamsonic.parse import LineParser
from streamsonic.render import read_series, read_table, render_notes

REPO = Path(__file__).resolve().parents[1]

LONG = "x" * (200 * 1024)  # over the csv module's default 128 KiB field limit


def test_field_over_128_kib_is_read() -> None:
    text = f'a,b\n1,"{LONG}"\n2,5\n3,6\n'
    series = read_series(text, "b", "t.csv")
    assert list(series.values) == [5.0, 6.0]
    assert series.skipped == {"not_numeric": 1}
    assert list(read_series(text, "a", "t.csv").values) == [1.0, 2.0, 3.0]


def test_skip_reasons_are_runs() -> None:
    text = "a\n1\nnan\ninf\nNA\ntext\n\ufffd7\n2\n"
    series = read_series(text, "a", "t.csv")
    assert list(series.values) == [1.0, 2.0]
    assert series.skipped == {"nan": 1, "inf": 1, "missing": 1, "not_numeric": 1,
                              "invalid_utf8": 1}


def run_counts(data: bytes) -> tuple[dict[str, int], dict[str, int]]:
    """What `run`'s parser keeps (samples per stream) and skips (by reason)."""
    parser = LineParser(InputConfig())
    kept: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for line in data.splitlines():
        parsed = parser.parse_line(line, 0.0)
        for sample in parsed.samples:
            kept[sample.stream] = kept.get(sample.stream, 0) + 1
        for reason in parsed.bad:
            skipped[reason] = skipped.get(reason, 0) + 1
    return kept, skipped


def test_run_and_render_agree_on_invalid_utf8() -> None:
    """Every tenth row has bytes that are not UTF-8 in column b: both keep column a whole
    and every other b, and count the same invalid_utf8 fields."""
    rows = [b"a,b"] + [f"{i},{i * 2}".encode() if i % 10 else f"{i},\xff{i}".encode("latin-1")
                       for i in range(1, 1001)]
    data = b"\n".join(rows) + b"\n"
    kept, skipped = run_counts(data)
    assert kept == {"a": 1000, "b": 900}
    assert skipped == {"invalid_utf8": 100}
    text = data.decode("utf-8", errors="replace")  # how render reads a file
    a, b = read_series(text, "a", "t.csv"), read_series(text, "b", "t.csv")
    assert (len(a.values), len(b.values)) == (kept["a"], kept["b"])
    assert b.skipped == skipped


def render_events(args: list[str],
                  stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "streamsonic", "render", *args, "-o", "events"],
                          input=stdin, capture_output=True, timeout=120, check=False, cwd=REPO)


@pytest.mark.slow
def test_render_cli_long_field_and_undecodable_stdin(tmp_path: Path,
                                                      random_pitch_checkpoint: Path) -> None:
    """Before: `_csv.Error: field larger than field limit` (exit 1), and from stdin a
    UnicodeDecodeError traceback."""
    path = tmp_path / "long.csv"
    path.write_text(f'a,b\n1,"{LONG}"\n2,5\n3,6\n')
    weights = ["--weights", str(random_pitch_checkpoint)]
    result = render_events([str(path), "--column", "b", *weights])
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    data = [json.loads(line) for line in result.stdout.splitlines()]
    assert [n["value"] for n in data if n["source"] == "data"] == [5.0, 6.0]

    result = render_events(["-", *weights], stdin=b"v\n1\n\xff\xfe\n3\r4\n")
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0, err
    data = [json.loads(line) for line in result.stdout.splitlines()]
    assert [n["value"] for n in data if n["source"] == "data"] == [1.0, 3.0, 4.0]
    assert "invalid_utf8: 1" in err


def test_json_lines_are_a_table_of_their_keys() -> None:
    """A file of JSON objects: a column per key, in the order the keys first come, a row per
    line; a ``time`` key is run's sample time, not a column; nested keys are ``a.b``. (A
    QA pass at 36e50ff: the first line was taken for a CSV header, "no numeric column".)"""
    text = ('{"time": 1700000000, "a": 1, "b": {"c": 7}}\n{"a": 5}\n\n'
            '{"a": 2, "b": {"c": "x"}}\n{"b": {"c": 8}, "a": 3}\n')
    table = read_table(text, None, "t.jsonl", every=True)
    assert [s.name for s in table] == ["a", "b.c"]
    assert list(table[0].values) == [1.0, 5.0, 2.0, 3.0] and table[0].lines == [1, 2, 4, 5]
    assert list(table[1].values) == [7.0, 8.0] and table[1].lines == [1, 5]
    assert table[1].skipped == {"not_numeric": 1}
    assert [s.name for s in read_table(text, None, "t.jsonl")] == ["a"]  # the most numbers
    assert [s.name for s in read_table(text, ["b.c", "0"], "t.jsonl")] == ["b.c", "a"]
    names = re.escape("no column 'z'; its lines name: 0='a', 1='b.c'")
    with pytest.raises(UsageError, match=names):
        read_table(text, ["z"], "t.jsonl")


def test_name_value_lines_are_a_table_of_their_names() -> None:
    table = read_table("cpu=1 mem=2\ncpu=3 mem=1\n# a comment\ncpu=4\n", None, "t.txt",
                       every=True)
    assert [(s.name, list(s.values), s.lines) for s in table] == [
        ("cpu", [1.0, 3.0, 4.0], [1, 2, 4]), ("mem", [2.0, 1.0], [1, 2])]


def test_render_cli_plays_json_lines(tmp_path: Path) -> None:
    data = tmp_path / "j.jsonl"
    data.write_text('{"a": 1}\n{"a": 5}\n{"a": 2, "b": 7}\n')
    res = subprocess.run([sys.executable, "-m", "streamsonic", "render", str(data),
                          "--all-columns", "-o", "events", "--set", "model.passing_notes=0"],
                         capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert res.returncode == 0, res.stderr
    notes = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(n["stream"], n["value"]) for n in notes] == [
        ("a", 1.0), ("a", 5.0), ("a", 2.0), ("b", 7.0)]


def test_no_numeric_column_names_a_time_column_only_where_there_is_one() -> None:
    with pytest.raises(InputDataError) as err:
        read_table("a\nnan\nNA\n", None, "t.csv")
    assert "time column" not in str(err.value)
    with pytest.raises(InputDataError, match="besides its time column"):
        read_table("time,a\n1,nan\n", None, "t.csv")


# -- an output that is an input ------------------------------------------------------------------

def cli(args: list[str], cwd: Path,
        stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    with (stdin or Path(os.devnull)).open("rb") as source:
        return subprocess.run([sys.executable, "-m", "streamsonic", *args], stdin=source,
                              capture_output=True, text=True, timeout=120, check=False,
                              cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("args", [
    ["render", "in.csv", "-o", "file:in.csv"],
    ["render", "in.csv", "-o", "wav:./in.csv"],
    ["render", "in.mid", "-o", "in.mid"],  # a plain path
    ["render", "in.csv", "-o", "file:link.csv"],  # a hard link: the same inode
    ["render", "in.csv", "-o", "events", "--plot", "in.csv"],
    ["render", "-", "-o", "file:in.csv"],  # standard input is in.csv
    ["replay", "rec.jsonl", "--fast", "-o", "file:rec.jsonl"],
    ["replay", "rec.jsonl", "--fast", "-o", "wav:rec.jsonl"],
    ["replay", "rec-20250314T093000Z.jsonl", "--fast", "-o", "file:rec-{start}.jsonl"],
    ["run", "in.csv", "-o", "file:in.csv"],
    ["run", "in.csv", "-o", "events", "--record", "in.csv"],
])
def test_an_output_that_writes_an_input_is_refused(tmp_path: Path, args: list[str]) -> None:
    """Before: ``render in.csv -o file:in.csv`` replaced the data with the MIDI file (exit
    0); ``replay REC -o file:REC`` set the recording aside as REC-1, then found "no recorded
    samples" (exit 65); ``run FILE -o file:FILE`` played FILE-1. Now one line, exit 64,
    before anything is written."""
    data = "v\n" + "".join(f"{i % 7}\n" for i in range(50))
    record = '{"stream":"a","time":1.0,"value":2.0,"arrival":1.0}\n'
    files = {"in.csv": data, "in.mid": data, "rec.jsonl": record,
             "rec-20250314T093000Z.jsonl": record}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    os.link(tmp_path / "in.csv", tmp_path / "link.csv")
    res = cli(args, tmp_path, stdin=tmp_path / "in.csv")
    assert res.returncode == 64, res.stderr
    assert res.stderr.count("\n") == 1 and "error: " in res.stderr, res.stderr
    assert "would write over" in res.stderr or "can write over" in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*files, "link.csv"])
    assert all((tmp_path / name).read_text() == text for name, text in files.items())


def test_a_byte_order_mark_is_no_part_of_the_first_name() -> None:
    """Before: a CSV file saved with a BOM (Excel's "CSV UTF-8") named its first column
    '\\ufeffa', so ``--column a`` was "no column 'a'", and a JSON-lines file with one was
    read as a CSV table. ``run`` strips it (streamsonic.parse); render reads it the same."""
    table = read_table("\ufeffa,b\n1,2\n3,4\n", ["a"], "bom.csv")
    assert [(s.name, list(s.values)) for s in table] == [("a", [1.0, 3.0])]
    keyed = read_table('\ufeff{"a": 1}\n{"a": 2}\n', None, "bom.jsonl")
    assert [(s.name, list(s.values)) for s in keyed] == [("a", [1.0, 2.0])]
    kept, _ = run_counts("\ufeffa,b\n1,2\n3,4\n".encode())
    assert kept == {"a": 2, "b": 2}


@pytest.mark.parametrize(("first", "reason"), [("nan", "nan"), ("1e309", "inf"),
                                              ("-inf", "inf"), ("NA", "missing")])
def test_a_first_row_of_numbers_is_data_not_a_header(first: str, reason: str) -> None:
    """Before: a headerless file whose first row was ``nan`` or ``1e309`` played a stream
    named after it, the row not counted. Now a first row with no text in it is data, its
    fields skipped and counted by run's reasons (skipped.nan, skipped.inf)."""
    text = f"{first}\n2\n3\n"
    series = read_series(text, None, "h.csv")
    assert (series.name, list(series.values), series.lines) == ("value", [2.0, 3.0], [2, 3])
    assert series.skipped == {reason: 1}
    kept, skipped = run_counts(text.encode())
    assert kept == {"value": 2} and skipped == {reason: 1}
    table = read_table(f"{first},1\n2,nan\n3,4\n", None, "h.csv", every=True)
    assert [(s.name, list(s.values)) for s in table] == [("col0", [2.0, 3.0]),
                                                          ("col1", [1.0, 4.0])]
    assert [s.name for s in read_table("a,nan\n1,2\n", None, "h.csv", every=True)] == [
        "a", "nan"]  # a row with a name in it is still a header


def test_columns_of_one_name_play_as_distinct_streams(caplog: pytest.LogCaptureFixture) -> None:
    """Before: ``x,x`` with ``--column x`` silently took the first, and ``--all-columns``
    played two streams both named "x" (one channel and program, merged in the MIDI file).
    Now a later column of a name plays as ``x#2`` (warned), and ``--column x`` is an error
    naming the columns to choose from."""
    text = "x,x,x#2,y\n1,2,3,4\n5,6,7,8\n"
    with caplog.at_level("WARNING", logger="streamsonic.render"):
        table = read_table(text, None, "dup.csv", every=True)
    assert [(s.name, list(s.values)) for s in table] == [
        ("x", [1.0, 5.0]), ("x#3", [2.0, 6.0]), ("x#2", [3.0, 7.0]), ("y", [4.0, 8.0])]
    assert "column 1 is named 'x' as column 0 is; it plays as 'x#3'" in caplog.text
    notes = render_notes(Config(), table[:2], [])  # each its own voice: channel and program
    channels = {(n.stream, n.channel) for n in notes}
    assert len(channels) == 2 and len({c for _, c in channels}) == 2, channels
    with pytest.raises(UsageError, match=re.escape(
            "dup.csv: columns 0 and 1 are named 'x'; pick one by its index (--column 0) or "
            "by the name it plays as (0='x', 1='x#3')")):
        read_table(text, ["x"], "dup.csv")
    assert [s.name for s in read_table(text, ["1"], "dup.csv")] == ["x#3"]
    assert [s.name for s in read_table(text, ["x#3", "y"], "dup.csv")] == ["x#3", "y"]


def test_decimal_commas_are_read_as_run_reads_them_or_hinted_at() -> None:
    """Before: ``a;b / 1,5;2,25`` was "has no numeric column" and nothing more, though
    ``run`` reads a decimal comma as a number in a line delimited by ';' or tabs. Now render
    reads them the same (also where the sniffer took ',' for the delimiter), and where they
    cannot be numbers (a file delimited by ',') the error says what to do."""
    for text in ("a;b\n1,5;2,25\n3;-4,5\n", "a\tb\n1,5\t2,25\n3\t-4,5\n"):
        table = read_table(text, None, "dc.csv", every=True)
        assert [(s.name, list(s.values)) for s in table] == [("a", [1.5, 3.0]),
                                                              ("b", [2.25, -4.5])]
        assert run_counts(text.encode()) == ({"a": 2, "b": 2}, {})
    headerless = read_table("1,5;2,25\n3,5;4,1\n", None, "dc.csv", every=True)
    assert [list(s.values) for s in headerless] == [[1.5, 3.5], [2.25, 4.1]]
    hint = re.escape("fields such as '1,5' have a decimal comma, a number only in a file "
                     "delimited by ';' or tabs: convert them to decimal points (1.5)")
    with pytest.raises(InputDataError, match="has no numeric column.*" + hint):
        read_table('a,b\n"1,5","2,25"\n', None, "dc.csv")
    with pytest.raises(InputDataError, match="column 'a' has no numeric values.*" + hint):
        read_table('a,b\n"1,5",2\n', ["a"], "dc.csv")
    with pytest.raises(InputDataError) as err:
        read_table("a,b\nx,y\n", None, "t.csv")
    assert "decimal" not in str(err.value)


def test_a_quote_left_open_is_bad_csv_not_a_header_or_lost_rows() -> None:
    """'"unterminated,3' on stdin was read as the one field 'unterminated,3', taken for a
    new header line (ignored.header, the value gone); in a file given to render it took
    the rest of the file into one field, its rows lost with one not_numeric. Now: run
    skips the line as bad_csv and plays the rest; render names the line and stops (65)."""
    parser = LineParser(InputConfig())
    got = [parser.parse_line(line, 0.0) for line in ("x,y", "1,2", '"unterminated,3', "4,5")]
    assert got[2].skipped == ["bad_csv"] and not got[2].samples
    assert [(s.stream, s.value) for s in got[3].samples] == [("x", 4.0), ("y", 5.0)]
    with pytest.raises(InputDataError, match=r"f\.csv line 3: cannot be read as CSV"):
        read_table('x,y\n1,2\n"unterminated,3\n4,5\n', None, "f.csv", every=True)
    table = read_table('x,y\n1,"2"\n"3",4\n', None, "f.csv", every=True)  # quotes closed
    assert [list(s.values) for s in table] == [[1.0, 3.0], [2.0, 4.0]]
