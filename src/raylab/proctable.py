"""The live process table as ``/proc`` shows it: who runs, since when, where, and whether raylab marked it.

A process is named by its PID *and* its start time (``/proc/<pid>/stat`` field 22), so a recycled PID
never passes for the process a record names. ``ProcInfo`` holds what the stop and leftover logic needs
of one process (group, argv, working directory, program, and the ``RAYLAB_STARTED_BY`` marker its
environment carries when raylab or one of raylab's children started it); nothing here signals anything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MARK_ENV = "RAYLAB_STARTED_BY"


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [0] is field 3 (state), [19] field 22."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """Start time of a live process (clock ticks since boot, field 22), None if gone or a zombie."""
    f = _stat(pid)
    if f is None or f[0] in ("Z", "X"):
        return None
    return int(f[19])


@dataclass(frozen=True)
class ProcInfo:
    """One live process as /proc shows it."""

    pid: int
    ppid: int
    pgid: int
    start: int
    argv: tuple[str, ...]
    cwd: str
    exe: str
    marker: str | None  # RAYLAB_STARTED_BY in its environment

    def describe(self) -> str:
        return " ".join(self.argv)[:120] or self.exe


def read_proc(pid: int) -> ProcInfo | None:
    f = _stat(pid)
    if f is None or f[0] in ("Z", "X"):
        return None
    try:
        argv = tuple(a.decode(errors="replace")
                     for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a)
    except OSError:
        return None
    if not argv:  # kernel threads
        return None
    cwd = exe = ""
    marker = None
    with contextlib.suppress(OSError):
        cwd = os.readlink(f"/proc/{pid}/cwd")
    with contextlib.suppress(OSError):
        exe = os.readlink(f"/proc/{pid}/exe")
    with contextlib.suppress(OSError):
        for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if kv.startswith(MARK_ENV.encode() + b"="):
                marker = kv.split(b"=", 1)[1].decode(errors="replace")
    return ProcInfo(pid, int(f[1]), int(f[2]), int(f[19]), argv, cwd, exe, marker)


def all_procs() -> Iterator[ProcInfo]:
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            info = read_proc(int(p.name))
            if info is not None:
                yield info


def self_and_ancestors() -> set[int]:
    out: set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        f = _stat(pid)
        pid = int(f[1]) if f else 0
    return out


def under(path: str, root: Path) -> bool:
    """Does ``path`` (or an argument such as ``-chdir=<path>``) lie under ``root``?"""
    r = str(root).rstrip("/") + "/"
    return r in path.removesuffix(" (deleted)") + "/"
