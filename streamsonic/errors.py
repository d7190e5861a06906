"""The error hierarchy.

Library code raises these; the CLI prints ``str(err)`` as one line and exits with
``err.exit_status``. Messages say what was wrong (naming the file, key, port, topic...)
and how to fix it. Exit statuses follow BSD ``sysexits.h`` where one fits.
"""

from __future__ import annotations


class StreamsonicError(Exception):
    """Base class of every error streamsonic raises on purpose."""

    exit_status: int = 1


class UsageError(StreamsonicError):
    """The command line itself is wrong (EX_USAGE)."""

    exit_status = 64


class InputDataError(StreamsonicError):
    """An input file cannot be used: no numeric column, empty, unreadable (EX_DATAERR)."""

    exit_status = 65


class NoInputError(StreamsonicError):
    """An input file named on the command line does not exist or cannot be opened
    (``run FILE``, ``replay FILE``; EX_NOINPUT)."""

    exit_status = 66


class ConfigError(StreamsonicError):
    """A configuration file or value is invalid: unknown key, wrong type (EX_CONFIG)."""

    exit_status = 78


class CheckpointError(StreamsonicError):
    """A weights file is missing, not a streamsonic checkpoint, or incompatible (EX_NOINPUT)."""

    exit_status = 66


class DeviceError(StreamsonicError):
    """The requested compute device (e.g. CUDA) is not available (EX_UNAVAILABLE)."""

    exit_status = 69


class OutputError(StreamsonicError):
    """An output (sink) could not be opened or used (EX_UNAVAILABLE)."""

    exit_status = 69


class OutputWriteError(OutputError):
    """Writing an output file failed (disk full, I/O error): its data is lost (EX_IOERR)."""

    exit_status = 74


class OutputExistsError(OutputError):
    """An output file is already there and the command does not replace it unless told to
    (``train -o`` without ``--overwrite`` or ``--resume``; EX_CANTCREAT)."""

    exit_status = 73


class AudioError(OutputError):
    """No usable audio device, or the audio stream failed."""


class SoundFontError(OutputError):
    """No General MIDI SoundFont was found or it could not be loaded."""


class MidiPortError(OutputError):
    """A MIDI port could not be found or opened."""


class SourceError(StreamsonicError):
    """An input source (stdin, MQTT) could not be opened (EX_UNAVAILABLE)."""

    exit_status = 69


class MqttError(SourceError):
    """The MQTT broker refused us or cannot be reached (bad URL, TLS, auth)."""


class NatsError(SourceError):
    """The NATS server refused us or cannot be reached, or a subject is invalid."""


class MetricsError(StreamsonicError):
    """The Prometheus endpoint (``metrics.listen``) cannot listen (EX_UNAVAILABLE)."""

    exit_status = 69


class NoSourceError(ConfigError):
    """Under a service manager, nothing to read: no MQTT URL and stdin is /dev/null
    (EX_CONFIG: the configuration must name a source)."""


class MissingExtraError(StreamsonicError):
    """An optional dependency (a pip extra: midi, mqtt, plot) is not installed
    (EX_UNAVAILABLE); the message names the pip command (see ``streamsonic.extras``)."""

    exit_status = 69


class TrainingError(StreamsonicError):
    """Training cannot run: no usable MIDI files, bad options (EX_DATAERR)."""

    exit_status = 65


class TrainingDivergedError(TrainingError):
    """The training loss became NaN or infinite (the learning rate is too high, as a rule):
    the run stops without saving that state (EX_SOFTWARE: the computation itself failed,
    not the data or the command line)."""

    exit_status = 70


#: Exit status for an interrupted command (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP to a command that stops by unwinding (``render``, ``demo``,
    ``train``): taken as Ctrl-C is (what was being written is given up, or, in training,
    the last epoch kept: every ``except KeyboardInterrupt`` applies), never caught as an
    :class:`Exception`; the command line prints one line and exits with 128 + the
    signal's number, as a shell reports a process the signal ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_status = 128 + signum
#: Exit status of a daemon whose worker process (``daemon.workers``) was killed by a signal
#: (EX_SOFTWARE: an internal failure; a supervisor restarts it).
EXIT_WORKER_KILLED = 70
