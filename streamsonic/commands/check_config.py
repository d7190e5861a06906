"""`streamsonic check-config`: validate a config file as start-up does; print the result."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from streamsonic.commands.printing import write_stdout
from streamsonic.config import Config, find_config_file, load_config, source_problem
from streamsonic.errors import ConfigError, UsageError
from streamsonic.mqtt.urls import check_password_file
from streamsonic.sources.nats_url import check_password_file as check_nats_password_file

DESCRIPTION = """\
Validate a config file exactly as 'run' does at start-up (and on SIGHUP): every key known,
every type right, every value in its range, every output in output.targets understood,
mqtt.password_file readable where MQTT is used, nats.password_file where NATS logs in.
On success print the effective configuration (the file over the built-in defaults: every
key, TOML that --config accepts back; a password is shown as "<hidden>") and exit 0;
otherwise print one error line naming the key, the value and the file, and exit 78.

PATH defaults to the file 'run' would read: $STREAMSONIC_CONFIG, then
~/.config/streamsonic/config.toml, then /etc/streamsonic/config.toml (none: the defaults).

For a system service (a config under /etc, or run by systemd) it also warns about paths
under /home, /root or /run/user, including streamsonic's own Python: the unit's
ProtectHome=yes hides them from the service.

examples:
  streamsonic check-config /etc/streamsonic/config.toml
  streamsonic check-config --quiet my.toml && systemctl reload streamsonic"""

#: Keys whose values are secrets: printed as "<hidden>" when set.
SECRET_KEYS = frozenset({"mqtt.password", "nats.password"})

#: Folders that ProtectHome=yes makes invisible to a service.
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the check-config options."""
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="the config file to check (default: the one 'run' would read)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing when the file is valid (errors and warnings "
                             "still go to stderr)")


def main(args: argparse.Namespace) -> int:
    """Check the file; print the effective config."""
    path = find_config_file(args.path)
    config = check(path)
    for warning in service_warnings(config, path):
        print(f"streamsonic: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        origin = str(path) if path is not None else "the built-in defaults (no config file)"
        write_stdout(f"# streamsonic: effective configuration from {origin}\n"
                     + to_toml(config))
    return 0


def check(path: Path | None) -> Config:
    """Load ``path`` as start-up does; ConfigError (exit 78) for anything wrong."""
    config = load_config(path)
    from streamsonic.outputs import parse_output  # noqa: PLC0415

    where = str(path) if path is not None else "defaults"
    problem = source_problem(config)  # what the daemon's source would refuse at start
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
    specs = []
    for target in config.output.targets:
        try:
            specs.append(parse_output(target))
        except UsageError as err:
            raise ConfigError(f"{where}: output.targets: {err}") from None
    try:  # a password file the daemon could not read at start
        check_password_file(config, [spec.kind for spec in specs])
        check_nats_password_file(config.nats)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if config.daemon.workers > 1:  # what the daemon would refuse at start
        from streamsonic.workers import check_workers  # noqa: PLC0415

        try:
            check_workers(config, specs)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    return config


# -- warnings --------------------------------------------------------------------------------

def _under_home(path: Path) -> Path | None:
    """The ProtectHome folder that holds ``path``, or None."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        resolved = path
    for candidate in {path.absolute(), resolved}:
        for home in HOME_DIRS:
            if candidate.is_relative_to(home):
                return home
    return None


def for_service(path: Path | None) -> bool:
    """Whether ``path`` is meant for the system service: under /etc, or checked by systemd
    (``$INVOCATION_ID`` is set for a unit's processes, ``ExecReload=`` included)."""
    if os.environ.get("INVOCATION_ID"):
        return True
    return path is not None and path.absolute().is_relative_to("/etc")


def service_warnings(config: Config, path: Path | None) -> list[str]:
    """What a service with ProtectHome=yes could not reach (empty when not for a service)."""
    if not for_service(path):
        return []
    out: list[str] = []
    python = Path(sys.executable)
    home = _under_home(python)
    if home is not None:
        real = python.resolve()
        shown = f"{python} ({real})" if real != python else str(python)
        out.append(f"streamsonic runs on {shown}, under {home}: the unit's ProtectHome=yes "
                   "hides it and the service cannot start (status 203/EXEC); install "
                   "streamsonic (and the Python its venv links to) under /opt or /usr/local "
                   "(systemd/README.md)")
    named: list[tuple[str, str]] = [
        ("model.weights", config.model.weights),
        ("model.temporal_weights", config.model.temporal_weights),
        ("audio.soundfont", config.audio.soundfont),
        ("mqtt.password_file", config.mqtt.password_file),
        ("nats.password_file", config.nats.password_file),
        ("mqtt.ca_file", config.mqtt.ca_file),
        ("mqtt.cert_file", config.mqtt.cert_file),
        ("mqtt.key_file", config.mqtt.key_file),
    ]
    for target in config.output.targets:
        kind, sep, arg = target.partition(":")
        if sep and kind in ("file", "wav"):
            named.append(("output.targets", arg))
    for key, value in named:
        if value and (home := _under_home(Path(value))) is not None:
            out.append(f"{key} = {value!r} is under {home}, which ProtectHome=yes hides from "
                       "the service; move it (e.g. to /etc/streamsonic or /var/lib/streamsonic)")
    return out


# -- printing ------------------------------------------------------------------------------

def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string as well
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot print {type(value).__name__}")  # pragma: no cover


def _table(obj: Any, prefix: str) -> list[str]:
    lines = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f"{prefix}{f.name}" in SECRET_KEYS and value:
            value = "<hidden>"
        lines.append(f"{f.name} = {_value(value)}")
    return lines


def to_toml(config: Config) -> str:
    """``config`` as TOML: every section and key, ``[[voices]]`` last."""
    out: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out += [f"[{f.name}]", *_table(value, f"{f.name}."), ""]
        elif isinstance(value, tuple):
            if not value:
                out += [f"# no [[{f.name}]] rules", ""]
            for item in value:
                out += [f"[[{f.name}]]", *_table(item, f"{f.name}."), ""]
    return "\n".join(out)
