"""Enter the rehearsal's world from the operator's machine (the host side of ``world.py``).

``raylab lab --target aws --rehearsal`` re-runs itself as ``unshare --net --mount ... python -m
raylab.rehearsal.world -- lab --target aws ...``: a private network namespace (the host's own gains
no link, address or route), a private mount namespace (the machines' namespaces are mounted there
only). Root is needed for namespaces; the refusal says so in one line before anything is created.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from raylab.errors import RaylabError

INSIDE_ENV = "RAYLAB_REHEARSAL_WORLD"


def inside() -> bool:
    return os.environ.get(INSIDE_ENV) == "1"


def fis_time(lab_scale: int | None) -> float:
    """How FIS's durations pass in the rehearsal (pure): AWS's time for the plan (scale 1); a lab
    scaled down runs its tasks 10x faster (300 s -> 30 s), and its drills 4x faster (the reclaim
    notice PT2M -> 30 s, the capacity window 300 s -> 75 s: still several autoscaler loops)."""
    return 1.0 if (lab_scale or 1) == 1 else 0.25


def world_command(root: Path, shared: Path, region: str, boot_delay_s: float, args: list[str],
                  report: Path | None = None, fis_time_x: float = 1.0) -> list[str]:
    """The command that starts the world (pure)."""
    cmd = ["unshare", "--net", "--mount", "--propagation", "private", "--fork", "--kill-child",
           sys.executable, "-m", "raylab.rehearsal.world", "--root", str(root), "--shared", str(shared),
           "--region", region, "--boot-delay", f"{boot_delay_s:g}", "--fis-time", f"{fis_time_x:g}"]
    if report is not None:
        cmd += ["--report", str(report)]
    return [*cmd, "--", *args]


def without_rehearsal_flags(argv: list[str]) -> list[str]:
    """The operator's own command line, as the world's operator runs it (pure)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--rehearsal":
            continue
        if a == "--boot-delay":
            skip = True
            continue
        if a.startswith("--boot-delay="):
            continue
        out.append(a)
    return out


def check_can_enter() -> None:
    missing = [t for t in ("unshare", "ip", "ssh", "rsync", "ssh-keygen") if shutil.which(t) is None]
    if not Path("/usr/sbin/sshd").exists():
        missing.append("sshd")
    if missing:
        raise RaylabError(f"the rehearsal needs {', '.join(missing)} on this machine",
                          "run `make sysdeps` (Debian packages openssh-server, rsync, iproute2)")
    if os.geteuid() != 0:
        raise RaylabError("the rehearsal needs root (it makes network namespaces)",
                          "run it as root, e.g. in the lab's container or VM")


def world_pid(unshare_pid: int) -> int | None:
    """The world's PID: the one child ``unshare --fork`` made (None once it is gone)."""
    try:
        kids = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def run_world(cmd: list[str]) -> int:
    """Run the world in the foreground and return its operator's exit code.

    The world runs in its own session, so a terminal's signals reach only this process, which passes
    each one on once: Ctrl-C, SIGTERM and SIGHUP become the world's SIGTERM, which the world hands to
    its operator as Ctrl-C; the operator's teardown then runs while the account is still there. A
    SIGKILL here ends everything at once: ``unshare`` (parent-death signal) kills the world, which
    takes its machines and operator with it (theirs); the next run starts a new account and converges.
    """
    from raylab import signals
    from raylab.procs import death_signal

    p = subprocess.Popen(cmd, preexec_fn=death_signal(signal.SIGKILL),  # noqa: PLW1509 - prctl only
                         start_new_session=True)
    passed_on = False
    while True:
        try:
            rc = p.wait()
            if passed_on:
                signals.passed_on()  # the operator inside said where it stopped: no second line
            return rc
        except KeyboardInterrupt:
            pid = world_pid(p.pid)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                passed_on = True
