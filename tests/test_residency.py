"""Giving back the resident pages of a library (streamsonic.residency): what is unmapped,
what is left alone, and that the model's start-up gives back numba's LLVM."""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsonic.residency import SMAPS, parse_smaps, release_library_pages

pytestmark = pytest.mark.skipif(not SMAPS.exists(), reason="needs Linux /proc/self/smaps")

PAGES = 64
PAGE = mmap.PAGESIZE

SAMPLE = """\
7f0000000000-7f0000010000 r-xp 00000000 08:01 123 /lib/libx.so
Size:                 64 kB
Rss:                  40 kB
Anonymous:             0 kB
Private_Dirty:         0 kB
VmFlags: rd ex mr mw me
7f0000010000-7f0000011000 r--p 00010000 08:01 123 /lib/libx.so
Rss:                   4 kB
Anonymous:             4 kB
7f0000011000-7f0000012000 rw-p 00011000 08:01 123 /lib/libx.so
Rss:                   4 kB
7f0000020000-7f0000030000 r--p 00000000 08:01 456 /lib/liby.so
Rss:                   8 kB
7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0 \n\
Rss:                   4 kB
"""


def test_parse_smaps_fields_filter_and_which_are_file_copies() -> None:
    maps = parse_smaps(SAMPLE)
    assert [(m.perms, m.path, m.rss_kib) for m in maps] == [
        ("r-xp", "/lib/libx.so", 40), ("r--p", "/lib/libx.so", 4), ("rw-p", "/lib/libx.so", 4),
        ("r--p", "/lib/liby.so", 8), ("rw-p", "", 4)]
    assert maps[0].start == 0x7F0000000000 and maps[0].end == 0x7F0000010000
    assert maps[0].fields["Size"] == 64
    # read-only and unchanged: yes; a copied-on-write page, writable, anonymous: no
    assert [m.file_copy() for m in maps] == [True, False, False, True, False]
    assert [m.path for m in parse_smaps(SAMPLE, "libx")] == ["/lib/libx.so"] * 3


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


@pytest.fixture
def library(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    """A file of known bytes, named like no other mapping of this process."""
    content = bytes(range(256)) * (PAGES * PAGE // 256)
    path = tmp_path / "libresidency-test.so"
    path.write_bytes(content)
    yield path, content


def _map(path: Path, prot: int) -> int:
    libc = _libc()
    with path.open("rb" if prot == mmap.PROT_READ else "r+b") as f:
        addr = libc.mmap(None, PAGES * PAGE, prot, mmap.MAP_PRIVATE, f.fileno(), 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    return int(addr)


def _rss_kib(path: Path) -> int:
    return sum(m.rss_kib for m in parse_smaps(SMAPS.read_text(), str(path)))


def test_unmaps_a_read_only_private_file_mapping_and_it_reads_back_the_same(
        library: tuple[Path, bytes]) -> None:
    path, content = library
    addr = _map(path, mmap.PROT_READ)
    try:
        assert ctypes.string_at(addr, len(content)) == content  # every page resident
        before = _rss_kib(path)
        assert before >= PAGES * PAGE // 1024
        assert release_library_pages(str(path)) == before
        assert _rss_kib(path) == 0
        assert ctypes.string_at(addr, len(content)) == content  # mapped again from the file
        assert release_library_pages("no-such-library-anywhere") == 0
    finally:
        _libc().munmap(addr, PAGES * PAGE)


def test_leaves_a_mapping_with_a_page_copied_on_write_alone(
        library: tuple[Path, bytes]) -> None:
    """Relocated data (a private page written, then made read-only) is not the file's: it
    must never be unmapped, or the write would be lost."""
    path, content = library
    libc = _libc()
    addr = _map(path, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        assert ctypes.string_at(addr, len(content)) == content
        ctypes.memset(addr + 5 * PAGE, 0xAB, 16)
        assert libc.mprotect(addr, PAGES * PAGE, mmap.PROT_READ) == 0
        assert [m.perms for m in parse_smaps(SMAPS.read_text(), str(path))] == ["r--p"]
        assert release_library_pages(str(path)) == 0
        assert ctypes.string_at(addr + 5 * PAGE, 16) == b"\xab" * 16
        assert ctypes.string_at(addr, 5 * PAGE) == content[:5 * PAGE]
    finally:
        libc.munmap(addr, PAGES * PAGE)


def test_loading_the_pitch_model_gives_back_numbas_llvm(shipped: Path) -> None:
    """The daemon's start-up (the conductor's imports, then load_pitch_model, as
    Daemon.main does them) leaves little of libllvmlite resident: about 70 MB without."""
    code = textwrap.dedent("""
        import streamsonic.conductor
        from streamsonic.config import ModelConfig
        from streamsonic.model.loader import load_pitch_model
        from streamsonic.residency import SMAPS, parse_smaps
        load_pitch_model(ModelConfig(device="cpu"))
        maps = parse_smaps(SMAPS.read_text(), "libllvmlite")
        print(len(maps), sum(m.rss_kib for m in maps if m.file_copy()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    count, resident_kib = map(int, out.stdout.split())
    assert count > 0  # numba's LLVM is there ...
    assert resident_kib < 4096, f"{resident_kib} KiB of libllvmlite still resident"


def test_only_the_first_model_load_of_a_process_looks(monkeypatch: pytest.MonkeyPatch,
                                                       shipped: Path) -> None:
    """Later loads link no new kernels; each look reads /proc/self/smaps (about 10 ms)."""
    from streamsonic.config import ModelConfig
    from streamsonic.model import loader

    calls: list[int] = []

    def release() -> int:
        calls.append(1)
        return 0

    monkeypatch.setattr(loader, "_llvm_given_back", False)
    monkeypatch.setattr(loader, "release_llvm_pages", release)
    loader.load_pitch_model(ModelConfig(device="cpu"))
    assert len(calls) == 2  # before and after the warm-up
    loader.load_pitch_model(ModelConfig(device="cpu"))
    assert len(calls) == 2
