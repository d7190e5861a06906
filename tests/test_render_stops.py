"""A render that does not finish writes nothing and replaces nothing; outputs that would
write one file (standard output included) are refused before anything is played.

Found by a QA pass at 36e50ff: Ctrl-C during ``render -o w.mid`` replaced an earlier
``w.mid`` with the part rendered so far (exit 130); SIGTERM and SIGHUP killed it, leaving
``.w.wav.*.part``; ``-o events -o file:/dev/stdout`` wrote MIDI bytes into the JSON lines;
``--plot p.txt`` rendered everything, then failed with a traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from streamsonic.config import Config
from streamsonic.outputs import parse_output
from streamsonic.render import Series, render_notes
from streamsonic.sinks.midifile import MidiFileSink

EXE = [sys.executable, "-m", "streamsonic"]
WAIT = 120


def _walk(path: Path, rows: int) -> Path:
    values = np.cumsum(np.random.default_rng(0).standard_normal(rows))
    path.write_text("v\n" + "".join(f"{v:.4f}\n" for v in values))
    return path


def _stop_mid_render(args: list[str], sig: signal.Signals) -> subprocess.CompletedProcess[str]:
    """Start ``streamsonic ARGS``; once it logs that the model is loaded (the rendering
    starts), wait a little, send ``sig`` and collect the result."""
    proc = subprocess.Popen([*EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "pitch model" in line:
            break
    time.sleep(1.0)
    assert proc.poll() is None, "the render ended before the signal: give it more rows"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=WAIT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines) + err)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                             (signal.SIGHUP, 129)])
def test_a_stopped_render_leaves_the_earlier_files_as_they_were(
        tmp_path: Path, sig: signal.Signals, status: int) -> None:
    data = _walk(tmp_path / "walk.csv", 400_000)
    old = {name: f"an earlier {name}".encode() for name in ("w.mid", "w.wav", "w.png")}
    for name, content in old.items():
        (tmp_path / name).write_bytes(content)
    # (--tempo 1000: 400,000 rows make 3.3 hours of audio, which one WAV file holds)
    res = _stop_mid_render(["render", str(data), "--tempo", "1000", "-o",
                            str(tmp_path / "w.mid"), "-o", str(tmp_path / "w.wav"), "--plot",
                            str(tmp_path / "w.png")], sig)
    assert res.returncode == status, res.stderr
    assert "Traceback" not in res.stderr
    assert "rendered" not in res.stderr and "wrote" not in res.stderr
    last = res.stderr.splitlines()[-1]
    assert last == ("streamsonic: interrupted" if sig == signal.SIGINT
                    else f"streamsonic: stopped by {sig.name}")
    for name, content in old.items():
        assert (tmp_path / name).read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*old, "walk.csv"])


def test_an_interrupted_render_writes_no_new_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the render fails half-way (here Ctrl-C from the first note written):
    no MIDI file appears, no temporary file stays."""
    calls = []

    def interrupted(self: MidiFileSink, msg: object, time: float) -> None:
        calls.append(msg)
        raise KeyboardInterrupt

    monkeypatch.setattr(MidiFileSink, "_send", interrupted)
    series = Series("v", np.arange(50.0), list(range(2, 52)), {})
    with pytest.raises(KeyboardInterrupt):
        render_notes(Config(), series, [parse_output(f"file:{tmp_path / 'new.mid'}")])
    assert calls
    assert list(tmp_path.iterdir()) == []


def test_a_finished_render_still_writes(tmp_path: Path) -> None:
    series = Series("v", np.arange(50.0), list(range(2, 52)), {})
    notes = render_notes(Config(), series, [parse_output(f"file:{tmp_path / 'new.mid'}")])
    assert notes and (tmp_path / "new.mid").read_bytes()[:4] == b"MThd"
    assert [p.name for p in tmp_path.iterdir()] == ["new.mid"]


# -- outputs that would write one file ------------------------------------------------------

def _run(args: list[str], stdout: IO[str], cwd: Path | None = None,
         stdin: str = "1\n5\n") -> subprocess.CompletedProcess[str]:
    """``streamsonic ARGS`` with its standard output to ``stdout`` (a file: what the test
    reads back), its errors captured."""
    return subprocess.run([*EXE, *args], input=stdin, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=WAIT, check=False, cwd=cwd)


@pytest.mark.parametrize("args", [
    ["-o", "events", "-o", "file:/dev/stdout"],
    ["-o", "events", "-o", "wav:/proc/self/fd/1"],
    ["-o", "events", "--record", "/dev/stdout"],
    ["-o", "events", "-o", "events"],
])
def test_two_outputs_on_stdout_are_refused(tmp_path: Path, args: list[str]) -> None:
    with (tmp_path / "out").open("w") as out:
        res = _run(args, stdout=out)
    assert res.returncode == 64, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and ("standard output" in errors[0] or "same file" in errors[0]
                                 or "given twice" in errors[0]), res.stderr
    assert (tmp_path / "out").read_text() == ""


def test_a_file_output_to_stdout_alone_still_works(tmp_path: Path) -> None:
    with (tmp_path / "out.mid").open("w") as out:
        res = _run(["-o", "file:/dev/stdout"], stdout=out)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.mid").read_bytes()[:4] == b"MThd"


def test_stdout_to_the_null_device_is_shared_freely(tmp_path: Path) -> None:
    with Path("/dev/null").open("w") as out:
        res = _run(["-o", "events", "-o", "file:/dev/null"], stdout=out)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(("plot", "says"), [
    ("p.txt", "image format"), ("noext", "image format"), ("/dev/stdout", "same file"),
    # an image name that an output writes too: the MIDI file's own, or stdout through a link
    ("w.png", "same file"), ("stdout.png", "same file"),
])
def test_a_bad_plot_name_is_refused_before_rendering(tmp_path: Path, plot: str,
                                                     says: str) -> None:
    data = tmp_path / "d.csv"
    data.write_text("1\n5\n3\n")
    (tmp_path / "w.png").write_bytes(b"an earlier take")
    (tmp_path / "stdout.png").symlink_to("/dev/stdout")
    with (tmp_path / "out").open("w") as out:
        res = _run(["render", str(data), "-o", "file:w.png", "-o", "events", "--plot", plot],
                   stdout=out, cwd=tmp_path)
    assert res.returncode == 64, res.stderr
    assert "Traceback" not in res.stderr and "pitch model" not in res.stderr
    last = res.stderr.splitlines()[-1]
    assert "--plot" in last and says in last, last
    assert (tmp_path / "w.png").read_bytes() == b"an earlier take"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "out", "stdout.png", "w.png"]
    assert (tmp_path / "out").read_text() == ""


def test_the_plot_replaces_an_earlier_one_whole(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("1\n5\n3\n")
    (tmp_path / "p.svg").write_text("an earlier plot")
    with Path("/dev/null").open("w") as out:
        res = _run(["render", str(data), "--plot", str(tmp_path / "p.svg")], stdout=out)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "p.svg").read_text().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "p.svg"]


def test_a_render_too_long_for_a_wav_file_is_refused_before_rendering(tmp_path: Path) -> None:
    """400,000 rows half a beat apart at 120 bpm are 27.8 hours: more than the 4 GiB of
    a WAV file. The WAV output found that only once it got there (2.5 minutes into a
    100,000-row render, in the QA pass at 36e50ff); now the render does not start."""
    data = _walk(tmp_path / "walk.csv", 400_000)
    res = subprocess.run([*EXE, "render", str(data), "-o", str(tmp_path / "w.mid"), "-o",
                          str(tmp_path / "w.wav")], capture_output=True, text=True,
                         timeout=WAIT, check=False)
    assert res.returncode == 64, res.stderr
    assert "more than a WAV file holds" in res.stderr.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.csv"]


def _shell(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash with pipefail (the exit status is streamsonic's, not head's), in
    the repository (``-m streamsonic`` runs this checkout)."""
    return subprocess.run(["bash", "-c", f"set -o pipefail; {script}"], capture_output=True,
                          text=True, timeout=WAIT, check=False,
                          cwd=Path(__file__).resolve().parents[1])


def test_a_reader_that_goes_away_ends_a_render_quietly_with_its_files(tmp_path: Path) -> None:
    """``render -o events -o h.mid | head -1``. Before: the events output raised SIGTERM in
    the render's own process ("stopped by SIGTERM", exit 143, no h.mid), though no one had
    sent one. Now the other outputs go on and are written whole (the same file as without
    the events output), exit 0; with events alone the render ends there, exit 0; a closed
    stdout (``>&-``) is still a write error (exit 74), the MIDI file written."""
    data = _walk(tmp_path / "big.csv", 2000)  # some 600 KB of lines: more than a pipe holds
    exe = " ".join(EXE)
    alone = _shell(f"{exe} render {data} -o {tmp_path / 'ref.mid'}")
    assert alone.returncode == 0, alone.stderr
    res = _shell(f"{exe} render {data} -o events -o {tmp_path / 'h.mid'} | head -1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1
    assert "SIGTERM" not in res.stderr and "ERROR" not in res.stderr, res.stderr
    assert "the reader of stdout went away" in res.stderr, res.stderr
    assert (tmp_path / "h.mid").read_bytes() == (tmp_path / "ref.mid").read_bytes()

    res = _shell(f"{exe} render {data} -o events | head -1")
    assert res.returncode == 0, res.stderr
    assert "SIGTERM" not in res.stderr and "ERROR" not in res.stderr, res.stderr

    res = _shell(f"{exe} render {data} -o events -o {tmp_path / 'closed.mid'} >&-")
    assert res.returncode == 74, res.stderr
    assert "cannot write the events output to stdout: it is closed" in res.stderr
    assert (tmp_path / "closed.mid").read_bytes() == (tmp_path / "ref.mid").read_bytes()
