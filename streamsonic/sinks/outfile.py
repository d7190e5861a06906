"""Writing an output file safely: all or nothing, and never replacing what is not a file.

``OutputFile(path)`` decides at open time how ``path`` will be written, so that errors such
as a missing folder or a read-only directory surface before any data is played:

* a regular file, or a path that does not exist yet: the data goes to a hidden temporary
  file in the same folder, which ``commit()`` flushes, syncs and renames over the target.
  A failed write leaves the old file untouched and removes the temporary file.
* a symlink: the same, at the symlink's final target (the link itself stays a link).
* anything else that exists (a device such as ``/dev/null`` or ``/dev/stdout``, a FIFO):
  it is opened and written in place; it is never replaced by a regular file.

Every failure raises :class:`OutputWriteError`, whose message names the path and the cause.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from streamsonic.errors import OutputError, OutputWriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputFile:
    """One output file, written atomically where the target is a regular file."""

    def __init__(self, path: str | Path, what: str = "file") -> None:
        self.path = Path(path)
        self.what = what
        target = self.path.resolve() if self.path.is_symlink() else self.path
        try:
            st = target.stat()
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
        try:
            if self.in_place:
                self.file: BinaryIO = target.open("wb")
            else:
                parent = target.parent
                if not parent.is_dir():
                    raise OutputError(f"cannot write {what} {self.path}: folder {parent} "
                                      "does not exist")
                fd, name = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.",
                                            suffix=".part")
                self._tmp = Path(name)
                # mkstemp makes 0600; give the file the mode a plain open() would (or keep
                # the mode of the file it replaces).
                mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
                os.fchmod(fd, mode)
                self.file = os.fdopen(fd, "wb")
        except OSError as err:
            raise OutputError(f"cannot write {what} {self.path}: {err.strerror}; choose a "
                              "writable path") from None
        self.done = False

    def commit(self) -> None:
        """Make the written data the file's content (flush, sync, rename). Once."""
        if self.done:
            return
        self.done = True
        try:
            self.file.flush()
            if self._tmp is not None:
                os.fsync(self.file.fileno())
            self.file.close()
            if self._tmp is not None:
                self._tmp.replace(self.target)
                self._tmp = None
        except OSError as err:
            raise self.fail(err) from None

    def fail(self, err: OSError) -> OutputWriteError:
        """Discard what was written and return the error to raise for ``err``."""
        self.discard()
        kept = ("" if self.in_place
                else f"; {self.path} was left as it was" if self.target.exists()
                else f"; nothing was written to {self.path}")
        return OutputWriteError(f"cannot write {self.what} {self.path}: {err.strerror}{kept}")

    def discard(self) -> None:
        """Give up: close the file and remove the temporary file, if any."""
        self.done = True
        with contextlib.suppress(OSError):
            self.file.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            self._tmp = None
