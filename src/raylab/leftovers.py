"""The leftover scan: every live process of one lab work dir, and stopping the ones raylab started.

Recorded processes come first (each with the members of its group, verified by pid and start time);
then the ``/proc`` scan adds any process whose ``RAYLAB_STARTED_BY`` marker, program, working directory
or arguments lie under the work dir, even when nothing recorded it (terraform's providers, Ray's
raylets). Only those raylab started are ever stopped; the rest are named for the user to stop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from raylab.procs import QUICK_STEPS, Records, members, stop_procs, stop_record
from raylab.proctable import ProcInfo, all_procs, self_and_ancestors, under


@dataclass(frozen=True)
class Leftover:
    proc: ProcInfo
    what: str  # the record's name, or the program
    why: str  # recorded | marker | exe | cwd | argv
    ours: bool  # raylab started it (recorded, marker, or its program lies in the work dir)

    def line(self) -> str:
        how = "" if self.ours else "; raylab did not start it, so it is not stopped: stop it yourself"
        return f"process {self.what} (pid {self.proc.pid}, {self.why}){how}"


def find_leftovers(root: Path, procs: Iterable[ProcInfo] | None = None,
                   exclude: set[int] | None = None) -> list[Leftover]:
    """Every live process of this work dir: recorded ones (and their groups), then any whose
    environment marker, program, working directory or arguments lie under ``root``.
    Excludes this process and its ancestors."""
    root = Path(root)
    procs = list(all_procs() if procs is None else procs)
    skip = self_and_ancestors() if exclude is None else exclude
    out: dict[int, Leftover] = {}
    recorded: dict[int, str] = {}  # pid -> what its record is (a group member: its leader's)
    for rec in Records(root).all():
        for p in members(rec, root, procs):
            recorded.setdefault(p.pid, rec.what)
            if p.pid not in skip:
                what = rec.what if p.pid == rec.pid else f"{Path(p.argv[0]).name} (of {rec.what})"
                out.setdefault(p.pid, Leftover(p, what, "recorded", True))
    parents = {p.pid: p.ppid for p in procs}
    for p in procs:
        if p.pid in skip or p.pid in out:
            continue
        why = ("marker" if p.marker == str(root) else "exe" if under(p.exe, root)
               else "cwd" if under(p.cwd, root) else "argv" if any(under(a, root) for a in p.argv) else "")
        if why:
            name = Path(p.argv[0]).name
            owner = recorded_ancestor(p.pid, parents, recorded)
            what = f"{name} (of {owner})" if owner else name
            out[p.pid] = Leftover(p, what, f"{why} under {root}", why in ("marker", "exe"))
    return sorted(out.values(), key=lambda x: x.proc.pid)


SETTLE_S = 1.2  # longer than the watcher's `sleep 1`


def recorded_ancestor(pid: int, parents: dict[int, int], recorded: dict[int, str]) -> str | None:
    """What the nearest recorded ancestor of ``pid`` is (e.g. a Ray worker in its own session under
    the head's raylet: "ray-head"), None if none is (pure)."""
    seen = {pid}
    pid = parents.get(pid, 0)
    while pid > 1 and pid not in seen:
        if pid in recorded:
            return recorded[pid]
        seen.add(pid)
        pid = parents.get(pid, 0)
    return None


def stop_leftovers(root: Path, steps: Sequence[tuple[int, float]] = QUICK_STEPS) -> list[Leftover]:
    """Stop every leftover raylab started (records first, group by group; then the scan's)."""
    records = Records(root)
    for rec in records.all():
        stop_record(rec, records.root, steps)
        records.forget(rec)
    stopped: dict[int, Leftover] = {}
    # A process being stopped may start another first: Ray's job watcher (`while kill -s 0 <pid>; do
    # sleep 1; done`) leaves its last `sleep 1` behind it, started between a scan and the stop. So after
    # a round that stopped something, wait for such a `sleep 1` to end or show, and scan again (CI's
    # kill test found one alive right after `down`, 2026-12-07).
    for _ in range(4):
        left = [x for x in find_leftovers(root) if x.ours]
        if not left:
            break
        stopped.update((x.proc.pid, x) for x in left)
        stop_procs([x.proc for x in left], steps)
        time.sleep(SETTLE_S)
    return sorted(stopped.values(), key=lambda x: x.proc.pid)
