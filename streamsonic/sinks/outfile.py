"""Writing output files: as they grow and never over an earlier run's file (``run``), or all at
once (``render``); never replacing what is not a file.

``OutputFile(path, what, live=...)`` decides at open time how ``path`` will be written, so that
errors such as a missing folder or a read-only directory surface before any data is played:

* ``render`` (``live=False``), a regular file or a path that does not exist yet: the data goes
  to a hidden temporary file in the same folder, which ``commit()`` syncs and renames over the
  target. A failed write leaves the old file untouched and removes the temporary file.
* ``run`` (``live=True``), a regular file or a new path: the file itself is written as the data
  comes; the format's writer patches its header (``patch``) and marks the file readable
  (``readable``) at each flush, so a killed process leaves a valid file. An earlier file that
  holds data is never written over: it is first renamed to ``NAME-1.EXT`` (the first free
  number), so ``PATH`` is always the newest file; the new file is then created exclusively
  (``O_EXCL``). While it is written it holds an exclusive advisory lock (``flock``), so an
  empty file at ``PATH`` is used only when no other process holds it: another daemon's new
  file, still empty, is kept aside like one that holds data, and two processes never write
  one file. :meth:`OutputFile.final_path` says where a file went once it was kept aside. A
  failed write keeps what was readable at the last flush (the file is cut back to it).
* a symlink: the same, at the symlink's final target (the link itself stays a link).
* anything else that exists (a device such as ``/dev/null`` or ``/dev/stdout``, a FIFO):
  it is opened and written in place; it is never replaced by a regular file. One that cannot
  seek (a pipe, a FIFO, a terminal) gets the whole file at ``commit()``: until then the data is
  spooled to an unnamed temporary file (on disk, not in memory), since a header can only be
  patched in a file that can seek. A FIFO is opened without waiting: one that no process reads
  yet is opened only at ``commit()``, which then waits up to :data:`FIFO_WAIT` seconds for a
  reader (opening never blocks start-up, so a stop signal is answered).

:class:`FileSeries` names the files of one ``run`` output: ``{start}`` in the path becomes the
UTC time the file was started (``20250314T093000Z``), ``{n}`` its number in the run (1, 2, ...),
for rotation. Every failure raises :class:`OutputError` when opening and
:class:`OutputWriteError` once data is being written; the message names the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import stat
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from streamsonic.errors import OutputError, OutputWriteError

if TYPE_CHECKING:
    from streamsonic.config import OutputConfig

log = logging.getLogger(__name__)

#: How ``{start}`` is written in file names: ISO 8601 basic format, UTC, sortable.
START_FORMAT = "%Y%m%dT%H%M%SZ"
PLACEHOLDERS = ("{start}", "{n}")
_COPY_CHUNK = 1 << 20
#: Seconds ``commit()`` waits for a process to open a FIFO target for reading when none had
#: by then; past it the file is not written (an OutputWriteError that says so).
FIFO_WAIT = 10.0
_FIFO_POLL = 0.05


def wall_time(at: float) -> datetime:
    """The UTC time of day of ``at`` on the live scheduler's clock (``time.monotonic()``, as
    asyncio's loop uses)."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - at)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _aside_name(target: Path, n: int) -> Path:
    return target.with_name(f"{target.stem}-{n}{target.suffix}")


def keep_aside(target: Path, first: int = 1) -> Path:
    """Rename the file at ``target`` to the first free ``NAME-N.EXT`` (N >= ``first``) without
    ever replacing a file; return the new name. Raises OSError."""
    for n in itertools.count(first):
        aside = _aside_name(target, n)
        try:
            os.link(target, aside)  # fails if ``aside`` exists: nothing is replaced
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP,
                                 errno.EMLINK):
                raise
            # no hard links on this file system: check, then rename (a tiny race remains)
            if aside.exists() or aside.is_symlink():
                continue
            target.rename(aside)
            return aside
        target.unlink()
        return aside
    raise AssertionError("unreachable")  # pragma: no cover


def _lock(fd: int) -> bool | None:
    """Take the exclusive advisory lock that a ``run`` file holds while it is written (it
    goes with the descriptor). True: taken; False: another open file holds it (another
    process writes this file); None: the file system has no such locks. Raises OSError."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            return None
        raise
    return True


def _open_fifo(path: Path) -> BinaryIO | None:
    """Open the FIFO at ``path`` for writing without waiting: None while no process has it open
    for reading (a plain open() would block until one does). Raises OSError."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENXIO:
            return None
        raise
    os.set_blocking(fd, True)  # writes wait for a slow reader, as a pipe's do
    return os.fdopen(fd, "wb", buffering=0)


def check_writable(path: str | Path, what: str = "file") -> None:
    """OutputError where :class:`OutputFile` (``live``) could not open ``path``: a folder, a
    missing folder, a folder or file we may not write. Touches nothing on disk (a reload
    checks its new outputs so, and opens their files only once it cannot fail)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise OutputError(f"cannot write {what} {path}: {err.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {what} {path}: it is a folder; give a file name")
    target = path.resolve() if path.is_symlink() else path
    if st is not None and not stat.S_ISREG(st.st_mode):  # a device or FIFO: written in place
        writable = os.access(path, os.W_OK)
    else:
        if not target.parent.is_dir():
            raise OutputError(f"cannot write {what} {path}: folder {target.parent} does "
                              "not exist")
        writable = os.access(target.parent, os.W_OK | os.X_OK)
    if not writable:
        raise OutputError(f"cannot write {what} {path}: {os.strerror(errno.EACCES)}; "
                          "choose a writable path")


class OutputFile:
    """One output file: appended to, patched in place, then committed (see the module doc)."""

    def __init__(self, path: str | Path, what: str = "file", *, live: bool = False,
                 aside_from: int = 1) -> None:
        self.path = Path(path)
        self.what = what
        self.live = live
        #: Where an earlier file at this name was moved (``run`` only), else None.
        self.kept: Path | None = None
        #: (device, inode) of the file written at ``path`` (``run``, a regular file), else None
        self._ident: tuple[int, int] | None = None
        target = self.path.resolve() if self.path.is_symlink() else self.path
        try:
            st = self.path.stat()  # follows symlinks: what would be written
        except FileNotFoundError:
            st = None
        except OSError as err:
            raise OutputError(f"cannot write {what} {self.path}: {err.strerror}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write {what} {self.path}: it is a folder; "
                              "give a file name")
        self.in_place = st is not None and not stat.S_ISREG(st.st_mode)
        self.target = target
        self._tmp: Path | None = None
        self._dest: BinaryIO | None = None  # a target that cannot seek, written at commit
        self._fifo = False  # the target is a FIFO: ``_dest`` may be opened only at commit
        try:
            if self.in_place and st is not None and stat.S_ISFIFO(st.st_mode):
                # Never block here: a FIFO's plain open() waits for a reader, for ever.
                self._dest = _open_fifo(self.path)
                if self._dest is None:
                    log.info("%s %s: no process reads the FIFO yet; the file is spooled and "
                             "written to it at exit, once a reader opens it (waiting up to "
                             "%g s then)", what, self.path, FIFO_WAIT)
                self._fifo = True
                self.file: BinaryIO = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
            elif self.in_place:
                self.file = self.path.open("wb", buffering=0)
                try:
                    os.lseek(self.file.fileno(), 0, os.SEEK_CUR)
                except OSError:  # a pipe or terminal: spool, write it all at commit
                    self._dest = self.file
                    self.file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
            else:
                parent = target.parent
                if not parent.is_dir():
                    raise OutputError(f"cannot write {what} {self.path}: folder {parent} "
                                      "does not exist")
                self.file = self._open_live(target, st, aside_from) if live else \
                    self._open_temp(target, st)
        except OSError as err:
            raise OutputError(f"cannot write {what} {self.path}: {err.strerror}; choose a "
                              "writable path") from None
        self.size = 0  # bytes written so far
        self.valid = 0  # bytes that make a readable file (run: at the last flush)
        self.done = False

    def _open_temp(self, target: Path, st: os.stat_result | None) -> BinaryIO:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".part")
        self._tmp = Path(name)
        # mkstemp makes 0600; give the file the mode a plain open() would (or keep the mode
        # of the file it replaces).
        mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
        os.fchmod(fd, mode)
        return os.fdopen(fd, "wb", buffering=0)

    def _open_live(self, target: Path, st: os.stat_result | None, aside_from: int) -> BinaryIO:
        flags = os.O_WRONLY | os.O_CLOEXEC
        fd = None
        if st is not None and st.st_size == 0:  # empty (`touch`, a shell's `>`): nothing to keep
            fd = self._take_empty(target, flags)
        for _ in range(100):
            if fd is not None:
                break
            if target.exists():
                self.kept = keep_aside(target, aside_from)
            try:
                fd = os.open(target, flags | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:  # another process made it meanwhile: keep that one too
                continue
            if _lock(fd) is False:
                # Another process took our new, still empty file as one to use (it locked it
                # first): it is theirs now; keep it aside too and make another.
                os.close(fd)
                fd = None
        if fd is None:
            raise OSError(errno.EEXIST, "the name is taken again and again")
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        return os.fdopen(fd, "wb", buffering=0)

    @staticmethod
    def _take_empty(target: Path, flags: int) -> int | None:
        """The descriptor of the empty file at ``target``, opened and locked, when no other
        process writes it (else None: it is kept aside as a file that holds data is).
        Raises OSError (a file we may not write)."""
        try:
            fd = os.open(target, flags)
        except FileNotFoundError:
            return None
        try:
            if _lock(fd):  # (None, no locks here: it could be another daemon's new file)
                st, now = os.fstat(fd), target.stat()
                if st.st_size == 0 and (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    def final_path(self) -> Path:
        """Where the file is now: ``path``, or, for a ``run`` file kept aside since (by this
        output's next file at the same name, or by another process), its ``NAME-N.EXT``.
        ``path`` when it cannot be found."""
        if self._ident is None:
            return self.path
        with contextlib.suppress(OSError):
            st = self.target.stat()
            if (st.st_dev, st.st_ino) == self._ident:
                return self.path
        folder, stem, suffix = self.target.parent, self.target.stem + "-", self.target.suffix
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if not (name.startswith(stem) and name.endswith(suffix)
                        and name[len(stem):len(name) - len(suffix)].isdigit()):
                    continue
                st = entry.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) == self._ident:
                    return folder / name
        return self.path

    # -- writing --------------------------------------------------------------------------
    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at the end. Raises OutputWriteError (the file is given up)."""
        view = memoryview(data)
        try:
            while view:
                n = self.file.write(view)
                if n is None:  # a non-blocking file that is full; ours never are
                    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
                self.size += n
                view = view[n:]
        except OSError as err:
            raise self.fail(err) from None

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite ``data`` at ``offset`` (a header field) without moving the end."""
        try:
            os.pwrite(self.file.fileno(), data, offset)
        except OSError as err:
            raise self.fail(err) from None

    def readable(self) -> None:
        """What is written now is a complete, valid file (``run`` calls it at each flush)."""
        self.valid = self.size

    def commit(self) -> None:
        """Make the written data the file's content (sync, and rename or copy). Once."""
        if self.done:
            return
        try:
            if self._fifo and self._dest is None:
                self._dest = self._wait_for_reader()
            if self._dest is not None:
                self._copy_spool(self._dest)
            elif not self.in_place:
                os.fsync(self.file.fileno())
            self.file.close()
            if self._dest is not None:
                self._dest.close()
            if self._tmp is not None:
                self._tmp.replace(self.target)
                self._tmp = None
        except OSError as err:
            raise self.fail(err) from None
        self.done = True

    def _wait_for_reader(self) -> BinaryIO:
        """Open the FIFO once a process reads it, waiting at most :data:`FIFO_WAIT` seconds.
        Raises OSError."""
        log.warning("%s %s: waiting up to %g s for a process to read the FIFO", self.what,
                    self.path, FIFO_WAIT)
        deadline = time.monotonic() + FIFO_WAIT
        while (dest := _open_fifo(self.path)) is None:
            if time.monotonic() >= deadline:
                raise OSError(errno.ENXIO, f"no process opened the FIFO for reading within "
                              f"{FIFO_WAIT:g} s; start its reader (such as `cat {self.path} "
                              "> out`) before the run ends")
            time.sleep(_FIFO_POLL)
        return dest

    def _copy_spool(self, dest: BinaryIO) -> None:
        os.lseek(self.file.fileno(), 0, os.SEEK_SET)
        while chunk := os.read(self.file.fileno(), _COPY_CHUNK):
            view = memoryview(chunk)
            while view:
                n = dest.write(view)
                view = view[n or 0:]

    def fail(self, err: OSError) -> OutputWriteError:
        """Give up after ``err``: discard (``render``) or cut back to the last readable state
        (``run``); return the error to raise."""
        live = self.live and not self.in_place and self._tmp is None
        if live:
            with contextlib.suppress(OSError):
                os.ftruncate(self.file.fileno(), self.valid)
        self.discard()
        kept = ("" if self.in_place
                else f"; {self.path} keeps what was written before" if live
                else f"; {self.path} was left as it was" if self.target.exists()
                else f"; nothing was written to {self.path}")
        return OutputWriteError(f"cannot write {self.what} {self.path}: {err.strerror}{kept}")

    def discard(self) -> None:
        """Give up: close the file and remove the temporary file, if any."""
        self.done = True
        for file in (self.file, self._dest):
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            self._tmp = None


class FileSeries:
    """The files one ``run`` output writes, one after another (rotation): each is named from
    ``pattern`` (``{start}``: the UTC time it starts; ``{n}``: its number in this run) and
    opened with ``live=True``, so an earlier file of the same name is kept aside, never
    overwritten."""

    def __init__(self, pattern: str | Path, what: str) -> None:
        self.pattern = str(pattern)
        self.what = what
        self.count = 0
        self._aside = 1  # the next number to try for an earlier file kept aside

    def name(self, started: datetime, n: int) -> Path:
        """The file name for file number ``n`` started at ``started``."""
        stamp = started.astimezone(UTC).strftime(START_FORMAT)
        return Path(self.pattern.replace("{start}", stamp).replace("{n}", str(n)))

    def check(self) -> None:
        """OutputError where the first file could not be opened (:func:`check_writable`);
        nothing on disk changes."""
        check_writable(self.name(datetime.now(UTC), self.count + 1), self.what)

    def open(self, started: datetime | None = None) -> OutputFile:
        """Open the next file (``started``: when it starts; default now)."""
        self.count += 1
        path = self.name(started or datetime.now(UTC), self.count)
        try:
            out = OutputFile(path, self.what, live=True, aside_from=self._aside)
        except OutputError as err:
            if self.count == 1:
                raise
            raise OutputWriteError(str(err)) from None  # mid-run: data is being lost
        if out.kept is not None:
            log.info("%s %s: kept the earlier file as %s", self.what, path, out.kept)
            self._aside = _aside_number(out.kept, out.target) + 1
        return out


def _aside_number(kept: Path, target: Path) -> int:
    tail = kept.stem[len(target.stem) + 1:]
    return int(tail) if tail.isdigit() else 1


class SeriesOutput:
    """What the ``file:`` and ``wav:`` sinks share about their file: ``start`` opens the
    first one (at once, or, for a reload, once the reload cannot fail any more: ``defer``),
    ``retune`` takes a reload's flush and rotation settings from the current file on, and
    ``_out`` is the open file. A subclass sets ``_file``, ``_series`` and ``live`` and
    makes each file (``_open_file``); ``_limits_changed`` follows new settings."""

    _file: OutputFile | None
    _series: FileSeries | None
    live: OutputConfig | None
    closed: bool

    def _open_file(self, started: datetime | None = None) -> OutputFile:
        raise NotImplementedError

    def _limits_changed(self) -> None:
        """The file's size limits follow ``live`` (or the open file) anew."""

    def start(self) -> None:
        """Open the (first) file, if not yet open (``defer``: a reload opens it once it
        cannot fail any more)."""
        if self._file is not None or self.closed:
            return
        self._file = self._open_file()
        if self._series is not None and self._file.in_place:
            self._series = None  # a device or FIFO: one file, never rotated
        self._limits_changed()

    def retune(self, output: OutputConfig) -> None:
        """A reload's new flush and rotation settings, from the current file on."""
        if self.live is not None:
            self.live = output
            self._limits_changed()

    @property
    def _out(self) -> OutputFile:
        assert self._file is not None, "start() opens the file"
        return self._file

    @_out.setter
    def _out(self, out: OutputFile) -> None:
        self._file = out
