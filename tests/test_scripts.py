"""The README's two commands: scripts/setup.sh + test.sh, and `streamsonic demo`."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import wave
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mido
import pytest

from tests.fixtures_jack import JackServer

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
NOTE_KEYS = {"stream", "time", "value", "normalized", "pitch", "velocity", "duration",
             "channel"}


# -- the embedded series ----------------------------------------------------------------

def demo_rows() -> list[dict[str, str]]:
    text = (resources.files("streamsonic") / "data" / "demo.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_demo_series_is_package_data_with_two_anomalies() -> None:
    rows = demo_rows()
    assert len(rows) == 288  # a day, every 5 minutes
    assert list(rows[0]) == ["time", "cpu", "requests"]
    cpu = [float(r["cpu"]) for r in rows]
    by_time = {r["time"][11:16]: float(r["cpu"]) for r in rows}
    assert by_time["14:45"] > 90 > max(cpu[:150])  # the runaway process
    assert by_time["20:10"] < 5 < min(cpu[:200])  # the crash
    with (REPO / "pyproject.toml").open("rb") as fh:
        package_data = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["streamsonic"]
    assert "data/*" in package_data  # tests/test_package.py checks the built wheel


def test_demo_series_regenerates_identically() -> None:
    made = subprocess.run([sys.executable, str(SCRIPTS / "make-demo-data.py")],
                          capture_output=True, text=True, check=True, timeout=60)
    shipped = (resources.files("streamsonic") / "data" / "demo.csv").read_text(encoding="utf-8")
    assert made.stdout == shipped


# -- streamsonic demo -------------------------------------------------------------------

def run_demo(out_dir: Path, weights: Path, *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamsonic", "demo", "--output-dir", str(out_dir),
         "--weights", str(weights), "--tempo", "1000", "--step", "0.1", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
        env=env if env is not None else dict(os.environ), cwd=out_dir.parent, check=False,
    )


def check_demo_files(out_dir: Path, wav: bool = True) -> None:
    notes = [json.loads(line) for line in (out_dir / "demo.jsonl").read_text().splitlines()]
    assert len(notes) == 288
    assert set(notes[0]) >= NOTE_KEYS
    assert {n["stream"] for n in notes} == {"cpu"}
    midi = mido.MidiFile(out_dir / "demo.mid")
    note_ons = [m for m in midi if m.type == "note_on" and m.velocity > 0]
    earcon = 9  # accents are followed by an earcon on channel 10 (the demo has two events)
    assert [m.note for m in note_ons if m.channel != earcon] == [n["pitch"] for n in notes]
    accents = sum(bool(n["accent"]) for n in notes)
    assert accents >= 1  # the runaway process and the crash are heard as accents
    assert sum(m.channel == earcon for m in note_ons) == accents
    assert (out_dir / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if wav:
        with wave.open(str(out_dir / "demo.wav")) as fh:
            seconds = fh.getnframes() / fh.getframerate()
        last = notes[-1]
        assert seconds >= last["start"] + last["duration"]


@pytest.mark.slow
def test_demo_without_audio_device_renders_files(tmp_path: Path,
                                                 random_pitch_checkpoint: Path) -> None:
    """No usable audio device: the files are rendered and the output says how to play them."""
    out_dir = tmp_path / "demo-output"
    result = run_demo(out_dir, random_pitch_checkpoint, "--set", "audio.device=no-such-device")
    assert result.returncode == 0, result.stderr
    assert "no live audio" in result.stderr
    assert "no-such-device" in result.stderr
    assert "No usable audio device" in result.stdout
    assert "aplay demo-output/demo.wav" in result.stdout
    assert "fluidsynth -a alsa" in result.stdout
    assert "demo-output/demo.mid" in result.stdout
    assert "playing" not in result.stdout
    check_demo_files(out_dir)


@pytest.mark.slow
def test_demo_without_soundfont_still_renders_midi(tmp_path: Path,
                                                   random_pitch_checkpoint: Path) -> None:
    """No SoundFont: no WAV (one warning naming the fix), the other files all the same."""
    out_dir = tmp_path / "demo-output"
    result = run_demo(out_dir, random_pitch_checkpoint, "--files",
                      "--soundfont", str(tmp_path / "missing.sf2"))
    assert result.returncode == 0, result.stderr
    assert "no WAV file" in result.stderr
    assert "missing.sf2" in result.stderr
    assert not (out_dir / "demo.wav").exists()
    assert "demo.wav" not in result.stdout
    assert "The demo was rendered to files" in result.stdout
    check_demo_files(out_dir, wav=False)


@pytest.mark.slow
@pytest.mark.jack
def test_demo_plays_live_on_jack(tmp_path: Path, random_pitch_checkpoint: Path,
                                 jack_server: JackServer) -> None:
    """With an audio device (JACK's dummy server) the demo plays the notes live."""
    out_dir = tmp_path / "demo-output"
    result = run_demo(out_dir, random_pitch_checkpoint, env=jack_server.env())
    assert result.returncode == 0, result.stderr
    assert "playing 288 notes of the 'cpu' series live" in result.stdout
    assert "The demo's files" in result.stdout
    assert "no live audio" not in result.stderr
    check_demo_files(out_dir)


def test_demo_output_plays_live_and_is_no_abbreviation(tmp_path: Path,
                                                      random_pitch_checkpoint: Path) -> None:
    """The demo's no-device warning says "pick a device with --output audio:NAME": argparse
    took it for --output-dir and rendered into a folder named "audio:NAME", exit 0. Now
    --output names the live output (one that cannot open is an error, after the files), and
    no option may be abbreviated."""
    out_dir = tmp_path / "demo-output"
    result = run_demo(out_dir, random_pitch_checkpoint, "--output", "audio:no-such-device")
    assert result.returncode == 69, result.stderr  # AudioError: EX_UNAVAILABLE
    assert "no-such-device" in result.stderr and "Traceback" not in result.stderr
    assert "The demo was rendered to files" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-output"]
    check_demo_files(out_dir)

    for args in (["--output-d", str(tmp_path / "x")], ["--col", "cpu"]):
        abbreviated = run_demo(tmp_path / "out", random_pitch_checkpoint, *args)
        assert abbreviated.returncode == 64, abbreviated.stderr
        assert f"unrecognized arguments: {args[0]}" in abbreviated.stderr
    for spec in ("wav:x.wav", "events"):
        refused = run_demo(tmp_path / "out", random_pitch_checkpoint, "--output", spec)
        assert refused.returncode == 64 and "plays the demo live" in refused.stderr
    both = run_demo(tmp_path / "out", random_pitch_checkpoint, "--files", "--output", "audio")
    assert both.returncode == 64 and "--files plays nothing" in both.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-output"]


@pytest.mark.slow
def test_demo_write_errors_are_one_line_and_74(tmp_path: Path,
                                               random_pitch_checkpoint: Path) -> None:
    """A full stdout, a folder that cannot be written and a full disk were tracebacks, or
    blamed "the events output to stdout" and left a partial demo.jsonl: now one line, exit
    74 (EX_IOERR), and no partial events log (an earlier one is kept)."""
    out_dir = tmp_path / "demo-output"
    with Path("/dev/full").open("w") as full:
        stdout_full = subprocess.run(
            [sys.executable, "-m", "streamsonic", "demo", "--files", "--output-dir",
             str(out_dir), "--weights", str(random_pitch_checkpoint), "--tempo", "1000"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, check=False,
            stdin=subprocess.DEVNULL)
    assert stdout_full.returncode == 74, stdout_full.stderr
    assert stdout_full.stderr.endswith(
        "error: cannot write to standard output: No space left on device\n")
    check_demo_files(out_dir)  # the files were written; only the listing failed
    earlier = (out_dir / "demo.jsonl").read_text()

    def small_files() -> None:  # a full disk: writes past 20 kB fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    full_disk = subprocess.run(
        [sys.executable, "-m", "streamsonic", "demo", "--files", "--output-dir", str(out_dir),
         "--weights", str(random_pitch_checkpoint), "--tempo", "1000", "--column", "requests"],
        capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL,
        preexec_fn=small_files)
    assert full_disk.returncode == 74, full_disk.stderr
    assert "Traceback" not in full_disk.stderr
    assert f"cannot write the events output to {out_dir / 'demo.jsonl'}: File too large" \
        in full_disk.stderr
    assert "stdout" not in full_disk.stderr
    assert (out_dir / "demo.jsonl").read_text() == earlier
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "demo.jsonl", "demo.mid", "demo.png", "demo.wav"]


@pytest.mark.slow
@pytest.mark.jack
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_demo_stopped_by_a_signal_while_playing(tmp_path: Path, random_pitch_checkpoint: Path,
                                                jack_server: JackServer,
                                                signum: signal.Signals) -> None:
    """SIGTERM or SIGHUP during the live playback killed the demo by the default action
    (-15, -1: the output not closed, the files never listed); now as Ctrl-C and render: the
    output closes, the files are listed, one line names the signal, exit 128 + signal."""
    out_dir = tmp_path / "demo-output"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsonic", "demo", "--output-dir", str(out_dir),
         "--weights", str(random_pitch_checkpoint), "--step", "0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=jack_server.env(), cwd=tmp_path)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "live" in first, first + proc.communicate(timeout=60)[1]
        time.sleep(1.0)  # notes are sounding
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, err
    assert time.monotonic() - sent < 15  # stopped, not played to the end
    assert ("streamsonic: interrupted" if signum == signal.SIGINT
            else f"streamsonic: stopped by {signum.name}") in err
    assert "Traceback" not in err
    assert "The demo's files" in out and "demo.mid" in out, out
    assert all((out_dir / f"demo.{ext}").stat().st_size for ext in ("jsonl", "mid", "wav"))


def test_demo_rejects_unknown_column(tmp_path: Path, random_pitch_checkpoint: Path) -> None:
    result = run_demo(tmp_path / "out", random_pitch_checkpoint, "--column", "memory")
    assert result.returncode == 64  # a usage error (EX_USAGE), as the README documents
    assert "memory" in result.stderr


# -- the scripts ------------------------------------------------------------------------

@pytest.mark.parametrize("script", ["setup.sh", "test.sh", "demo.sh"])
def test_script_syntax(script: str) -> None:
    path = SCRIPTS / script
    assert os.access(path, os.X_OK), f"{path} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)


def test_ci_runs_the_test_script() -> None:
    ci = REPO / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    assert "exec ./scripts/test.sh" in ci.read_text()


@pytest.mark.parametrize("profile", [[], ["--demo"]], ids=["test", "demo"])
def test_setup_second_run_skips_apt_and_pip(profile: list[str]) -> None:
    """Right after a setup (test.sh runs one first) both slow steps are skipped, for the
    demo's set-up too (the test set-up installs more than it needs)."""
    result = subprocess.run([str(SCRIPTS / "setup.sh"), *profile], capture_output=True,
                            text=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
                            env={**os.environ, "STREAMSONIC_SETUP_CHECK_ONLY": "1"})
    if result.returncode == 3:
        pytest.skip(f"setup is not current here ({result.stdout.strip()}); run scripts/setup.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "system packages already installed" in result.stdout
    assert "Python packages up to date" in result.stdout


# setup.sh in a stand-in checkout: dpkg-query, apt-get, sudo and the venv's python are stubs
# that log what they are asked to do; the real script decides what to install.
STUB_DPKG = """\
#!/usr/bin/env bash
# dpkg-query -W -f=... PACKAGE: "installed" for the packages listed in $STUB_INSTALLED
for pkg in $STUB_INSTALLED; do [ "$pkg" = "${!#}" ] && { echo -n installed; exit 0; }; done
exit 1
"""
STUB_LOGGER = """\
#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
"""
STUB_PYTHON = """\
#!/usr/bin/env bash
case "$1" in
    -V) echo "Python 3.11.7" ;;
    -m) echo "python $*" >> "$STUB_LOG" ;;
esac
"""
DEMO_APT = ["libfluidsynth3", "timgm6mb-soundfont", "libportaudio2"]
SERVICE_ONLY_APT = ["libasound2", "libjack-jackd2-0"]
TEST_ONLY_APT = ["mosquitto", "mosquitto-clients", "nats-server", "jackd2", "fluidsynth",
                 "openssl"]


@dataclass
class SetupCheckout:
    root: Path
    log: Path
    env: dict[str, str]

    def setup(self, *args: str, check_only: bool = False,
              installed: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "STUB_INSTALLED": " ".join(installed or [])}
        if check_only:
            env["STREAMSONIC_SETUP_CHECK_ONLY"] = "1"
        return subprocess.run([str(self.root / "scripts" / "setup.sh"), *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL, env=env)

    def logged(self) -> list[str]:
        """The stubs' calls since the last look."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return lines


@pytest.fixture
def setup_checkout(tmp_path: Path) -> SetupCheckout:
    root = tmp_path / "checkout"
    bin_dir = tmp_path / "stubs"
    for folder in (root / "scripts", root / ".venv" / "bin", bin_dir):
        folder.mkdir(parents=True)
    shutil.copy2(SCRIPTS / "setup.sh", root / "scripts" / "setup.sh")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    stubs = {bin_dir / "dpkg-query": STUB_DPKG, bin_dir / "apt-get": STUB_LOGGER,
             bin_dir / "sudo": STUB_LOGGER, root / ".venv" / "bin" / "python": STUB_PYTHON,
             root / ".venv" / "bin" / "streamsonic": "#!/bin/sh\n"}
    for path, body in stubs.items():
        path.write_text(body)
        path.chmod(0o755)
    # made with the PYTHON below (setup.sh makes the venv again for another one)
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    (root / ".venv" / "pyvenv.cfg").write_text(f"home = {Path(base).parent}\n"
                                               f"executable = {base}\n")
    log = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": sys.executable, "STUB_LOG": str(log)}
    env.pop("STREAMSONIC_FORCE_SETUP", None)
    return SetupCheckout(root, log, env)


def test_demo_setup_installs_only_what_the_demo_needs(setup_checkout: SetupCheckout) -> None:
    """--demo: FluidSynth, a SoundFont, PortAudio and the plot extra; no broker, no JACK,
    no test tools. Without it, everything the tests need."""
    demo = setup_checkout.setup("--demo", check_only=True)
    assert demo.returncode == 3, demo.stdout + demo.stderr
    assert f"would install system packages: {' '.join(DEMO_APT)}\n" in demo.stdout
    full = setup_checkout.setup(check_only=True)
    assert f"would install system packages: {' '.join(DEMO_APT + TEST_ONLY_APT)}\n" in full.stdout

    everything = DEMO_APT + TEST_ONLY_APT
    demo = setup_checkout.setup("--demo", check_only=True, installed=everything)
    assert "would install the Python packages into .venv: torch==2.13.0, -e '.[plot]'" \
        in demo.stdout
    full = setup_checkout.setup(check_only=True, installed=everything)
    assert "-e '.[test]'" in full.stdout
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert not {"pytest", "hypothesis", "ruff", "paho-mqtt"} & {
        req.split(">")[0] for req in extras["plot"]}
    assert setup_checkout.logged() == []  # check-only installed nothing


def test_service_setup_installs_what_the_daemon_runs_on(setup_checkout: SetupCheckout) -> None:
    """--service (systemd/README.md's install on a production host): the outputs' libraries
    and the daemon's extras; no broker (Debian starts mosquitto when it is installed), JACK
    server, fluidsynth program, openssl, test tools or plotting. The service's install ran
    the test profile."""
    service = setup_checkout.setup("--service", check_only=True)
    assert service.returncode == 3, service.stdout + service.stderr
    assert f"would install system packages: {' '.join(DEMO_APT + SERVICE_ONLY_APT)}\n" \
        in service.stdout
    service = setup_checkout.setup("--service", check_only=True,
                                   installed=DEMO_APT + SERVICE_ONLY_APT)
    assert "system packages already installed" in service.stdout
    assert "would install the Python packages into .venv: torch==2.13.0, " \
        "-e '.[midi,mqtt,nats,metrics]'" in service.stdout
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in ("midi", "mqtt", "nats", "metrics"):
        assert extra in extras, extra
    assert setup_checkout.logged() == []

    first = setup_checkout.setup("--service", installed=DEMO_APT)
    assert first.returncode == 0, first.stdout + first.stderr
    calls = setup_checkout.logged()
    apt = [c for c in calls if "apt-get install" in c]
    assert len(apt) == 1 and apt[0].endswith(" " + " ".join(SERVICE_ONLY_APT)), apt
    assert calls[-1] == \
        "python -m pip --disable-pip-version-check install -q -e .[midi,mqtt,nats,metrics]"
    again = setup_checkout.setup("--service", installed=DEMO_APT + SERVICE_ONLY_APT)
    assert "Python packages up to date" in again.stdout
    assert setup_checkout.logged() == []

    unit_readme = (REPO / "systemd" / "README.md").read_text()
    assert "PYTHON=/usr/bin/python3 ./scripts/setup.sh --service" in unit_readme
    assert "setup.sh --service" in (REPO / "README.md").read_text()


def test_setup_installs_once_then_skips(setup_checkout: SetupCheckout) -> None:
    """Each profile installs on its first run only; a test set-up also covers the demo."""
    first = setup_checkout.setup("--demo", installed=DEMO_APT)
    assert first.returncode == 0, first.stdout + first.stderr
    assert setup_checkout.logged() == [
        "python -m pip --disable-pip-version-check install -q torch==2.13.0",
        "python -m pip --disable-pip-version-check install -q -e .[plot]",
    ]
    again = setup_checkout.setup("--demo", installed=DEMO_APT)
    assert "Python packages up to date" in again.stdout
    assert setup_checkout.logged() == []

    test = setup_checkout.setup(installed=DEMO_APT)  # the test set-up needs more packages
    assert test.returncode == 0, test.stdout + test.stderr
    calls = setup_checkout.logged()
    apt = [c for c in calls if "apt-get install" in c]
    assert len(apt) == 1 and all(pkg in apt[0] for pkg in TEST_ONLY_APT)
    assert not [pkg for pkg in DEMO_APT if pkg in apt[0]]
    assert calls[-1] == "python -m pip --disable-pip-version-check install -q -e .[test]"

    everything = DEMO_APT + TEST_ONLY_APT
    for args in ([], ["--demo"]):
        again = setup_checkout.setup(*args, installed=everything)
        assert "system packages already installed" in again.stdout
        assert "Python packages up to date" in again.stdout, args
    assert setup_checkout.logged() == []

    (setup_checkout.root / "pyproject.toml").write_text("# changed\n")
    changed = setup_checkout.setup("--demo", installed=everything)
    assert changed.returncode == 0
    assert "python -m pip --disable-pip-version-check install -q -e .[plot]" in \
        setup_checkout.logged()


STUB_BASE_PYTHON = """\
#!/usr/bin/env bash
# a system Python: new enough, with venv; `-m venv DIR` makes a stub venv on it
case "$1" in
    -c) case "$2" in *realpath*) realpath "$0" ;; esac ;;
    -m) echo "$(basename "$0") $*" >> "$STUB_LOG"
        mkdir -p "$3/bin" && cp "$STUB_VENV_PYTHON" "$3/bin/python"
        cp "$STUB_VENV_PYTHON" "$3/bin/streamsonic"  # as pip install -e would
        printf 'executable = %s\\n' "$(realpath "$0")" > "$3/pyvenv.cfg" ;;
esac
"""


def test_setup_makes_the_venv_again_for_another_python(setup_checkout: SetupCheckout,
                                                        tmp_path: Path) -> None:
    """PYTHON=/usr/bin/python3 (systemd/README.md) with a .venv made on another Python (one
    under /root, which the unit's ProtectHome= hides) said "ready" and kept the old one."""
    system = tmp_path / "usr" / "bin" / "python3"
    system.parent.mkdir(parents=True)
    system.write_text(STUB_BASE_PYTHON)
    system.chmod(0o755)
    venv = setup_checkout.root / ".venv"
    keep = tmp_path / "venv-python"
    shutil.copy2(venv / "bin" / "python", keep)
    setup_checkout.env["STUB_VENV_PYTHON"] = str(keep)
    setup_checkout.env["PYTHON"] = str(system)
    setup_checkout.setup("--demo", installed=DEMO_APT)  # a current demo set-up, on another
    setup_checkout.logged()                            # Python (the fixture's)
    (venv / "pyvenv.cfg").write_text("executable = /home/u/.pyenv/versions/3.11.7/bin/python3\n")

    check = setup_checkout.setup("--demo", check_only=True, installed=DEMO_APT)
    assert check.returncode == 3, check.stdout + check.stderr
    assert f"would make .venv again with PYTHON={system} ({system}); it was made with " \
        "/home/u/.pyenv/versions/3.11.7/bin/python3\n" in check.stdout
    assert "setup: ready" not in check.stdout
    assert setup_checkout.logged() == []

    again = setup_checkout.setup("--demo", installed=DEMO_APT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert setup_checkout.logged() == [
        "python3 -m venv .venv",
        "python -m pip --disable-pip-version-check install -q torch==2.13.0",
        "python -m pip --disable-pip-version-check install -q -e .[plot]",
    ]
    assert (venv / "pyvenv.cfg").read_text() == f"executable = {system}\n"
    current = setup_checkout.setup("--demo", check_only=True, installed=DEMO_APT)
    assert current.returncode == 0, current.stdout + current.stderr
    del setup_checkout.env["PYTHON"]  # unset: the venv's own Python is fine
    (venv / "pyvenv.cfg").write_text("executable = /home/u/.pyenv/versions/3.11.7/bin/python3\n")
    assert setup_checkout.setup("--demo", check_only=True, installed=DEMO_APT).returncode == 0


def test_setup_through_a_symlink_is_the_same_checkout(setup_checkout: SetupCheckout,
                                                     tmp_path: Path) -> None:
    """The stamp hashed the logical path: a run through a symlink to the same checkout
    reinstalled every Python package."""
    first = setup_checkout.setup("--demo", installed=DEMO_APT)
    assert first.returncode == 0, first.stdout + first.stderr
    setup_checkout.logged()
    link = tmp_path / "link"
    link.symlink_to(setup_checkout.root)
    again = subprocess.run([str(link / "scripts" / "setup.sh"), "--demo"], capture_output=True,
                           text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
                           env={**setup_checkout.env, "STUB_INSTALLED": " ".join(DEMO_APT)})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Python packages up to date" in again.stdout
    assert setup_checkout.logged() == []


def test_setup_rejects_unknown_arguments(setup_checkout: SetupCheckout) -> None:
    result = setup_checkout.setup("--everything")
    assert result.returncode == 64
    assert "usage" in result.stderr
    result = setup_checkout.setup("--demo", "--everything")  # was ignored
    assert result.returncode == 64 and "usage" in result.stderr
    assert setup_checkout.logged() == []


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_setup_help_prints_usage_and_exits_0(setup_checkout: SetupCheckout, flag: str) -> None:
    """``setup.sh --help`` was a usage error (exit 64); it prints what the script does and
    installs nothing."""
    result = setup_checkout.setup(flag)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ") and "--demo" in result.stdout
    assert "STREAMSONIC_SETUP_CHECK_ONLY=1" in result.stdout and "#" not in result.stdout
    assert result.stderr == "" and setup_checkout.logged() == []


def test_demo_script_sets_up_only_the_demo(tmp_path: Path) -> None:
    """demo.sh runs `setup.sh --demo`, then `streamsonic demo` with its arguments."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    (root / ".venv" / "bin").mkdir(parents=True)
    shutil.copy2(SCRIPTS / "demo.sh", root / "scripts" / "demo.sh")
    log = tmp_path / "calls.log"
    for path in (root / "scripts" / "setup.sh", root / ".venv" / "bin" / "streamsonic"):
        path.write_text(STUB_LOGGER)
        path.chmod(0o755)
    result = subprocess.run([str(root / "scripts" / "demo.sh"), "--files"], capture_output=True,
                            text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
                            env={**os.environ, "STUB_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["setup.sh --demo", "streamsonic demo --files"]


def fake_checkout(tmp_path: Path, ruff_status: int, mypy_status: int,
                  pytest_status: int) -> Path:
    """test.sh beside stand-ins for setup.sh, ruff and python (``-m mypy``, ``-m pytest``),
    exit statuses chosen."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / "scripts" / "test.sh").write_text((SCRIPTS / "test.sh").read_text())
    stubs = {
        root / "scripts" / "setup.sh": "echo setup: ok\n",
        root / ".venv" / "bin" / "ruff": f"echo ruff: ran\nexit {ruff_status}\n",
        root / ".venv" / "bin" / "python": (
            f'if [ "$2" = mypy ]; then echo "mypy: ran"; exit {mypy_status}; fi\n'
            f"echo '== 3 passed in 0.1s =='\nexit {pytest_status}\n"),
    }
    for path, body in {**stubs, root / "scripts" / "test.sh": None}.items():
        if body is not None:
            path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return root


@pytest.mark.parametrize(
    ("ruff_status", "mypy_status", "pytest_status", "expected"),
    [(0, 0, 0, 0), (0, 0, 1, 1), (0, 0, 5, 1), (1, 0, 0, 1), (0, 1, 0, 1)],
    ids=["pass", "tests-fail", "no-tests-is-failure", "ruff-fails", "mypy-fails"],
)
def test_test_script_exit_status(tmp_path: Path, ruff_status: int, mypy_status: int,
                                 pytest_status: int, expected: int) -> None:
    """Unit test of test.sh's plumbing with stand-ins (CI runs the real thing)."""
    root = fake_checkout(tmp_path, ruff_status, mypy_status, pytest_status)
    result = subprocess.run([str(root / "scripts" / "test.sh")], capture_output=True,
                            text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == expected, result.stdout + result.stderr
    if ruff_status:
        assert "mypy: ran" not in result.stdout  # nothing ran after ruff
    if ruff_status or mypy_status:
        assert "passed" not in result.stdout  # pytest never ran
    else:
        assert result.stdout.rstrip().endswith("== 3 passed in 0.1s ==")
    if pytest_status == 5:
        assert "no tests" in result.stderr
