"""Writing weights files (checkpoints, their ``.npz``, ``train``'s resume state) whole or not
at all.

:func:`check_writable` is for the start of a command: a path that is a folder (or a device),
or whose folder cannot be made or written, is an :class:`OutputError` (exit 69) before any
work is done. :func:`write_whole` writes bytes to a hidden temporary file in the target's
folder, syncs it and renames it over the target: a write that fails (disk full, I/O error)
removes the temporary file, leaves any earlier file at the path as it was, and is one
:class:`OutputWriteError` (exit 74) naming the file and the cause. :func:`interrupts_held`
keeps Ctrl-C (SIGINT) from landing in the middle of a save: a save that has begun completes,
then the interrupt is raised as usual.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from streamsonic.errors import OutputError, OutputWriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _target(path: Path, follow: bool = True) -> Path:
    """What writing ``path`` replaces: a symlink's final target (the link stays a link), or
    with ``follow`` false the path itself (a symlink there is replaced by the file)."""
    return path.resolve() if follow and path.is_symlink() else path


def same_file(first: str | Path, second: str | Path) -> bool:
    """Whether two paths are one file: the same real path, or the same device and inode (a
    hard link; a symlink to it)."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        a, b = Path(first).stat(), Path(second).stat()
    except (OSError, ValueError):  # one of them does not exist (yet): two files
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_writable(path: str | Path, what: str, option: str = "-o", follow: bool = True) -> None:
    """Raise :class:`OutputError` unless ``path`` can be written as a regular file: it is not
    a folder or a device, and its folder exists (or can be made) and takes new files (tried
    with a temporary file, so a read-only file system is found as well). ``follow``: as
    :func:`write_whole` takes it (false: a symlink at ``path`` is replaced, so where it
    leads does not matter)."""
    shown = Path(path)
    p = _target(shown, follow)
    try:
        st = None if not follow and p.is_symlink() else p.stat()
    except (FileNotFoundError, NotADirectoryError):  # a file on the way: found below
        st = None
    except OSError as err:  # EACCES, ELOOP...
        raise OutputError(f"cannot write {what} {shown}: {_why(err)}; give {option} a "
                          "path in a writable folder") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {what} {shown}: it is a folder; give {option} a file "
                          f"name (e.g. {shown / ('model' + (shown.suffix or '.pt'))})")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"cannot write {what} {shown}: it is not a regular file (a device "
                          f"or a pipe), which is never replaced; give {option} a file name")
    folder = p.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {what} {shown}: {existing} is a file, not a folder; "
                          f"give {option} a path in a writable folder")
    with interrupts_held():  # the probe never stays behind
        try:
            fd, name = tempfile.mkstemp(dir=existing, prefix=".streamsonic-check.",
                                        suffix=".tmp")
        except OSError as err:
            where = "" if existing == folder else f" (to make {folder} in it)"
            raise OutputError(f"cannot write {what} {shown}: folder {existing} cannot be "
                              f"written{where}: {_why(err, existing)}; give {option} a path "
                              "in a writable folder") from None
        os.close(fd)
        with contextlib.suppress(OSError):
            Path(name).unlink()


def _why(err: OSError, folder: Path | None = None) -> str:
    """Why a path cannot be written, as a message says it: the system's words where they
    are plain, clearer ones where they mislead (ENOENT for a folder that is there: /proc)."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied (to user id {os.getuid()})"
    if err.errno == errno.EROFS:
        return "it is on a read-only file system"
    if err.errno == errno.ENOENT and folder is not None and folder.is_dir():
        return "it takes no new files (a virtual file system, such as /proc or /sys)"
    return err.strerror or str(err)


def write_whole(path: str | Path, data: bytes | bytearray | memoryview, what: str,
                follow: bool = True) -> Path:
    """Write ``data`` as the file at ``path`` atomically (temporary file, fsync, rename),
    making its folder if need be; returns ``path``. On failure nothing is left behind and an
    earlier file at ``path`` is as it was: :class:`OutputWriteError` for an OSError, else the
    exception itself (KeyboardInterrupt...). A symlink at ``path`` is written through (its
    final target is replaced, the link stays) or, with ``follow`` false, replaced itself by
    the new file (where it led is left as it was)."""
    shown = Path(path)
    target = _target(shown, follow)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if target.is_symlink():  # not followed: the new file gets the usual mode
                raise FileNotFoundError
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(fd, "wb", buffering=0) as out:
            os.fchmod(out.fileno(), mode)  # mkstemp makes 0600: the mode open() would give
            view = memoryview(data).cast("B")
            while view:
                n = out.write(view)
                view = view[n or 0:]
            os.fsync(out.fileno())
        tmp.replace(target)
        tmp = None
    except OSError as err:
        kept = (f"; {shown} was left as it was" if target.is_file()
                else f"; nothing was written to {shown}")
        raise OutputWriteError(f"cannot write {what} {shown}: "
                               f"{err.strerror or type(err).__name__}{kept}") from None
    finally:
        if tmp is not None:  # failed or interrupted: no partial file remains
            with contextlib.suppress(OSError):
                tmp.unlink()
    return shown


#: The signals a save holds: Ctrl-C, and SIGTERM and SIGHUP where a command raises on them
#: (:func:`streamsonic.commands.common.stop_signals`).
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT (and SIGTERM and SIGHUP where Python handles them) until the block ends:
    one that comes meanwhile is raised (by the handler that was in place, KeyboardInterrupt
    for Ctrl-C by default) once the block is done, so that a save is never cut in the
    middle. Outside the main thread, or for a signal not handled in Python (its default
    action, or ignored), nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: handler for sig in HELD_SIGNALS
                if callable(handler := signal.getsignal(sig))}
    held: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append((signum, frame))

    for sig in previous:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if held:
        signum, frame = held[0]
        first: Any = previous[signal.Signals(signum)]
        first(signum, frame)
