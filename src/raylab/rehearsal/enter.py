"""Enter the rehearsal's world from the operator's machine (the host side of ``world.py``).

``raylab lab --target aws --rehearsal`` re-runs itself as ``unshare --net --mount ... python -m
raylab.rehearsal.world -- lab --target aws ...``: a private network namespace (the host's own gains
no link, address or route), a private mount namespace (the machines' namespaces are mounted there
only). Root is needed for namespaces; the refusal says so in one line before anything is created.
"""

from __future__ import annotations

import ctypes
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


def _deathsig() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_world(cmd: list[str]) -> int:
    """Run the world in the foreground; Ctrl-C reaches the operator inside, whose teardown runs."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        p = subprocess.Popen(cmd, preexec_fn=_deathsig)  # noqa: PLW1509 - prctl only
        return p.wait()
    finally:
        signal.signal(signal.SIGINT, old)
