"""Processes raylab starts: each in its own session, recorded by PID and start time, stopped by group.

Never `ray stop`, `pkill` or `killall`: on a shared machine they hit other people's clusters. A
process is only ever signalled after its PID *and* its start time (``/proc/<pid>/stat`` field 22)
match a record, so a recycled PID is never hit.

Records: ``<workdir>/procs/<pid>-<start>.json``, one file per process, written by the child itself
between fork and exec (so a child is recorded before it runs), holding who started it (the raylab
run's pid and start time), what it is, the lab and the command. ``ephemeral`` children (terraform,
``ray up``/``ray down``) must not outlive the run: they get a parent-death signal, Ctrl-C stops their
group (SIGINT, then SIGTERM, then SIGKILL), and a later run stops any it finds orphaned. Long-lived
ones (the twin, the Ray head) are adopted by the next run.

Every child also carries ``RAYLAB_STARTED_BY=<workdir>`` in its environment, which its own children
inherit (terraform's providers, Ray's raylets): the leftover scan (``raylab.leftovers``) finds them by
that, or by a working directory or argument under the workdir, even when nothing recorded them. Reading
``/proc`` lives in ``raylab.proctable``; this module starts, records and stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raylab.proctable import MARK_ENV, ProcInfo, all_procs, start_time
from raylab.state import pid_alive

PR_SET_PDEATHSIG = 1
# How a group is stopped: SIGINT first (terraform saves its state and releases its lock), then
# SIGTERM, then SIGKILL; seconds to wait after each. Signal 0 = only wait.
STOP_STEPS: tuple[tuple[int, float], ...] = (
    (signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0))
QUICK_STEPS: tuple[tuple[int, float], ...] = (
    (signal.SIGINT, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))
# An orphan already got its parent-death SIGTERM and is stopping gracefully (terraform saves its
# state): give it time first, since a second interrupt makes terraform exit without saving.
ORPHAN_STEPS: tuple[tuple[int, float], ...] = ((0, 30.0), *STOP_STEPS[1:])


def spawn(
    cmd: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    *,
    records: Records | None = None,
    what: str = "",
    owner: str = "raylab",
    lab: str = "",
    ephemeral: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` detached in its own session (so its group can be stopped as one).

    With ``records``: the child records itself there before it runs, carries the work dir marker,
    and, when ``ephemeral``, dies with this process (parent-death signal; see module doc).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    try:
        if records is None:
            return subprocess.Popen(
                list(cmd),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        return records.start(cmd, what=what or Path(cmd[0]).name, owner=owner, lab=lab,
                             ephemeral=ephemeral, env=env, cwd=cwd, stdout=out)
    finally:
        out.close()


def stop_group(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM the process group led by ``pid``, then SIGKILL after ``timeout``. True if gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid) and not group_alive(pid):
                return True
            time.sleep(0.1)
    return not pid_alive(pid)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg answers for zombies too; look for a live member
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False



# --- records ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """A process raylab started, as its own child wrote it down before exec."""

    pid: int
    start: int
    pgid: int
    owner: str  # the raylab module that started it: terraform, local-target, aws-target, twin
    what: str  # e.g. "terraform apply", "twin", "ray-head", "ray up"
    lab: str
    cmd: tuple[str, ...]
    run_pid: int  # the raylab process that started it
    run_start: int
    ephemeral: bool  # must not outlive run_pid: stopped when orphaned, never adopted
    at: float = field(default=0.0)

    @property
    def key(self) -> str:
        return f"{self.pid}-{self.start}"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        return cls(pid=int(d["pid"]), start=int(d["start"]), pgid=int(d.get("pgid", d["pid"])),
                   owner=str(d.get("owner", "")), what=str(d.get("what", "")), lab=str(d.get("lab", "")),
                   cmd=tuple(d.get("cmd", ())), run_pid=int(d.get("run_pid", 0)),
                   run_start=int(d.get("run_start", 0)), ephemeral=bool(d.get("ephemeral", False)),
                   at=float(d.get("at", 0.0)))


def liveness(recorded_start: int, now_start: int | None) -> str:
    """gone | recycled (same PID, another process) | alive."""
    if now_start is None:
        return "gone"
    return "alive" if now_start == recorded_start else "recycled"


def decide(proc: str, run: str, ephemeral: bool) -> str:
    """What a run does with a record: forget | leave | stop | adopt (pure; see the unit table).

    ``proc`` and ``run`` are the liveness of the process and of the raylab run that started it.
    """
    if proc != "alive":
        return "forget"  # never signal a recycled PID
    if run == "alive":
        return "leave"  # its run still owns it (this run, or another raylab still running)
    return "stop" if ephemeral else "adopt"


_libc: Any = None


def _prctl() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.prctl


def death_signal(sig: int, then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when its parent (this process, the calling thread) dies,
    after running ``then``; a child whose parent is already gone exits at once. System calls only."""
    prctl = _prctl()  # loaded here, before the fork
    parent = os.getpid()

    def run() -> None:
        if then is not None:
            then()
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return run


def _child_setup(dir_: Path, body: bytes, parent: int, deathsig: int | None) -> Any:
    """The function run in the child between fork and exec: parent-death signal, then the record.

    Only system calls and byte formatting here (no imports, no locks).
    """
    prctl = _prctl() if deathsig else None
    d = str(dir_)

    def run() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, deathsig, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl: do not start at all
                os._exit(1)
        record_self(d, body)

    return run


def record_self(d: str, body: bytes) -> None:
    """Write this process's record into ``d``: ``body`` plus its pid, group and start time.

    Run in a child before it runs anything else (between fork and exec, or in a forked node of the
    twin's launcher): only system calls and byte formatting here (no imports, no locks)."""
    pid = os.getpid()
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    try:
        stat = os.read(fd, 4096)
    finally:
        os.close(fd)
    start = stat.rsplit(b")", 1)[1].split()[19].decode()
    data = body[:-1] + f', "pid": {pid}, "pgid": {os.getpgrp()}, "start": {start}}}'.encode()
    tmp = f"{d}/.{pid}-{start}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, f"{d}/{pid}-{start}.json")


_RUN_START: int | None = None
_OWN: list[tuple[Records, Record]] = []  # ephemeral children this process started


def run_identity() -> tuple[int, int]:
    global _RUN_START
    if _RUN_START is None:
        _RUN_START = start_time(os.getpid()) or 0
    return os.getpid(), _RUN_START


def mark(workdir: Path) -> None:
    """Put the work dir marker in this process's environment: every child inherits it."""
    os.environ[MARK_ENV] = str(workdir)


class Records:
    """The process records of one lab work dir (``<workdir>/procs/``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "procs"

    def all(self) -> list[Record]:
        out = []
        with contextlib.suppress(OSError):
            for f in sorted(self.dir.glob("*.json")):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    out.append(Record.from_dict(json.loads(f.read_text())))
        return out

    def write(self, rec: Record) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{rec.key}.tmp"
        tmp.write_text(json.dumps({**asdict(rec), "cmd": list(rec.cmd)}))
        os.replace(tmp, self.dir / f"{rec.key}.json")

    def forget(self, rec: Record) -> None:
        (self.dir / f"{rec.key}.json").unlink(missing_ok=True)

    @staticmethod
    def body(cmd: Sequence[str], *, what: str, owner: str, lab: str, ephemeral: bool) -> bytes:
        """What a child writes down about itself (``record_self`` adds its pid, group and start time)."""
        run_pid, run_start = run_identity()
        return json.dumps({"owner": owner, "what": what, "lab": lab, "cmd": list(cmd), "run_pid": run_pid,
                           "run_start": run_start, "ephemeral": ephemeral, "at": time.time()}).encode()

    def start(
        self,
        cmd: Sequence[str],
        *,
        what: str,
        owner: str,
        lab: str,
        ephemeral: bool,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: Any = None,
        stdin: Any = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in its own session; the child records itself before exec (see module doc).

        The parent-death signal is per *thread*: it is set only when the main thread starts the
        child (a worker thread that ends would take the child with it).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        run_pid, _ = run_identity()
        full_env = dict(os.environ if env is None else env)
        full_env[MARK_ENV] = str(self.root)
        body = self.body(cmd, what=what, owner=owner, lab=lab, ephemeral=ephemeral)
        deathsig = signal.SIGTERM if ephemeral and threading.current_thread() is threading.main_thread() \
            else None
        p = subprocess.Popen(list(cmd), stdout=stdout, stderr=subprocess.STDOUT, stdin=stdin,
                             env=full_env, cwd=cwd, start_new_session=True,
                             preexec_fn=_child_setup(self.dir, body, run_pid, deathsig))
        rec = next((r for r in self.all() if r.pid == p.pid), None)
        if ephemeral and rec is not None:
            _OWN.append((self, rec))
        return p

    def of(self, pid: int, child: bool = False) -> Record | None:
        """The record of a live process by PID (its start time checked). ``child``: one this process
        started and has not reaped, found even as a zombie (no start time, but its PID is its own)."""
        st = start_time(pid)
        return next((r for r in self.all() if r.pid == pid and (r.start == st or (child and st is None))),
                    None)

    def live(self) -> list[Record]:
        return [r for r in self.all() if liveness(r.start, start_time(r.pid)) == "alive"]

    def converge(self, *, owner: str | None = None, lab: str | None = None,
                 steps: Sequence[tuple[int, float]] = ORPHAN_STEPS) -> list[tuple[Record, str]]:
        """Forget dead records, stop orphaned ephemeral processes, adopt long-lived ones.

        Returns (record, action) for every record looked at; ``stop`` means it was stopped.
        """
        done: list[tuple[Record, str]] = []
        for rec in self.all():
            if (owner and rec.owner != owner) or (lab and rec.lab != lab):
                continue
            act = decide(liveness(rec.start, start_time(rec.pid)),
                         liveness(rec.run_start, start_time(rec.run_pid)), rec.ephemeral)
            if act == "stop":
                stop_record(rec, self.root, steps)
            if act in ("forget", "stop"):
                self.forget(rec)
            done.append((rec, act))
        return done


def members(rec: Record, root: Path, procs: Iterable[ProcInfo] | None = None) -> list[ProcInfo]:
    """Live processes that belong to a record: the process itself (pid and start time match) and,
    in its group, those started after it that are verifiably ours (the leader still alive, or the
    work dir marker in their environment)."""
    procs = list(all_procs() if procs is None else procs)
    leader = next((p for p in procs if p.pid == rec.pid and p.start == rec.start), None)
    return [p for p in procs
            if p is leader or (p.pgid == rec.pgid and p.start >= rec.start
                               and (leader is not None or p.marker == str(root)))]


def signal_verified(pid: int, start: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfd (old kernel): check, then kill (a tiny window remains)
        return _send_if_same(pid, start, lambda: os.kill(pid, sig))
    try:  # the pidfd pins the process: checked here, it stays true
        return _send_if_same(pid, start, lambda: signal.pidfd_send_signal(fd, sig))
    finally:
        os.close(fd)


def _send_if_same(pid: int, start: int, send: Callable[[], None]) -> bool:
    """``send()`` if ``pid`` is still the process that started at ``start``; False if it is not, or
    is gone, or is not ours to signal."""
    if start_time(pid) != start:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        send()
        return True
    return False


def stop_procs(targets: Sequence[ProcInfo], steps: Sequence[tuple[int, float]] = STOP_STEPS) -> bool:
    """Stop exactly these processes (pid + start verified): SIGINT, SIGTERM, SIGKILL. True if gone.

    A second Ctrl-C while waiting moves on to the next, harder signal at once.
    """
    left = list(targets)
    for sig, wait in steps:
        left = [p for p in left if start_time(p.pid) == p.start]
        if not left:
            return True
        for p in left:
            if sig:
                signal_verified(p.pid, p.start, sig)
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                for p in left:
                    with contextlib.suppress(ChildProcessError, OSError):
                        os.waitpid(p.pid, os.WNOHANG)  # reap our own children
                if all(start_time(p.pid) != p.start for p in left):
                    return True
                time.sleep(0.1)
        except KeyboardInterrupt:
            continue
    return all(start_time(p.pid) != p.start for p in left)


def stop_record(rec: Record, root: Path, steps: Sequence[tuple[int, float]] = STOP_STEPS) -> bool:
    """Stop a recorded process and its group (each member verified by pid and start time)."""
    gone = True
    for _ in range(3):  # a member may start another while we stop it (terraform -> provider)
        ms = members(rec, root)
        if not ms:
            return gone
        gone = stop_procs(ms, steps)
    return gone and not members(rec, root)


def stop_own_children(steps: Sequence[tuple[int, float]] = QUICK_STEPS) -> list[Record]:
    """Stop every ephemeral child this process started that still runs (the Ctrl-C safety net)."""
    stopped = []
    for records, rec in list(_OWN):
        if liveness(rec.start, start_time(rec.pid)) == "alive" or members(rec, records.root):
            stop_record(rec, records.root, steps)
            stopped.append(rec)
        records.forget(rec)
        _OWN.remove((records, rec))
    return stopped

