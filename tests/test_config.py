"""The shipped config.toml, loading errors through the CLI, overrides and precedence."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from streamsonic.commands import run as run_command
from streamsonic.commands.common import MUSIC_OPTIONS, config_from
from streamsonic.config import Config, VoiceRule, find_config_file, load_config
from streamsonic.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config.toml"


def test_shipped_config_equals_defaults() -> None:
    assert load_config(SHIPPED) == Config()


def test_shipped_config_names_every_key() -> None:
    """Each section of config.toml spells out every key of its dataclass."""
    with SHIPPED.open("rb") as fh:
        data = tomllib.load(fh)
    for section in dataclasses.fields(Config):
        if section.name == "voices":
            continue  # an array of tables: documented by a commented [[voices]] example
        assert section.name in data, f"config.toml lacks the [{section.name}] section"
        keys = {f.name for f in dataclasses.fields(getattr(Config(), section.name))}
        missing = keys - set(data[section.name])
        assert not missing, f"config.toml lacks {section.name}.{sorted(missing)}"
    example = SHIPPED.read_text()
    for key in (f.name for f in dataclasses.fields(VoiceRule)):
        assert f"# {key} = " in example, f"the [[voices]] example lacks {key}"


def test_voices_array_parses(tmp_path: Path) -> None:
    path = tmp_path / "voices.toml"
    path.write_text(
        '[[voices]]\nmatch = "cpu*"\nprogram = 73\nchannel = 2\n\n'
        '[[voices]]\nmatch = "*"\nmute = true\n'
    )
    config = load_config(path)
    assert config.voices == (
        VoiceRule(match="cpu*", program=73, channel=2),
        VoiceRule(match="*", mute=True),
    )


def test_a_voices_rule_without_match_is_every_stream_and_an_empty_one_is_refused(
        tmp_path: Path) -> None:
    """No match key: '*' (as config.toml says); match = "" matched no stream without a
    word (a QA pass, 2026-12-06)."""
    path = tmp_path / "voices.toml"
    path.write_text('[[voices]]\nprogram = 5\n')
    assert load_config(path).voices == (VoiceRule(match="*", program=5),)
    path.write_text('[[voices]]\nmatch = ""\nprogram = 5\n')
    with pytest.raises(ConfigError, match=r"voices\.match = '': an empty glob matches no stream"):
        load_config(path)


def test_uncommented_voices_example_parses(tmp_path: Path) -> None:
    """The commented example at the end of config.toml is valid when uncommented."""
    text = SHIPPED.read_text()
    head, _, example = text.partition("# None by default. For example:\n")
    uncommented = "\n".join(line.removeprefix("# ").removeprefix("#") for line in
                            example.splitlines())
    path = tmp_path / "example.toml"
    path.write_text(head + uncommented)
    config = load_config(path)
    assert [v.match for v in config.voices] == ["cpu*", "*"]
    assert config.voices[0].program == 73


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamsonic", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, check=False,
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[music]\ntempo = 100.0\nscael = \"minor\"\n", "music.scael"),
        ("[musik]\ntempo = 100.0\n", "musik"),
        ("[music]\ntempo = \"fast\"\n", "music.tempo"),
        ("[clock]\nmode = \"sometimes\"\n", "clock.mode"),
        ("[music]\nlow = 80\nhigh = 70\n", "music.low"),
        ("[[voices]]\nmatch = \"*\"\nprogramme = 3\n", "voices.programme"),
    ],
    ids=["unknown-key", "unknown-section", "wrong-type", "bad-choice", "bad-range", "voices"],
)
def test_bad_config_exits_78_naming_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(bad) in lines[0]
    assert key.rsplit(".", 1)[-1] in lines[0]
    assert key.split(".", 1)[0] in lines[0]


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 78
    assert "nope.toml" in result.stderr


def test_invalid_toml_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[music\ntempo = 1\n")
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 78
    assert "broken.toml" in result.stderr


def test_bad_set_exits_78() -> None:
    result = run_cli("run", "--set", "music.tempoo=90")
    assert result.returncode == 78
    assert "music.tempoo" in result.stderr


def parse_run_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_command.configure(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def no_ambient_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolate from the user's config: empty XDG dir, no $STREAMSONIC_CONFIG."""
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.delenv("STREAMSONIC_CONFIG", raising=False)
    if Path("/etc/streamsonic/config.toml").exists():
        pytest.skip("/etc/streamsonic/config.toml exists on this machine")
    return xdg


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_set_overrides_file_and_flags_override_set(tmp_path: Path, no_ambient_config: Path) -> None:
    conf = write(tmp_path / "c.toml", "[music]\ntempo = 100.0\nscale = \"minor\"\n")
    args = parse_run_args("--config", str(conf), "--set", "music.tempo=90",
                          "--set", "clock.mode=\"tick\"", "--set", "output.targets=[\"events\"]")
    config = config_from(args, MUSIC_OPTIONS)
    assert config.music.tempo == 90.0
    assert config.music.scale == "minor"  # from the file
    assert config.clock.mode == "tick"
    assert config.output.targets == ("events",)
    args = parse_run_args("--config", str(conf), "--set", "music.tempo=90", "--tempo", "70")
    assert config_from(args, MUSIC_OPTIONS).music.tempo == 70.0


def test_set_rejects_wrong_type(no_ambient_config: Path) -> None:
    args = parse_run_args("--set", "music.low=high")
    with pytest.raises(ConfigError, match=r"music\.low"):
        config_from(args, MUSIC_OPTIONS)


def test_set_text_settings_take_what_looks_like_a_number(no_ambient_config: Path) -> None:
    """A setting that takes text gets the text as written (mqtt.protocol=5 is "5", a
    numeric client id stays digits); one that takes a number still gets the number."""
    args = parse_run_args("--set", "mqtt.protocol=5", "--set", "mqtt.client_id=0123",
                          "--set", "music.tempo=90", "--set", "mqtt.qos=0",
                          "--set", "clock.mode=\"tick\"")
    config = config_from(args, MUSIC_OPTIONS)
    assert config.mqtt.protocol == "5"
    assert config.mqtt.client_id == "0123"
    assert config.music.tempo == 90.0
    assert config.mqtt.qos == 0
    assert config.clock.mode == "tick"
    args = parse_run_args("--set", "mqtt.protocol=3.1.1")
    assert config_from(args, MUSIC_OPTIONS).mqtt.protocol == "3.1.1"


def test_precedence_config_flag_env_xdg(tmp_path: Path, no_ambient_config: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    xdg_file = write(no_ambient_config / "streamsonic" / "config.toml", "[music]\ntempo = 61.0\n")
    env_file = write(tmp_path / "env.toml", "[music]\ntempo = 62.0\n")
    flag_file = write(tmp_path / "flag.toml", "[music]\ntempo = 63.0\n")

    assert find_config_file(None) == xdg_file
    assert config_from(parse_run_args(), MUSIC_OPTIONS).music.tempo == 61.0

    monkeypatch.setenv("STREAMSONIC_CONFIG", str(env_file))
    assert find_config_file(None) == env_file
    assert config_from(parse_run_args(), MUSIC_OPTIONS).music.tempo == 62.0

    args = parse_run_args("--config", str(flag_file))
    assert config_from(args, MUSIC_OPTIONS).music.tempo == 63.0

    # A stale $STREAMSONIC_CONFIG: the error says where the name came from.
    monkeypatch.setenv("STREAMSONIC_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml \(named by \$STREAMSONIC_CONFIG\) "
                                          "does not exist"):
        config_from(parse_run_args(), MUSIC_OPTIONS)


def test_defaults_without_any_file(no_ambient_config: Path) -> None:
    assert find_config_file(None) is None
    assert config_from(parse_run_args(), MUSIC_OPTIONS) == Config()


def test_a_config_file_with_a_bom_a_nul_or_as_a_fifo(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A QA pass (2026-12-06): a byte order mark (as Windows editors write) gave "Invalid
    statement (at line 1, column 1)", a NUL byte "Invalid statement (at line 3...)", and a
    FIFO nobody writes to (check-config f.toml) hung for good."""
    import threading

    from streamsonic import config as config_module
    from streamsonic.config import read_config_file

    bom = tmp_path / "bom.toml"
    bom.write_bytes(b'\xef\xbb\xbf[music]\nscale = "minor"\n')
    assert read_config_file(bom) == {"music": {"scale": "minor"}}
    nul = tmp_path / "nul.toml"
    nul.write_bytes(b'[music]\nscale = "minor"\n\x00\n')
    with pytest.raises(ConfigError, match=r"NUL byte \(on line 3\)"):
        read_config_file(nul)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    monkeypatch.setattr(config_module, "FIFO_WAIT", 0.2)
    failed: list[BaseException] = []

    def read_alone() -> None:
        try:
            read_config_file(fifo)
        except BaseException as err:  # (what it raised is the result)
            failed.append(err)
    reader = threading.Thread(target=read_alone, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # (hung in open(): a writer that comes lets it go)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO that nobody writes to hung")
    assert len(failed) == 1 and isinstance(failed[0], ConfigError), failed
    assert "FIFO that no process wrote to" in str(failed[0])

    def write() -> None:
        with fifo.open("w") as fh:
            fh.write('[music]\nkey = "D"\n')
    writer = threading.Thread(target=write)
    writer.start()
    try:
        monkeypatch.setattr(config_module, "FIFO_WAIT", 10.0)
        assert read_config_file(fifo) == {"music": {"key": "D"}}
    finally:
        writer.join(timeout=10)


def test_the_earcon_keeps_a_sound_of_its_own(tmp_path: Path) -> None:
    """A QA pass (2026-12-06): a [[voices]] rule on channel 10 played its stream as the
    earcon's drums (its program taken away by the earcon's program change), and an earcon
    moved to a melodic channel kept program 0, the piano a stream plays. Both are refused
    while the earcon is on; a muted rule, or the earcon off, or a program of its own, pass."""
    path = tmp_path / "v.toml"
    path.write_text('[[voices]]\nmatch = "s01"\nprogram = 33\nchannel = 10\n')
    with pytest.raises(ConfigError, match="plays on channel 10, the accent earcon's"):
        load_config(path)
    assert load_config(path, {"accent.earcon": False}).voices[0].channel == 10
    path.write_text('[[voices]]\nmatch = "s01"\nchannel = 10\nmute = true\n')
    assert load_config(path).voices[0].mute
    with pytest.raises(ConfigError, match=r"accent\.earcon_program = 0 on channel 16"):
        load_config(None, {"accent.earcon_channel": 16})
    moved = load_config(None, {"accent.earcon_channel": 16, "accent.earcon_program": 115})
    assert (moved.accent.earcon_channel, moved.accent.earcon_program) == (16, 115)
