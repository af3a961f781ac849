"""Recovering the local target's processes: is a PID still ours, and converging what a killed run left.

A PID in ``.raylab/state.json`` or the twin's ``machines.json`` counts as ours only while it is alive
and its ``/proc/<pid>/cmdline`` still carries what was recorded (the arguments, or a node's own
``--temp-dir``): a recycled PID is never stopped. ``converge_stale`` is what preflight (and the twin's
start) runs first: stop what a killed run left by its records, forget dead PIDs, and when the twin
died, stop its orphaned head and nodes and drop the cluster and twin from the state, since the twin's
EC2/IAM/CloudFormation state died with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from raylab import procs
from raylab.checks import Check
from raylab.procs import stop_group
from raylab.proctable import start_time
from raylab.state import pid_alive

if TYPE_CHECKING:
    from raylab.context import Context


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_ours(pid: int | None, needle: str) -> TypeGuard[int]:
    """Alive and still the program we started (a recycled PID is not ours to stop)."""
    return pid is not None and bool(pid) and pid_alive(int(pid)) and needle in cmdline(int(pid))


def recorded_program(rec: dict[str, Any]) -> str:
    """The recorded arguments: /proc/<pid>/cmdline of that process contains them (an interpreter
    may come first), a recycled PID does not."""
    cmd = rec.get("cmd") or ""
    parts = [str(p) for p in cmd] if isinstance(cmd, list) else str(cmd).split()
    return " ".join(parts[1:]) or (parts[0] if parts else "\0")


def head_needle(cluster: dict[str, Any]) -> str:
    return f"--temp-dir={cluster['temp_dir']}" if cluster.get("temp_dir") else "\0"


def node_needle(rec: dict[str, Any]) -> str:
    """What a node process of machines.json has in its command line (its own temp dir)."""
    return f"--temp-dir={rec['temp_dir']}" if rec.get("temp_dir") else "\0"


def node_is_ours(rec: dict[str, Any]) -> TypeGuard[dict[str, Any]]:
    """Is the node process of a machines.json entry alive and still ours? By its recorded start time
    (a node forked by the twin's launcher has the launcher's command line), else by its ``--temp-dir``."""
    pid = rec.get("pid")
    if not pid or not pid_alive(int(pid)):
        return False
    if rec.get("start") is not None:
        return start_time(int(pid)) == int(rec["start"])
    return is_ours(pid, node_needle(rec))


def machine_pids(state_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads((state_dir / "machines.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def twin_state_dir(ctx: Context) -> Path:
    return ctx.workdir / "twin"


def twin_alive(ctx: Context) -> bool:
    tw = ctx.state.get("twin")
    return is_ours(tw.get("pid"), f"--state-dir {tw.get('state_dir', '-')}")


def cleanup_temp(cur: dict[str, Any]) -> None:
    root = cur.get("temp_root")
    if root and Path(root).name.startswith("rl-") and str(root).startswith("/tmp/"):
        shutil.rmtree(root, ignore_errors=True)


def converge_stale(ctx: Context) -> Check:
    """A killed run left .raylab/: forget dead PIDs; if the twin died, its cloud died with it."""
    from raylab.signals import note_stage, previous_run

    fixed: list[str] = []
    prev = previous_run(ctx.state.get("run"))
    if prev:
        ctx.ui.warning(f"{prev}: converging")
    records = procs.Records(ctx.workdir)
    known = {ctx.state.get("twin").get("pid"), ctx.state.get("cluster").get("head_pid")}
    for rec, act in records.converge():
        if act == "adopt" and rec.owner == "local-target" and rec.pid not in known:
            # a twin or head whose run was killed before the state named it: nothing uses it
            procs.stop_record(rec, records.root, procs.QUICK_STEPS)
            records.forget(rec)
            act = "stop"
        if act == "stop":
            fixed.append(f"stopped `{rec.what}` (pid {rec.pid}) left running by a killed run")
    note_stage(ctx.workdir, "preflight (before the first stage)")
    for name, rec in list(ctx.state.get("processes").items()):
        if not pid_alive(int(rec.get("pid", 0))):
            ctx.state.forget_process(name)
            fixed.append(f"{name} (pid {rec.get('pid')}) is gone")
    tw = ctx.state.get("twin")
    if tw and not twin_alive(ctx):
        # the twin's moto state is lost: a live head or node of that run talks to nothing
        head = ctx.state.get("cluster").get("head_pid")
        if is_ours(head, head_needle(ctx.state.get("cluster"))):
            stop_group(int(head))
            fixed.append(f"stopped the orphaned Ray head (pid {head})")
        for iid, mrec in machine_pids(twin_state_dir(ctx)).items():
            if node_is_ours(mrec):
                stop_group(int(mrec["pid"]))
                fixed.append(f"stopped the orphaned node of {iid}")
        cleanup_temp(ctx.state.get("cluster"))
        ctx.state.drop("cluster")
        ctx.state.drop("twin")
        for name in ("twin", "ray-head"):
            ctx.state.forget_process(name)
        fixed.append("the previous twin is gone (its EC2/IAM/CloudFormation state with it): "
                     "stages re-create what they need")
    if fixed:
        for f in fixed:
            ctx.ui.warning(f"stale .raylab/ from an earlier run: {f}")
        return Check("stale state", True, "converged: " + "; ".join(fixed))
    return Check("stale state", True, "none")
