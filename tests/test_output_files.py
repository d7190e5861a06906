"""Output files: never replace what is not a file, never lose data silently.

The failing-write tests use a real full file system (a 16 KiB tmpfs; mounting needs root,
which CI has) and the real CLI in a subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest

from streamsonic.errors import OutputError, OutputWriteError
from streamsonic.sinks import outfile
from streamsonic.sinks.outfile import OutputFile

EXE = [sys.executable, "-m", "streamsonic"]
NUMBERS = "".join(f"{i % 17}\n" for i in range(3000))


def run(args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], input=stdin, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 KiB tmpfs: big enough for a small file, too small for 3000 notes."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        msg = f"cannot mount a tmpfs (needs root): {res.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_outputfile_keeps_mode_of_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "x.mid"
    path.write_bytes(b"old")
    path.chmod(0o640)
    out = OutputFile(path)
    out.append(b"new")
    out.commit()
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["x.mid"]  # no temporary left


def test_outputfile_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a folder"):
        OutputFile(tmp_path)
    with pytest.raises(OutputError, match="does not exist"):
        OutputFile(tmp_path / "no" / "x.mid")


def test_outputfile_failed_write_keeps_old_file(full_fs: Path) -> None:
    path = full_fs / "x.mid"
    path.write_bytes(b"previous take")
    out = OutputFile(path, "MIDI file")
    with pytest.raises(OutputWriteError) as raised:
        out.append(b"\0" * 64 * 1024)
    assert str(raised.value).endswith("No space left on device; " f"{path} was left as it was")
    assert path.read_bytes() == b"previous take"
    assert sorted(p.name for p in full_fs.iterdir()) == ["x.mid"]


def test_symlink_target_written_link_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.mid"
    link = tmp_path / "link.mid"
    link.symlink_to(real)
    # one note per sample (the model adds none), so that the file holds exactly three
    res = run(["--output", f"file:{link}", "--set", "model.passing_notes=0"], "1\n5\n3\n")
    assert res.returncode == 0, res.stderr
    assert link.is_symlink()
    notes = [m for m in mido.MidiFile(real) if m.type == "note_on"]
    assert len(notes) == 3


def test_fifo_is_written_in_place_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mid"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    res = run(["--output", f"file:{fifo}"], "1\n5\n3\n")
    reader.join(timeout=60)
    assert res.returncode == 0, res.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still the FIFO, not a regular file
    assert got and got[0].startswith(b"MThd")


def _notify_env(tmp_path: Path) -> tuple[socket.socket, dict[str, str]]:
    """A datagram socket at $NOTIFY_SOCKET (a simulated systemd) and the daemon's env."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(120)  # a first start compiles the kernels
    (tmp_path / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "WATCHDOG_USEC")}
    env.update(NOTIFY_SOCKET=str(path), STREAMSONIC_CONFIG=str(tmp_path / "empty.toml"))
    return sock, env


def test_fifo_without_reader_does_not_block_start_and_gets_the_file_at_exit(
        tmp_path: Path) -> None:
    """A FIFO that no process reads: start-up goes on (its plain open() blocked for ever, and
    SIGTERM with it); a reader that comes later gets the whole file at exit."""
    fifo = tmp_path / "pipe.mid"
    os.mkfifo(fifo)
    sock, env = _notify_env(tmp_path)
    proc = subprocess.Popen([*EXE, "run", "--output", f"file:{fifo}", "--output", "events"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"1\n5\n3\n")
        proc.stdin.flush()  # the input stays open: the stop ends the run
        while "READY=1" not in sock.recv(4096).decode().split("\n"):
            pass
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
        reader.start()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        reader.join(timeout=30)
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "no process reads the FIFO yet" in err.decode()
    assert got and got[0].startswith(b"MThd")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_fifo_never_read_fails_after_a_bounded_wait(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outfile, "FIFO_WAIT", 0.3)
    fifo = tmp_path / "pipe.mid"
    os.mkfifo(fifo)
    out = OutputFile(fifo, "MIDI file", live=True)  # returns at once: no reader needed
    out.append(b"MThd")
    started = time.monotonic()
    with pytest.raises(OutputWriteError, match=r"no process opened the FIFO for reading "
                       r"within 0.3 s; start its reader"):
        out.commit()
    assert time.monotonic() - started < 5


def test_render_to_full_disk_fails_with_74_and_keeps_old_file(full_fs: Path,
                                                              tmp_path: Path) -> None:
    data = tmp_path / "series.txt"
    data.write_text(NUMBERS)
    out = full_fs / "out.mid"
    out.write_bytes(b"previous take")
    res = run(["render", str(data), "-o", str(out)])
    assert res.returncode == 74, res.stderr
    assert "No space left on device" in res.stderr
    assert "Traceback" not in res.stderr
    assert "rendered" not in res.stderr  # no success message for a file that was not written
    assert out.read_bytes() == b"previous take"
    assert sorted(p.name for p in full_fs.iterdir()) == ["out.mid"]  # no .part left


def test_run_to_full_disk_fails_with_74(full_fs: Path) -> None:
    out = full_fs / "live.mid"
    res = run(["--output", f"file:{out}", "--output", "events",
               "--set", "clock.backlog=100000", "--max-rate", "1000"], NUMBERS)
    assert res.returncode == 74, res.stderr
    assert "No space left on device" in res.stderr
    assert len(res.stdout.splitlines()) == 3000  # the other output still got every note
    assert "Traceback" not in res.stderr
    # run writes as it goes: the file keeps, valid, what was flushed before the disk filled
    assert f"{out} keeps what was written before" in res.stderr.splitlines()[-1]
    ons = [m for m in mido.MidiFile(out) if m.type == "note_on"]
    assert 0 < len(ons) < 3000
    assert list(full_fs.iterdir()) == [out]


def test_wav_to_dev_full_fails_with_74(tmp_path: Path) -> None:
    data = tmp_path / "series.txt"
    data.write_text("1\n5\n3\n")
    res = run(["render", str(data), "-o", "wav:/dev/full"])
    assert res.returncode == 74, res.stderr
    assert "No space left on device" in res.stderr
    assert stat.S_ISCHR(Path("/dev/full").stat().st_mode)
