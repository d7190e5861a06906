"""Run a command under an approximation of the unit's sandbox, without systemd.

The unit's settings that could break audio, MIDI or the network are rebuilt here from the
unit file itself, so a test can run the real daemon under them on a machine where systemd is
not PID 1:

* ``ProcSubset=pid`` and ``ProtectProc=invisible``: a private mount namespace (``unshare``)
  with ``/proc`` mounted ``subset=pid,hidepid=invisible`` (``/proc/cpuinfo``, ``/proc/asound``
  and the like are gone);
* ``SystemCallFilter=`` lines, ``SystemCallErrorNumber=EPERM``, ``RestrictRealtime=yes``:
  a seccomp allow-list (libseccomp through ctypes) of the groups the unit allows, minus those
  it denies, expanded by ``systemd-analyze syscall-filter``; everything else fails with EPERM
  (``sched_setscheduler`` is in the denied ``@resources``);
* ``RestrictAddressFamilies=``: ``socket()`` only for the families the unit lists;
* ``NoNewPrivileges=yes`` (libseccomp sets it).

Not rebuilt (they cannot stop sound or network by themselves): the user and group, the
read-only file system, devices, capabilities.

Usage: ``python -m tests.sandbox SPEC.json -- COMMAND...`` inside ``unshare --mount
--propagation private``; :func:`command` builds the whole command line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6,
            "AF_NETLINK": 16, "AF_PACKET": 17}


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


class ArgCmp(ctypes.Structure):
    """libseccomp's ``struct scmp_arg_cmp``."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def syscall_groups(analyze: str) -> dict[str, list[str]]:
    """Every ``@group`` -> its members (names and nested ``@groups``)."""
    out = subprocess.run([analyze, "syscall-filter"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in out.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not raw.startswith(" ") and line.startswith("@"):
            current = groups.setdefault(line, [])
        elif current is not None:
            current.append(line)
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        if name.startswith("@"):
            out |= expand(groups.get(name, []), groups)
        else:
            out.add(name)
    return out


def spec_from_unit(unit: Path, analyze: str, dropin: str = "") -> dict[str, object]:
    """The allowed system calls and address families that ``unit`` (followed by the lines
    of a drop-in, ``dropin``) asks for."""
    allow: set[str] = set()  # an allow-list, as the unit's first SystemCallFilter= makes it
    families: list[str] = []
    groups = syscall_groups(analyze)
    for line in (unit.read_text() + "\n" + dropin).splitlines():
        key, _, value = line.partition("=")
        if key == "SystemCallFilter":  # in order, as systemd applies them
            if value.startswith("~"):
                allow -= expand(value[1:].split(), groups)
            else:
                allow |= expand(value.split(), groups)
        elif key == "RestrictAddressFamilies":
            families += value.split()
    return {"syscalls": sorted(allow), "families": [FAMILIES[f] for f in families]}


def command(unit: Path, spec_file: Path, argv: list[str], dropin: str = "") -> list[str]:
    """The command line that runs ``argv`` in the sandbox ``unit`` (and ``dropin``)
    describes."""
    analyze = shutil.which("systemd-analyze")
    unshare = shutil.which("unshare")
    if analyze is None or unshare is None or ctypes.util.find_library("seccomp") is None:
        raise FileNotFoundError("needs systemd-analyze, unshare (util-linux) and libseccomp2")
    spec_file.write_text(json.dumps(spec_from_unit(unit, analyze, dropin)))
    return [unshare, "--mount", "--propagation", "private", sys.executable, "-m",
            "tests.sandbox", str(spec_file), "--", *argv]


def _load_filter(spec: dict[str, list[object]]) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(scmp_act_errno(errno.EPERM))
    if not ctx:
        raise OSError("seccomp_init failed")
    socket_nr = lib.seccomp_syscall_resolve_name(b"socket")
    for name in spec["syscalls"]:
        nr = lib.seccomp_syscall_resolve_name(str(name).encode())
        if nr < 0 or nr == socket_nr:
            continue  # unknown to this libseccomp or kernel; socket() is below
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None) < 0:
            raise OSError(f"seccomp rule for {name} failed")
    for family in spec["families"]:
        cmp = (ArgCmp * 1)(ArgCmp(0, SCMP_CMP_EQ, int(str(family)), 0))
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, socket_nr, 1, cmp) < 0:
            raise OSError(f"seccomp rule for socket({family}) failed")
    if lib.seccomp_load(ctx) < 0:
        raise OSError("seccomp_load failed")


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    command = argv[argv.index("--") + 1:]
    subprocess.run(["mount", "-t", "proc", "-o", "subset=pid,hidepid=invisible", "proc",
                    "/proc"], check=True)
    _load_filter(spec)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
