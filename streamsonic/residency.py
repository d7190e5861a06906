"""Give back the resident pages of a shared library that start-up touched and the run does
not use again (Linux; elsewhere nothing happens).

numba's LLVM (``libllvmlite.so``, about 170 MB on disk) is mapped into the process. Its
static initialisers (at ``import numba``), then setting up the JIT target and linking the
cached kernels (their first call) touch about 85 MB of its code and read-only data, which
count as the daemon's resident memory for the whole run though the compiled kernels never
run that code again (they live in memory of their own). ``madvise(MADV_DONTNEED)`` on a
read-only private file mapping only unmaps its pages: they stay in the page cache, and a
later access (compiling a kernel for a new signature) maps them again from the file, as
after the kernel reclaimed them under memory pressure. A mapping that may hold anything
but the file's bytes (writable, shared, or with a page copied on write, such as relocated
data) is left alone.
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SMAPS = Path("/proc/self/smaps")
MADV_DONTNEED = 4
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+ *(.*)$")
#: Fields that count the pages of a private file mapping that are its own copies (written
#: to, copied on write: no longer the file's bytes), resident or swapped out: a mapping with
#: any is never released. (Its other pages are the page cache's, dirty or not: the file.)
_CHANGED = ("Anonymous", "Swap")


@dataclass
class Mapping:
    """One mapping of ``/proc/self/smaps``: address range, permissions, path and its
    fields (KiB)."""

    start: int
    end: int
    perms: str
    path: str
    fields: dict[str, int]

    @property
    def rss_kib(self) -> int:
        return self.fields.get("Rss", 0)

    def file_copy(self) -> bool:
        """Whether every resident page holds the file's bytes and nothing can write them: a
        private, read-only mapping of a file without a changed page."""
        return (self.path.startswith("/") and self.perms[1] == "-" and self.perms[3] == "p"
                and all(self.fields.get(k, 0) == 0 for k in _CHANGED))


def parse_smaps(text: str, fragment: str = "") -> list[Mapping]:
    """The mappings of a ``/proc/PID/smaps`` text whose path contains ``fragment``."""
    mappings: list[Mapping] = []
    current: Mapping | None = None
    for line in text.splitlines():
        if not line[:1].isupper():  # a mapping's first line (an address), not a field
            head = _HEADER.match(line)
            current = None
            if head and fragment in head.group(4):
                start, end, perms, path = head.groups()
                current = Mapping(int(start, 16), int(end, 16), perms, path.strip(), {})
                mappings.append(current)
            continue
        if current is not None:
            name, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                current.fields[name] = int(parts[0])
    return mappings


def _madvise() -> Callable[[int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return madvise


def release_library_pages(fragment: str) -> int:
    """Unmap the resident pages of every read-only, unchanged private mapping of a file
    whose path contains ``fragment`` (see the module's notes); returns how many KiB were
    unmapped (0 where ``/proc/self/smaps`` or ``madvise`` is missing)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        mappings = parse_smaps(SMAPS.read_text(), fragment)
    except OSError:
        return 0
    madvise = _madvise()
    if madvise is None:
        return 0
    released = 0
    for m in mappings:
        if m.rss_kib and m.file_copy():
            if madvise(m.start, m.end - m.start, MADV_DONTNEED) == 0:
                released += m.rss_kib
            else:
                log.debug("madvise %s %x-%x: errno %d", m.path, m.start, m.end,
                          ctypes.get_errno())
    return released


def release_llvm_pages() -> int:
    """:func:`release_library_pages` of numba's LLVM, where numba was imported."""
    if "llvmlite.binding" not in sys.modules:
        return 0
    return release_library_pages("libllvmlite")
