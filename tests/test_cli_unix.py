"""Unix manners (issue 11 item 6) and check-config (item 5), through the real CLI.

Usage errors exit 64, ``--version`` on every command, ``run [FILE|-]`` (a missing FILE: one
line, exit 66), and a closed stdout ends quietly with status 0, like ``head`` and ``yes``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from streamsonic import __version__
from streamsonic.cli import COMMANDS
from streamsonic.commands.check_config import to_toml
from streamsonic.config import load_config

EXE = [sys.executable, "-m", "streamsonic"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The built-in defaults: no user or /etc config, not under systemd."""
    out = {k: v for k, v in os.environ.items()
           if k not in ("STREAMSONIC_CONFIG", "INVOCATION_ID", "NOTIFY_SOCKET")}
    (tmp_path / "empty.toml").write_text("")
    out["STREAMSONIC_CONFIG"] = str(tmp_path / "empty.toml")
    return out


def cli(args: list[str], env: dict[str, str], stdin: str = "",
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


# -- usage errors and --version ------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--no-such-option"],
    ["run", "--no-such-option"],
    ["run", "a.txt", "b.txt"],
    ["render"],  # FILE missing
    ["render", "x.csv", "--scale", "no-such-scale"],
    ["demo", "--column", "memory"],
    ["replay"],
    ["replay", "r.jsonl", "--fast", "--speed", "2"],
    ["check-config", "a.toml", "b.toml"],
    ["info", "--tempo", "x"],
    ["no-such-command-or-file", "--tempo", "fast"],
])
def test_usage_errors_exit_64(args: list[str], env: dict[str, str]) -> None:
    res = cli(args, env)
    assert res.returncode == 64, (res.returncode, res.stderr)
    assert "error:" in res.stderr and res.stderr.startswith("usage:")
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(("args", "command"), [
    (["render", "x.csv", "--bogus"], "render"),
    (["--bogus"], "run"),  # run is the default command
    (["run", "a.txt", "b.txt"], "run"),
    (["check-config", "a.toml", "b.toml"], "check-config"),
])
def test_an_unknown_argument_is_blamed_on_its_command(args: list[str], command: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """argparse reports leftover arguments from the top-level parser ("usage: streamsonic
    [-h] [--version] COMMAND ..."), which tells nothing about the command's options."""
    from streamsonic.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 64
    err = capsys.readouterr().err
    assert err.startswith(f"usage: streamsonic {command} "), err
    assert err.splitlines()[-1].startswith(f"streamsonic {command}: error: unrecognized "
                                           "arguments: "), err


@pytest.mark.parametrize(("args", "named"), [
    (["--topic", "plant/#"], "--mqtt URL"),
    (["--subject", "sensors.>"], "--nats URL"),
    (["--partition", "0"], "--nats URL"),
    (["--play-notes"], "--mqtt URL"),
])
def test_network_flags_without_their_network_are_refused(
        args: list[str], named: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """They did nothing (stdin was read and played instead): now a usage error (64)."""
    from streamsonic.cli import main

    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("STREAMSONIC_CONFIG", str(tmp_path / "empty.toml"))
    assert main(["run", "--output", "events", *args]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and args[0] in err and named in err, err


def test_a_list_flag_out_of_range_is_named_in_the_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from streamsonic.cli import main

    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("STREAMSONIC_CONFIG", str(tmp_path / "empty.toml"))
    assert main(["run", "--nats", "nats://127.0.0.1:1", "--subject", "s.{partition}",
                 "--partition", "70000"]) == 78
    assert "(--partition): nats.partitions" in capsys.readouterr().err  # was "(--set)"


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_version_on_every_command(command: str, env: dict[str, str]) -> None:
    res = cli([command, "--version"] if command else ["--version"], env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"streamsonic {__version__}"


# -- run [FILE|-] ----------------------------------------------------------------------------

def test_run_reads_a_file_or_stdin(tmp_path: Path, env: dict[str, str],
                                   random_pitch_checkpoint: Path) -> None:
    data = tmp_path / "numbers.txt"
    data.write_text("a=1\na=5\na=3\nb=9\n")
    common = ["--output", "events", "--weights", str(random_pitch_checkpoint), "--device",
              "cpu", "--max-rate", "1000", "--log-level", "warning"]
    from_file = cli(["run", str(data), *common], env, stdin="x=1\n" * 50)
    assert from_file.returncode == 0, from_file.stderr
    streams = [line.split('"stream":"')[1].split('"')[0]
               for line in from_file.stdout.splitlines() if '"source":"model"' not in line]
    assert sorted(streams) == ["a", "a", "a", "b"]  # the file, not stdin
    dash = cli(["run", "-", *common], env, stdin="x=1\nx=2\n")
    assert dash.returncode == 0, dash.stderr
    assert dash.stdout.count('"stream":"x"') >= 2
    default_cmd = cli([str(data), *common], env)  # run is the default command
    assert default_cmd.returncode == 0 and default_cmd.stdout.count('"stream":"a"') >= 3


def test_run_missing_file_is_one_line_and_66(tmp_path: Path, env: dict[str, str]) -> None:
    for path in (tmp_path / "nope.txt", tmp_path):  # missing; a folder
        res = cli(["run", str(path), "--output", "events"], env)
        assert res.returncode == 66, res.stderr
        assert res.stderr.count("\n") == 1 and str(path) in res.stderr


def test_render_missing_file_is_one_line_and_66(tmp_path: Path, env: dict[str, str]) -> None:
    for path in (tmp_path / "nope.csv", tmp_path):  # missing; a folder
        res = cli(["render", str(path), "-o", str(tmp_path / "out.mid")], env)
        assert res.returncode == 66, res.stderr
        assert res.stderr.count("\n") == 1 and str(path) in res.stderr
        assert not (tmp_path / "out.mid").exists()


def test_run_file_and_a_broker_is_a_usage_error(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "numbers.txt"
    data.write_text("1\n")
    res = cli(["run", str(data), "--mqtt", "mqtt://127.0.0.1:1", "--output", "events"], env)
    assert res.returncode == 64 and "mqtt.url" in res.stderr


# -- a closed stdout -----------------------------------------------------------------------

def test_closed_stdout_ends_quietly(env: dict[str, str], random_pitch_checkpoint: Path) -> None:
    """``seq 1 1000 | streamsonic --output events | head -1``: exit 0, no error line."""
    script = (f"set -o pipefail; seq 1 1000 | {sys.executable} -m streamsonic --output events "
              f"--weights {random_pitch_checkpoint} --device cpu 2>err.txt | head -1")
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                         check=False, env=env, cwd=env["STREAMSONIC_CONFIG"].rsplit("/", 1)[0])
    err = (Path(env["STREAMSONIC_CONFIG"]).parent / "err.txt").read_text()
    assert res.returncode == 0, err
    assert res.stdout.count("\n") == 1 and res.stdout.startswith('{"stream":"value"')
    assert "ERROR" not in err and "error" not in err and "Traceback" not in err, err
    assert "Exception ignored" not in err


def test_closed_stdout_of_check_config_is_quiet(env: dict[str, str]) -> None:
    script = f"set -o pipefail; {sys.executable} -m streamsonic check-config | head -1"
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                         check=False, env=env)
    assert res.returncode == 0 and res.stderr == "", res.stderr


@pytest.mark.parametrize("args", [["devices"], ["devices", "--json"], ["info"]])
def test_stdout_that_cannot_be_written_is_one_line_and_74(args: list[str],
                                                          env: dict[str, str]) -> None:
    """``devices > /dev/full`` ended in an OSError traceback (exit 1) and ``devices >&-``
    exited 0 printing nothing, ``info >&-`` in an AttributeError traceback: both are a
    write failure, one line and exit 74 (as ``info > /dev/full`` was)."""
    with Path("/dev/full").open("w") as full:
        res = subprocess.run([*EXE, *args], stdout=full, stderr=subprocess.PIPE, text=True,
                             timeout=120, check=False, env=env)
    assert res.returncode == 74, res.stderr
    assert res.stderr.endswith(
        "streamsonic: error: cannot write to standard output: No space left on device\n")
    assert "Traceback" not in res.stderr
    closed = subprocess.run(["bash", "-c", f"{sys.executable} -m streamsonic {' '.join(args)} "
                             ">&-"], stderr=subprocess.PIPE, text=True, timeout=120,
                            check=False, env=env)
    assert closed.returncode == 74, closed.stderr
    assert closed.stderr.endswith(
        "streamsonic: error: cannot write to standard output: it is closed\n")
    assert "Traceback" not in closed.stderr


# -- check-config ----------------------------------------------------------------------------

def test_check_config_prints_every_key_as_toml_that_loads_back(
        tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "my.toml"
    path.write_text('[music]\nscale = "minor"\ntempo = 90\n[mqtt]\npassword = "s3cret"\n'
                    '[[voices]]\nmatch = "cpu*"\nprogram = 3\n')
    res = cli(["check-config", str(path)], env)
    assert res.returncode == 0, res.stderr
    assert "s3cret" not in res.stdout and 'password = "<hidden>"' in res.stdout
    printed = tmp_path / "printed.toml"
    printed.write_text(res.stdout)
    reloaded = load_config(printed)
    original = load_config(path)
    assert reloaded.music == original.music and reloaded.voices == original.voices
    assert reloaded.mqtt.password == "<hidden>"
    # every section and key of the defaults, in the printed form
    sections = tomllib.loads(to_toml(load_config(None))).keys() - {"voices"}
    assert sections == tomllib.loads(res.stdout).keys() - {"voices"}
    default = cli(["check-config", "--quiet"], env)  # $STREAMSONIC_CONFIG, as run reads
    assert default.returncode == 0 and default.stdout == ""


@pytest.mark.parametrize(("text", "words"), [
    ("[music]\ntempo = 5000\n", "music.tempo"),
    ("[music]\nno_such_key = 1\n", "no_such_key"),
    ("[output]\ntargets = [\"spotify\"]\n", "output.targets"),
    ("not toml at all [\n", "not valid TOML"),
])
def test_check_config_errors_are_one_line_and_78(tmp_path: Path, env: dict[str, str],
                                                 text: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    res = cli(["check-config", str(path)], env)
    assert res.returncode == 78, res.stderr
    assert res.stdout == "" and res.stderr.count("\n") == 1 and words in res.stderr
    assert str(path) in res.stderr


def test_check_config_warns_what_protecthome_hides_from_a_service(
        tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "svc.toml"
    path.write_text('[model]\nweights = "/home/me/w.npz"\n[output]\n'
                    'targets = ["file:/root/out.mid", "events"]\n')
    plain = cli(["check-config", "-q", str(path)], env)
    assert plain.returncode == 0 and plain.stderr == ""  # a user's config: no service
    service = cli(["check-config", "-q", str(path)], {**env, "INVOCATION_ID": "x"})
    assert service.returncode == 0
    assert "model.weights" in service.stderr and "/root/out.mid" in service.stderr
    assert "ProtectHome" in service.stderr
    python = Path(sys.executable).resolve()  # a venv's python links to the real one
    python_home = python.is_relative_to("/root") or python.is_relative_to("/home")
    assert ("status 203/EXEC" in service.stderr) == python_home
