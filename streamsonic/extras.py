"""Optional dependencies (pip extras) and the one-line error when one is missing.

``pip install streamsonic`` runs the daemon on stdin and plays through the audio device or
into MIDI, WAV and events files; training on MIDI files needs nothing more. MIDI ports,
MQTT, NATS, plots, the Prometheus endpoint and training on scores (MusicXML, ABC, Humdrum
and music21's corpus, through music21) each need an extra (``pip install
'streamsonic[midi]'``, ``[mqtt]``, ``[nats]``, ``[plot]``, ``[metrics]``, ``[train]``;
``[all]`` for every one), declared in pyproject.toml's ``[project.optional-dependencies]``.

Backends import their library only when used; :func:`import_extra` and
:func:`missing_extra` turn the ``ModuleNotFoundError`` of a missing extra into a
:class:`~streamsonic.errors.MissingExtraError` that names the pip command.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from streamsonic.errors import MissingExtraError

#: Top-level module -> (the distribution that provides it, the extra that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "music21": ("music21", "train"),
    "rtmidi": ("python-rtmidi", "midi"),
    "paho": ("paho-mqtt", "mqtt"),
    "nats": ("nats-py", "nats"),
    "matplotlib": ("matplotlib", "plot"),
    "prometheus_client": ("prometheus-client", "metrics"),
}


def install_command(extra: str) -> str:
    """The pip command that installs ``extra``."""
    return f"pip install 'streamsonic[{extra}]'"


def _error(module: str, feature: str) -> MissingExtraError:
    dist, extra = EXTRAS[module]
    return MissingExtraError(f"{dist} (for {feature}) is not installed; install the "
                             f"{extra!r} extra: {install_command(extra)}")


def missing_extra(err: ImportError, feature: str) -> MissingExtraError | None:
    """The error to raise for ``err`` when it says an extra's library is not installed
    (``feature`` is what needs it, e.g. "output mqtt:notes"); None for any other error."""
    if not isinstance(err, ModuleNotFoundError):
        return None
    top = (err.name or "").partition(".")[0]
    return _error(top, feature) if top in EXTRAS else None


def require_extra(module: str, feature: str) -> None:
    """Raise the MissingExtraError for ``module`` (a key of EXTRAS) unless it is installed;
    imports nothing, so a command can check before its slow work instead of after it."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed installation
        found = False
    if not found:
        raise _error(module, feature)


def import_extra(module: str, feature: str) -> ModuleType:
    """Import ``module`` (from an extra), or raise a MissingExtraError naming the fix."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        error = missing_extra(err, feature)
        if error is None:
            raise
        raise error from None
